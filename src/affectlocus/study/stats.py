"""Statistics of the study: hierarchical and paired bootstrap over seeds *and* examples, Holm's rule.

They compute on score rows in their JSON form (:class:`~affectlocus.study.results.ScoreRow` is the
typed view). A single-seed row is what :class:`~affectlocus.study.evaluation.StudyEvaluator` returns
for one configuration at one training seed (or none, for the base)::

    {"metric", "mean", "chance", "ci", "name",
     "per_task": {task: {"mean", "n", "chance", "labels": [...], "pred": [int], "truth": [int]}}}

A **multi-seed row** (:func:`over_seeds`) holds the per-seed rows under ``"per_seed"`` and the seeds
under ``"seeds"``. Every configuration is scored on the same examples, so differences are *paired*:
one bootstrap draw resamples the training seeds (with replacement) and, independently, the examples
of each task (with replacement), and applies the same draw to every configuration compared. A
configuration with one seed (the base model) is used as is in every draw. Per-seed CIs are never
averaged.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from ..errors import DataError
from ..tasks.classification import classification_metrics, percentile_ci
from ..witnesses.agreement import holm  # noqa: F401  (one Holm for the study and the witnesses)

Row = Mapping[str, object]
#: Bootstrap draws of the study's CIs (seeded; see :class:`Bootstrap`).
DEFAULT_DRAWS = 2000


def per_seed(row: Row) -> list[Row]:
    """The per-seed rows of ``row`` (itself when it is a single-seed row)."""
    return list(row.get("per_seed") or [row])


def tasks_of(row: Row) -> list[str]:
    """The task names of ``row`` (its first seed's)."""
    return list(per_seed(row)[0]["per_task"])


def _metric_fn(metric: str) -> Callable[[np.ndarray, np.ndarray, int], np.ndarray]:
    def fn(y: np.ndarray, p: np.ndarray, k: int) -> np.ndarray:
        return classification_metrics(y, p, k)[metric]
    return fn


@dataclass
class Bootstrap:
    """One seeded set of paired draws for a fixed set of tasks (``n`` examples each) and seed count.

    ``draws`` resamples; example indices are drawn per task from (seed, task name), seed indices
    from (seed, "seeds"), so the same configurations compared in any order give the same numbers.
    A row with ``S`` seeds draws each of its ``S`` slots uniformly from its own seeds (whatever
    ``n_seeds`` says); rows with the same ``S`` get the same seed draw (paired).
    """

    n_examples: Mapping[str, int]
    n_seeds: int
    draws: int = DEFAULT_DRAWS
    seed: int = 0

    def __post_init__(self) -> None:
        self.example_idx = {t: np.random.default_rng([self.seed, zlib.crc32(t.encode())])
                            .integers(0, n, (self.draws, n)) for t, n in self.n_examples.items()}
        self._seed_u = self._seed_uniforms(max(self.n_seeds, 1))

    def _seed_uniforms(self, width: int) -> np.ndarray:
        # [draws, width]; drawn slot by slot, so column j is the same for every width > j
        return np.random.default_rng([self.seed, zlib.crc32(b"seeds")]).random((width, self.draws)).T

    def seed_indices(self, S: int) -> np.ndarray:
        """``[draws, S]`` indices into a row's ``S`` seeds (uniform, with replacement)."""
        if S <= 1:
            return np.zeros((self.draws, 1), dtype=int)
        if self._seed_u.shape[1] < S:
            self._seed_u = self._seed_uniforms(S)
        return np.minimum((self._seed_u[:, :S] * S).astype(int), S - 1)

    @classmethod
    def for_rows(cls, rows: Sequence[Row], draws: int = DEFAULT_DRAWS, seed: int = 0) -> "Bootstrap":
        """The draws for comparing ``rows`` (tasks and sizes of the first row; the most seeds of any)."""
        first = per_seed(rows[0])[0]["per_task"]
        return cls({t: int(v["n"]) for t, v in first.items()}, max(len(per_seed(r)) for r in rows),
                   draws, seed)

    def samples(self, row: Row) -> np.ndarray:
        """``[draws]`` resampled task-mean scores of ``row`` (seeds and examples resampled)."""
        seeds = per_seed(row)
        S = len(seeds)
        metric = _metric_fn(str(seeds[0].get("metric", "balanced_accuracy")))
        # seeds resampled among this row's own seeds; the same draw pairs seed j of two rows
        sidx = self.seed_indices(S)
        out = np.zeros(self.draws)
        tasks = list(seeds[0]["per_task"])
        for task in tasks:
            t0 = seeds[0]["per_task"][task]
            y = np.asarray(t0["truth"], dtype=int)
            k = len(t0["labels"])
            P = np.stack([np.asarray(s["per_task"][task]["pred"], dtype=int) for s in seeds])  # [S, n]
            idx = self.example_idx[task]
            if idx.shape[1] != len(y):
                raise DataError(f"task {task}: rows scored on {len(y)} examples, bootstrap built for "
                                 f"{idx.shape[1]}")
            yy = y[idx]                                                     # [B, n]
            scores = np.zeros((self.draws, sidx.shape[1]))
            for j in range(sidx.shape[1]):
                pp = P[sidx[:, j][:, None], idx]                             # [B, n]
                scores[:, j] = metric(yy, pp, k)
            out += scores.mean(axis=1)
        return out / len(tasks)


def point(row: Row) -> float:
    """Mean over seeds of the task-mean score."""
    return float(np.mean([float(s["mean"]) for s in per_seed(row)]))


def p_greater(diff: np.ndarray) -> float:
    """One-sided bootstrap p-value of "difference > 0": (#draws ≤ 0 + 1) / (draws + 1)."""
    d = diff[np.isfinite(diff)]
    return float((np.sum(d <= 0) + 1) / (d.size + 1)) if d.size else 1.0


def over_seeds(name: str, rows: Sequence[Row], boot: Bootstrap | None = None) -> dict:
    """One multi-seed row: point = mean over seeds; CI = hierarchical bootstrap (seeds × examples)."""
    rows = list(rows)
    if len(rows) == 1:
        return {**rows[0], "name": name}
    boot = boot or Bootstrap.for_rows(rows)
    means = [float(r["mean"]) for r in rows]
    tasks = tasks_of(rows[0])
    return {"name": name, "metric": rows[0].get("metric"), "mean": float(np.mean(means)),
            "sd": float(np.std(means, ddof=1)), "ci": percentile_ci(boot.samples({"per_seed": rows})),
            "chance": rows[0].get("chance"), "seeds": [r.get("seed") for r in rows],
            "per_task": {t: {"mean": float(np.mean([r["per_task"][t]["mean"] for r in rows])),
                             "chance": rows[0]["per_task"][t].get("chance")} for t in tasks},
            "per_seed": rows}


def paired_diff(a: Row, b: Row, boot: Bootstrap | None = None) -> dict:
    """``a − b`` with a paired (seeds × examples) bootstrap CI and one-sided p-value of a > b."""
    boot = boot or Bootstrap.for_rows([a, b])
    d = boot.samples(a) - boot.samples(b)
    return {"diff": point(a) - point(b), "ci": percentile_ci(d), "p": p_greater(d)}


def paired_ratio(num_a: Row, num_b: Row, den_a: Row, den_b: Row, boot: Bootstrap | None = None) -> dict:
    """``(num_a − num_b) / (den_a − den_b)`` (e.g. a recovered share of a gain) with a paired CI."""
    boot = boot or Bootstrap.for_rows([num_a, num_b, den_a, den_b])
    num = boot.samples(num_a) - boot.samples(num_b)
    den = boot.samples(den_a) - boot.samples(den_b)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(den > 0, num / den, np.nan)
    d = point(den_a) - point(den_b)
    return {"ratio": (point(num_a) - point(num_b)) / d if d else float("nan"), "ci": percentile_ci(ratio),
            "undefined_draws": float(np.mean(~np.isfinite(ratio)))}


def example_ci(row: Row, draws: int = DEFAULT_DRAWS, seed: int = 0) -> list[float] | None:
    """CI of a single-seed row over examples only."""
    return percentile_ci(Bootstrap.for_rows([row], draws, seed).samples(row))


def constant_tasks(row: Row) -> list[str]:
    """Tasks on which some seed of ``row`` gave one label to every example (a constant predictor)."""
    out = []
    for i, s in enumerate(per_seed(row)):
        for t, v in s["per_task"].items():
            pred = v.get("pred")
            if len(set(np.asarray(pred if pred is not None else []).tolist())) <= 1:
                out.append(t if len(per_seed(row)) == 1 else f"{t} (seed {s.get('seed', i)})")
    return out


def layer_share_diff(affect: Sequence[Mapping[str, float]], control: Sequence[Mapping[str, float]],
                     module: str = "gate", draws: int = DEFAULT_DRAWS, seed: int = 0) -> dict:
    """``module``'s share of the per-layer change, affective minus control, bootstrapped over layers.

    ``affect`` / ``control``: one ``{module: value}`` per layer (same layers, same metric).
    """
    a = np.array([v[module] / sum(v.values()) if sum(v.values()) > 0 else np.nan for v in affect])
    c = np.array([v[module] / sum(v.values()) if sum(v.values()) > 0 else np.nan for v in control])
    d = a - c
    idx = np.random.default_rng([seed, zlib.crc32(b"layers")]).integers(0, len(d), (draws, len(d)))
    boot = np.nanmean(d[idx], axis=1)
    return {"affective": float(np.nanmean(a)), "control": float(np.nanmean(c)), "diff": float(np.nanmean(d)),
            "ci": percentile_ci(boot), "layers": len(d)}


__all__ = ["Bootstrap", "DEFAULT_DRAWS", "Row", "constant_tasks", "example_ci", "holm", "layer_share_diff",
           "over_seeds", "p_greater", "paired_diff", "paired_ratio", "per_seed", "point"]
