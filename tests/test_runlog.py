"""``run.jsonl`` (:mod:`affectlocus._runlog`): the RunLog itself, and every long command writing one
(train, sweep, bench, diff, study) on a tiny model; ``--quiet`` drops the bars but keeps the summary."""
from __future__ import annotations

import json
import math
import re

import pytest

from affectlocus._runlog import LOG_NAME, RunLog, jsonable, read_runlog
from affectlocus.cli import main
from affectlocus.models import tiny_model_dir
from affectlocus.tasks.prompts import char_tokenizer
from affectlocus.tuning import save_pairs

pytestmark = pytest.mark.usefixtures("one_thread")
PAIRS = [("I loved it", "positive"), ("I hated the film", "negative"), ("what a mess", "negative"),
         ("great fun", "positive"), ("boring", "negative"), ("joy", "positive")]
TRAIN = ["--r", "2", "--steps", "2", "--batch-size", "3"]


def has_bar(err: str) -> bool:
    """Whether ``err`` holds a tqdm bar (its rate field ends every bar it draws)."""
    return re.search(r"(it/s|s/it)\]", err) is not None


def events(folder) -> list[dict]:
    """Every line of ``folder/run.jsonl``, each checked to be one JSON object with event, time, elapsed."""
    lines = (folder / LOG_NAME).read_text().splitlines()
    parsed = [json.loads(line) for line in lines]
    assert all(isinstance(e, dict) and {"event", "time", "elapsed"} <= set(e) for e in parsed)
    return parsed


def runs(folder) -> list[list[dict]]:
    """The log split into runs (each from its ``start``); every run but a killed one ends with ``end``."""
    out: list[list[dict]] = []
    for e in events(folder):
        if e["event"] == "start":
            out.append([])
        out[-1].append(e)
    return out


