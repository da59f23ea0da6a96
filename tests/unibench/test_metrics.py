"""Metrics with known answers, dataset names, label files and output readers."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import f1_score

from affectlocus.unibench import UNIBENCH_DATASETS, EmotionWheels, hit_rate, load_test_labels, mean_score, normalise_dataset, read_items, read_reasons, score_output, sentiment_scores
from affectlocus.unibench.outputs import checkpoint_base, dataset_from_path, scoring_file
from affectlocus.errors import DataError


def _wheels() -> EmotionWheels:
    """Two-word tables built in memory: joy/glad → happy; sad → sad (wheel 5 knows only happy)."""
    formats = {"joy": ["joy"], "glad": ["glad"], "sad": ["sad"], "sadness": ["sad"]}
    synonyms = {"joy": ["joy"], "glad": ["joy"], "sad": ["sad"]}
    full = {"happy": "happy", "joy": "happy", "sad": "sad"}
    return EmotionWheels(formats=formats, synonyms=synonyms, wheels=[full] * 4 + [{"joy": "happy"}])


def test_hit_rate_in_memory_tables() -> None:
    truth = {"a": "joy", "b": "sadness", "c": "neutral", "d": "sad"}
    res = hit_rate({"a": "[glad]", "b": ["joy", "sad"], "c": [], "d": "joy"}, truth, _wheels())
    assert res.per_wheel == [pytest.approx(2 / 3)] * 4 + [1.0]
    assert res.score == pytest.approx((4 * 2 / 3 + 1) / 5)
    assert res.n_scored == [3, 3, 3, 3, 1] and res.n_skipped == [1, 1, 1, 1, 3]


def test_sentiment_known_answer() -> None:
    truth = {"a": 1.2, "b": -0.4, "c": 0.0, "d": 2.0, "e": -1.0, "f": 0.5}
    preds = {"a": "positive", "b": "negative", "c": "positive", "d": "mixed", "e": "neutral", "z": "positive"}
    res = sentiment_scores(preds, truth)
    # kept a, b, d, e, f: truth T F T F T; pred T F F F F (f missing → 0)
    t, p = [1, 0, 1, 0, 1], [1, 0, 0, 0, 0]
    assert res.accuracy == pytest.approx(3 / 5)
    assert res.score == pytest.approx(f1_score(t, p, average="weighted"))
    # class 1: P=1, R=1/3, F1=1/2 (support 3); class 0: P=2/4, R=1, F1=2/3 (support 2)
    assert res.score == pytest.approx((3 * 0.5 + 2 * 2 / 3) / 5)
    assert (res.n_scored, res.n_dropped_zero, res.n_samples) == (5, 1, 6)
    assert (res.n_other_labels, res.n_missing) == (1, 1)
    assert res.to_dict()["kind"] == "sentiment"


def test_sentiment_exact_labels_and_all_zero() -> None:
    # the reference compares exactly: 'Positive' is not 'positive'
    res = sentiment_scores({"a": "Positive", "b": "negative"}, {"a": 1.0, "b": -1.0})
    assert res.accuracy == 0.5 and res.n_other_labels == 1
    empty = sentiment_scores({"a": "positive"}, {"a": 0.0})
    assert empty.score is None and empty.accuracy is None and empty.n_dropped_zero == 1


def test_mean_score() -> None:
    assert mean_score([0.5, None, 1.0]) == 0.75 and mean_score([None]) is None


@pytest.mark.parametrize("name, canon", [
    ("mer2023", "MER2023"), ("MELD", "MELD"), ("iemocapfour", "IEMOCAPFour"), ("iemocap", "IEMOCAPFour"),
    ("mosi", "CMUMOSI"), ("CMU-MOSEI", "CMUMOSEI"), ("mosei", "CMUMOSEI"), ("sims", "SIMS"),
    ("simsV2", "SIMSv2"), (" Mer2024 ", "MER2024"),
])
def test_normalise_dataset(name: str, canon: str) -> None:
    assert normalise_dataset(name) == canon


def test_unknown_dataset_lists_valid_names() -> None:
    with pytest.raises(DataError) as info:
        normalise_dataset("ovmerd")
    assert all(ds in str(info.value) for ds in UNIBENCH_DATASETS)


def test_dataset_from_path(tmp_path: Path) -> None:
    assert dataset_from_path(tmp_path / "outputs" / "results-cmumosi" / "m" / "c.npz") == "CMUMOSI"
    assert dataset_from_path(tmp_path / "x" / "c.npz") is None


def _write_outputs(root: Path, stem: str, items: dict[str, str],
                   sentiment: dict[str, str] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    reasons = np.empty((), dtype=object)
    reasons[()] = {k: f"answer {k}" for k in items}
    np.savez_compressed(root / f"{stem}.npz", name2reason=reasons)
    np.savez_compressed(root / f"{stem}-openset.npz", filenames=list(items), fileitems=list(items.values()))
    if sentiment is not None:
        np.savez_compressed(root / f"{stem}-openset-sentiment.npz", filenames=list(sentiment),
                            fileitems=list(sentiment.values()))
    return root / f"{stem}.npz"


def test_output_readers_and_siblings(tmp_path: Path) -> None:
    ckpt = _write_outputs(tmp_path / "run", "checkpoint_000010_loss_1.000", {"a": "[glad]", "b": "[sad]"})
    assert read_reasons(ckpt) == {"a": "answer a", "b": "answer b"}
    openset = ckpt.with_name("checkpoint_000010_loss_1.000-openset.npz")
    assert read_items(openset) == {"a": "[glad]", "b": "[sad]"}
    for p in (ckpt, openset):
        assert checkpoint_base(p).name == "checkpoint_000010_loss_1.000"
        assert scoring_file(p, "MER2023") == openset
    with pytest.raises(DataError, match="openset-sentiment.npz"):
        scoring_file(ckpt, "SIMS")  # the sentiment judge was not run
    with pytest.raises(DataError, match="not an AffectGPT output"):
        checkpoint_base(tmp_path / "x.txt")
    res = score_output(ckpt, "mer2023", {"a": "joy", "b": "joy"}, _wheels())
    assert res.per_wheel == [0.5] * 5 and res.n_scored == [2] * 5
    with pytest.raises(DataError, match="wrong labels or dataset"):
        score_output(ckpt, "mer2023", {"x": "joy"}, _wheels())


def test_missing_label_file_names_expected_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"meld-process/label\.npz"):
        load_test_labels(tmp_path, "MELD")
    with pytest.raises(DataError, match="label file not found"):
        load_test_labels(tmp_path / "x.npz", "SIMS")


def test_hand_built_label_file(tmp_path: Path) -> None:
    corpus = np.empty((), dtype=object)
    corpus[()] = {"Ses05F_a": {"emo": 0, "val": -10}, "Ses01M_b": {"emo": 1, "val": -10},
                  "Ses05M_c": {"emo": 3, "val": -10}}
    np.savez(tmp_path / "label_4way.npz", whole_corpus=corpus)
    truth = load_test_labels(tmp_path / "label_4way.npz", "iemocap")
    assert truth == {"Ses05F_a": "happy", "Ses05M_c": "anger"}


# ------------------------------------------------------------ the real label files
@pytest.fixture(scope="module")
def labels_dir(shared_dir: Path, require_data) -> Path:
    return require_data(shared_dir / "conformance" / "labels", "MER-UniBench label files")


@pytest.mark.parametrize("dataset, n, first", [
    ("MER2023", 411, ("sample_00001998", "worried")), ("MELD", 2610, ("test_dia0_utt0", "surprise")),
    ("IEMOCAPFour", 1241, None), ("CMUMOSI", 686, ("k5Y_838nuGo_1", -1.6)), ("CMUMOSEI", 4659, None),
    ("SIMS", 457, ("video_0003_0006", -1.0)), ("SIMSv2", 1034, ("video_0001_0003", -1.0)),
])
def test_real_labels(labels_dir: Path, dataset: str, n: int, first: tuple[str, object] | None) -> None:
    truth = load_test_labels(labels_dir, dataset)
    assert len(truth) == n
    if first is not None:
        name, value = next(iter(truth.items()))
        assert name == first[0]
        assert value == pytest.approx(first[1])
    if dataset == "MELD":
        assert all(k.startswith("test_dia") and "_utt" in k for k in truth)
    if dataset == "IEMOCAPFour":
        assert all(k.startswith("Ses05") for k in truth)
        assert set(truth.values()) == {"happy", "sad", "neutral", "anger"}
