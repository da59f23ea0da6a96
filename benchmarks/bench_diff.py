"""Benchmark the streaming diff (ratios measured in one run).

1. streaming ``al.diff`` vs the naive way (``from_pretrained`` both, loop over the state dicts with the
   same statistics) on the embedded model's checkpoint pair and on a synthetic ≥ 1B-parameter
   Llama-shaped bf16 pair: wall time (goal ≤ 1.0) and peak RSS (goal ≤ 0.25). Each run is a fresh
   subprocess reporting its own peak resident set (``VmHWM`` from /proc; ``ru_maxrss`` is kept in
   the JSON for reference but inherits the parent's size through fork); runs alternate.
2. factor-space vs dense (``get_delta_weight``-style s·B@A, then its norm) LoRA norms on Qwen2.5-7B
   shapes (28 layers × 7 modules, r = 16, random factors): goal ≥ 100× faster, rel. error ≤ 1e-5.

Run: ``.venv/bin/python benchmarks/bench_diff.py [--quick]`` → prints ratios, saves results/diff.json.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

QWEN7B = dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
              num_key_value_heads=4, vocab_size=152064)
# TinyLlama-1.1B shapes: 22 layers × (hidden 2048, intermediate 5632), untied 32k vocabulary → 1.10 B
SYNTH_1B = dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                num_key_value_heads=4, vocab_size=32000, tie_word_embeddings=False)


# ---- workers (run in a fresh process each) ---------------------------------------------------------
def _worker(method: str, base: str, tuned: str) -> None:
    import transformers  # noqa: F401 - both methods pay the same imports before the clock starts
    from transformers import AutoModelForCausalLM

    import affectlocus as al
    from affectlocus.diff import diff
    from affectlocus.diff.stats import StatsConfig, tensor_stats
    idle = _hwm_mb()
    t0 = time.perf_counter()
    if method == "stream":
        table = diff(base, tuned, progress=False)
        l2 = sum(r.values["l2"] ** 2 for r in table.results)
    else:
        a = AutoModelForCausalLM.from_pretrained(base, dtype="auto")
        b = AutoModelForCausalLM.from_pretrained(tuned, dtype="auto")
        sa, sb = a.state_dict(), b.state_dict()
        l2 = 0.0
        for site in al.select(a, "all"):
            key = f"{site.path}.weight"
            values = tensor_stats(sa[key], sb[key], site.layer, site.module, StatsConfig())[0]
            l2 += values["l2"] ** 2
    wall = time.perf_counter() - t0
    print(json.dumps({"wall_s": wall, "peak_rss_mb": _hwm_mb(), "idle_rss_mb": idle, "l2_total": l2 ** 0.5,
                      "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def _hwm_mb() -> float:
    """Peak resident set of this process image (VmHWM). Unlike ``ru_maxrss`` it does not inherit the
    parent's resident size from fork + exec, so each worker's number is its own."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _run(method: str, base: Path, tuned: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--worker", method, str(base), str(tuned)],
                         capture_output=True, text=True, check=True,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def compare_methods(base: Path, tuned: Path, repeats: int) -> dict:
    """Alternate stream/naive runs (after one untimed run each, so both read from a warm page
    cache); medians of wall time and peak RSS, and their ratios."""
    for method in ("stream", "naive"):
        _run(method, base, tuned)
    runs: dict[str, list[dict]] = {"stream": [], "naive": []}
    for i in range(repeats):
        for method in (("stream", "naive") if i % 2 == 0 else ("naive", "stream")):
            runs[method].append(_run(method, base, tuned))
    for m, rs in runs.items():
        each = ", ".join(f"{r['wall_s']:.2f} s / {r['peak_rss_mb']:.0f} MB" for r in rs)
        print(f"  {m}: {each}", flush=True)
    med = {m: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for m, rs in runs.items()}
    s, n = med["stream"], med["naive"]
    assert abs(s["l2_total"] - n["l2_total"]) <= 1e-5 * n["l2_total"], (s, n)
    return {"stream": s, "naive": n, "repeats": repeats,
            "wall_ratio": s["wall_s"] / n["wall_s"],
            "peak_rss_ratio": s["peak_rss_mb"] / n["peak_rss_mb"],
            "peak_rss_above_idle_ratio": (s["peak_rss_mb"] - s["idle_rss_mb"])
            / max(n["peak_rss_mb"] - n["idle_rss_mb"], 1e-9)}


