"""Benchmark the intervention registry on the embedded model (ratios measured in one run).

1. forward with a weight-space graft active / plain forward          (goal ≤ 1.02)
2. enter+exit of grafting gate_proj in all layers from a safetensors
   checkpoint / a raw ``safe_open`` read of the same tensors         (goal ≤ 1.5)
3. the same zero-ablation (gate_proj output, layers 10–19) with nnsight vs with us (forward time).

Run: ``.venv/bin/python benchmarks/bench_intervene.py`` → prints ratios, saves results/intervene.json.
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

import affectlocus as al  # noqa: E402
from _common import interleaved, save_json  # noqa: E402


def main() -> dict:
    model, tok = al.load_model("smollm2-135m")
    ids = torch.randint(100, 20000, (8, 64), generator=torch.Generator().manual_seed(0))
    gate_sites = al.select(model, "gate")
    band = "10:20"

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "tuned.safetensors"
        gen = torch.Generator().manual_seed(1)
        save_file({f"model.{s.weight_key}": (model.get_submodule(s.path).weight.detach()
                   + 0.01 * torch.randn(s.shape, generator=gen)).contiguous() for s in gate_sites}, ckpt)
        keys = [f"model.{s.weight_key}" for s in gate_sites]

        def forward():
            with torch.no_grad():
                model(ids, logits_to_keep=1)

        handle_src = al.open_source(ckpt)

        def enter_exit_preopened():
            with al.intervene(model, al.graft(handle_src, modules="gate")):
                pass

        # 1. forward with a graft active vs plain
        handle = al.attach(model, al.graft(ckpt, modules="gate"))
        t_graft = interleaved({"grafted": forward}, repeats=5)["grafted"]
        handle.detach()
        t_plain = interleaved({"plain": forward}, repeats=5)["plain"]
        # re-measure interleaved to cancel drift
        handle = al.attach(model, al.graft(ckpt, modules="gate"))
        t_graft2 = interleaved({"grafted": forward}, repeats=5)["grafted"]
        handle.detach()
        t_plain2 = interleaved({"plain": forward}, repeats=5)["plain"]
        fwd_ratio = (t_graft + t_graft2) / (t_plain + t_plain2)

        # 2. enter+exit from a checkpoint vs a raw safe_open read of the same tensors
        def raw_read():
            with safe_open(str(ckpt), "pt") as fh:
                for k in keys:
                    fh.get_tensor(k)

        def raw_read_touched():  # materialise the pages, as any use of the weights must
            with safe_open(str(ckpt), "pt") as fh:
                for k in keys:
                    fh.get_tensor(k).sum()

        def enter_exit():
            with al.intervene(model, al.graft(ckpt, modules="gate")):
                pass

        t = interleaved({"raw": raw_read, "raw_touched": raw_read_touched, "ours": enter_exit,
                         "ours_open_source": enter_exit_preopened},
                        repeats=15, warmup=2)
        graft_ratio = t["ours"] / t["raw"]

    # 3. the same zero-ablation with nnsight vs with us
    import nnsight
    traced = nnsight.NNsight(model)
    layers = al.sites.parse_layers(band, al.find_decoder(model).num_layers)

    def with_nnsight():
        with torch.no_grad(), traced.trace(ids):
            for i in layers:
                traced.model.layers[i].mlp.gate_proj.output[:] = 0
            traced.output.logits[:, -1].save()

    def with_us_weight():
        with torch.no_grad(), al.intervene(model, al.zero(modules="gate", layers=band)):
            model(ids, logits_to_keep=1)

    def with_us_hook():
        with torch.no_grad(), al.intervene(model, al.zero_output(modules="gate", layers=band)):
            model(ids, logits_to_keep=1)

    tz = interleaved({"nnsight": with_nnsight, "ours_weight": with_us_weight, "ours_hook": with_us_hook,
                      "plain": forward}, repeats=5)
    al.assert_clean(model)
    out = {
        "forward_grafted_over_plain": fwd_ratio,
        "graft_enter_exit_over_raw_read": graft_ratio,
        "graft_enter_exit_seconds": t["ours"], "raw_read_seconds": t["raw"],
        "graft_enter_exit_preopened_over_raw_read": t["ours_open_source"] / t["raw"],
        "graft_enter_exit_over_raw_read_touched": t["ours"] / t["raw_touched"],
        "raw_read_touched_seconds": t["raw_touched"],
        "nnsight_zero_over_ours_weight_zero": tz["nnsight"] / tz["ours_weight"],
        "nnsight_zero_over_ours_hook_zero": tz["nnsight"] / tz["ours_hook"],
        "ours_hook_zero_over_plain": tz["ours_hook"] / tz["plain"],
        "forward_seconds_8x64": t_plain,
        "goals": {"forward_grafted_over_plain": "<= 1.02", "graft_enter_exit_over_raw_read": "<= 1.5",
                  "note": "raw safe_open reads are lazy (mmap, pages untouched); a graft validates every "
                          "donor (shape, NaN/Inf), which reads each page once: compare with raw_read_touched"},
    }
    for k, v in out.items():
        if isinstance(v, float):
            print(f"{k:45s} {v:8.3f}")
    print("saved", save_json("intervene", out))
    return out


if __name__ == "__main__":
    main()
