"""The MER-UniBench tasks from subtitles: synthetic label npz + subtitle CSVs, the packaged real wheels."""
from __future__ import annotations


import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from affectlocus.evaluation import runner
from affectlocus.unibench.metrics import hit_rate
from affectlocus.tasks.prompts import char_tokenizer
from affectlocus.evaluation.subtitles import UniBenchSources, run_unibench, score_emotion, unibench_task, wheel_hits
from affectlocus.unibench.wheels import EmotionWheels
from affectlocus.errors import DataError
from affectlocus.models import tiny_model

from _unibench import EMO, VAL, write_unibench

# what the (mocked) model answers for each subtitle
ANSWERS = {"I won the lottery!": "She is delighted.", "Get out of my house!": "He sounds furious.",
           "My dog died.": "He is not happy; he is grieving.", "What if it fails?": "The speaker is calm.",
           "The bus is here.": "No particular emotion.", "Wait, what?": "She is shocked and a bit confused.",
           "This is great": "The sentiment is positive.", "Awful": "Negative.", "It is ok": "neutral",
           "Love it": "negative", "Hate it": "The sentiment is negative.", "Not bad": "not bad at all"}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def wheels():
    return EmotionWheels.load()  # the tables shipped with the package


@pytest.fixture
def config(tmp_path):
    return write_unibench(tmp_path)


def _mock_generation(monkeypatch):
    def fake(model, tokenizer, prompts, max_new_tokens, seed):
        return [next(a for t, a in ANSWERS.items() if f"Text: {t}\n" in p) for p in prompts]
    monkeypatch.setattr(runner, "_generate_batch", fake)


def test_generate_mode_scores_like_the_benchmark(config, wheels, monkeypatch, tmp_path):
    _mock_generation(monkeypatch)
    model, tok = tiny_model("llama", seed=1), char_tokenizer()
    s = run_unibench(model, tok, config, mode="generate", cache_dir=tmp_path / "cache", n_boot=200, progress=False)
    assert list(s.tasks) == ["MER2023", "SIMS"]
    emo = s["MER2023"]
    preds = {r["id"]: r["emotions"] for r in s.records["MER2023"]}
    assert preds["s3"] == ["grieving"] and preds["s2"] == ["furious"]  # "not happy" dropped
    truth = {k: e for k, (e, _) in EMO.items()}
    expected = hit_rate(preds, truth, wheels)
    assert emo.score == pytest.approx(expected.score) and emo.details["n_missing"] == 1 == expected.n_missing
    assert emo.details["no_subtitle"] == 1 and emo.n == 6
    sims = s["SIMS"]
    pred = {r["id"]: r["sentiment"] for r in s.records["SIMS"]}
    assert pred == {"v1": "positive", "v2": "negative", "v3": "neutral", "v4": "negative", "v5": "negative",
                    "v6": "positive"}
    keep = [k for k, (v, _, _) in VAL.items() if v != 0]
    y = [VAL[k][0] > 0 for k in keep]
    p = [pred[k] == "positive" for k in keep]
    assert sims.score == pytest.approx(f1_score(y, p, average="weighted"))
    assert sims.metrics["accuracy"] == pytest.approx(0.8) and sims.details["n_dropped_zero"] == 1
    assert s.mean == pytest.approx((emo.score + sims.score) / 2)
    assert sims.ci[0] <= sims.score <= sims.ci[1]


def test_label_mode_runs_a_model_and_caches(config, wheels, tmp_path):
    model, tok = tiny_model("llama", seed=1), char_tokenizer()
    kw = dict(mode="label", cache_dir=tmp_path / "cache", n_boot=50, progress=False, batch_size=4)
    s = run_unibench(model, tok, config, **kw)
    assert s["MER2023"].metric == "hit_rate" and s["SIMS"].metric == "weighted_f1"
    assert s.meta["stats"]["computed"] == 11
    again = run_unibench(model, tok, config, **kw)
    assert again.meta["stats"] == {"computed": 0, "cached": 11} and again.tasks == s.tasks


def test_bootstrap_hits_agree_with_hit_rate(wheels):
    preds = {"a": ["furious"], "b": ["worried", "happy"], "c": [], "d": ["calm"]}
    truth = {"a": "angry", "b": "happy", "c": "sad", "d": "neutral"}
    hits = wheel_hits(preds, truth, wheels)
    assert np.isnan(hits[3]).all()  # neutral maps to no wheel
    ref = hit_rate(preds, truth, wheels)
    assert np.nanmean(hits, axis=0).tolist() == pytest.approx(ref.per_wheel)
    ts = score_emotion("MER2023", preds, truth, wheels, n_boot=300, seed=0)
    assert ts.score == ref.score and ts.ci == score_emotion("MER2023", preds, truth, wheels, n_boot=300).ci


def test_language_column_and_sampling(config):
    src = UniBenchSources.load(config)
    task, truth = unibench_task(src, "SIMS")
    assert task.test[0].text == "This is great"
    src.language = "chinese"
    task, _ = unibench_task(src, "sims", max_examples=3, seed=0)
    assert len(task.test) == 3 and task.language == "zh" and all(ord(e.text[0]) > 127 for e in task.test)
    assert [e.id for e in task.test] == [e.id for e in unibench_task(src, "sims", max_examples=3, seed=0)[0].test]


def test_missing_files_name_the_expected_path(config, tmp_path):
    src = UniBenchSources.load(config)
    with pytest.raises(DataError, match="no subtitle CSV for MELD"):
        unibench_task(src, "MELD")
    (tmp_path / "subs" / "mer.csv").unlink()
    with pytest.raises(DataError, match=r"subs/mer\.csv"):
        unibench_task(src, "MER2023")
    (tmp_path / "x.csv").write_text("name,english\nx,hi\n")
    with pytest.raises(DataError, match=r"cmumosi-process/label\.npz"):
        unibench_task(UniBenchSources(subtitles={"CMUMOSI": tmp_path / "x.csv"}, labels=tmp_path / "labels"),
                      "CMUMOSI")
    pd.DataFrame({"name": ["v1"], "text": ["x"]}).to_csv(tmp_path / "subs" / "sims.csv", index=False)
    with pytest.raises(DataError, match="no 'english' or 'chinese' column"):
        unibench_task(src, "SIMS")
    with pytest.raises(DataError, match="unknown key"):
        (tmp_path / "bad.toml").write_text('subtitle = "x"\n')
        UniBenchSources.load(tmp_path / "bad.toml")


def test_folder_layout(tmp_path):
    (tmp_path / "subtitles").mkdir()
    (tmp_path / "subtitles" / "mosi.csv").write_text("name,english\nx,hi\n")
    (tmp_path / "subtitles" / "notes.csv").write_text("a\n")
    src = UniBenchSources.load(tmp_path)
    assert list(src.subtitles) == ["CMUMOSI"] and src.labels == tmp_path / "labels" and src.wheels is None
    with pytest.raises(DataError, match="no subtitle CSV for MELD"):  # the packaged wheels stand in
        run_unibench(tiny_model("llama"), char_tokenizer(), src, ["MELD"])


def test_wheels_in_the_config_override_the_packaged_tables(tmp_path):
    src = UniBenchSources.load(write_unibench(tmp_path / "b", wheels=tmp_path / "mine"))
    assert src.wheels == tmp_path / "mine"
    with pytest.raises(DataError, match=r"emotion-wheel folder not found: .*mine"):
        run_unibench(tiny_model("llama"), char_tokenizer(), src, ["MER2023"])
