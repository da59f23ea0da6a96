"""GPU smoke test: the whole intervention path on a CUDA model in bf16, in a few minutes, offline.

Run (a GPU machine needs only torch, transformers, peft, accelerate, safetensors, tokenizers, numpy,
pandas, matplotlib, tqdm, scikit-learn — no nnsight, gguf, openpyxl, no embedded model, no index)::

    PYTHONPATH=src python benchmarks/gpu_smoke.py [--model PATH] [--out FILE]
    PYTHONPATH=src python benchmarks/gpu_smoke.py --cpu-tiny      # the same logic on CPU, tiny model

Without CUDA (and without ``--cpu-tiny``) it prints one "no CUDA device" line and exits 0.

On CUDA it

1. builds a Qwen2.5-0.5B-shaped ``Qwen2ForCausalLM`` with random weights in bf16 on ``cuda`` (or loads
   ``--model PATH`` with ``AutoModelForCausalLM``) and a character-level tokenizer built in code
   (:func:`affectlocus.tasks.prompts.char_tokenizer`; a real checkpoint's own tokenizer when it has one);
2. trains gate-only LoRA for a few steps (``al.train``, bf16) and saves the adapter; checks the base
   weights come back bit-identical after ``TrainResult.restore()``;
3. writes a safetensors donor (all seven projections of every layer, perturbed);
4. with the adapter and with the safetensors donor: graft / interpolate(0.5) / zero / noise(relative=0.1)
   / noise(match=donor) / neuron_mask (the last three stacked on a graft: ablations of the "tuned"
   model), each with the default rebind path and with ``inplace=True``: a forward inside the context
   (finite logits, the weights really changed), and after exit every parameter and buffer bit-identical
   to a host snapshot (and the very same ``Parameter`` objects), ``al.assert_clean(model)``, and the
   in-place weights equal to the rebind weights; plus a LIFO stack and an exception mid-context;
5. ``al.diff`` base vs adapter (factor space, gate) and base vs safetensors donor (dense, all modules);
6. a short evaluation: ``al.evaluate`` in label mode on a tiny sentiment task built in code (20 short
   English texts; no embedded data), on the base and inside a graft of the adapter. A random model
   scores about chance: this checks that the evaluator runs on the device, not the score;
7. peak GPU memory above the loaded model (``max_memory_allocated`` after ``reset_peak_memory_stats``)
   and enter+exit wall time of ``graft(safetensors donor, modules="all")``, rebind vs ``inplace=True``.

``--model`` with a big checkpoint takes longer than 5 minutes: every restore check compares all
parameters with a host snapshot, and the donor file holds all seven projections of every layer.

It prints ONE JSON line (checks, errors, timings, peak memory, versions) and writes it to ``--out``;
the exit status is 1 if any check failed.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

OPTIONAL = ("nnsight", "gguf", "openpyxl")  # must never be imported on these paths
QWEN05 = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
              num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True, max_position_embeddings=4096,
              rope_theta=1000000.0, rms_norm_eps=1e-6, hidden_act="silu")
ROWS = [("awful", "negative"), ("so bad", "negative"), ("a film", "neutral"), ("ok", "neutral"),
        ("loved it", "positive"), ("great fun", "positive"), ("terrible", "negative"), ("nice", "positive"),
        ("what a mess", "negative"), ("it exists", "neutral"), ("superb", "positive"), ("dull", "negative"),
        ("it is long", "neutral"), ("joy", "positive"), ("hated it", "negative"), ("fine", "neutral"),
        ("wow", "positive"), ("meh", "neutral"), ("boring", "negative"), ("brilliant", "positive")]
LABELS = ("negative", "neutral", "positive")


# ------------------------------------------------------------------------------------------- helpers
class Smoke:
    """Collects named checks (pass/fail + error text), timings and notes; one failure never stops the rest."""

    def __init__(self, device: torch.device):
        self.device = device
        self.checks: dict[str, bool] = {}
        self.errors: dict[str, str] = {}
        self.timings: dict[str, float] = {}
        self.info: dict[str, object] = {}

    def check(self, name: str, fn, *args, **kwargs):
        """Run ``fn``; a falsy result (or a ``(False, why)`` pair) or an exception fails ``name``."""
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 — the smoke test reports every failure
            self.checks[name] = False
            self.errors[name] = f"{type(exc).__name__}: {exc}"[:600]
            if os.environ.get("GPU_SMOKE_TRACEBACK"):
                traceback.print_exc()
            return None
        why = None
        if isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], bool):
            result, why = result
        self.checks[name] = bool(result) if result is not None else True
        if not self.checks[name]:
            self.errors[name] = str(why or "check returned False")[:600]
        return result

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def timed(self, name: str, fn, *args, **kwargs):
        self.sync()
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.sync()
            self.timings[name] = round(time.perf_counter() - t0, 4)


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version(), "torch": torch.__version__,
                                  "cuda": torch.version.cuda}
    from importlib import metadata
    for dist in ("transformers", "peft", "accelerate", "safetensors", "tokenizers", "numpy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def snapshot(model: torch.nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """name → (the tensor object, a host copy of its values): parameters and buffers."""
    items = [*model.named_parameters(), *(("buffer:" + n, b) for n, b in model.named_buffers())]
    return {n: (t, t.detach().to("cpu", copy=True)) for n, t in items}


def same_as(model: torch.nn.Module, snap) -> tuple[bool, str]:
    """Every parameter and buffer is the very same object with bit-identical values."""
    now = {**dict(model.named_parameters()), **{"buffer:" + n: b for n, b in model.named_buffers()}}
    if now.keys() != snap.keys():
        return False, f"names differ: {sorted(set(now) ^ set(snap))[:5]}"
    moved = [n for n, (obj, _) in snap.items() if now[n] is not obj and not n.startswith("buffer:")]
    changed = [n for n, (_, host) in snap.items()
               if now[n].dtype != host.dtype or not torch.equal(now[n].detach().cpu(), host)]
    if moved or changed:
        return False, f"other objects: {moved[:3]}; changed values: {changed[:3]} ({len(changed)} in all)"
    return True, ""


def site_weights(model, sites) -> dict[str, torch.Tensor]:
    return {s.name: model.get_submodule(s.path).weight.detach().to("cpu", copy=True) for s in sites}


# --------------------------------------------------------------------------------------------- model
def build_model(args, device: torch.device, dtype: torch.dtype):
    """(model, tokenizer, description) — tiny qwen2, a Qwen2.5-0.5B-shaped random model, or ``--model``."""
    from affectlocus.tasks.prompts import char_tokenizer
    if args.model:
        import transformers
        path = Path(args.model).expanduser()
        try:
            model = transformers.AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
        except TypeError:  # transformers < 4.56 spells it torch_dtype
            model = transformers.AutoModelForCausalLM.from_pretrained(str(path), torch_dtype=dtype)
        model = model.to(device).eval()
        tok = None
        if any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.json")):
            tok = transformers.AutoTokenizer.from_pretrained(str(path))
            if tok.pad_token is None:
                tok.pad_token = tok.eos_token
        return model, tok or char_tokenizer(), f"checkpoint {path}"
    if args.cpu_tiny:
        from affectlocus.models import tiny_model
        model = tiny_model("qwen2", seed=0, tie_word_embeddings=True, max_position_embeddings=2048)
        return model.to(device=device, dtype=dtype).eval(), char_tokenizer(), "tiny qwen2 (random, seed 0)"
    from transformers import Qwen2Config, Qwen2ForCausalLM
    config = Qwen2Config(**QWEN05)
    torch.manual_seed(0)
    with torch.device(device):  # initialised on the GPU (fp32, ≈ 2 GB), then cast once
        model = Qwen2ForCausalLM(config)
    return model.to(dtype).eval(), char_tokenizer(), "Qwen2.5-0.5B-shaped Qwen2ForCausalLM (random, seed 0)"


def write_donor(model, sites, path: Path, device: torch.device) -> None:
    """Every selected weight plus seeded noise of 10 % of its std, in the model's dtype (bf16)."""
    from safetensors.torch import save_file
    gen = torch.Generator(device=device).manual_seed(1)
    tensors = {}
    with torch.no_grad():
        for s in sites:
            w = model.get_submodule(s.path).weight.detach()
            noise = torch.randn(w.shape, generator=gen, device=device, dtype=torch.float32)
            tensors[f"model.{s.weight_key}"] = (w.float() + 0.1 * w.float().std() * noise).to(w.dtype).cpu()
    save_file(tensors, str(path))


