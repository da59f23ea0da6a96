"""The study's statistics on synthetic score rows with known answers: paired and hierarchical
bootstrap (seeds × examples), Holm's rule, ratios, constant predictors and layer shares."""
from __future__ import annotations

import numpy as np
import pytest

import affectlocus as al

from affectlocus.evaluation.runner import chance_level, classification_metrics
from affectlocus.study import stats
from affectlocus.tasks.classification import percentile_ci

K = 3
METRIC = "balanced_accuracy"
DRAWS = 400


# ---- synthetic rows ------------------------------------------------------------------------------
def truths(n: int = 120, tasks=("t1", "t2"), seed: int = 0) -> dict[str, np.ndarray]:
    """Balanced truth vectors (n examples per task, K classes), shuffled."""
    rng = np.random.default_rng(seed)
    return {t: rng.permutation(np.arange(n) % K) for t in tasks}


def latent(truth: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per-example difficulty in [0, 1): an example is answered right when its difficulty < p."""
    return {t: rng.random(len(y)) for t, y in truth.items()}


def make_row(name: str, truth: dict[str, np.ndarray], p, *, u=None, rng=None, seed=None,
             draws: int = DRAWS) -> dict:
    """A single-seed score row: example i of a task is right when ``u[i] < p`` (``u`` shared between
    configurations makes them paired; otherwise drawn from ``rng``), else a wrong label."""
    per_task = {}
    for t, y in truth.items():
        ut = u[t] if u is not None else rng.random(len(y))
        pt = p[t] if isinstance(p, dict) else p
        wrong = (y + 1 + (np.arange(len(y)) % (K - 1))) % K
        pred = np.where(ut < pt, y, wrong)
        mean = float(classification_metrics(y, pred, K)[METRIC][0])
        per_task[t] = {"mean": mean, "n": len(y), "chance": chance_level(y, K, METRIC),
                       "labels": [f"l{c}" for c in range(K)], "pred": pred.tolist(), "truth": y.tolist()}
    row = {"name": name, "metric": METRIC, "mean": float(np.mean([v["mean"] for v in per_task.values()])),
           "chance": float(np.mean([v["chance"] for v in per_task.values()])), "per_task": per_task}
    if seed is not None:
        row["seed"] = seed
    row["ci"] = stats.example_ci(row, draws)
    return row


def exact_row(name: str, truth: dict[str, np.ndarray], p: float, order_seed: int = 0) -> dict:
    """A row whose balanced accuracy is exactly ``p`` on every task: within each class the first
    ``p`` share of the examples (in a fixed random order) are right, so rows are nested and paired."""
    rng = np.random.default_rng(order_seed)
    u = {}
    for t, y in truth.items():
        ut = np.empty(len(y))
        for c in range(K):
            idx = np.flatnonzero(y == c)
            ut[idx] = (rng.permutation(len(idx)) + 0.5) / len(idx)
        u[t] = ut
    return make_row(name, truth, p, u=u)


def width(ci) -> float:
    return ci[1] - ci[0]


# ---- Bootstrap -----------------------------------------------------------------------------------
def test_bootstrap_is_deterministic_and_seeded() -> None:
    y = truths()
    a = make_row("a", y, 0.6, rng=np.random.default_rng(1))
    s1 = stats.Bootstrap.for_rows([a], DRAWS, seed=3).samples(a)
    s2 = stats.Bootstrap.for_rows([a], DRAWS, seed=3).samples(a)
    s3 = stats.Bootstrap.for_rows([a], DRAWS, seed=4).samples(a)
    assert s1.shape == (DRAWS,)
    np.testing.assert_array_equal(s1, s2)
    assert not np.array_equal(s1, s3)
    assert stats.example_ci(a, DRAWS, 3) == stats.example_ci(a, DRAWS, 3)


def test_bootstrap_independent_of_row_and_task_order() -> None:
    y = truths()
    a = make_row("a", y, 0.6, rng=np.random.default_rng(1))
    b = make_row("b", y, 0.7, rng=np.random.default_rng(2))
    np.testing.assert_array_equal(stats.Bootstrap.for_rows([a, b], DRAWS).samples(a),
                                  stats.Bootstrap.for_rows([b, a], DRAWS).samples(a))
    # example indices depend on the task's name, not its position
    rev = {**a, "per_task": dict(reversed(list(a["per_task"].items())))}
    np.testing.assert_allclose(stats.Bootstrap.for_rows([a], DRAWS).samples(a),
                               stats.Bootstrap.for_rows([rev], DRAWS).samples(rev))


def test_bootstrap_samples_centre_on_the_score() -> None:
    y = truths(n=300)
    a = make_row("a", y, 0.7, rng=np.random.default_rng(5))
    s = stats.Bootstrap.for_rows([a], 1000).samples(a)
    assert abs(np.mean(s) - a["mean"]) < 0.01
    assert a["ci"][0] < a["mean"] < a["ci"][1]


def test_bootstrap_rejects_rows_on_other_examples() -> None:
    a = make_row("a", truths(n=120), 0.6, rng=np.random.default_rng(1))
    b = make_row("b", truths(n=90), 0.6, rng=np.random.default_rng(1))
    with pytest.raises(al.DataError, match="examples"):
        stats.Bootstrap.for_rows([a], DRAWS).samples(b)


def test_paired_diff_of_a_row_with_itself_is_exactly_zero() -> None:
    y = truths()
    a = make_row("a", y, 0.6, rng=np.random.default_rng(1))
    d = stats.paired_diff(a, a, stats.Bootstrap.for_rows([a], DRAWS))
    assert d["diff"] == 0.0 and d["ci"] == [0.0, 0.0] and d["p"] == 1.0
    # same for a multi-seed row: the seed draw is paired too
    rows = [make_row("a", y, p, rng=np.random.default_rng(s), seed=s) for s, p in enumerate((0.5, 0.7, 0.9))]
    m = stats.over_seeds("m", rows, stats.Bootstrap.for_rows(rows, DRAWS))
    d = stats.paired_diff(m, m, stats.Bootstrap.for_rows([m], DRAWS))
    assert d["ci"] == [0.0, 0.0]


def test_paired_diff_detects_a_real_improvement() -> None:
    y = truths()
    u = latent(y, np.random.default_rng(7))
    base, tuned = make_row("base", y, 0.45, u=u), make_row("tuned", y, 0.75, u=u)
    d = stats.paired_diff(tuned, base, stats.Bootstrap.for_rows([tuned, base], DRAWS))
    assert d["diff"] == pytest.approx(tuned["mean"] - base["mean"])
    assert d["ci"][0] > 0.15 and d["p"] < 0.01
    # the reverse comparison: CI below 0, p ≈ 1
    r = stats.paired_diff(base, tuned, stats.Bootstrap.for_rows([tuned, base], DRAWS))
    assert r["ci"][1] < 0 and r["p"] > 0.99


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_paired_diff_of_a_null_effect_includes_zero(seed: int) -> None:
    y = truths()
    rng = np.random.default_rng(seed)
    a, b = make_row("a", y, 0.6, rng=rng), make_row("b", y, 0.6, rng=rng)
    d = stats.paired_diff(a, b, stats.Bootstrap.for_rows([a, b], DRAWS))
    assert d["ci"][0] < 0 < d["ci"][1]
    assert d["p"] > 0.05


def test_pairing_narrows_the_ci_of_a_difference() -> None:
    """Two configurations wrong on nearly the same examples: the paired CI of their difference is far
    narrower than the CI an unpaired (independent) comparison would give."""
    y = truths()
    u = latent(y, np.random.default_rng(8))
    a, b = make_row("a", y, 0.62, u=u), make_row("b", y, 0.60, u=u)
    d = stats.paired_diff(a, b, stats.Bootstrap.for_rows([a, b], DRAWS))
    unpaired = np.hypot(width(a["ci"]), width(b["ci"]))
    assert width(d["ci"]) < 0.4 * unpaired
    assert d["ci"][0] >= 0          # a is right wherever b is: no draw can favour b


def test_hierarchical_ci_includes_seed_disagreement() -> None:
    y = truths()
    u = latent(y, np.random.default_rng(9))
    rows = [make_row("m", y, p, u=u, seed=s) for s, p in zip((0, 1, 2), (0.4, 0.6, 0.8))]
    m = stats.over_seeds("m", rows, stats.Bootstrap.for_rows([{"per_seed": rows}], DRAWS))
    assert m["mean"] == pytest.approx(np.mean([r["mean"] for r in rows]))
    assert m["sd"] == pytest.approx(np.std([r["mean"] for r in rows], ddof=1))
    assert m["seeds"] == [0, 1, 2] and m["per_seed"] == rows
    assert set(m["per_task"]) == {"t1", "t2"}
    assert m["per_task"]["t1"]["mean"] == pytest.approx(np.mean([r["per_task"]["t1"]["mean"] for r in rows]))
    assert m["ci"][0] < m["mean"] < m["ci"][1]
    for r in rows:
        assert width(m["ci"]) > 1.5 * width(r["ci"])
    # the seed resampling reaches the extreme seeds: the CI spans most of the seeds' range
    assert m["ci"][0] < 0.5 and m["ci"][1] > 0.7


def test_hierarchical_ci_with_a_bootstrap_built_from_single_seed_rows() -> None:
    """Regression: ``Bootstrap.for_rows(rows)`` on the per-seed rows (as the pipeline and the default of
    ``over_seeds`` build it) counts one seed; every seed must still be resampled, not only the first."""
    y = truths()
    u = latent(y, np.random.default_rng(9))
    rows = [make_row("m", y, p, u=u, seed=s) for s, p in zip((0, 1, 2), (0.4, 0.6, 0.8))]
    for boot in (stats.Bootstrap.for_rows(rows, DRAWS), None):
        m = stats.over_seeds("m", rows, boot)
        assert m["ci"][0] < m["mean"] < m["ci"][1]
        assert width(m["ci"]) > 1.5 * width(rows[0]["ci"])


def test_hierarchical_ci_of_agreeing_seeds_is_the_example_ci() -> None:
    y = truths()
    u = latent(y, np.random.default_rng(10))
    rows = [make_row("m", y, 0.6, u=u, seed=s) for s in range(3)]        # identical predictions
    m = stats.over_seeds("m", rows, stats.Bootstrap.for_rows([{"per_seed": rows}], DRAWS))
    assert m["ci"] == pytest.approx(rows[0]["ci"])
    assert m["sd"] == 0.0


def test_over_seeds_of_one_row_is_that_row() -> None:
    a = make_row("a", truths(), 0.6, rng=np.random.default_rng(1), seed=4)
    m = stats.over_seeds("renamed", [a])
    assert m["name"] == "renamed" and m["ci"] == a["ci"] and m["mean"] == a["mean"]
    assert stats.per_seed(m) == [m] and stats.point(m) == a["mean"]


def test_seed_draws_are_uniform_and_paired() -> None:
    boot = stats.Bootstrap({"t": 10}, n_seeds=5, draws=6000)
    for S in (2, 3, 5, 7):          # 7 > n_seeds: the row's own seed count decides
        idx = boot.seed_indices(S)
        assert idx.shape == (6000, S) and idx.min() == 0 and idx.max() == S - 1
        np.testing.assert_allclose(np.bincount(idx.ravel(), minlength=S) / idx.size, 1 / S, atol=0.01)
        np.testing.assert_array_equal(idx, boot.seed_indices(S))
    np.testing.assert_array_equal(boot.seed_indices(1), 0)
    assert boot.seed_indices(1).shape == (6000, 1)
    # the draw does not depend on how many seeds the bootstrap was built for
    np.testing.assert_array_equal(stats.Bootstrap({"t": 10}, 1, 6000).seed_indices(3), boot.seed_indices(3))


def test_multi_seed_row_against_single_seed_base() -> None:
    y = truths()
    u = latent(y, np.random.default_rng(14))
    base = make_row("base", y, 0.4, u=u)
    rows = [make_row("m", y, p, u=u, seed=s) for s, p in zip(range(3), (0.7, 0.75, 0.8))]
    m = stats.over_seeds("m", rows, stats.Bootstrap.for_rows(rows, DRAWS))
    d = stats.paired_diff(m, base, stats.Bootstrap.for_rows([m, base], DRAWS))
    assert d["diff"] == pytest.approx(m["mean"] - base["mean"])
    assert d["ci"][0] > 0.2 and d["p"] < 0.01


# ---- p-values, intervals, Holm -------------------------------------------------------------------
def test_p_greater() -> None:
    assert stats.p_greater(np.array([0.1, 0.2, 0.3])) == pytest.approx(1 / 4)
    assert stats.p_greater(np.array([0.1, 0.0, -0.3, 0.2])) == pytest.approx(3 / 5)
    assert stats.p_greater(np.array([np.nan, 0.2, -0.1])) == pytest.approx(2 / 3)
    assert stats.p_greater(np.array([np.nan])) == 1.0


def test_percentile_ci() -> None:
    s = np.arange(1001, dtype=float)
    assert percentile_ci(s) == pytest.approx([25.0, 975.0])
    assert percentile_ci(s, 0.5) == pytest.approx([250.0, 750.0])
    assert percentile_ci(np.array([np.nan, np.inf])) is None
    assert percentile_ci(np.append(s, np.nan)) == pytest.approx([25.0, 975.0])


def test_holm_by_hand() -> None:
    p = {"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.2}
    # sorted a, c, b, d: 4·0.01 = 0.04; 3·0.03 = 0.09; 2·0.04 = 0.08 → 0.09 (monotone); 1·0.2 = 0.2
    assert stats.holm(p) == pytest.approx({"a": 0.04, "c": 0.09, "b": 0.09, "d": 0.2})
    assert stats.holm({"x": 0.3, "y": 0.4}) == pytest.approx({"x": 0.6, "y": 0.6})
    assert stats.holm({"x": 0.6, "y": 0.7, "z": 0.01}) == pytest.approx({"z": 0.03, "x": 1.0, "y": 1.0})
    assert stats.holm({"only": 0.02}) == {"only": 0.02}
    assert stats.holm({}) == {}


# ---- ratio ---------------------------------------------------------------------------------------
def test_paired_ratio_recovers_a_known_ratio() -> None:
    y = truths(n=150)
    base, full, half = exact_row("base", y, 0.4), exact_row("full", y, 0.8), exact_row("half", y, 0.6)
    assert (base["mean"], full["mean"], half["mean"]) == pytest.approx((0.4, 0.8, 0.6))
    r = stats.paired_ratio(half, base, full, base, stats.Bootstrap.for_rows([base, full, half], DRAWS))
    assert r["ratio"] == pytest.approx(0.5)
    assert r["ci"][0] < 0.5 < r["ci"][1] and width(r["ci"]) < 0.25
    assert r["undefined_draws"] == 0.0
    q = stats.paired_ratio(exact_row("q", y, 0.7), base, full, base,
                           stats.Bootstrap.for_rows([base, full], DRAWS))
    assert q["ratio"] == pytest.approx(0.75)


def test_paired_ratio_with_no_gain_is_undefined() -> None:
    y = truths()
    base = exact_row("base", y, 0.5)
    r = stats.paired_ratio(exact_row("g", y, 0.6), base, base, base, stats.Bootstrap.for_rows([base], DRAWS))
    assert np.isnan(r["ratio"]) and r["ci"] is None and r["undefined_draws"] == 1.0


def test_paired_ratio_drops_draws_without_a_gain() -> None:
    """Draws where the denominator's gain is not positive give no ratio (and are counted)."""
    y = truths()
    rng = np.random.default_rng(21)
    base, full, g = (make_row(n, y, p, rng=rng) for n, p in (("base", 0.5), ("full", 0.53), ("g", 0.52)))
    boot = stats.Bootstrap.for_rows([base], DRAWS)
    den = boot.samples(full) - boot.samples(base)
    r = stats.paired_ratio(g, base, full, base, boot)
    assert 0 < r["undefined_draws"] < 1
    assert r["undefined_draws"] == pytest.approx(np.mean(den <= 0))


# ---- constant predictors, layer shares -----------------------------------------------------------
def test_constant_tasks() -> None:
    y = truths()
    a = make_row("a", y, 0.6, rng=np.random.default_rng(1), seed=7)
    assert stats.constant_tasks(a) == []
    const = {**a, "per_task": {**a["per_task"], "t2": {**a["per_task"]["t2"], "pred": [1] * 120}}}
    assert stats.constant_tasks(const) == ["t2"]
    unparsed = {**a, "per_task": {**a["per_task"], "t1": {**a["per_task"]["t1"], "pred": [-1] * 120}}}
    assert stats.constant_tasks(unparsed) == ["t1"]
    b = make_row("a", y, 0.7, rng=np.random.default_rng(2), seed=8)
    assert stats.constant_tasks({"per_seed": [b, const]}) == ["t2 (seed 7)"]
    assert stats.constant_tasks({"per_seed": [b, a]}) == []


def _layers(gate: float, n: int = 8, jitter: float = 0.0, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    mods = ("q", "k", "v", "o", "gate", "up", "down")
    return [{m: (gate if m == "gate" else 1.0) * (1 + jitter * rng.random()) for m in mods} for _ in range(n)]


def test_layer_share_diff_known_values() -> None:
    r = stats.layer_share_diff(_layers(6.0), _layers(1.0), draws=DRAWS)
    assert r["affective"] == pytest.approx(0.5) and r["control"] == pytest.approx(1 / 7)
    assert r["diff"] == pytest.approx(0.5 - 1 / 7) and r["ci"] == pytest.approx([0.5 - 1 / 7] * 2)
    assert r["layers"] == 8


def test_layer_share_diff_sign() -> None:
    up = stats.layer_share_diff(_layers(3.0, jitter=0.5, seed=1), _layers(1.0, jitter=0.5, seed=2), draws=DRAWS)
    assert up["diff"] > 0 and up["ci"][0] > 0
    down = stats.layer_share_diff(_layers(0.3, jitter=0.5, seed=1), _layers(1.0, jitter=0.5, seed=2), draws=DRAWS)
    assert down["diff"] < 0 and down["ci"][1] < 0
    same = stats.layer_share_diff(_layers(1.0, jitter=0.8, seed=3), _layers(1.0, jitter=0.8, seed=4), draws=DRAWS)
    assert same["ci"][0] < 0 < same["ci"][1]
    # a different module can be asked for
    assert stats.layer_share_diff(_layers(3.0), _layers(1.0), module="up", draws=DRAWS)["diff"] < 0


def test_layer_share_diff_skips_layers_without_change() -> None:
    aff, ctl = _layers(3.0, n=4), _layers(1.0, n=4)
    aff[0] = {m: 0.0 for m in aff[0]}
    with np.errstate(invalid="ignore"):
        r = stats.layer_share_diff(aff, ctl, draws=DRAWS)
    assert r["affective"] == pytest.approx(3 / 9) and np.isfinite(r["diff"]) and r["ci"] is not None
