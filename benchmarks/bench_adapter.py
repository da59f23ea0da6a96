"""Benchmark adapter grafts against peft's own merge, like for like, in one run.

For a gate-only and an all-seven peft LoRA adapter (r = 16, random non-zero factors) on the embedded
model (fp32): enter+exit of ``al.graft(adapter)`` (exact: the originals are restored bit for bit)
vs peft's ``merge_adapter()`` + ``unmerge_adapter()`` on a peft-wrapped copy of the same model
(in place; unmerge subtracts, so it is not exact), vs ``merge_and_unload()`` for reference
(one merge of a fresh wrapper; destructive). Goal: ours ≤ 0.8× merge+unmerge for both adapters.

Run: ``.venv/bin/python benchmarks/bench_adapter.py [--threads N] [--repeats R]`` → prints every
figure with its goal and verdict, saves results/adapter.json (stamped: commit, args, load, peft).
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from peft import LoraConfig, get_peft_model  # noqa: E402

import affectlocus as al  # noqa: E402
from _common import figure, goal, interleaved, print_figures, save_json  # noqa: E402

ADAPTERS = {"gate": ["gate_proj"],
            "all7": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}
RANK = 16


def make_adapter(model, targets: list[str], folder: Path):
    """A peft-wrapped deep copy of ``model`` with random non-zero LoRA factors, saved to ``folder``."""
    torch.manual_seed(0)
    wrapped = get_peft_model(copy.deepcopy(model), LoraConfig(r=RANK, lora_alpha=2 * RANK, target_modules=targets,
                                                              init_lora_weights=False))
    wrapped.save_pretrained(str(folder))
    return wrapped


def merge_and_unload_seconds(model, folder: Path, repeats: int) -> float:
    """Median time of ``PeftModel.from_pretrained(copy) .merge_and_unload()`` minus the wrapping itself."""
    from peft import PeftModel
    times = []
    for _ in range(max(3, repeats // 3)):
        fresh = copy.deepcopy(model)
        wrapped = PeftModel.from_pretrained(fresh, str(folder))
        t0 = time.perf_counter()
        wrapped.merge_and_unload()
        times.append(time.perf_counter() - t0)
        del wrapped, fresh
    return sorted(times)[len(times) // 2]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--repeats", type=int, default=21, help="timed rounds per comparison")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, _ = al.load_model("smollm2-135m")
    figures, seconds = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, targets in ADAPTERS.items():
            folder = Path(tmp) / name
            wrapped = make_adapter(model, targets, folder)
            source = al.open_source(folder)
            selection = "gate" if name == "gate" else "all"

            def ours():
                with al.intervene(model, al.graft(source)):
                    pass

            def ours_selected():
                with al.intervene(model, al.graft(source, modules=selection)):
                    pass

            def ours_from_folder():
                with al.intervene(model, al.graft(folder)):
                    pass

            def peft_merge_unmerge():
                wrapped.merge_adapter()
                wrapped.unmerge_adapter()
            t = interleaved({"ours": ours, "ours_selected": ours_selected, "ours_from_folder": ours_from_folder,
                             "peft_merge_unmerge": peft_merge_unmerge}, repeats=args.repeats, warmup=2)
            t["peft_merge_and_unload"] = merge_and_unload_seconds(model, folder, args.repeats)
            al.assert_clean(model)
            seconds[name] = t
            what = f"{'gate-only' if name == 'gate' else 'all-seven'} r={RANK} adapter on SmolLM2-135M fp32"
            figures += [
                goal(f"{name}_graft_over_peft_merge_unmerge", t["ours"] / t["peft_merge_unmerge"], "<=", 0.8,
                     f"enter+exit of al.graft(opened adapter) / peft merge_adapter+unmerge_adapter; {what}"),
                goal(f"{name}_graft_selected_over_peft_merge_unmerge",
                     t["ours_selected"] / t["peft_merge_unmerge"], "<=", 0.8,
                     f"the same with modules={selection!r}"),
                figure(f"{name}_graft_from_folder_over_peft_merge_unmerge",
                       t["ours_from_folder"] / t["peft_merge_unmerge"],
                       "enter+exit including opening the adapter folder (reading and checking its factors)"),
                figure(f"{name}_graft_over_peft_merge_and_unload", t["ours"] / t["peft_merge_and_unload"],
                       "enter+exit / one merge_and_unload (destructive, no way back)"),
                figure(f"{name}_graft_ms", 1e3 * t["ours"], "al.graft enter+exit", "ms"),
                figure(f"{name}_peft_merge_unmerge_ms", 1e3 * t["peft_merge_unmerge"], "peft merge+unmerge", "ms"),
            ]
            del wrapped
    print_figures(figures)
    payload = {"args": vars(args), "rank": RANK, "seconds": seconds}
    print("saved", save_json("adapter", payload, figures))
    return payload


if __name__ == "__main__":
    main()
