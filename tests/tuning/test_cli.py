"""``affectlocus train`` / ``sweep`` / ``params`` through the tuning CLI's ``main(argv)``."""
from __future__ import annotations

import pytest

from affectlocus.models import tiny_model_dir
from affectlocus.tuning import save_pairs
from affectlocus.tuning.checkpoint import read_json, read_jsonl
from affectlocus.cli import main

FAST = ["--r", "2", "--steps", "2", "--batch-size", "4", "--lr", "1e-2", "--quiet"]


@pytest.fixture
def folder(tok, tmp_path):
    path = tiny_model_dir(tmp_path / "model", "llama", vocab_size=len(tok))
    tok.save_pretrained(str(path))
    return path


def test_train_cli_trains_resumes_and_reports(folder, pairs, tmp_path, capsys):
    data = save_pairs(pairs, tmp_path / "train.jsonl")
    args = ["train", "--model", str(folder), "--data", str(data), "--out", str(tmp_path / "run"), *FAST]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "trained 2 steps" in out and "lora on 2 sites, 768 trainable" in out  # default: gate only
    assert main(args) == 0 and "already finished" in capsys.readouterr().out
    assert main([*args, "--lr", "0.5"]) == 2
    assert "ResumeError" in capsys.readouterr().err
    assert main(["train", "--model", str(folder), "--control", "12", "--method", "full", "--modules", "down",
                 "--layers", "-1", "--out", str(tmp_path / "ctl"), *FAST]) == 0
    assert read_json(tmp_path / "ctl" / "run.json")["result"]["trainable"] == 128 * 64
    assert main(["train", "--model", str(folder), "--out", str(tmp_path / "x"), *FAST]) == 2
    assert "--data" in capsys.readouterr().err


def test_sweep_cli(folder, pairs, tmp_path, capsys):
    data = save_pairs(pairs, tmp_path / "train.jsonl")
    assert main(["sweep", "--model", str(folder), "--data", str(data), "--out", str(tmp_path / "sw"),
                 "--sets", "gate;attn", "--seeds", "0,1", *FAST]) == 0
    assert "4 cells" in capsys.readouterr().out
    rows = read_jsonl(tmp_path / "sw" / "results.jsonl")
    assert [r["cell"] for r in rows] == ["gate-seed0", "q+k+v+o-seed0", "gate-seed1", "q+k+v+o-seed1"]
    assert all("eval_loss" in r for r in rows)


def test_params_cli(capsys):
    assert main(["params", "--arch", "qwen2.5-7b"]) == 0
    out = capsys.readouterr().out
    assert "gate-only / all-seven = 10092544/40370176 = 0.2500" in out and "gate+up" in out