def assert_ok(run: list[dict], command: str) -> None:
    assert run[0]["event"] == "start" and run[0]["command"] == command
    assert run[0]["versions"]["affectlocus"] and "torch" in run[0]["versions"]
    assert run[-1]["event"] == "end" and run[-1]["status"] == "ok" and run[-1]["seconds"] >= 0


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A tiny Llama with a character tokenizer saved beside it (any text tokenizes)."""
    tok = char_tokenizer()
    path = tiny_model_dir(tmp_path_factory.mktemp("model") / "m", "llama", vocab_size=len(tok))
    tok.save_pretrained(str(path))
    return path


# ---- the RunLog --------------------------------------------------------------------------------------
def test_start_events_end_and_a_second_run_appends(tmp_path):
    with RunLog(tmp_path / "out", "demo", argv=["demo"], device="cpu") as log:
        log.event("step", step="tune", seconds=float("nan"), values=[1.5, math.inf])
    with RunLog(tmp_path / "out", "demo", argv=["demo"]):
        pass
    first, second = runs(tmp_path / "out")
    assert_ok(first, "demo")
    assert_ok(second, "demo")
    assert first[0]["argv"] == ["demo"] and first[0]["device"] == "cpu"
    assert first[1] == {**first[1], "event": "step", "step": "tune", "seconds": None, "values": [1.5, None]}


@pytest.mark.parametrize("exc, status", [(ValueError("bad value"), "error"), (KeyboardInterrupt(), "interrupted")])
def test_errors_are_recorded_and_propagate_unchanged(tmp_path, exc, status):
    with pytest.raises(type(exc)) as caught:
        with RunLog(tmp_path, "bench"):
            raise exc
    assert caught.value is exc
    end = events(tmp_path)[-1]
    assert end["status"] == status
    assert end.get("error") == ({"type": "ValueError", "message": "bad value"} if status == "error" else None)


def test_a_killed_runs_torn_line_is_closed_and_skipped(tmp_path):
    (tmp_path / LOG_NAME).write_text('{"event": "start", "time": "t", "elapsed": 0}\n{"event": "st')
    with RunLog(tmp_path, "train"):
        pass
    assert [e["event"] for e in read_runlog(tmp_path)] == ["start", "start", "end"]


def test_only_the_main_process_writes_and_an_unwritable_log_only_warns(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RANK", "1")
    with RunLog(tmp_path / "rank1", "train"):
        pass
    assert not (tmp_path / "rank1").exists()
    monkeypatch.delenv("RANK")
    (tmp_path / "file").write_text("")
    with RunLog(tmp_path / "file", "train") as log:  # a file where the folder should be
        log.event("x")
    assert capsys.readouterr().err.count("cannot write") == 1


def test_jsonable_unwraps_scalars_and_stringifies_the_rest(tmp_path):
    import numpy as np
    import torch
    assert jsonable({1: np.float32(0.5), "p": tmp_path, "t": torch.tensor(2), "d": torch.float16}) == \
        {"1": 0.5, "p": str(tmp_path), "t": 2, "d": "torch.float16"}


# ---- the commands ------------------------------------------------------------------------------------
def test_train_logs_runs_and_errors_and_quiet_drops_the_bar(folder, tmp_path, capsys):
    data = save_pairs(PAIRS, tmp_path / "train.jsonl")
    argv = ["train", "--model", str(folder), "--data", str(data), "--out", str(tmp_path / "run"), *TRAIN]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert "trained 2 steps" in out and has_bar(err)  # the bar is on by default
    assert main([*argv, "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert "already finished" in out and not has_bar(err)
    assert main([*argv, "--lr", "0.5", "-q"]) == 2  # a different run in the same folder
    assert "ResumeError" in capsys.readouterr().err
    first, second, failed = runs(tmp_path / "run")
    for run in (first, second):
        assert_ok(run, "train")
    model, started, finished = (e for e in first if e["event"] in ("model", "train"))
    assert model["device"] == "cpu" and model["dtype"] == "float32"
    assert started["status"] == "started" and started["log"].endswith("log.jsonl")
    assert finished["steps"] == 2 and not finished["loaded"] and finished["final_loss"] > 0
    assert [e for e in second if e["event"] == "train"][-1]["loaded"]
    assert second[0]["options"]["quiet"] is True
    assert failed[-1]["status"] == "error" and failed[-1]["error"]["type"] == "ResumeError"


def test_sweep_logs_each_cell(folder, tmp_path, capsys):
    data = save_pairs(PAIRS * 2, tmp_path / "train.jsonl")
    assert main(["sweep", "--model", str(folder), "--data", str(data), "--out", str(tmp_path / "sw"),
                 "--sets", "gate", *TRAIN, "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert "1 cells" in out and not has_bar(err)
    run, = runs(tmp_path / "sw")
    assert_ok(run, "sweep")
    cell, = (e for e in run if e["event"] == "cell")
    assert cell["cell"] == "gate-seed0" and cell["log"].endswith("cells/gate-seed0/log.jsonl")


def test_bench_logs_per_task_scores(folder, tmp_path, capsys):
    argv = ["bench", "--model", str(folder), "--tasks", "rt-polarity", "--max-examples", "4", "--n-boot", "20",
            "--shots-per-label", "0", "--out", str(tmp_path / "b")]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert "rt-polarity" in out and "written:" in out and has_bar(err)
    assert main([*argv, "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert "rt-polarity" in out and "written:" not in out and not has_bar(err)
    first, second = runs(tmp_path / "b")
    assert_ok(first, "bench")
    assert_ok(second, "bench")
    task, = (e for e in first if e["event"] == "task")
    assert task["task"] == "rt-polarity" and task["n"] == 4 and task["metric"] == "balanced_accuracy"
    assert [e["event"] for e in first] == ["start", "model", "task", "summary", "end"]


def test_diff_logs_its_summary_and_errors(folder, tmp_path, capsys):
    assert main(["diff", str(folder), str(folder), "--modules", "gate", "--metrics", "l2,relative",
                 "--out", str(tmp_path / "d"), "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert "per-module mean" in out and "wrote" not in out and not has_bar(err)
    run, = runs(tmp_path / "d")
    assert_ok(run, "diff")
    summary, = (e for e in run if e["event"] == "summary")
    assert summary["sites"] == 2 and summary["ranked_by"] == "relative" and "gate" in summary["modules"]
    assert main(["diff", str(tmp_path / "missing"), str(folder), "--out", str(tmp_path / "e")]) == 2
    assert capsys.readouterr().err.startswith("affectlocus: error: SourceError")
    start, end = events(tmp_path / "e")
    assert start["event"] == "start" and end["status"] == "error" and end["error"]["type"] == "SourceError"


def test_study_logs_its_steps_and_quiet_keeps_only_the_summary(folder, tmp_path, capsys):
    from affectlocus.study.config import STEPS
    skip = [s for s in STEPS if s != "tune"]
    (tmp_path / "study.toml").write_text(
        f'model = "{folder}"\nout = "{tmp_path / "st"}"\nn_train = 8\nn_control = 8\nsteps = 1\n'
        f'batch_size = 4\nmax_length = 32\nseeds = [0]\ntargeted = []\nbootstrap = 0\nskip = {json.dumps(skip)}\n')
    argv = ["study", "--config", str(tmp_path / "study.toml")]
    assert main([*argv, "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert "affectlocus study — summary" in out and "[tune] running" not in out and not has_bar(err)
    assert main([*argv, "--no-progress"]) == 0  # resumed: the step is cached
    assert "[tune] cached — skipped" in capsys.readouterr().out
    first, second = runs(tmp_path / "st")
    assert_ok(first, "study")
    assert_ok(second, "study")
    steps = [(e["step"], e["status"]) for e in first if e["event"] == "step"]
    assert steps[:2] == [("tune", "started"), ("tune", "finished")] and ("cost", "skipped") in steps
    adapters = [e for e in first if e["event"] == "adapter"]
    assert {a["name"] for a in adapters} == {"affect-all", "affect-gate", "control-all"}
    assert first[-2]["event"] == "report" and first[0]["config"]["steps"] == 1
    assert ("tune", "cached") in [(e["step"], e["status"]) for e in second if e["event"] == "step"]
