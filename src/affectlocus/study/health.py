"""The health table: does each fine-tune work, seed by seed, before anything is located?

For the base and every adapter the study trained: score, 95 % CI (examples), chance level, the
paired CI of (tuned − base), first and final training loss, and two flags. A **training failure** is
a NaN loss, a final loss (mean of the last ``FINAL_WINDOW`` steps) not below ``LOSS_RATIO`` × the
first, or a constant predictor (one label for every example of a task). The control adapter learns
arithmetic, not affect: only its loss decides its failure, and its affective score is reported for
information. ``beats_base``: the paired CI of (tuned − base) lies above 0.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

from ..interventions import graft
from . import stats
from .results import ci_above_zero
from .stats import Row

if TYPE_CHECKING:
    from .pipeline import Study

LOSS_RATIO = 0.8
FINAL_WINDOW = 3


def loss_summary(losses: Sequence[float]) -> tuple[float | None, float | None, bool]:
    """(first loss, final loss, loss failure): NaN anywhere, or final ≥ LOSS_RATIO × first."""
    if not losses:
        return None, None, True
    first = float(losses[0])
    tail = losses[-FINAL_WINDOW:]
    final = float(sum(tail) / len(tail))
    bad = any(not math.isfinite(x) for x in losses) or not final < LOSS_RATIO * first
    return first, final, bad


def entry(row: Row, base: Row, losses: Sequence[float], seed: int, is_control: bool = False,
          draws: int = stats.DEFAULT_DRAWS) -> dict:
    """One health-table line for one adapter at one seed."""
    first, final, loss_bad = loss_summary(losses)
    constant = stats.constant_tasks(row)
    diff = stats.paired_diff(row, base, stats.Bootstrap.for_rows([row, base], draws))
    return {"seed": seed, "mean": row["mean"], "ci": row.get("ci"), "diff": diff["diff"], "diff_ci": diff["ci"],
            "chance": row.get("chance"), "first_loss": first, "final_loss": final,
            "collapsed": bool(constant), "constant_tasks": constant,
            "failed": loss_bad or (bool(constant) and not is_control),
            "beats_base": ci_above_zero(diff["ci"])}


def health_table(study: Study) -> dict:
    """The ``health`` object of ``results.json`` (see the module docstring)."""
    draws = study.cfg.bootstrap or stats.DEFAULT_DRAWS
    base = study.score("base")
    tuned: dict[str, list] = {}
    for mods, seed in study.bar(study.affective_runs() + [("control", s) for s in study.aux_seeds], "health"):
        adapter = study.control(seed) if mods == "control" else study.affect(mods, seed)
        row = study.score(f"{mods}-LoRA s{seed}", graft(adapter))
        tuned.setdefault(mods, []).append(entry(row, base, study.info(adapter)["losses"], seed,
                                                is_control=mods == "control", draws=draws))
    failures = [f"{k} seed {e['seed']}" for k, es in tuned.items() for e in es if e["failed"]]
    weak = [f"{k} seed {e['seed']}" for k in ("all", "gate") for e in tuned.get(k, []) if not e["beats_base"]]
    return {"seeds": study.seeds, "aux_seeds": study.aux_seeds, "metric": study.cfg.metric,
            "base": {"mean": base["mean"], "ci": base.get("ci"), "chance": base.get("chance"),
                     "constant_tasks": stats.constant_tasks(base)},
            "tuned": tuned, "failures": failures, "not_beating": weak,
            "rules": f"failed = NaN loss, final loss (mean of last {FINAL_WINDOW} steps) ≥ {LOSS_RATIO} × first, "
                     f"or a constant predictor (not applied to the control's affective score); "
                     f"beats_base = paired 95% CI of (tuned − base) above 0"}


__all__ = ["FINAL_WINDOW", "LOSS_RATIO", "entry", "health_table", "loss_summary"]
