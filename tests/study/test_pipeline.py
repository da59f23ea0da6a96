"""The study end to end on a tiny random model (fast), resume after a kill, and the report."""
from __future__ import annotations

import json

import pytest

import affectlocus as al
from affectlocus.models import tiny_model
from affectlocus.study import Label, Study, StudyConfig, experiments

from _unibench import write_unibench
from _util import assert_bit_identical, state_snapshot


@pytest.fixture(scope="module")
def tokenizer():
    return al.load_model("smollm2-135m")[1]


def tiny_config(out) -> StudyConfig:
    return StudyConfig(out=str(out), n_train=16, n_eval=16, n_control=16, steps=2, bootstrap=50, batch_size=4,
                       targeted=["up"], inherit_sets=["none", "attn", "attn+gate", "gate", "up", "all"],
                       ablate_modules=["gate", "up", "down"], ablate_kinds=["revert", "zero"], alphas=[0, 0.5, 1],
                       neuron_k=[4], probe_layers=[0, 1], random_controls=1)


def test_precision_is_resolved_once_and_recorded(tmp_path, tokenizer):
    from affectlocus.models.loader import fast_bf16
    model = tiny_model("llama", vocab_size=len(tokenizer))
    auto = Study(tiny_config(tmp_path / "auto"), model=model, tokenizer=tokenizer, progress=False)
    assert auto.cfg.bf16 is fast_bf16("cpu") and auto.evaluator.bf16 is auto.cfg.bf16
    assert json.loads((tmp_path / "auto" / "config.json").read_text())["bf16"] is fast_bf16("cpu")
    forced = StudyConfig(**{**tiny_config(tmp_path / "bf16").to_dict(), "bf16": True})
    study = Study(forced, model=model, tokenizer=tokenizer, progress=False)
    assert study.cfg.bf16 is True and study.adapter_root != auto.adapter_root  # another precision, other runs


def test_pipeline_end_to_end_and_resume(tmp_path, tokenizer, monkeypatch):
    model = tiny_model("llama", vocab_size=len(tokenizer))
    snap = state_snapshot(model)
    cfg = tiny_config(tmp_path / "run")
    (tmp_path / "unibench").mkdir()
    cfg.unibench, cfg.unibench_sets = str(write_unibench(tmp_path / "unibench")), ["none", "gate"]

    real = experiments.interpolate

    def killed(study, results):
        raise KeyboardInterrupt  # the user pressed Ctrl-C during the interpolate step
    monkeypatch.setattr(experiments, "interpolate", killed)
    with pytest.raises(KeyboardInterrupt):
        Study(cfg, model=model, tokenizer=tokenizer, progress=False, log=lambda s: None).run_all()
    assert_bit_identical(model, snap)
    al.assert_clean(model)
    done = sorted(p.stem for p in (tmp_path / "run" / "steps").glob("*.json"))
    assert done == ["ablate", "attribute", "health", "inherit", "locate", "targeted", "tune"]

    monkeypatch.setattr(experiments, "interpolate", real)
    log: list[str] = []
    study = Study(cfg, model=model, tokenizer=tokenizer, progress=False, log=log.append)
    results = study.run_all()
    assert sorted(line for line in log if "cached" in line) == [f"[{s}] cached — skipped" for s in done]
    # Nothing finished is recomputed: interpolate reuses the cached α = 0 (base) and α = 1 (graft)
    # scores, so only α = 0.5 per module (+ α = 1 of a runner-up not grafted before) and the three
    # neuron rankings × one k are new evaluations.
    runner_up = results["interpolate"]["runner_up"]
    expected = 2 + (runner_up not in cfg.inherit_sets) + 3
    assert study.evaluator.examples_computed == len(cfg.eval_tasks) * cfg.n_eval * expected
    assert_bit_identical(model, snap)
    al.assert_clean(model)

    report = (tmp_path / "run" / "report" / "index.md").read_text()
    for section in ("## Health", "## Verdicts", "### Decision rules", "## Locate", "## Where, three ways", "## Inherit", "## Targeted tuning", "## Ablate", "## Interpolate",
                    "## Cost–performance", "## Neurons", "## MER-UniBench", "## Configuration",
                    "## Versions and timings"):
        assert section in report
    uni = results["unibench"]
    assert list(uni["rows"]) == ["none", "gate", "GET adapter"]
    assert set(uni["rows"]["gate"]["per_task"]) == {"MER2023", "SIMS"}
    assert uni["details"]["none"]["MER2023"] == {"metric": "hit_rate", "n": 6, "n_missing": 1}
    assert all(0 <= r["mean"] <= 1 for r in uni["rows"].values())
    assert "| `GET adapter` |" in report
    assert (tmp_path / "run" / "report" / "index.html").read_text().count("<img") == len(results["figures"])
    for fig in results["figures"].values():
        assert (tmp_path / "run" / "report" / fig).stat().st_size > 5000
    assert len(results["verdicts"]) == 6  # the five claims and the witnesses' agreement
    assert set(results["health"]["tuned"]) == {"all", "gate", "up", "control"}
    assert [e["seed"] for e in results["health"]["tuned"]["all"]] == cfg.seeds
    assert {v["verdict"] for v in results["verdicts"]} <= set(Label)
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["inherit"]["rows"]["none"]["mean"] == results["inherit"]["rows"]["none"]["mean"]


@pytest.mark.slow
@pytest.mark.timeout(3600)  # ≈ 17–19 min on 2 cores (bf16 where native, fp32 on an AVX2-only CPU); room for a slow machine
def test_demo_quick_mode_on_the_embedded_model(tmp_path):
    from affectlocus.cli import main
    assert main(["demo", "--out", str(tmp_path / "demo"), "--no-progress"]) == 0
    report = (tmp_path / "demo" / "report" / "index.md").read_text()
    verdict_rows = [l for l in report.splitlines() if l.startswith("| ") and
                    any(f"| **{v}** |" in l for v in Label)]
    assert len(verdict_rows) == 6
    from affectlocus.models.loader import fast_bf16
    assert json.loads((tmp_path / "demo" / "config.json").read_text())["bf16"] is fast_bf16("cpu")
    health = json.loads((tmp_path / "demo" / "results.json").read_text())["health"]
    for key in ("all", "gate"):  # the demo's fine-tunes work: ≥ 3 seeds, none failed, each beats the base
        assert len(health["tuned"][key]) >= 3
        assert all(e["beats_base"] and not e["failed"] for e in health["tuned"][key]), health["tuned"][key]
