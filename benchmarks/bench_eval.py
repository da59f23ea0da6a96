"""Benchmark the bench runner on the embedded model and suite (ratios measured in one run).

1. samples/s of label scoring (few-shot, prefix KV cache reused, batch 16) vs **batched** greedy
   ``generate`` (batch 16, 32 new tokens) + the lexicon judge, at equal accuracy or better
                                                                                    (goal ≥ 5×)
2. label scoring with vs without prefix caching (same batches; the prefix is recomputed in every
   batch without it)
3. for reference: per-sample generation (batch 1) + judge, and each mode's accuracy.

Every arm runs through :func:`affectlocus.evaluate` without a results cache (so prompt
building, batching and judging are included), interleaved round-robin so machine noise hits all.

Run: ``.venv/bin/python benchmarks/bench_eval.py [--threads N] [--n-label 64] [--n-per-sample 12]``
→ prints every figure with its goal and verdict, saves results/bench_eval.json (stamped).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import affectlocus as al  # noqa: E402
from _common import figure, goal, print_figures, save_json  # noqa: E402
from affectlocus.evaluation import evaluate  # noqa: E402
from affectlocus.tasks import PromptStyle, load_task  # noqa: E402

TASKS = ("rt-polarity", "tweets-sentiment")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--n-label", type=int, default=64, help="examples per task for label scoring")
    ap.add_argument("--n-per-sample", type=int, default=12,
                    help="examples per task for per-sample generation (batched generation scores the label arm's examples)")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tok = al.load_model("smollm2-135m")
    style = PromptStyle()
    label_tasks = [load_task(t, max_test=args.n_label) for t in TASKS]
    one_tasks = [load_task(t, max_test=args.n_per_sample) for t in TASKS]
    n_label = sum(len(t.test) for t in label_tasks)
    n_one = sum(len(t.test) for t in one_tasks)

    def label(reuse: bool):
        return lambda: evaluate(model, tok, label_tasks, "label", style=style, batch_size=16, n_boot=0,
                                reuse_prefix=reuse, progress=False)

    def generate(tasks, batch: int):
        return lambda: evaluate(model, tok, tasks, "generate", batch_size=batch, n_boot=0,
                                max_new_tokens=args.max_new_tokens, progress=False)

    arms = {"label_prefix_cache": (label(True), n_label), "label_no_prefix_cache": (label(False), n_label),
            "generate_per_sample": (generate(one_tasks, 1), n_one),
            "generate_batch16": (generate(label_tasks, 16), n_label)}
    evaluate(model, tok, [load_task(TASKS[0], max_test=4)], "label", n_boot=0, progress=False)  # warm-up
    times: dict[str, list[float]] = {k: [] for k in arms}
    scores: dict[str, float] = {}
    for r in range(args.rounds):
        for name, (fn, _) in arms.items():
            t0 = time.perf_counter()
            s = fn()
            times[name].append(time.perf_counter() - t0)
            scores[name] = s.mean
            print(f"round {r + 1} {name:<24} {times[name][-1]:8.1f} s", flush=True)
    rate = {k: arms[k][1] / statistics.median(v) for k, v in times.items()}
    ratios = {"label_vs_generate_per_sample": rate["label_prefix_cache"] / rate["generate_per_sample"],
              "label_vs_generate_batch16": rate["label_prefix_cache"] / rate["generate_batch16"],
              "prefix_cache_speedup": rate["label_prefix_cache"] / rate["label_no_prefix_cache"]}
    prefix_tokens = {}
    from affectlocus.tasks.prompts import build_label_prompts
    for t in label_tasks:
        p = build_label_prompts(tok, t.labels, [e.text for e in t.test], t.train, style=style)
        prefix_tokens[t.name] = {"prefix": len(p.prefix_ids),
                                 "mean_query": sum(map(len, p.query_ids)) / len(p.query_ids)}
    print("\nsamples/s:")
    for k, v in rate.items():
        print(f"  {k:<24} {v:7.2f}   (accuracy {100 * scores[k]:.1f}%)")
    print("ratios:")
    for k, v in ratios.items():
        print(f"  {k:<30} {v:6.2f}x")
    acc = {k: 100 * v for k, v in scores.items()}
    figures = [
        goal("label_over_batched_generation", ratios["label_vs_generate_batch16"], ">=", 5.0,
             "samples/s of label scoring (prefix cache, batch 16) / batched greedy generation (batch 16, "
             f"{args.max_new_tokens} new tokens) + lexicon judge"),
        goal("label_minus_generation_accuracy_points", acc["label_prefix_cache"] - acc["generate_batch16"], ">=", 0.0,
             f"{TASKS} accuracy (label scoring − batched generation), percentage points"),
        figure("label_over_per_sample_generation", ratios["label_vs_generate_per_sample"],
               "samples/s of label scoring / per-sample generation (batch 1)"),
        figure("prefix_cache_speedup", ratios["prefix_cache_speedup"],
               "label scoring with / without the reused prefix KV cache"),
        figure("label_samples_per_s", rate["label_prefix_cache"], "label scoring throughput", "samples/s"),
    ]
    print_figures(figures)
    payload = {"args": vars(args), "tasks": list(TASKS), "n_label": n_label, "n_per_sample": n_one,
               "seconds": {k: statistics.median(v) for k, v in times.items()}, "samples_per_s": rate,
               "accuracy": scores, "ratios": ratios, "prompt_tokens": prefix_tokens}
    print(f"saved {save_json('bench_eval', payload, figures)}")
    return payload


if __name__ == "__main__":
    main()
