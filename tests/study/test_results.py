"""Typed results: score rows and verdicts read the JSON the study stores (rows and verdicts written by
the code before they were typed load unchanged) and write it back key for key; one CI formatter."""
from __future__ import annotations

import copy
import json

import pytest

from affectlocus.errors import DataError
from affectlocus.study import Label, ScoreRow, TaskRow, Verdict, plots, stats
from affectlocus.study.report import render_markdown, score_table
from affectlocus.study.results import fmt_ci

# a base row as the study wrote it to steps/inherit.json (tiny model, 16 examples per task)
OLD_ROW = {"metric": "balanced_accuracy", "mean": 0.41666666666666663, "chance": 0.41666666666666663, "per_task": {
    "rt-polarity": {"mean": 0.5, "n": 16, "chance": 0.5, "labels": ["negative", "positive"],
                    "pred": [1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 0, 1, 1, 0, 1],
                    "truth": [0, 1, 0, 0, 1, 1, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1]},
    "tweets-sentiment": {"mean": 0.3333333333333333, "n": 16, "chance": 0.3333333333333333,
                         "labels": ["negative", "neutral", "positive"], "pred": [1] * 16,
                         "truth": [0, 0, 0, 0, 0, 0, 0, 0, 2, 1, 0, 2, 1, 1, 1, 1]}},
    "ci": [0.3380208333333333, 0.5138095238095237], "name": "base"}
# a MER-UniBench row (steps/unibench.json) and a cost point (steps/cost.json): no per-example answers
OLD_UNIBENCH = {"mean": 0.11428571428571428, "ci": [0.0, 0.32618055555555536],
                "per_task": {"MER2023": {"mean": 0.0}, "SIMS": {"mean": 0.22857142857142856}}}
OLD_POINT = {"mean": -0.04166666666666663, "ci": [-0.15457070707070703, 0.07409722222222209]}
# a verdict as results.json held it
OLD_VERDICT = {"claim": "gate_proj alone transfers the affective skill (inheritance)", "verdict": "inconclusive",
               "evidence": "the `all` adapter is a training failure at seed 0, seed 1, seed 2", "numbers": {}}


def seeded(seed: int) -> dict:
    row = copy.deepcopy(OLD_ROW)
    row["per_task"]["rt-polarity"]["pred"][seed] = 1 - row["per_task"]["rt-polarity"]["pred"][seed]
    return {**row, "seed": seed}


def test_an_old_score_row_loads_and_writes_the_same_json() -> None:
    row = ScoreRow.from_dict(OLD_ROW)
    assert isinstance(row.per_task["rt-polarity"], TaskRow)
    assert row.per_task["tweets-sentiment"].pred == [1] * 16 and row.name == "base" and row.per_seed is None
    assert row.interval == (0.3380208333333333, 0.5138095238095237)
    assert json.dumps(row.to_dict()) == json.dumps(OLD_ROW)        # same keys, values and order
    assert ScoreRow.from_dict(row.to_dict()) == row


@pytest.mark.parametrize("old", [OLD_UNIBENCH, OLD_POINT, {**OLD_POINT, "ci": None}, {**OLD_POINT, "note": "x"}])
def test_rows_without_answers_round_trip(old) -> None:
    row = ScoreRow.from_dict(old)
    assert row.to_dict() == old and ScoreRow.coerce(row) is row
    lo, hi = row.interval
    assert (lo, hi) == (tuple(old["ci"]) if old["ci"] else (row.mean, row.mean))


def test_a_multi_seed_row_round_trips_and_the_statistics_agree() -> None:
    multi = stats.over_seeds("gate", [seeded(s) for s in range(3)], stats.Bootstrap.for_rows([seeded(0)], 50))
    row = ScoreRow.from_dict(multi)
    assert [r.seed for r in row.per_seed] == row.seeds == [0, 1, 2] and row.sd is not None
    assert row.to_dict() == multi
    assert stats.point(row.to_dict()) == stats.point(multi)


def test_a_built_row_has_the_evaluators_key_order() -> None:
    row = ScoreRow(metric="accuracy", mean=0.5, chance=0.5, per_task={"t": TaskRow(mean=0.5, n=2, chance=0.5,
                   labels=["a", "b"], pred=[0, 1], truth=[1, 1])})
    assert list(row.to_dict()) == ["metric", "mean", "chance", "per_task", "ci"]
    assert list(row.to_dict()["per_task"]["t"]) == ["mean", "n", "chance", "labels", "pred", "truth"]


def test_verdicts_round_trip_and_old_ones_load() -> None:
    v = Verdict.from_dict(OLD_VERDICT)
    assert v.verdict is Label.INCONCLUSIVE and v.to_dict() == OLD_VERDICT
    assert json.dumps(v.to_dict()) == json.dumps(OLD_VERDICT)
    new = Verdict("c", "not supported", "e", {"share": {"ci": [0.1, 0.2]}})
    assert new.verdict is Label.NOT_SUPPORTED and Verdict.from_dict(new.to_dict()) == new
    assert type(new.to_dict()["verdict"]) is str
    with pytest.raises(DataError, match="unknown verdict 'maybe'; one of 'supported'"):
        Verdict("c", "maybe", "e")
    assert f"{Label.SUPPORTED}" == str(Label.SUPPORTED) == "supported" and f"{Label.INCONCLUSIVE:>14}".strip() == "inconclusive"


def test_one_ci_formatter() -> None:
    assert fmt_ci([0.1234, 0.5]) == "[0.123, 0.500]"
    assert fmt_ci([-0.1, 0.25], "+.3f") == "[-0.100, +0.250]"
    assert fmt_ci([0.854, 0.97], ".0%") == "[85%, 97%]"
    assert fmt_ci(None) == "—" and fmt_ci([], missing="[no CI]") == "[no CI]"


def test_report_reads_old_rows_and_verdicts(tmp_path) -> None:
    table = score_table({"base": OLD_ROW, "unibench": OLD_UNIBENCH})
    assert table[2] == "| `base` | 0.417 [0.338, 0.514] | — | — | 0.500 | 0.333 |"
    assert table[3] == "| `unibench` | 0.114 [0.000, 0.326] | 0.000 | 0.229 | — | — |"
    md = render_markdown({"config": {"model": "m"}, "verdicts": [OLD_VERDICT]})
    assert f"| {OLD_VERDICT['claim']} | **inconclusive** | {OLD_VERDICT['evidence']} |" in md


def test_figures_are_written_from_old_rows(tmp_path) -> None:
    path = plots.score_bars({"base": OLD_ROW, "gate": ScoreRow.from_dict(OLD_POINT)}, tmp_path / "bars.png", "t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    path = plots.cost_performance({"gate": (3072, OLD_POINT)}, tmp_path / "cost.png")
    assert path.stat().st_size > 1000