# ---- checkpoint pairs -------------------------------------------------------------------------------
def embedded_pair(tmp: Path) -> tuple[Path, Path, int]:
    """The embedded model saved as base; a copy with perturbed gate (all layers) and o (layers 10–19)."""
    import affectlocus as al
    model, _ = al.load_model("smollm2-135m")
    model.save_pretrained(tmp / "base")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for site in al.select(model, "gate") + al.select(model, "o", "10:20"):
            w = model.get_submodule(site.path).weight
            w.add_(0.01 * w.abs().mean() * torch.randn(w.shape, generator=gen))
    model.save_pretrained(tmp / "tuned")
    return tmp / "base", tmp / "tuned", sum(p.numel() for p in model.parameters())


def synthetic_pair(tmp: Path, dims: dict) -> tuple[Path, Path, int]:
    """A random bf16 Llama-shaped checkpoint pair (sharded by layer groups); tuned = base + noise."""
    from safetensors.torch import save_file
    from transformers import LlamaConfig
    cfg = LlamaConfig(**dims, dtype="bfloat16")
    h, i = cfg.hidden_size, cfg.intermediate_size
    kv = cfg.num_key_value_heads * (h // cfg.num_attention_heads)
    shapes = {"self_attn.q_proj": (h, h), "self_attn.k_proj": (kv, h), "self_attn.v_proj": (kv, h),
              "self_attn.o_proj": (h, h), "mlp.gate_proj": (i, h), "mlp.up_proj": (i, h),
              "mlp.down_proj": (h, i)}
    gen = torch.Generator().manual_seed(0)
    total, maps = 0, {"base": {}, "tuned": {}}
    for name in ("base", "tuned"):
        (tmp / name).mkdir()
        cfg.save_pretrained(tmp / name)
    groups = [list(range(s, min(s + 4, cfg.num_hidden_layers))) for s in range(0, cfg.num_hidden_layers, 4)]
    for g, layers in enumerate([[]] + groups):
        base, tuned = {}, {}
        if g == 0:
            for key, shape in [("model.embed_tokens.weight", (cfg.vocab_size, h)),
                               ("lm_head.weight", (cfg.vocab_size, h))]:
                base[key] = tuned[key] = (0.02 * torch.randn(shape, generator=gen)).bfloat16()
            base["model.norm.weight"] = tuned["model.norm.weight"] = torch.ones(h, dtype=torch.bfloat16)
        for layer in layers:
            for norm in ("input_layernorm", "post_attention_layernorm"):
                base[f"model.layers.{layer}.{norm}.weight"] = torch.ones(h, dtype=torch.bfloat16)
                tuned[f"model.layers.{layer}.{norm}.weight"] = base[f"model.layers.{layer}.{norm}.weight"]
            for rel, shape in shapes.items():
                key = f"model.layers.{layer}.{rel}.weight"
                w = 0.02 * torch.randn(shape, generator=gen)
                base[key] = w.bfloat16()
                noise = torch.randn(shape, generator=gen)
                tuned[key] = w.add_(noise, alpha=2e-4 * (1 + layer % 3)).bfloat16()
                del w
        shard = f"model-{g:05d}-of-{len(groups) + 1:05d}.safetensors"
        for name, state in (("base", base), ("tuned", tuned)):
            save_file(state, tmp / name / shard, metadata={"format": "pt"})
            maps[name].update(dict.fromkeys(state, shard))
        total += sum(t.numel() for t in base.values())
        del base, tuned
    for name in ("base", "tuned"):
        (tmp / name / "model.safetensors.index.json").write_text(json.dumps(
            {"metadata": {"total_size": 2 * total}, "weight_map": maps[name]}))
    return tmp / "base", tmp / "tuned", total


# ---- factor space vs dense --------------------------------------------------------------------------
def factor_vs_dense(rank: int = 16, alpha: float = 32.0) -> dict:
    """Norms of 28 × 7 random LoRA updates on Qwen2.5-7B shapes: factor space vs dense products."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    import affectlocus as al
    from affectlocus.diff.stats import factor_norm2
    from affectlocus.sources import LoraSource
    with torch.device("meta"):
        skeleton = Qwen2ForCausalLM(Qwen2Config(**QWEN7B))
    sites = al.select(skeleton, "all")
    gen = torch.Generator().manual_seed(0)
    state = {}
    for s in sites:
        prefix = f"base_model.model.model.layers.{s.layer}.{s.rel_path}"
        state[f"{prefix}.lora_A.weight"] = torch.randn(rank, s.shape[1], generator=gen) / s.shape[1] ** 0.5
        state[f"{prefix}.lora_B.weight"] = 0.01 * torch.randn(s.shape[0], rank, generator=gen)
    src = LoraSource(state, alpha=alpha, rank=rank)
    factors = [src.factors(s) for s in sites]

    from _common import interleaved

    from affectlocus.diff import diff
    out: dict = {}

    def factor_norms():
        out["fast"] = [factor_norm2(f) ** 0.5 for f in factors]

    def whole_diff():
        out["table"] = diff(skeleton, src, metrics="l2,rms", progress=False)
    times = interleaved({"factor": factor_norms, "diff": whole_diff}, repeats=5, warmup=1)
    t_factor, t_diff, fast, table = times["factor"], times["diff"], out["fast"], out["table"]
    float(torch.linalg.vector_norm(factors[4].scale * (factors[4].B @ factors[4].A)))  # warm-up
    t0 = time.perf_counter()
    dense = [float(torch.linalg.vector_norm(f.scale * (f.B @ f.A))) for f in factors]  # get_delta_weight
    t_dense = time.perf_counter() - t0
    exact = [float(f.dense().double().square().sum().sqrt()) for f in factors[:7]]  # fp64 reference
    err = max(abs(a - b) / b for a, b in zip(fast, exact))
    err_dense = max(abs(a - b) / b for a, b in zip(dense, exact))
    err_table = max(abs(r.values["l2"] - a) / a for r, a in zip(table.results, fast))
    return {"sites": len(sites), "rank": rank, "factor_s": t_factor, "diff_end_to_end_s": t_diff,
            "dense_s": t_dense, "speedup": t_dense / t_factor, "speedup_end_to_end": t_dense / t_diff,
            "max_rel_err_factor_vs_fp64": err, "max_rel_err_fp32_dense_vs_fp64": err_dense,
            "max_rel_err_table_vs_factor": err_table}


def main(quick: bool = False) -> dict:
    from _common import figure, goal, print_figures, save_json
    results: dict = {"args": {"quick": quick}}
    with tempfile.TemporaryDirectory() as tmp:
        base, tuned, n = embedded_pair(Path(tmp))
        results["embedded"] = {"params": n, **compare_methods(base, tuned, repeats=3)}
    print(_line("embedded 135M fp32", results["embedded"]), flush=True)
    if not quick:
        with tempfile.TemporaryDirectory() as tmp:
            base, tuned, n = synthetic_pair(Path(tmp), SYNTH_1B)
            timing = compare_methods(base, tuned, repeats=3)
            results["synthetic_1b"] = {"params": n, "dtype": "bfloat16", **timing}
        print(_line(f"synthetic {n / 1e9:.2f}B bf16", results["synthetic_1b"]), flush=True)
    fd = factor_vs_dense()
    results["factor_vs_dense"] = fd
    print(f"factor-space vs dense on Qwen2.5-7B shapes ({fd['sites']} sites, r={fd['rank']}): "
          f"{fd['speedup']:.0f}× faster ({fd['factor_s'] * 1e3:.1f} ms vs {fd['dense_s']:.2f} s; "
          f"whole diff() {fd['speedup_end_to_end']:.0f}×); max rel. error vs fp64 "
          f"{fd['max_rel_err_factor_vs_fp64']:.1e} (fp32 dense: {fd['max_rel_err_fp32_dense_vs_fp64']:.1e})")
    figures = []
    for pair in ("embedded", "synthetic_1b"):
        if pair in results:
            r = results[pair]
            figures += [goal(f"diff_{pair}_wall_over_naive", r["wall_ratio"], "<=", 1.0,
                             f"streaming al.diff / from_pretrained both + state-dict loop, {pair} pair"),
                        goal(f"diff_{pair}_peak_rss_over_naive", r["peak_rss_ratio"], "<=", 0.25,
                             f"peak RSS of the same two runs, {pair} pair")]
    figures += [goal("lora_norm_factor_speedup", fd["speedup"], ">=", 100.0,
                     "LoRA ‖ΔW‖ from factors vs dense s·B@A, Qwen2.5-7B shapes (28×7 sites, r=16)"),
                goal("lora_norm_factor_rel_error", fd["max_rel_err_factor_vs_fp64"], "<=", 1e-5,
                     "max relative error of the factor-space norm vs fp64")]
    print_figures(figures)
    path = save_json("diff", results, figures)
    print(f"saved {path}")
    return results


def _line(name: str, r: dict) -> str:
    s, n = r["stream"], r["naive"]
    return (f"{name}: wall stream/naive = {r['wall_ratio']:.2f} "
            f"({s['wall_s']:.2f} s vs {n['wall_s']:.2f} s); "
            f"peak RSS = {r['peak_rss_ratio']:.3f} ({s['peak_rss_mb']:.0f} MB vs {n['peak_rss_mb']:.0f} MB; "
            f"above import baseline {r['peak_rss_above_idle_ratio']:.3f})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", nargs=3, metavar=("METHOD", "BASE", "TUNED"))
    parser.add_argument("--quick", action="store_true", help="skip the 1B pair")
    args = parser.parse_args()
    if args.worker:
        _worker(*args.worker)
    else:
        main(quick=args.quick)
