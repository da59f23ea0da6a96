"""The study's `attribute` step on a tiny model: three witnesses, their agreement, the spectrum, the report."""
from __future__ import annotations

import json
import math

import pytest

import affectlocus as al
from affectlocus.models import tiny_model
from affectlocus.study import Label, Study, StudyConfig
from affectlocus.study.claims import WITNESSES_CLAIM
from affectlocus.study.witnesses import WITNESSES, witness_batches, witnesses_agree

from _util import assert_bit_identical, state_snapshot

pytestmark = pytest.mark.usefixtures("one_thread")
OTHERS = ["inherit", "targeted", "ablate", "interpolate", "cost", "neurons"]


@pytest.fixture(scope="module")
def tokenizer():
    return al.load_model("smollm2-135m")[1]


def config(out, **kw) -> StudyConfig:
    return StudyConfig(out=str(out), n_train=16, n_eval=16, n_control=16, steps=2, bootstrap=50, batch_size=4,
                       targeted=[], seeds=[0, 1], witness_seeds=2, witness_examples=3, witness_layers=None,
                       attribute_steps=2, skip=OTHERS, **kw)


@pytest.fixture(scope="module")
def run(tmp_path_factory, tokenizer):
    out = tmp_path_factory.mktemp("witness-study") / "run"
    model = tiny_model("llama", vocab_size=len(tokenizer))
    snap = state_snapshot(model)
    study = Study(config(out), model=model, tokenizer=tokenizer, progress=False, log=lambda s: None)
    results = study.run_all()
    assert_bit_identical(model, snap)
    al.assert_clean(model)
    return out, model, study, results


def test_step_results_figure_and_report(run):
    out, _, study, results = run
    wit = results["attribute"]
    assert wit["witnesses"] == list(WITNESSES) and wit["seeds"] == [0, 1] and wit["layers"] == [0, 1]
    assert wit["examples"] == 3
    for seed in ("0", "1"):
        per = wit["per_seed"][seed]
        assert set(per["scores"]) == set(WITNESSES)
        assert all(len(s) == 7 for s in per["scores"].values())
        for p in per["agreement"]["pairs"]:
            assert p["tau"] is None or -1 <= p["tau"] <= 1
            assert p["p"] is None or 0 < p["p"] <= 1
        for kind in WITNESSES:
            assert (out / "witnesses" / f"affective-s{seed}" / f"{kind}.csv").exists()
    pooled = wit["pooled"]["agreement"]
    assert len(pooled["pairs"]) == 3 and pooled["verdict"] in ("agree", "disagree", "inconclusive")
    assert all(-1 <= p["tau"] <= 1 and 0 < p["p"] <= 1 for p in pooled["pairs"] if p["tau"] is not None)
    assert set(wit["spread"]) == {"size~mediation", "size~attribution", "mediation~attribution"}
    spec = wit["spectrum"]
    assert set(spec["modules"]) == {"affective", "control"} and spec["seeds"] == {"affective": [0, 1], "control": [0]}
    affective = spec["modules"]["affective"].values()
    assert all(0 < v["effective_rank"] <= 8.0 + 1e-6 and v["intruders"] >= 0 for v in affective)

    verdict = next(v for v in results["verdicts"] if v["claim"] == WITNESSES_CLAIM)
    assert verdict["verdict"] in set(Label) and "the three witnesses" in verdict["evidence"]
    saved = json.loads((out / "results.json").read_text())
    assert saved["attribute"]["pooled"]["agreement"]["verdict"] == pooled["verdict"]
    assert (out / "report" / results["figures"]["attribute-witnesses"]).stat().st_size > 5000
    report = (out / "report" / "index.md").read_text()
    assert "## Where, three ways" in report and WITNESSES_CLAIM in report
    assert "Spectrum of ΔW" in report and "intruders (control)" in report
    assert "the three witnesses" in report and "attribute_witnesses.png" in report
    html = (out / "report" / "index.html").read_text()
    assert "Where, three ways" in html


def test_second_run_reuses_the_cached_step(run, tokenizer):
    out, model, study, results = run
    stamp = (out / "steps" / "attribute.json").stat().st_mtime_ns
    log: list[str] = []
    again = Study(config(out), model=model, tokenizer=tokenizer, progress=False, log=log.append).run_all()
    assert "[attribute] cached — skipped" in log
    assert (out / "steps" / "attribute.json").stat().st_mtime_ns == stamp
    assert again["attribute"]["pooled"] == json.loads(json.dumps(results["attribute"]["pooled"]))


def test_skippable_and_batches(tmp_path, tokenizer, run):
    _, model, study, _ = run
    prompts, full = witness_batches(study)
    assert prompts["input_ids"].shape[0] == full["input_ids"].shape[0] == 3 and "labels" not in prompts
    answer = (full["labels"] != -100).sum(-1)
    assert (answer > 0).all() and ((full["labels"] != -100) <= full["attention_mask"].bool()).all()
    # the prompt rows are the full rows' prefixes: mediation reads the position that predicts the label
    lengths = prompts["attention_mask"].sum(-1)
    for i, n in enumerate(lengths.tolist()):
        assert full["input_ids"][i, :n].tolist() == prompts["input_ids"][i, :n].tolist()
        assert full["labels"][i, n].item() != -100
    cfg = config(tmp_path / "skip")
    cfg.skip = OTHERS + ["attribute"]
    res = Study(cfg, model=model, tokenizer=tokenizer, progress=False, log=lambda s: None).run_all()
    assert "attribute" not in res and not any(v["claim"] == WITNESSES_CLAIM for v in res["verdicts"])
    assert "_skipped in this run_" in (tmp_path / "skip" / "report" / "index.md").read_text()


def test_verdict_rule_maps_agreement_and_health():
    from affectlocus.witnesses.agreement import agreement
    mods = ["q", "k", "v", "o", "gate", "up", "down"]
    up = {m: float(i) for i, m in enumerate(mods)}
    health = {"tuned": {"all": [{"seed": 0, "failed": False, "beats_base": True}]}}

    def section(scores):
        a = agreement(scores)
        return {"pooled": {"agreement": a.to_dict()}, "spread": {}}
    same = section({w: up for w in WITNESSES})
    assert witnesses_agree(same, health).verdict == Label.SUPPORTED
    flipped = section({"size": up, "mediation": up, "attribution": {m: -v for m, v in up.items()}})
    assert witnesses_agree(flipped, health).verdict == Label.NOT_SUPPORTED
    weak = {"tuned": {"all": [{"seed": 0, "failed": False, "beats_base": False}]}}
    v = witnesses_agree(same, weak)
    assert v.verdict == Label.INCONCLUSIVE and "does not beat the base" in v.evidence
    assert witnesses_agree(None, health).verdict == Label.INCONCLUSIVE
    assert not math.isnan(v.numbers["agreement"]["pairs"][0]["tau"])


def test_config_fields_and_presets():
    from affectlocus.study import ConfigError, full, quick
    q, f = quick(), full()
    assert (q.witness_layers, q.attribute_steps, q.witness_examples) == ("::15", 2, 3)
    assert (f.witness_layers, f.attribute_steps) == (None, 8) and f.witness_examples > q.witness_examples
    assert StudyConfig(witness_layers=":").witness_layers == ":"  # TOML's "every layer"
    for bad, match in (({"witness_layers": "a:b"}, "witness_layers"), ({"witness_examples": 0}, "below its minimum"),
                       ({"attribute_steps": 0}, "below its minimum"), ({"witness_seeds": 0}, "below its minimum")):
        with pytest.raises(ConfigError, match=match):
            StudyConfig(**bad)
