"""Kendall's τ-b, exact permutation p-values and the agreement verdict, against known answers."""
from __future__ import annotations

import math
from itertools import permutations

import numpy as np
import pytest

from affectlocus.errors import ConfigError
from affectlocus.witnesses.agreement import (AGREE, DISAGREE, INCONCLUSIVE, Agreement, agreement, holm,
                                             kendall_tau, permutation_test)

MODS = ["q", "k", "v", "o", "gate", "up", "down"]


def _brute_tau(x, y) -> float:
    """τ-b straight from its definition (concordant − discordant over the tie-corrected pair count)."""
    n, c, d, tx, ty = len(x), 0, 0, 0, 0
    for i in range(n):
        for j in range(i + 1, n):
            s = np.sign(x[i] - x[j]) * np.sign(y[i] - y[j])
            c, d = c + (s > 0), d + (s < 0)
            tx, ty = tx + (x[i] == x[j]), ty + (y[i] == y[j])
    n0 = n * (n - 1) / 2
    return (c - d) / math.sqrt((n0 - tx) * (n0 - ty))


@pytest.mark.parametrize("x, y, expected", [
    ([1, 2, 3, 4], [1, 2, 3, 4], 1.0),
    ([1, 2, 3, 4], [4, 3, 2, 1], -1.0),
    ([1, 2, 3], [1, 3, 2], 1 / 3),
    ([1, 1, 2, 3], [1, 2, 2, 3], 4 / 5),          # C = 4, D = 0, one tie on each side: 4 / √(5 · 5)
    ([1, 2, 3, 4, 5], [3, 1, 2, 5, 4], 0.4),      # C = 7, D = 3
])
def test_tau_known_values(x, y, expected):
    assert kendall_tau(x, y) == pytest.approx(expected)
    assert _brute_tau(np.array(x, float), np.array(y, float)) == pytest.approx(expected)


def test_tau_matches_scipy_with_ties():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(3, 10))
        x, y = rng.integers(0, 4, n).astype(float), rng.normal(size=n).round(1)
        expected = stats.kendalltau(x, y).statistic
        got = kendall_tau(x, y)
        assert (math.isnan(got) and math.isnan(expected)) or got == pytest.approx(expected, abs=1e-12)


def test_tau_over_mappings_uses_common_keys_and_constant_is_nan():
    a = {"q": 1.0, "k": 2.0, "gate": 3.0, "extra": 9.0}
    b = {"gate": 30.0, "k": 20.0, "q": 10.0}
    assert kendall_tau(a, b) == 1.0
    assert math.isnan(kendall_tau([1, 1, 1], [1, 2, 3]))
    with pytest.raises(ConfigError, match="one length"):
        kendall_tau([1, 2], [1, 2, 3])
    with pytest.raises(ConfigError, match="finite"):
        kendall_tau([1, float("nan")], [1, 2])


def test_permutation_p_is_exact_for_seven_modules():
    x = np.arange(7.0)
    # perfect agreement: only the identity reaches τ = 1 → p = 1/7!
    r = permutation_test(x, x)
    assert r.exact and r.tau == 1.0 and r.p == pytest.approx(1 / 5040) and r.p_lower == 1.0
    # any y: p is the share of the 5040 orderings whose τ reaches the observed one (brute force)
    y = np.array([2.0, 0.0, 1.0, 4.0, 3.0, 6.0, 5.0])
    t_obs = _brute_tau(x, y)
    taus = [_brute_tau(x, y[list(p)]) for p in permutations(range(7))]
    assert r.n == 7
    r = permutation_test(x, y)
    assert r.tau == pytest.approx(t_obs)
    assert r.p == pytest.approx(np.mean([t >= t_obs - 1e-12 for t in taus]))
    assert r.p_lower == pytest.approx(np.mean([t <= t_obs + 1e-12 for t in taus]))


