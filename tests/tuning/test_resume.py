"""Atomic checkpoints and exact resume: an interrupted run continues to the same loss curve."""
from __future__ import annotations

import errno

import pytest
import torch
from safetensors.torch import load_file

from affectlocus.tuning import CheckpointError, ResumeError, train
from affectlocus.tuning.checkpoint import (add_row, append_jsonl, atomic_write, load_checkpoint, read_jsonl,
                                           write_jsonl)

CFG = dict(modules="gate+q", r=2, steps=8, batch_size=3, grad_accum=2, lr=5e-3, dropout=0.1, save_every=3,
           progress=False)


def _stop_at(k):
    def callback(step, loss):
        if step == k:
            raise KeyboardInterrupt
    return callback


def _same_artifacts(a, b):
    fa, fb = load_file(str(a)), load_file(str(b))
    return fa.keys() == fb.keys() and all(torch.equal(fa[k], fb[k]) for k in fa)


@pytest.mark.parametrize("method", ["lora", "full"])
def test_resume_equals_uninterrupted(make, tok, pairs, tmp_path, method):
    ref = train(make(), tok, pairs, tmp_path / "ref", method=method, **CFG)
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(make(), tok, pairs, run, method=method, callback=_stop_at(5), **CFG)
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 3 and len(read_jsonl(run / "log.jsonl")) == 5
    res = train(make(), tok, pairs, run, method=method, **CFG)
    assert res.resumed_from == 3 and not res.loaded
    assert res.losses == ref.losses  # bit-identical loss curve on CPU
    assert [r["step"] for r in read_jsonl(run / "log.jsonl")] == list(range(1, 9))
    assert _same_artifacts(res.artifact, ref.artifact)
    assert not (run / "checkpoint.pt").exists()
    again = train(make(), tok, pairs, run, method=method, **CFG)  # finished: loaded, nothing trained
    assert again.loaded and again.losses == ref.losses
    ids = torch.tensor([[4, 9, 10, 5]])
    with torch.no_grad():
        assert torch.equal(again.model(ids).logits, ref.model.eval()(ids).logits)


def test_full_disk_keeps_the_previous_checkpoint(make, tok, pairs, tmp_path, monkeypatch):
    ref = train(make(), tok, pairs, tmp_path / "ref", **CFG)
    real, calls = torch.save, []

    def disk_full_on_second_save(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            f.write(b"half a checkpoint")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(obj, f, *args, **kwargs)

    run = tmp_path / "run"
    monkeypatch.setattr(torch, "save", disk_full_on_second_save)
    with pytest.raises(CheckpointError, match="No space left on device; the previous checkpoint .* is intact"):
        train(make(), tok, pairs, run, **CFG)
    monkeypatch.undo()
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 3
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
    res = train(make(), tok, pairs, run, **CFG)
    assert res.resumed_from == 3 and res.losses == ref.losses


def test_resume_refuses_a_different_run(make, tok, pairs, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(make(), tok, pairs, run, callback=_stop_at(4), **CFG)
    with pytest.raises(ResumeError, match="lr: 0.005 → 0.001"):
        train(make(), tok, pairs, run, **{**CFG, "lr": 1e-3})
    with pytest.raises(ResumeError, match="data"):
        train(make(), tok, pairs[:-1], run, **CFG)
    with pytest.raises(ResumeError, match="base"):
        train(make(seed=1), tok, pairs, run, **CFG)
    (run / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        train(make(), tok, pairs, run, **CFG)
    res = train(make(), tok, pairs, run, overwrite=True, **{**CFG, "lr": 1e-3})
    assert res.resumed_from == 0 and len(res.losses) == 8


def test_atomic_files(tmp_path):
    path = tmp_path / "f.bin"
    atomic_write(path, lambda fh: fh.write(b"old"))

    def fail(fh):
        fh.write(b"new but incomplete")
        raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(OSError):
        atomic_write(path, fail)
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["f.bin"]
    log = tmp_path / "log.jsonl"
    write_jsonl(log, [{"step": 1}])
    with open(log, "a") as fh:
        fh.write('{"step": 2, "lo')  # a writer killed mid-line
    assert read_jsonl(log) == [{"step": 1}]
    append_jsonl(log, {"step": 2})
    add_row(log, {"step": 3})
    assert read_jsonl(log) == [{"step": 1}, {"step": 2}, {"step": 3}]
