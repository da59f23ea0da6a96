"""Sweeps: one row per finished cell; a killed sweep restarts without recomputing finished cells."""
from __future__ import annotations

import pytest

import affectlocus as al
from affectlocus.tuning import ResumeError, trainer
from affectlocus.tuning.checkpoint import read_jsonl
from affectlocus.tuning.sweep import DEFAULT_SETS, heldout_loss, sweep

from _util import assert_bit_identical, state_snapshot

CFG = dict(r=2, steps=2, batch_size=4, lr=1e-2, dropout=0.0, progress=False)


def test_default_grid_matches_the_study():
    assert {"q", "k", "v", "o", "gate", "up", "down", "attn", "attn+gate", "attn+gate+up", "all"} <= set(DEFAULT_SETS)
    assert len(DEFAULT_SETS) == 15


def test_killed_sweep_recomputes_nothing_finished(make, tok, pairs, tmp_path, monkeypatch):
    model = make()
    before = state_snapshot(model)
    seen: list[str] = []

    def evaluate(m, t):
        seen.append(type(m).__name__)
        if len(seen) == 3 and kill:
            raise KeyboardInterrupt
        return {"score": float(len(seen))}

    kill = True
    sets = ["gate", "attn", "all"]
    with pytest.raises(KeyboardInterrupt):
        sweep(model, tok, pairs, tmp_path, module_sets=sets, seeds=[0, 1], evaluate=evaluate, **CFG)
    assert_bit_identical(model, before)  # base restored even when interrupted
    rows = read_jsonl(tmp_path / "results.jsonl")
    assert [r["cell"] for r in rows] == ["gate-seed0", "q+k+v+o-seed0"]
    kill, seen[:], trained = False, [], []
    real_run = trainer._run
    monkeypatch.setattr(trainer, "_run", lambda prep, *a, **k: trained.append(prep.method) or real_run(prep, *a, **k))
    frame = sweep(model, tok, pairs, tmp_path, module_sets=sets, seeds=[0, 1], evaluate=evaluate, **CFG)
    assert seen == ["PeftModelForCausalLM"] * 4  # the interrupted cell is evaluated again, finished ones not
    assert len(trained) == 3  # only the seed-1 cells train; the interrupted cell's finished training is loaded
    assert list(frame["cell"]) == ["gate-seed0", "q+k+v+o-seed0", "q+k+v+o+gate+up+down-seed0", "gate-seed1",
                                   "q+k+v+o-seed1", "q+k+v+o+gate+up+down-seed1"]
    assert frame.loc[0, "score"] == 1.0 and frame.loc[1, "score"] == 2.0  # rows from the first run kept
    assert (tmp_path / "results.csv").exists()
    assert frame.loc[0, "trainable_ratio"] == 192 / (128 + 96 + 96 + 128 + 3 * 192)
    assert_bit_identical(model, before)
    assert all(p.requires_grad for p in model.parameters())  # flags as they were
    al.assert_clean(model)


def test_default_evaluation_is_heldout_loss(make, tok, pairs, tmp_path):
    model = make()
    base = heldout_loss(model, tok, pairs[:2])
    frame = sweep(model, tok, pairs, tmp_path, module_sets=["gate"], eval_data=pairs[:2],
                  **{**CFG, "steps": 4, "lr": 5e-2})
    assert frame.loc[0, "eval_loss"] < base["eval_loss"] and frame.loc[0, "eval_tokens"] == 4
    with pytest.raises(ResumeError, match="lr"):
        sweep(model, tok, pairs, tmp_path, module_sets=["gate"], eval_data=pairs[:2], **{**CFG, "lr": 1e-3})
    with pytest.raises(al.SiteError, match="fused"):
        sweep(make("phi3"), tok, pairs, tmp_path / "phi", module_sets=["gate"], **CFG)


def test_unknown_setting_is_a_typed_error_naming_the_fields(make, tok, pairs, tmp_path):
    with pytest.raises(al.TuningError, match="TrainConfig fields: .*steps"):
        sweep(make(), tok, pairs, tmp_path / "s", module_sets=["gate"], stepz=2, progress=False)
