"""Emotion-wheel tables: hand-made tables with known answers, and the real MER-UniBench tables (packaged)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from affectlocus.unibench import EmotionWheels, hit_rate, parse_labels
from affectlocus.unibench.wheels import PACKAGED_WHEELS, WHEEL_NAMES
from affectlocus.errors import DataError

NA = np.nan
_W1 = [("Happy ", "Joyful", "Delighted"), (NA, NA, "Cheerful"), (NA, "Brave", "Daring"),
       ("Sad", "Lonely", "Isolated"), ("Angry", "Mad", "Furious"), ("Fearful", "Scared", "Afraid")]
_W2 = [("Positive", "Joyful", "Delighted"), (NA, NA, "Cheerful"), ("Negative", "Sad", "Lonely"),
       (NA, "Angry", "Furious"), (NA, "Scared", "Afraid")]
_W5 = [("Happy", "Joyful", "Delighted")]
_SYN = {"joyful": "glad, elated", "furious": "enraged", "sad": "unhappy", "scared": "frightened",
        "daring": "bold"}
_FORMATS = [("joyful", "joyful,joyfully,joy"), ("glad", "glad,gladly"), ("elated", "elated"),
            ("furious", "furious,fury"), ("enraged", "enraged"), ("sad", "sad,sadness"),
            ("unhappy", "unhappy"), ("scared", "scared,fear"), ("frightened", "frightened"),
            ("daring", "daring,fear"), ("bold", "bold"), ("lonely", NA)]


def write_tables(root: Path) -> Path:
    """Write a tiny, complete emotion-wheel folder (five wheels) under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    cols = ["level1", "level2", "level3"]
    for i, rows in enumerate([_W1, _W2, _W1, _W1, _W5], start=1):
        pd.DataFrame(rows, columns=cols).to_excel(root / f"wheel{i}.xlsx", index=False)
    data: dict[str, list[object]] = {}
    for run in range(1, 9):
        words, syns = list(_SYN), list(_SYN.values())
        if run == 3:  # case and spacing are normalised; runs are merged
            words = [" Joyful"] + words[1:]
            syns = ["Glad, cheery"] + syns[1:]
        if run == 5:
            syns[-1] = NA  # an empty synonym cell
        data[f"word_run{run}"], data[f"synonym_run{run}"] = words, syns
    pd.DataFrame(data).to_excel(root / "synonym.xlsx", index=False)
    pd.DataFrame(_FORMATS, columns=["name", "format"]).to_csv(root / "format.csv", index=False)
    return root


@pytest.fixture(scope="module")
def tiny_wheels(tmp_path_factory: pytest.TempPathFactory) -> EmotionWheels:
    return EmotionWheels.load(write_tables(tmp_path_factory.mktemp("wheels")))


@pytest.mark.parametrize("text, expected", [
    ("[a, b]", ["a", "b"]), ("['a', \"b\"]", ["a", "b"]), ("a, b,,", ["a", "b"]), ("", []), ("[]", []),
    (" happy ", ["happy"]), (float("nan"), []), (None, []), (["x, y"], ["x, y"]), (np.array(["p"]), ["p"]),
])
def test_parse_labels(text: object, expected: list[str]) -> None:
    assert parse_labels(text) == expected


def test_tiny_tables_structure(tiny_wheels: EmotionWheels) -> None:
    w = tiny_wheels
    # blank cells continue the row above; level1/2/3 all cluster to level1; case and spaces normalised
    assert w.wheels[0]["cheerful"] == "happy" and w.wheels[0]["joyful"] == "happy"
    assert w.wheels[0]["happy"] == "happy" and w.wheels[0]["daring"] == "happy"
    assert w.wheels[1]["furious"] == "negative" and "daring" not in w.wheels[1]
    assert w.synonyms["glad"] == ["joyful"] and w.synonyms["cheery"] == ["joyful"]  # run 3 merged
    assert w.synonyms["joyful"] == ["joyful"] and w.synonyms["bold"] == ["daring"]
    assert w.formats["fear"] == ["daring", "scared"] and w.formats["lonely"] == ["lonely"]


def test_tiny_clusters(tiny_wheels: EmotionWheels) -> None:
    w = tiny_wheels
    assert [w.cluster("Joy", k) for k in range(5)] == ["happy", "positive", "happy", "happy", "happy"]
    assert [w.cluster("sadness", k) for k in range(5)] == ["sad", "negative", "sad", "sad", None]
    assert [w.cluster("neutral", k) for k in range(5)] == [None] * 5
    # 'fear' is a form of both 'scared' and 'daring': sorted candidates try 'daring' first
    assert w.candidates("fear") == ["daring", "scared"]
    assert [w.cluster("fear", k) for k in range(5)] == ["happy", "negative", "happy", "happy", None]
    # a base word with no synonym row maps to nothing
    assert w.cluster("lonely", 0) is None
    assert w.clusters(["glad", "fury", "nonsense"], 1) == {"positive", "negative"}


