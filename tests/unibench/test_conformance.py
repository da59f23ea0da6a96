"""Conformance: the authors' shipped outputs reproduce the published AffectGPT MER-UniBench row.

Scored on the emotion wheels shipped with the package (no ``--wheels``); also the ``bench score``
command (``main_score``) in JSON and plain mode. The outputs and labels cannot ship: these tests need
``../shared/conformance`` (skip without it, fail under ``AFFECTLOCUS_REQUIRE_DATA=1``).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from affectlocus.unibench import UNIBENCH_DATASETS, EmotionWheels, score_results_folder
from affectlocus.unibench.cli import main_score
from affectlocus.unibench.outputs import summary_mean
from affectlocus.unibench.wheels import PACKAGED_WHEELS

#: results folder → (dataset, published score, best checkpoint among the seven shipped)
PUBLISHED = {
    "results-mer2023": ("MER2023", "78.54", "checkpoint_000050_loss_0.527.npz"),
    "results-meld": ("MELD", "55.65", "checkpoint_000030_loss_0.602.npz"),
    "results-iemocapfour": ("IEMOCAPFour", "60.54", "checkpoint_000035_loss_0.597.npz"),
    "results-cmumosi": ("CMUMOSI", "81.30", "checkpoint_000040_loss_0.569.npz"),
    "results-cmumosei": ("CMUMOSEI", "80.90", "checkpoint_000030_loss_0.602.npz"),
    "results-sims": ("SIMS", "88.49", "checkpoint_000030_loss_0.602.npz"),
    "results-simsv2": ("SIMSv2", "86.18", "checkpoint_000035_loss_0.597.npz"),
}
RUN = "emercoarse_highlevelfilter4_outputhybird_bestsetup_bestfusion_lz_20250110100"


@pytest.fixture(scope="module")
def conf(shared_dir: Path, require_data) -> dict[str, Path]:
    return {"outputs": require_data(shared_dir / "conformance" / "affectgpt-outputs" / "outputs",
                                    "the authors' AffectGPT outputs"),
            "labels": require_data(shared_dir / "conformance" / "labels", "MER-UniBench label files")}


@pytest.fixture(scope="module")
def wheels() -> EmotionWheels:
    return EmotionWheels.load()  # the packaged tables


@pytest.mark.parametrize("folder", list(PUBLISHED))
def test_published_row(conf: dict[str, Path], wheels: EmotionWheels, folder: str) -> None:
    dataset, published, best = PUBLISHED[folder]
    results = score_results_folder(conf["outputs"] / folder, conf["labels"], wheels)
    assert list(results) == [dataset]
    res = results[dataset]
    assert len(res.checkpoints) == 7 and not res.skipped
    assert f"{100 * res.best.score:.2f}" == published
    assert res.best_checkpoint == best


@pytest.mark.parametrize("wheels_arg", [[], ["--wheels", str(PACKAGED_WHEELS)]], ids=["packaged", "explicit"])
def test_cli_json_single_file_emotion(conf: dict[str, Path], wheels_arg: list[str],
                                      capsys: pytest.CaptureFixture[str]) -> None:
    path = conf["outputs"] / "results-mer2023" / RUN / "checkpoint_000050_loss_0.527.npz"
    label = conf["labels"] / "mer2023-dataset-process" / "label-6way.npz"
    assert main_score([str(path), "--dataset", "mer2023", "--labels", str(label), *wheels_arg, "--json"]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert obj["dataset"] == "MER2023" and obj["kind"] == "emotion"
    assert obj["scored_from"].endswith("checkpoint_000050_loss_0.527-openset.npz")
    assert f"{100 * obj['score']:.2f}" == "78.54" and 0 <= obj["score"] <= 1
    assert obj["n_scored"] == [323, 323, 323, 323, 305] and len(obj["per_wheel"]) == 5
    assert obj["score"] == pytest.approx(np.mean(obj["per_wheel"]))


def test_cli_reproduces_the_published_row_without_wheels(conf: dict[str, Path],
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """``affectlocus bench score OUTPUTS --labels LABELS --json``: every dataset and the mean, no --wheels."""
    assert main_score([str(conf["outputs"]), "--labels", str(conf["labels"]), "--json"]) == 0
    obj = json.loads(capsys.readouterr().out)
    got = {ds: (f"{100 * r['score']:.2f}", r["best_checkpoint"]) for ds, r in obj["datasets"].items()
           if r["score"] is not None}
    assert got == {ds: (published, best) for ds, published, best in PUBLISHED.values()}
    assert obj["datasets"]["MER2024"]["score"] is None and obj["n_datasets"] == 7
    assert 100 * obj["mean"] == pytest.approx(np.mean([float(p) for _, p, _ in PUBLISHED.values()]), abs=0.01)


def test_cli_json_folder_sentiment(conf: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    folder = conf["outputs"] / "results-cmumosi"
    assert main_score([str(folder), "--labels", str(conf["labels"]), "--json"]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert obj["dataset"] == "CMUMOSI" and obj["best_checkpoint"] == "checkpoint_000040_loss_0.569.npz"
    assert f"{100 * obj['score']:.2f}" == "81.30" and f"{100 * obj['accuracy']:.2f}" == "81.25"
    assert len(obj["checkpoints"]) == 7 and obj["n_scored"] == 656


def test_all_folders_and_plain_table(conf: dict[str, Path], wheels: EmotionWheels,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    results = score_results_folder(conf["outputs"], conf["labels"], wheels)
    assert tuple(results) == UNIBENCH_DATASETS
    assert results["MER2024"].best is None and "mer2024-dataset-process" in results["MER2024"].skipped["*"]
    expected = np.mean([float(p) for _, p, _ in PUBLISHED.values()])
    assert 100 * summary_mean(results) == pytest.approx(expected, abs=0.01)
    sims = conf["outputs"] / "results-sims" / RUN / "checkpoint_000030_loss_0.602-openset.npz"
    assert main_score([str(sims), "--labels", str(conf["labels"])]) == 0
    out = capsys.readouterr().out
    assert "SIMS" in out and "weighted F1: 88.49" in out and "accuracy: 88.40" in out


def test_cli_errors(conf: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(conf["outputs"] / "results-mer2023")
    assert main_score([path, "--dataset", "ovmerd", "--labels", str(conf["labels"])]) == 2
    err = capsys.readouterr().err
    assert "unknown dataset 'ovmerd'" in err and "SIMSv2" in err
    assert main_score([path, "--labels", str(conf["labels"]), "--wheels", str(tmp_path / "nope")]) == 2
    assert f"emotion-wheel folder not found: {tmp_path / 'nope'}" in capsys.readouterr().err  # --wheels wins
    assert main_score([path, "--labels", str(tmp_path)]) == 2
    assert "mer2023-dataset-process/label-6way.npz" in capsys.readouterr().err
    assert main_score([str(tmp_path / "nope.npz"), "--labels", str(conf["labels"]), "-d", "sims"]) == 2


def test_cli_hand_built_sentiment_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No shared data needed: a hand-built label file and judge output."""
    corpus = np.empty((), dtype=object)
    corpus[()] = {"v1": {"emo": 0, "val": 1.0}, "v2": {"emo": 0, "val": -0.2}, "v3": {"emo": 0, "val": 0.0},
                  "v4": {"emo": 0, "val": 0.6}}
    np.savez(tmp_path / "label.npz", train_corpus=corpus, test_corpus=corpus)
    np.savez(tmp_path / "ck-openset-sentiment.npz", filenames=["v1", "v2", "v3", "v4"],
             fileitems=["positive", "positive", "neutral", "positive"])
    assert main_score([str(tmp_path / "ck-openset-sentiment.npz"), "-d", "simsv2",
                       "--labels", str(tmp_path / "label.npz"), "--json"]) == 0
    obj = json.loads(capsys.readouterr().out)
    # kept v1 v2 v4: truth T F T, pred T T T → accuracy 2/3, weighted F1 = 2/3 * 0.8 = 0.5333
    assert obj["accuracy"] == pytest.approx(2 / 3) and obj["score"] == pytest.approx(0.8 * 2 / 3)
    assert obj["n_scored"] == 3 and obj["n_dropped_zero"] == 1


def test_add_score_parser_wires_a_subcommand(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from affectlocus.unibench.cli import add_score_parser

    corpus = np.empty((), dtype=object)
    corpus[()] = {"v1": {"emo": 0, "val": 1.0}, "v2": {"emo": 0, "val": -1.0}}
    np.savez(tmp_path / "label.npz", test_corpus=corpus)
    run = tmp_path / "results-mosi" / "model"
    run.mkdir(parents=True)
    reasons = np.empty((), dtype=object)
    reasons[()] = {"v1": "happy", "v2": "sad"}
    np.savez(run / "checkpoint_000001_loss_1.0.npz", name2reason=reasons)
    np.savez(run / "checkpoint_000001_loss_1.0-openset-sentiment.npz", filenames=["v1", "v2"],
             fileitems=["positive", "negative"])
    parser = argparse.ArgumentParser(prog="affectlocus")
    bench = parser.add_subparsers(dest="command").add_parser("bench").add_subparsers(dest="bench_command")
    add_score_parser(bench)
    args = parser.parse_args(["bench", "score", str(tmp_path / "results-mosi"), "--labels",
                              str(tmp_path / "label.npz")])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "CMUMOSI" in out and "weighted F1: 100.00" in out and "← best" in out
