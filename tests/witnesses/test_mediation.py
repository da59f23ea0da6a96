"""al.mediate: per-site sufficiency / necessity by activation patching, on planted fine-tunes."""
from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import save_file

import affectlocus as al
from affectlocus.witnesses.mediation import _last_logits

from _util import assert_bit_identical, state_snapshot

pytestmark = pytest.mark.usefixtures("one_thread")
LENGTHS = (7, 5, 4)


def _planted(model, keys=("model.layers.1.mlp.gate_proj.weight",), rows=None, seed=3) -> dict:
    """A tuned state dict: ``model``'s weights at ``keys`` plus a random change (only ``rows`` of them)."""
    state, gen = model.state_dict(), torch.Generator().manual_seed(seed)
    out = {}
    for key in keys:
        weight = state[key].clone()
        part = weight[slice(*rows)] if rows else weight
        part += torch.randn(part.shape, generator=gen) * 0.5
        out[key] = weight
    return out


def _batch(n: int = 7, rows: int = 3) -> dict:
    ids = torch.randint(3, 128, (rows, n), generator=torch.Generator().manual_seed(0))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _padded(side: str) -> dict:
    """Rows of LENGTHS tokens (the same tokens either way), padded with 0 on ``side``."""
    ids = torch.randint(3, 128, (len(LENGTHS), max(LENGTHS)), generator=torch.Generator().manual_seed(0))
    mask = (torch.arange(max(LENGTHS)) < torch.tensor(LENGTHS)[:, None]).long()
    ids = ids.masked_fill(mask == 0, 0)
    if side == "left":
        ids = torch.stack([row.roll(max(LENGTHS) - n) for row, n in zip(ids, LENGTHS)])
        mask = mask.flip(-1)
    return {"input_ids": ids, "attention_mask": mask}


def _values(table, column):
    return {(r["layer"], r["module"]): r[column] for r in table.rows}


def _assert_planted(table, ones=((1, "gate"), (1, "down")), atol=1e-5):
    for column in ("sufficiency", "necessity"):
        for site, value in _values(table, column).items():
            assert value == pytest.approx(1.0 if site in ones else 0.0, abs=atol), (column, site, value)


@pytest.mark.parametrize("kind", ["model", "state_dict", "safetensors"])
def test_planted_gate_is_sufficient_and_necessary(tiny, tmp_path, kind):
    model = tiny("llama")
    snap = state_snapshot(model)
    state = _planted(model)
    if kind == "model":
        tuned = tiny("llama")
        tuned.load_state_dict(state, strict=False)
    elif kind == "safetensors":
        tuned = tmp_path / "tuned.safetensors"
        save_file(state, str(tuned))
    else:
        tuned = state
    table = al.mediate(model, tuned, _batch())
    assert table.kind == "mediation" and table.columns == ("sufficiency", "necessity") and len(table) == 14
    _assert_planted(table)
    meta = table.meta
    assert meta["metric"] == "kl" and meta["n"] == 3 and meta["total"] > 1e-4 and meta["layers"] == [0, 1]
    assert meta["modules"] == ["q", "k", "v", "o", "gate", "up", "down"] and meta["tuned"] and not table.notes
    assert_bit_identical(model, snap)
    al.assert_clean(model)


def test_tuned_equal_to_base_gives_zeros_and_a_note(tiny):
    model = tiny("llama")
    for tuned in (model, tiny("llama")):
        table = al.mediate(model, tuned, _batch(), modules="mlp")
        assert all(r["sufficiency"] == 0.0 and r["necessity"] == 0.0 for r in table.rows)
        assert not any(math.isnan(v) for r in table.rows for v in (r["sufficiency"], r["necessity"]))
        assert table.meta["total"] == 0.0 and "no effect to explain" in table.notes[0]
    al.assert_clean(model)


def test_padding_either_side_matches_unpadded_rows(tiny):
    model = tiny("llama")
    tuned = _planted(model, ("model.layers.0.mlp.up_proj.weight", "model.layers.1.self_attn.v_proj.weight",
                             "model.layers.1.mlp.gate_proj.weight"))
    right = al.mediate(model, tuned, _padded("right"))
    left = al.mediate(model, tuned, _padded("left"))
    ids = _padded("right")["input_ids"]
    alone = [al.mediate(model, tuned, _batch_of(ids[i, :n])) for i, n in enumerate(LENGTHS)]
    totals = [t.meta["total"] for t in alone]
    assert right.meta["total"] == pytest.approx(sum(totals) / len(totals), rel=1e-5)
    assert left.meta["total"] == pytest.approx(right.meta["total"], rel=1e-5)
    for site in _values(right, "sufficiency"):  # ratios of batch means, rebuilt from one-row runs
        suff = 1 - sum((1 - _values(t, "sufficiency")[site]) * t.meta["total"] for t in alone) / sum(totals)
        nec = sum(_values(t, "necessity")[site] * t.meta["total"] for t in alone) / sum(totals)
        for table in (right, left):
            assert _values(table, "sufficiency")[site] == pytest.approx(suff, abs=1e-5)
            assert _values(table, "necessity")[site] == pytest.approx(nec, abs=1e-5)
    assert 0.01 < _values(right, "sufficiency")[(1, "v")] < 0.99  # a non-trivial value was checked
    al.assert_clean(model)