def test_tiny_hit_rate_known_answer(tiny_wheels: EmotionWheels) -> None:
    truth = {"a": "joy", "b": "sadness", "c": "neutral", "d": "fury", "e": "fear", "f": "joy"}
    preds = {"a": ["glad", "unknownword"], "b": "[unhappy, fury]", "c": ["joy"], "d": ["sad"],
             "e": ["bold"], "z": ["joy"]}
    res = hit_rate(preds, truth, tiny_wheels)
    # wheel1/3/4: a 1, b 1, d 0, e 1 (fear → daring → happy; bold → daring), f 0 (missing) → 3/5
    # wheel2: a 1, b 1, d 1, e 0 (bold maps to nothing), f 0 → 3/5; wheel5: a 1, f 0 → 1/2
    assert res.per_wheel == pytest.approx([0.6, 0.6, 0.6, 0.6, 0.5])
    assert res.score == pytest.approx(0.58)
    assert res.n_scored == [5, 5, 5, 5, 2] and res.n_skipped == [1, 1, 1, 1, 4]
    assert res.n_samples == 6 and res.n_missing == 1
    assert res.to_dict()["per_wheel"] == res.per_wheel


def test_nothing_scored(tiny_wheels: EmotionWheels) -> None:
    res = hit_rate({"x": ["joy"]}, {"x": "neutral"}, tiny_wheels)
    assert res.score is None and res.per_wheel == [None] * 5 and res.n_skipped == [1] * 5


def test_missing_files_name_expected_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        EmotionWheels.load(tmp_path / "nope")
    root = write_tables(tmp_path / "w")
    (root / "wheel4.xlsx").unlink()
    with pytest.raises(DataError, match=r"wheel4\.xlsx") as info:
        EmotionWheels.load(root)
    assert str(root / "wheel4.xlsx") in str(info.value)
    (root / "format.csv").unlink()
    with pytest.raises(DataError, match=r"format\.csv"):
        EmotionWheels.load(root)


def test_synonym_word_must_be_on_a_wheel(tmp_path: Path) -> None:
    root = write_tables(tmp_path / "w")
    df = pd.read_excel(root / "synonym.xlsx")
    df.loc[0, "word_run2"] = "notawheelword"
    df.to_excel(root / "synonym.xlsx", index=False)
    with pytest.raises(DataError, match="notawheelword"):
        EmotionWheels.load(root)


# ------------------------------------------------------------ the real MER-UniBench tables
#: every file shipped in the package's emotion_wheel/ folder
PACKAGED_FILES = ["NOTICE", "format.csv", "synonym.xlsx", *(f"{n}.xlsx" for n in WHEEL_NAMES)]


@pytest.fixture(scope="module")
def real_wheels() -> EmotionWheels:
    return EmotionWheels.load()  # no folder: the tables shipped with the package


def test_packaged_tables_are_the_benchmark_files(shared_dir: Path, require_data) -> None:
    """Byte for byte the MER-UniBench tables of ../shared (copied from AffectGPT), and nothing else."""
    source = require_data(shared_dir / "mer-unibench" / "emotion_wheel", "MER-UniBench emotion-wheel tables")
    assert sorted(p.name for p in PACKAGED_WHEELS.iterdir()) == sorted(PACKAGED_FILES)
    for name in PACKAGED_FILES[1:]:
        assert (PACKAGED_WHEELS / name).read_bytes() == (source / name).read_bytes(), name
    notice = (PACKAGED_WHEELS / "NOTICE").read_text(encoding="utf-8")
    assert "github.com/zeroQiaoba/AffectGPT" in notice and "Apache License" in notice
    assert (source.parent / "LICENSE.txt").read_text(encoding="utf-8") in notice  # the full licence text


def test_explicit_folder_overrides_the_packaged_tables(tmp_path: Path) -> None:
    assert EmotionWheels.load().source == str(PACKAGED_WHEELS)
    tiny = EmotionWheels.load(write_tables(tmp_path / "w"))
    assert tiny.source == str(tmp_path / "w") and len(tiny.formats) < 100


def test_real_tables_sizes(real_wheels: EmotionWheels) -> None:
    # the reference prints 7386 surface forms and 1255 synonym-table words
    assert len(real_wheels.formats) == 7386 and len(real_wheels.synonyms) == 1255
    assert [len(m) for m in real_wheels.wheels] == [114, 126, 78, 102, 77]


def test_real_tables_quirks(real_wheels: EmotionWheels) -> None:
    w = real_wheels
    assert [w.cluster("neutral", k) for k in range(5)] == [None] * 5
    assert "fearless" in w.formats["fear"]  # format.csv lists 'fear' as a form of 'fearless'
    assert [w.cluster("fear", k) for k in range(5)] == ["scared", "happy", "joyful", "genius", "joyful"]
    assert [w.cluster("happy", k) for k in range(5)] == ["happy", "happy", "joyful", "joy", "powerful"]
    assert [w.cluster("disgust", k) for k in range(5)] == ["disgusted", "disgusted", None, "disgust", None]
    assert [w.cluster("Sadness ", k) for k in range(5)] == ["sad"] * 5
