"""Benchmark interventions on the embedded model against their peers, like for like, in one run.

1. forward with a weight graft active / plain forward                                  (goal ≤ 1.02)
2. enter+exit of grafting gate_proj in every layer from a safetensors file / reading the same
   tensors with ``safe_open`` and touching every value once (the least any use of them costs)  (≤ 1.2)
3. activation zero and patch of gate_proj outputs in layers 10–19: ours / nnsight / plain torch
   forward hooks, every arm computing logits at the last position only (``logits_to_keep=1``),
   same batch, dtype and threads; goal: ours not measurably slower than nnsight (the 95 % bootstrap
   interval of the per-round ours/nnsight ratio reaches ≤ 1).

Run: ``.venv/bin/python benchmarks/bench_intervene.py [--threads N] [--repeats R]`` → prints every
figure with its goal and verdict, saves results/intervene.json (stamped: commit, args, load).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

import affectlocus as al  # noqa: E402
from _common import figure, goal, interleaved, interleaved_samples, paired_ratio, print_figures, save_json  # noqa: E402,E501

BAND = "10:20"


def forward_under_graft(model, ids, ckpt: Path, repeats: int) -> dict[str, float]:
    """Median plain and grafted forward times, alternating every repeat (the graft stays attached
    while its forward is timed; attach/detach are outside the timing)."""
    def forward():
        with torch.no_grad():
            model(ids, logits_to_keep=1)
    forward()
    plain, grafted = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        forward()
        plain.append(time.perf_counter() - t0)
        with al.intervene(model, al.graft(ckpt, modules="gate")):
            t0 = time.perf_counter()
            forward()
            grafted.append(time.perf_counter() - t0)
    med = sorted(plain)[len(plain) // 2], sorted(grafted)[len(grafted) // 2]
    return {"plain": med[0], "grafted": med[1]}


def safetensors_graft(model, ckpt: Path, keys: list[str], repeats: int) -> dict[str, float]:
    def touched_read():  # the least any use of the weights costs: every value read once
        with safe_open(str(ckpt), "pt") as fh:
            for k in keys:
                fh.get_tensor(k).sum()

    def enter_exit():
        with al.intervene(model, al.graft(ckpt, modules="gate")):
            pass
    return interleaved({"touched_read": touched_read, "ours": enter_exit}, repeats=repeats, warmup=2)


def activation_arms(model, ids, repeats: int) -> dict[str, list[float]]:
    """zero / patch of gate outputs in layers 10–19: plain, ours, nnsight, torch hooks."""
    import nnsight
    layers = al.sites.parse_layers(BAND, al.find_decoder(model).num_layers)
    gates = [model.model.layers[i].mlp.gate_proj for i in layers]
    recording = al.record(modules="gate", layers=BAND, to_cpu=False)
    with torch.no_grad(), al.intervene(model, recording):
        model(ids, logits_to_keep=1)
    saved = {i: recording.outputs[f"layers.{i}.gate"][0] for i in layers}
    traced = nnsight.NNsight(model)

    def plain():
        with torch.no_grad():
            model(ids, logits_to_keep=1)

    def ours(intervention):
        def run():
            with torch.no_grad(), al.intervene(model, intervention):
                model(ids, logits_to_keep=1)
        return run

    def torch_hooks(make):
        def run():
            handles = [g.register_forward_hook(make(i)) for i, g in zip(layers, gates)]
            try:
                with torch.no_grad():
                    model(ids, logits_to_keep=1)
            finally:
                for h in handles:
                    h.remove()
        return run

    def nnsight_run(patch: bool):
        def run():
            with torch.no_grad(), traced.trace(ids, logits_to_keep=1):
                for i in layers:
                    if patch:
                        traced.model.layers[i].mlp.gate_proj.output[:] = saved[i]
                    else:
                        traced.model.layers[i].mlp.gate_proj.output[:] = 0
                traced.output.logits.save()
        return run

    arms = {
        "plain": plain,
        "ours_zero": ours(al.zero_output(modules="gate", layers=BAND)),
        "ours_patch": ours(al.patch(recording, modules="gate", layers=BAND)),
        "torch_zero": torch_hooks(lambda i: (lambda m, a, out: torch.zeros_like(out))),
        "torch_patch": torch_hooks(lambda i: (lambda m, a, out: saved[i])),
        "nnsight_zero": nnsight_run(False),
        "nnsight_patch": nnsight_run(True),
    }
    t = interleaved_samples(arms, repeats=repeats, warmup=1)
    al.assert_clean(model)
    return t


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--repeats", type=int, default=15, help="timed rounds per comparison")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, _ = al.load_model("smollm2-135m")
    ids = torch.randint(100, 20000, (8, 64), generator=torch.Generator().manual_seed(0))
    gate_sites = al.select(model, "gate")
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "tuned.safetensors"
        gen = torch.Generator().manual_seed(1)
        save_file({f"model.{s.weight_key}": (model.get_submodule(s.path).weight.detach()
                   + 0.01 * torch.randn(s.shape, generator=gen)).contiguous() for s in gate_sites}, ckpt)
        keys = [f"model.{s.weight_key}" for s in gate_sites]
        fwd = forward_under_graft(model, ids, ckpt, args.repeats)
        st = safetensors_graft(model, ckpt, keys, args.repeats)
    samples = activation_arms(model, ids, args.repeats)
    act = {k: sorted(v)[len(v) // 2] for k, v in samples.items()}
    over = {k: v / act["plain"] for k, v in act.items()}
    # ours vs nnsight per round (paired): "not slower" = the 95 % interval of the median ratio reaches ≤ 1
    vs = {kind: paired_ratio(samples[f"ours_{kind}"], samples[f"nnsight_{kind}"]) for kind in ("zero", "patch")}
    figures = [
        goal("forward_grafted_over_plain", fwd["grafted"] / fwd["plain"], "<=", 1.02,
             "forward (8×64, logits_to_keep=1) with graft(gate, all layers) attached / plain forward"),
        goal("safetensors_graft_over_touched_read", st["ours"] / st["touched_read"], "<=", 1.2,
             "enter+exit of graft(gate) from a .safetensors file / safe_open + get_tensor + one pass over "
             "the same 30 tensors"),
        goal("hook_zero_ours_over_nnsight_ci_low", vs["zero"][1], "<=", 1.0,
             f"ours zero_output / nnsight zero, gate outputs of layers 10–19, logits_to_keep=1 in every arm: "
             f"lower end of the 95 % interval of the per-round median ratio {vs['zero'][0]:.4f} "
             f"[{vs['zero'][1]:.4f}, {vs['zero'][2]:.4f}] (met = not measurably slower)"),
        goal("hook_patch_ours_over_nnsight_ci_low", vs["patch"][1], "<=", 1.0,
             f"ours al.patch / nnsight patch (same recorded outputs): median ratio {vs['patch'][0]:.4f} "
             f"[{vs['patch'][1]:.4f}, {vs['patch'][2]:.4f}]"),
        figure("ours_zero_over_plain", over["ours_zero"], "our zero_output forward / plain forward"),
        figure("nnsight_zero_over_plain", over["nnsight_zero"], "nnsight zero forward / plain forward"),
        figure("torch_hooks_zero_over_plain", over["torch_zero"], "plain torch forward hooks / plain forward"),
        figure("ours_patch_over_plain", over["ours_patch"], "our al.patch forward / plain forward"),
        figure("nnsight_patch_over_plain", over["nnsight_patch"], "nnsight patch forward / plain forward"),
        figure("torch_hooks_patch_over_plain", over["torch_patch"], "torch hooks patch / plain forward"),
        figure("forward_seconds_8x64", fwd["plain"], "plain forward, 8×64 tokens", "s"),
        figure("safetensors_graft_seconds", st["ours"], "graft(gate) enter+exit", "s"),
    ]
    print_figures(figures)
    payload = {"args": vars(args), "seconds": {"forward": fwd, "safetensors": st, "activation": act,
                                               "activation_rounds": samples},
               "ours_over_nnsight": {k: {"median": v[0], "ci95": [v[1], v[2]]} for k, v in vs.items()}}
    print("saved", save_json("intervene", payload, figures, peers=("nnsight",)))
    return payload


if __name__ == "__main__":
    main()