def _batch_of(row: torch.Tensor) -> dict:
    return {"input_ids": row[None], "attention_mask": torch.ones_like(row)[None]}


@pytest.mark.parametrize("arch", ["llama", "gemma2"])
def test_last_logits_match_full_logits(tiny, arch):
    model = tiny(arch)
    batch = _padded("right")
    last = torch.tensor([n - 1 for n in LENGTHS])
    with torch.no_grad():
        full = model(**batch).logits[torch.arange(3), last]
        got = _last_logits(model, dict(batch), last)
    torch.testing.assert_close(got, full, rtol=1e-5, atol=1e-5)


def test_fused_layout_phi3(tiny):
    model = tiny("phi3")
    snap = state_snapshot(model)
    tuned = _planted(model, ("model.layers.1.mlp.gate_up_proj.weight",), rows=(0, 128))  # gate's half only
    table = al.mediate(model, tuned, _batch(), layers=1)
    assert table.meta["layers"] == [1] and len(table) == 7
    _assert_planted(table)
    assert_bit_identical(model, snap)
    al.assert_clean(model)


def test_label_and_callable_metrics(tiny):
    model = tiny("llama")
    tuned = _planted(model)
    labels = al.mediate(model, tuned, _batch(), metric={"right": torch.tensor([5, 6, 7]), "wrong": 9})
    assert labels.meta["metric"] == "logit_diff" and labels.meta["total"] != 0
    _assert_planted(labels)

    def margin(logits):
        return logits[:, 5] - logits[:, 9]
    fn = al.mediate(model, tuned, _batch(), modules="mlp", metric=margin, progress=True)
    assert fn.meta["metric"] == "margin"
    _assert_planted(fn)
    assert _values(fn, "sufficiency") == pytest.approx({k: v for k, v in _values(labels, "sufficiency").items()
                                                        if k[1] in ("gate", "up", "down")}, abs=1e-6)
    logprob = al.mediate(model, tuned, _batch(), modules="gate", metric={"right": 5})
    assert logprob.meta["metric"] == "logprob"
    _assert_planted(logprob)
    al.assert_clean(model)


def test_metric_errors_leave_the_model_clean(tiny):
    model = tiny("llama")
    model.train()
    snap, tuned, calls = state_snapshot(model), _planted(model), []

    def flaky(logits):
        calls.append(1)
        if len(calls) == 5:
            raise RuntimeError("metric failed")
        return logits[:, 3]
    with pytest.raises(RuntimeError, match="metric failed"):
        al.mediate(model, tuned, _batch(), metric=flaky)
    assert len(calls) == 5 and model.training and all(m.training for m in model.modules())
    assert_bit_identical(model, snap)
    al.assert_clean(model)
    for bad, match in [("accuracy", "unknown metric"), ({"correct": 3}, "right"), ({"right": 500}, "vocabulary"),
                       ({"right": [1, 2]}, "one per row"), (lambda logits: logits, "per-row scores"), (3, "callable")]:
        with pytest.raises(al.ConfigError, match=match):
            al.mediate(model, tuned, _batch(), modules="gate", metric=bad)
    assert_bit_identical(model, snap)
    al.assert_clean(model)


def test_bad_batch_and_source(tiny):
    model = tiny("llama")
    ids = _batch()["input_ids"]
    tuned = _planted(model)
    for bad, match in [(ids, "tokenizer output"), ({"input_ids": ids}, "attention_mask"),
                       ({"input_ids": ids[0], "attention_mask": ids[0]}, "2-D"),
                       ({"input_ids": ids, "attention_mask": torch.ones(3, 2)}, "same"),
                       ({"input_ids": ids, "attention_mask": torch.zeros_like(ids)}, "all padding")]:
        with pytest.raises(al.ConfigError, match=match):
            al.mediate(model, tuned, bad)
    with pytest.raises(al.SourceError, match="holds nothing"):
        al.mediate(model, {"lm_head.weight": torch.zeros(128, 64)}, _batch())
    al.assert_clean(model)