def test_permutation_p_with_ties_and_monte_carlo():
    x, y = [0, 0, 0, 0, 0, 0, 1.0], [0, 0, 0, 0, 0, 0, 5.0]  # one module stands out in both
    r = permutation_test(x, y)
    assert r.tau == pytest.approx(1.0) and r.p == pytest.approx(1 / 7)  # the top lands on it 1 time in 7
    rng = np.random.default_rng(1)
    a = rng.normal(size=10)
    b = a + rng.normal(scale=0.5, size=10)
    mc = permutation_test(a, b, exact_max=100, draws=4000, seed=3)
    assert not mc.exact and 0 < mc.p <= 1 and mc.p == permutation_test(a, b, exact_max=100, draws=4000, seed=3).p
    exact = permutation_test(a[:8], b[:8])
    approx = permutation_test(a[:8], b[:8], exact_max=100, draws=20000, seed=0)
    assert exact.exact and approx.p == pytest.approx(exact.p, abs=0.01)
    scipy_stats = pytest.importorskip("scipy.stats")
    # scipy's exact one-sided p (no ties) equals ours
    assert exact.p == pytest.approx(scipy_stats.kendalltau(a[:8], b[:8], alternative="greater").pvalue, abs=1e-9)


def test_holm():
    assert holm({"a": 0.01, "b": 0.04, "c": 0.03}) == pytest.approx({"a": 0.03, "b": 0.06, "c": 0.06})
    assert math.isnan(holm({"a": math.nan, "b": 0.02})["a"]) and holm({"a": math.nan, "b": 0.02})["b"] == 0.02


def _scores(order: list[str]) -> dict[str, float]:
    return {m: float(len(order) - i) for i, m in enumerate(order)}


def test_verdict_agree_disagree_inconclusive():
    same = _scores(MODS)
    agree = agreement({"size": same, "mediation": dict(same), "attribution": dict(same)})
    assert agree.verdict == AGREE and np.allclose(agree.tau, 1.0)
    assert all(p.p_holm == pytest.approx(3 / 5040) for p in agree.pairs)
    assert agree.sentence("the affective update") == "the three witnesses agree on where the affective update acts"
    assert agree.tau.shape == (3, 3) and math.isnan(agree.p[0, 0]) and agree.p[0, 1] == pytest.approx(1 / 5040)

    flipped = _scores(MODS[::-1])
    dis = agreement({"size": same, "mediation": same, "attribution": flipped})
    assert dis.verdict == DISAGREE and "attribution" in dis.reason and "disagree" in dis.sentence()

    swapped = _scores(["q", "k", "v", "o", "gate", "down", "up"])
    shuffled = _scores(["k", "q", "o", "v", "gate", "up", "down"])   # τ > 0 but weakly
    weak = agreement({"size": same, "mediation": swapped, "attribution": _scores(
        ["v", "k", "q", "down", "o", "up", "gate"])})
    assert all(p.tau > 0 for p in weak.pairs) and weak.verdict == INCONCLUSIVE and "not significant" in weak.reason
    assert agreement({"a": same, "b": shuffled}).verdict in (AGREE, INCONCLUSIVE)


def test_verdict_needs_enough_modules_and_defined_tau():
    four = _scores(["q", "k", "v", "o"])
    few = agreement({"a": four, "b": four, "c": four})
    assert few.verdict == INCONCLUSIVE and "4 modules" in few.reason   # 3/4! = 0.125 ≥ 0.05
    assert agreement({"a": four, "b": four}).verdict == AGREE          # one pair: 1/24 < 0.05
    flat = agreement({"a": _scores(MODS), "b": {m: 0.0 for m in MODS}})
    assert flat.verdict == INCONCLUSIVE and "undefined" in flat.reason
    partial = agreement({"a": _scores(MODS), "b": {**_scores(MODS), "extra": 1.0}, "c": {**_scores(MODS),
                                                                                          "q": math.nan}})
    assert partial.modules == MODS[1:] and "left out: extra, q" in partial.notes[0]
    with pytest.raises(ConfigError, match="two witnesses"):
        agreement({"a": four})


def test_json_round_trip():
    a = agreement({"size": _scores(MODS), "mediation": _scores(MODS[::-1]), "attribution": _scores(MODS)})
    back = Agreement.from_dict(a.to_dict())
    assert back.verdict == a.verdict and back.names == a.names and np.allclose(back.tau, a.tau)
    assert back.pairs == a.pairs or all(x.tau == y.tau and x.p == y.p for x, y in zip(back.pairs, a.pairs))
