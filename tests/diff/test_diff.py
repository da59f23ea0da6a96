"""diff(): exact values on hand-made ΔW, every kind of source gives the same table, subsets, sampling."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

import affectlocus as al
from affectlocus.diff import DiffTable, diff

from _util import ARCHS


def _values(table: DiffTable) -> dict[tuple[int, str], dict[str, float]]:
    return {(r.layer, r.module): r.values for r in table.results}


def test_exact_values_on_hand_made_delta(llama, twin):
    base = llama(0)
    with torch.no_grad():
        base.model.layers[2].mlp.up_proj.weight.fill_(2.0)
    tuned = twin(base)
    with torch.no_grad():
        g = tuned.model.layers[1].mlp.gate_proj.weight
        g[0, 0] += 3.0
        g[5, 7] -= 4.0
        tuned.model.layers[2].mlp.up_proj.weight.add_(0.5)
    table = diff(base, tuned, metrics="all", progress=False, eps=0.0)
    vals = _values(table)
    assert len(table) == 21
    assert table.meta["compared"] == "21 sites: modules q,k,v,o,gate,up,down × layers 0–2 of 3"
    gate = vals[(1, "gate")]
    numel = 128 * 64
    w = base.model.layers[1].mlp.gate_proj.weight.detach().double()
    assert gate["l2"] == pytest.approx(5.0, rel=1e-6)
    assert gate["rms"] == pytest.approx(5.0 / math.sqrt(numel), rel=1e-6)
    assert gate["base_l2"] == pytest.approx(float(w.norm()), rel=1e-6)
    assert gate["relative"] == pytest.approx(5.0 / float(w.norm()), rel=1e-6)
    assert gate["unchanged"] == pytest.approx(1 - 2 / numel)
    up = vals[(2, "up")]
    assert up["l2"] == pytest.approx(0.5 * math.sqrt(numel)) and up["rms"] == pytest.approx(0.5)
    assert up["relative"] == pytest.approx(0.25) and up["base_l2"] == pytest.approx(2.0 * math.sqrt(numel))
    assert up["relchg_q50"] == pytest.approx(0.25) and up["unchanged"] == 0.0
    hist = next(r.hist for r in table.results if (r.layer, r.module) == (2, "up"))
    assert hist.sum() == numel and hist[np.searchsorted(table.edges, math.log10(0.25)) - 1] == numel
    for key, v in vals.items():
        if key not in ((1, "gate"), (2, "up")):
            assert v["l2"] == 0.0 and v["relative"] == 0.0 and v["unchanged"] == 1.0, key
    rows = table.row_norms(1, "gate")
    assert rows.shape == (128,) and rows[0] == pytest.approx(3.0) and rows[5] == pytest.approx(4.0)
    assert table.row_norms(1, "down").shape == (128,)  # per column of down: one per channel


def test_model_checkpoint_sharded_statedict_and_bare_file_agree(pair, tmp_path):
    base, tuned = pair
    base.save_pretrained(tmp_path / "base")
    tuned.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").exists()
    bare = tmp_path / "bare.safetensors"
    save_file({k: v.contiguous() for k, v in tuned.state_dict().items()
               if k != "lm_head.weight"}, bare)
    ref = diff(base, tuned, progress=False, sample=2000).to_frame()
    for b, t in [(tmp_path / "base", tmp_path / "sharded"), (tmp_path / "base" / "model.safetensors", bare),
                 (base, tmp_path / "sharded"), (tmp_path / "base", tuned.state_dict()),
                 (base.state_dict(), tmp_path / "sharded" / "model.safetensors.index.json")]:
        got = diff(b, t, progress=False, sample=2000).to_frame()
        pd.testing.assert_frame_equal(got, ref, rtol=1e-6, obj=f"{type(b).__name__} vs {type(t).__name__}")


def test_ranking_follows_the_injected_noise(pair):
    base, tuned = pair
    table = diff(base, tuned, progress=False)
    summary = table.summary("rms")
    assert list(summary.index[:4]) == ["down", "gate", "k", "q"]  # noise scale grows with module index
    assert set(summary.loc[["v", "o", "up"], "rms"]) == {0.0}
    assert list(summary["rank"]) == list(range(1, 8))
    top = table.top(3, "l2")
    assert list(top["layer"]) == [2, 2, 1] and list(top["module"][:2]) == ["down", "gate"]


def test_subset_says_what_was_compared(pair):
    base, tuned = pair
    table = diff(base, tuned, modules="mlp", layers="1:", progress=False, metrics=["l2", "rms"])
    assert [(r.layer, r.module) for r in table.results] == [(1, "gate"), (1, "up"), (1, "down"),
                                                            (2, "gate"), (2, "up"), (2, "down")]
    assert table.describe() == "6 sites: modules gate,up,down × layers 1–2 of 3"
    assert table.meta["layers"] == [1, 2] and table.meta["modules"] == ["gate", "up", "down"]
    assert table.metrics == ["l2", "rms"] and table.edges is None


def test_chunking_and_sampling_are_invisible(pair):
    base, tuned = pair
    a = diff(base, tuned, progress=False, sample=1000, seed=7)
    b = diff(base, tuned, progress=False, sample=1000, seed=7, chunk_elements=64)
    pd.testing.assert_frame_equal(a.to_frame(), b.to_frame(), rtol=1e-6)
    assert {r.n_sampled for r in a.results} == {1000}
    c = diff(base, tuned, progress=False, sample=1000, seed=8)
    assert not a.to_frame().equals(c.to_frame())
    full = diff(base, tuned, progress=False, sample=None)
    assert {r.n_sampled for r in full.results} == {r.numel for r in full.results}


def test_phi3_fused_rows_from_model_and_checkpoint(phi3, tmp_path):
    base, tuned = phi3(0), phi3(0)
    with torch.no_grad():
        tuned.model.layers[0].mlp.gate_up_proj.weight[128:].add_(1.0)  # the 'up' half only
    tuned.save_pretrained(tmp_path / "tuned")
    for t in (tuned, tmp_path / "tuned"):
        vals = _values(diff(base, t, modules="mlp", layers=0, progress=False))
        assert vals[(0, "gate")]["l2"] == 0.0
        assert vals[(0, "up")]["l2"] == pytest.approx(math.sqrt(128 * 64))
    base.save_pretrained(tmp_path / "base")
    from_disk = diff(tmp_path / "base", tmp_path / "tuned", modules="mlp", layers=0, progress=False)
    assert _values(from_disk)[(0, "up")]["rms"] == pytest.approx(1.0)


def test_pth_adapter_and_callable_package(llama, tmp_path):
    base = llama(0)
    g = torch.Generator().manual_seed(0)
    prefix = "llama_model.base_model.model.model.layers.1.mlp.gate_proj"
    state = {f"{prefix}.lora_A.weight": torch.randn(8, 64, generator=g),
             f"{prefix}.lora_B.weight": torch.randn(128, 8, generator=g)}
    torch.save({"model": state}, tmp_path / "affectgpt.pth")
    with pytest.warns(UserWarning, match="untouched"):
        table = al.diff(base, tmp_path / "affectgpt.pth", modules="gate", progress=False)
    want = (32 / 8) * (state[f"{prefix}.lora_B.weight"] @ state[f"{prefix}.lora_A.weight"]).double().norm()
    vals = _values(table)
    assert vals[(1, "gate")]["l2"] == pytest.approx(float(want), rel=1e-5)
    assert [r.method for r in table.results] == ["untouched", "factors", "untouched"]
    assert vals[(0, "gate")]["l2"] == 0.0 and math.isnan(vals[(0, "gate")]["base_l2"])


@pytest.mark.parametrize("arch", ARCHS)
def test_every_architecture_from_checkpoints(tiny, arch, tmp_path):
    base, tuned = tiny(arch, seed=0), tiny(arch, seed=1)
    base.save_pretrained(tmp_path / "base")
    tuned.save_pretrained(tmp_path / "tuned")
    ref = diff(base, tuned, progress=False, sample=500)
    got = diff(tmp_path / "base", tmp_path / "tuned", progress=False, sample=500)
    pd.testing.assert_frame_equal(got.to_frame(), ref.to_frame(), rtol=1e-6)
    assert got.meta["model_type"] == base.config.model_type and len(got) == 7 * got.meta["num_layers"]
    assert all(r.values["l2"] > 0 for r in got.results)


def test_device_and_dtype_move_and_cast_the_chunks(llama, twin):
    """``diff(device=, dtype=)``: chunks are cast as they stream (bf16 is real on CPU) and recorded."""
    base = llama(0)
    tuned = twin(base)
    with torch.no_grad():
        tuned.model.layers[1].mlp.gate_proj.weight.add_(1e-4)  # below bf16's resolution near 0.02
    exact = diff(base, tuned, modules="gate", layers=1, progress=False)
    cast = diff(base, tuned, modules="gate", layers=1, progress=False, device="cpu", dtype=torch.bfloat16)
    assert cast.meta["device"] == "cpu" and cast.meta["dtype"] == "bfloat16" and exact.meta["dtype"] is None
    assert _values(exact)[(1, "gate")]["l2"] != _values(cast)[(1, "gate")]["l2"]
    with pytest.raises(al.ModelLoadError, match="unknown dtype"):
        diff(base, tuned, modules="gate", progress=False, dtype="float7")