def toy_task():
    from affectlocus.tasks.datasets import Example, Task
    ex = [Example(t, lab, f"smoke-{i:02d}") for i, (t, lab) in enumerate(ROWS)]
    return Task("smoke-sentiment", LABELS, "en", ex[:6], ex[6:], "tiny built-in sentiment task", "gpu_smoke", 0)


# ------------------------------------------------------------------------------------------ the run
def run(args) -> dict:
    device = torch.device("cpu" if args.cpu_tiny else "cuda")
    dtype = torch.bfloat16
    if args.cpu_tiny:
        torch.set_num_threads(1)  # tiny models: one thread is fastest (OpenMP spin-waits otherwise)
    sm = Smoke(device)
    t_start = time.perf_counter()
    import inspect

    import affectlocus as al
    from affectlocus.tasks.prompts import PromptStyle

    sm.info["device_name"] = (torch.cuda.get_device_name(device) if device.type == "cuda"
                              else platform.processor() or platform.machine())
    has_inplace = "inplace" in inspect.signature(al.intervene).parameters

    def intervene(model, *ivs, inplace=False):
        if inplace is not False and not has_inplace:
            raise RuntimeError("al.intervene has no inplace= parameter (in-place swaps not available)")
        return al.intervene(model, *ivs, inplace=inplace) if has_inplace else al.intervene(model, *ivs)

    model, tok = None, None

    def _build():
        nonlocal model, tok
        model, tok, what = build_model(args, device, dtype)
        sm.info["model"] = what
        return next(model.parameters()).device.type == device.type and next(model.parameters()).dtype == dtype
    sm.timed("build_model", sm.check, "build_model", _build)
    if model is None:
        return report(sm, t_start, has_inplace)
    n_layers = al.find_decoder(model).num_layers
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    sm.info.update(params=sum(p.numel() for p in model.parameters()), param_mib=round(param_bytes / 2**20, 1),
                   layers=n_layers, tokenizer=type(tok).__name__, tokenizer_size=len(tok),
                   threads=torch.get_num_threads())
    vocab = model.get_input_embeddings().weight.shape[0]
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(6, min(len(tok), vocab), (2, 32), generator=gen).to(device)

    def forward():
        with torch.no_grad():
            return model(ids).logits[:, -4:].float()

    base_logits = forward()
    sm.check("base_forward_finite", lambda: bool(torch.isfinite(base_logits).all()))

    tmp = Path(tempfile.mkdtemp(prefix="gpu_smoke_"))
    adapter_dir = tmp / "adapter"
    donor_path = tmp / "donor.safetensors"
    pre_train = snapshot(model)

    # -- gate-only LoRA training ------------------------------------------------------------------
    def _train():
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        pairs = [(t, lab) for t, lab in ROWS] * 2
        res = al.train(model, tok, pairs, out=adapter_dir, modules="gate", r=8, alpha=16, dropout=0.0,
                       steps=args.steps, batch_size=4, lr=1e-3, warmup=0, bf16=True, max_length=128,
                       save_every=0, progress=False, overwrite=True)
        sm.info["train_losses"] = [round(x, 4) for x in res.losses]
        sm.info["train_trainable"] = res.trainable
        if device.type == "cuda":
            sm.info["train_peak_gpu_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        base = res.restore()
        if base is not model:
            return False, f"restore() gave another object ({type(base).__name__})"
        model.eval()
        ok = (adapter_dir / "adapter_model.safetensors").is_file() and all(map(torch.isfinite, map(torch.tensor,
                                                                                                   res.losses)))
        return ok, f"adapter saved: {(adapter_dir / 'adapter_model.safetensors').is_file()}, losses {res.losses}"
    sm.timed("train", sm.check, "train_gate_lora", _train)
    sm.check("train_leaves_base_bit_identical", same_as, model, pre_train)
    sm.check("train_no_lora_modules_left", lambda: not any("lora" in n.lower() for n, _ in model.named_modules()))
    del pre_train
    have_adapter = (adapter_dir / "adapter_config.json").is_file()

    all_sites = al.select(model, "all")
    gate_sites = al.select(model, "gate")
    sm.timed("write_donor", sm.check, "write_safetensors_donor", write_donor, model, all_sites, donor_path, device)
    snap = snapshot(model)
    sm.check("clean_before", al.assert_clean, model)

    # -- interventions: every kind × donor × policy, bit-exact restore -----------------------------
    band = f"{n_layers // 3}:{2 * n_layers // 3}"
    donors = {"safetensors": str(donor_path)}
    if have_adapter:
        donors["adapter"] = str(adapter_dir)
    else:
        sm.checks["adapter_available"] = False
        sm.errors["adapter_available"] = "training produced no adapter; adapter interventions skipped"
    kinds = {
        "graft": lambda d: [al.graft(d, modules="gate")],
        "interpolate": lambda d: [al.interpolate(d, 0.5, modules="gate")],
        "zero": lambda d: [al.graft(d, modules="gate"), al.zero(modules="gate", layers=band)],
        "noise": lambda d: [al.graft(d, modules="gate"), al.noise(relative=0.1, modules="gate", seed=0)],
        "noise_match": lambda d: [al.noise(match=d, modules="gate", seed=0)],
        "neuron_mask": lambda d: [al.graft(d, modules="gate"), al.neuron_mask(list(range(16)), modules="gate")],
    }
    policies = {"rebind": False, "inplace": True}
    t_iv = time.perf_counter()
    for dname, donor in donors.items():
        src = al.open_source(donor)
        for kind, make in kinds.items():
            inside: dict[str, dict] = {}
            for pname, policy in policies.items():
                name = f"{kind}.{dname}.{pname}"

                def _one(make=make, policy=policy, pname=pname):
                    with intervene(model, *make(src), inplace=policy):
                        logits = forward()
                        weights = site_weights(model, gate_sites)
                    inside[pname] = {"logits": logits.cpu(), "weights": weights}
                    if not torch.isfinite(logits).all():
                        return False, "non-finite logits inside the context"
                    if all(torch.equal(w, snap[f"{s.path}.weight"][1]) for s, w in zip(gate_sites, weights.values())):
                        return False, "no selected weight changed inside the context"
                    ok, why = same_as(model, snap)
                    if not ok:
                        return False, f"not restored after exit: {why}"
                    al.assert_clean(model)
                    return True, ""
                sm.check(name, _one)
                if not sm.checks[name]:
                    al.detach_all(model)  # keep the next checks meaningful
            if len(inside) == 2:
                def _equal(inside=inside):
                    a, b = inside["rebind"], inside["inplace"]
                    bad = [n for n in a["weights"] if not torch.equal(a["weights"][n], b["weights"][n])]
                    diff = float((a["logits"] - b["logits"]).abs().max())
                    sm.info.setdefault("inplace_vs_rebind_max_logit_diff", {})[f"{kind}.{dname}"] = diff
                    return not bad, f"in-place weights differ from rebind at {bad[:3]} ({len(bad)} sites)"
                sm.check(f"{kind}.{dname}.inplace_equals_rebind", _equal)
        src.close()
    sm.timings["interventions_total"] = round(time.perf_counter() - t_iv, 3)

    # stacked handles detached out of order (LIFO unwinding), and an exception mid-context
    def _lifo():
        import warnings
        first = al.attach(model, al.graft(str(donor_path), modules="gate"), inplace=True) if has_inplace \
            else al.attach(model, al.graft(str(donor_path), modules="gate"))
        second = al.attach(model, al.zero(modules="gate", layers=band))
        third = al.attach(model, al.noise(relative=0.1, modules="gate"), inplace=True) if has_inplace \
            else al.attach(model, al.noise(relative=0.1, modules="gate"))
        forward()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            first.detach()  # detaches third and second first
        ok = not second.attached and not third.attached
        al.assert_clean(model)
        restored, why = same_as(model, snap)
        return ok and restored, why or "newer handles still attached"
    sm.check("stack_lifo_restore", _lifo)

    def _exception():
        class Boom(Exception):
            pass
        try:
            with intervene(model, al.graft(str(donor_path), modules="all"), inplace=True if has_inplace else False):
                forward()
                raise Boom
        except Boom:
            pass
        al.assert_clean(model)
        return same_as(model, snap)
    sm.check("exception_mid_context_restore", _exception)

    # -- diff -------------------------------------------------------------------------------------
    def _diff_adapter():
        table = al.diff(model, str(adapter_dir), modules="gate", progress=False)
        l2 = [r.values.get("l2", 0.0) for r in table.results]
        sm.info["diff_adapter_methods"] = sorted({r.method for r in table.results})
        sm.info["diff_adapter_l2_mean"] = statistics.fmean(l2) if l2 else None
        return len(table) == n_layers and all(x > 0 for x in l2), f"{len(table)} rows, l2 {l2[:3]}"
    if have_adapter:
        sm.timed("diff_adapter", sm.check, "diff_adapter", _diff_adapter)

    def _diff_donor():
        table = al.diff(model, str(donor_path), modules="all", progress=False)
        rel = [r.values.get("relative", 0.0) for r in table.results]
        sm.info["diff_donor_relative_mean"] = statistics.fmean(rel) if rel else None
        return (len(table) == 7 * n_layers and all(0.05 < x < 0.2 for x in rel),
                f"{len(table)} rows, relative {rel[:3]} (expected ≈ 0.1)")
    sm.timed("diff_safetensors", sm.check, "diff_safetensors", _diff_donor)
    sm.check("clean_after_diff", lambda: (al.assert_clean(model), same_as(model, snap))[1])

    # -- evaluation ---------------------------------------------------------------------------------
    task = toy_task()
    style = PromptStyle(shots_per_label=1)

    def _evaluate(label, stack):
        def go():
            if stack is None:
                scores = al.evaluate(model, tok, [task], batch_size=8, style=style, n_boot=100, progress=False)
            else:
                with intervene(model, *stack, inplace=True if has_inplace else False):
                    scores = al.evaluate(model, tok, [task], batch_size=8, style=style, n_boot=100, progress=False)
            value = float(scores[task.name].score)
            sm.info[f"eval_{label}_balanced_accuracy"] = round(value, 4)
            return 0.0 <= value <= 1.0 and len(scores.records[task.name]) == len(task.test)
        return go
    sm.timed("evaluate_base", sm.check, "evaluate_base", _evaluate("base", None))
    if have_adapter:
        sm.timed("evaluate_grafted", sm.check, "evaluate_grafted_adapter",
                 _evaluate("grafted", [al.graft(str(adapter_dir), modules="gate")]))
    sm.check("clean_after_evaluate", lambda: (al.assert_clean(model), same_as(model, snap))[1])

    # -- memory and time: graft(all modules) rebind vs in-place ------------------------------------
    selected_bytes = sum(s.numel for s in all_sites) * torch.finfo(dtype).bits // 8
    sm.info["selected_mib"] = round(selected_bytes / 2**20, 1)
    mem: dict[str, list[float]] = {"rebind": [], "inplace": []}
    times: dict[str, list[float]] = {"rebind": [], "inplace": []}
    src_all = al.open_source(str(donor_path))

    def _swap(policy):
        with intervene(model, al.graft(src_all, modules="all"), inplace=policy):
            sm.sync()

    def _measure():
        for p in policies.values():  # warm-up (page cache of the donor, allocator)
            _swap(p)
        for _ in range(args.repeats):
            for pname, policy in policies.items():
                if device.type == "cuda":
                    sm.sync()
                    torch.cuda.reset_peak_memory_stats(device)
                    before = torch.cuda.memory_allocated(device)
                sm.sync()
                t0 = time.perf_counter()
                _swap(policy)
                sm.sync()
                times[pname].append(time.perf_counter() - t0)
                if device.type == "cuda":
                    mem[pname].append((torch.cuda.max_memory_allocated(device) - before) / 2**20)
        al.assert_clean(model)
        return same_as(model, snap)
    sm.check("graft_all_measure", _measure)
    src_all.close()
    swap = {}
    for pname in policies:
        swap[pname] = {"enter_exit_s": round(statistics.median(times[pname]), 4) if times[pname] else None,
                       "peak_gpu_extra_mib": round(max(mem[pname]), 1) if mem[pname] else "n/a"}
    if device.type == "cuda" and mem["rebind"] and mem["inplace"]:
        swap["inplace_peak_over_selected"] = round(max(mem["inplace"]) / sm.info["selected_mib"], 4)
        swap["rebind_peak_over_selected"] = round(max(mem["rebind"]) / sm.info["selected_mib"], 4)
        sm.check("inplace_peak_below_rebind", lambda: max(mem["inplace"]) < max(mem["rebind"]))
    if times["rebind"] and times["inplace"]:
        swap["inplace_over_rebind_time"] = round(statistics.median(times["inplace"])
                                                 / statistics.median(times["rebind"]), 3)
    sm.info["graft_all"] = swap
    if device.type == "cuda":
        sm.info["peak_memory"] = {"model_mib": sm.info["param_mib"], "selected_mib": sm.info["selected_mib"],
                                  "train_peak_gpu_mib": sm.info.get("train_peak_gpu_mib"),
                                  "graft_all_rebind_extra_mib": swap["rebind"]["peak_gpu_extra_mib"],
                                  "graft_all_inplace_extra_mib": swap["inplace"]["peak_gpu_extra_mib"]}

    sm.check("no_optional_imports", lambda: (not [m for m in OPTIONAL if sys.modules.get(m) is not None],
                                             f"imported: {[m for m in OPTIONAL if sys.modules.get(m) is not None]}"))
    import shutil
    shutil.rmtree(tmp, ignore_errors=True)
    return report(sm, t_start, has_inplace)


def report(sm: Smoke, t_start: float, has_inplace: bool) -> dict:
    failed = [k for k, v in sm.checks.items() if not v]
    return {"gpu_smoke": "pass" if not failed else "fail", "device": str(sm.device), "inplace_api": has_inplace,
            "failed": failed, "checks": sm.checks, "errors": sm.errors, "timings_s": sm.timings,
            **{k: v for k, v in sm.info.items() if k != "peak_memory"},
            "peak_memory": sm.info.get("peak_memory", "n/a"), "versions": versions(),
            "total_s": round(time.perf_counter() - t_start, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="a local HF checkpoint folder (default: a random Qwen2.5-0.5B-shaped model)")
    parser.add_argument("--cpu-tiny", action="store_true", help="run the same logic on CPU with a tiny model")
    parser.add_argument("--out", help="also write the JSON line to this file")
    parser.add_argument("--steps", type=int, default=6, help="LoRA training steps (default 6)")
    parser.add_argument("--repeats", type=int, default=3, help="timed graft(all) enter+exit per policy")
    args = parser.parse_args(argv)
    if not args.cpu_tiny and not torch.cuda.is_available():
        print(f"gpu_smoke: no CUDA device (torch {torch.__version__}, cuda available: False) — nothing to do")
        return 0
    result = run(args)
    line = json.dumps(result, sort_keys=False, default=str)
    print(line, flush=True)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            fh.write(line + "\n")
        os.replace(tmp, out)
    return 0 if result["gpu_smoke"] == "pass" else 1


if __name__ == "__main__":
    sys.exit(main())
