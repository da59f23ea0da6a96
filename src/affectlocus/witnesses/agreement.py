"""Do the witnesses agree on *where*? Kendall's τ between their module rankings, with permutation p-values.

Each witness gives every module a score (ΔW size, mediation sufficiency summed over layers,
|attribution| summed over layers, …); :func:`agreement` compares every pair of witnesses on the
modules they all scored:

* **τ** is Kendall's τ-b (ties handled: τ_b = (C − D) / √((n₀ − n₁)(n₀ − n₂)), n₀ = n(n−1)/2 pairs,
  n₁ / n₂ the pairs tied in either ranking); undefined (NaN) when one ranking is constant.
* **p** is a one-sided permutation p-value, P(τ_perm ≥ τ_obs) under H₀ "the rankings are
  unrelated": one ranking is held, the other's scores are permuted over the modules. Exact — every
  one of the n! permutations, identity included, so p ≥ 1/n! — when n! ≤ ``exact_max`` (40 320,
  i.e. up to 8 modules; 7 modules: 5 040); otherwise a seeded Monte Carlo estimate
  (1 + #{τ_perm ≥ τ_obs}) / (1 + draws). ``p_lower`` = P(τ_perm ≤ τ_obs), the opposite tail.
* **p_holm**: Holm's step-down adjustment of the pairs' p over all pairs.

The verdict (:attr:`Agreement.verdict`), in this order:

1. ``"inconclusive"`` when the data cannot decide: fewer than 3 common modules, a constant ranking
   (τ undefined), or so few modules that even perfect agreement could not reach Holm p < α (the
   smallest attainable p is 1/n!, so m pairs need m/n! < α: 5 modules suffice for 3 witnesses);
2. ``"disagree"`` when some pair has τ ≤ 0 — that witness's ranking carries no positive information
   about the other's (``p_lower`` says whether the opposite order is significant);
3. ``"agree"`` when every pair has τ > 0 with Holm-adjusted p < α;
4. ``"inconclusive"`` otherwise (every τ > 0, but not every one significant).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import combinations, permutations
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import ConfigError

AGREE, DISAGREE, INCONCLUSIVE = "agree", "disagree", "inconclusive"
ALPHA = 0.05
#: Exact enumeration up to this many permutations (8! = 40 320); Monte Carlo beyond.
EXACT_MAX = 40320
DRAWS = 20000
_NUMBERS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}


def _signs(values: np.ndarray) -> np.ndarray:
    """sign(vᵢ − vⱼ) over the pairs i < j (last axis)."""
    i, j = np.triu_indices(values.shape[-1], 1)
    return np.sign(values[..., i] - values[..., j])


def _denominator(x: np.ndarray, y: np.ndarray) -> float:
    n0 = len(x) * (len(x) - 1) / 2
    tied = [sum(c * (c - 1) / 2 for c in np.unique(v, return_counts=True)[1]) for v in (x, y)]
    return math.sqrt((n0 - tied[0]) * (n0 - tied[1]))


def _vectors(x: Sequence[float] | Mapping[str, float], y: Sequence[float] | Mapping[str, float]):
    if isinstance(x, Mapping) or isinstance(y, Mapping):
        if not (isinstance(x, Mapping) and isinstance(y, Mapping)):
            raise ConfigError("pass two mappings module → score, or two sequences of scores")
        keys = [k for k in x if k in y]
        x, y = [x[k] for k in keys], [y[k] for k in keys]
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.ndim != 1 or a.shape != b.shape:
        raise ConfigError(f"scores must be two 1-D sequences of one length, got shapes {a.shape} and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ConfigError("scores must be finite (drop modules a witness could not score)")
    return a, b


def kendall_tau(x: Sequence[float] | Mapping[str, float], y: Sequence[float] | Mapping[str, float]) -> float:
    """Kendall's τ-b of two score vectors (or mappings, over their common keys); NaN if undefined."""
    a, b = _vectors(x, y)
    if len(a) < 2:
        return math.nan
    den = _denominator(a, b)
    return float((_signs(a) * _signs(b)).sum() / den) if den > 0 else math.nan


@dataclass(frozen=True)
class PairResult:
    """τ and its permutation p-values for one pair of witnesses (see the module docstring)."""

    a: str
    b: str
    tau: float
    p: float
    p_lower: float
    n: int
    exact: bool
    p_holm: float = math.nan

    def to_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in self.__dict__.items()}


def permutation_test(x: Sequence[float] | Mapping[str, float], y: Sequence[float] | Mapping[str, float], *,
                     exact_max: int = EXACT_MAX, draws: int = DRAWS, seed: int = 0) -> PairResult:
    """τ-b of ``x`` and ``y`` with one-sided permutation p-values (exact when n! ≤ ``exact_max``)."""
    a, b = _vectors(x, y)
    n = len(a)
    if draws < 1:
        raise ConfigError(f"draws must be ≥ 1, got {draws}")
    den = _denominator(a, b) if n >= 2 else 0.0
    if den == 0:
        return PairResult("x", "y", math.nan, math.nan, math.nan, n, True)
    sa = _signs(a)
    observed = int((sa * _signs(b)).sum())
    exact = math.factorial(n) <= exact_max
    if exact:
        perms = np.array(list(permutations(range(n))), dtype=np.intp)
        stats = (_signs(b[perms]) * sa).sum(-1)
        p, p_lower = float(np.mean(stats >= observed)), float(np.mean(stats <= observed))
    else:
        rng = np.random.default_rng(seed)
        perms = np.argsort(rng.random((draws, n)), axis=1)
        stats = (_signs(b[perms]) * sa).sum(-1)
        p = float((1 + np.sum(stats >= observed)) / (1 + draws))
        p_lower = float((1 + np.sum(stats <= observed)) / (1 + draws))
    return PairResult("x", "y", observed / den, p, p_lower, n, exact)


def holm(pvalues: Mapping[str, float]) -> dict[str, float]:
    """Holm–Bonferroni adjusted p-values (step-down, monotone); NaN stays NaN."""
    finite = {k: v for k, v in pvalues.items() if math.isfinite(v)}
    order = sorted(finite, key=finite.get)
    out, running = {k: math.nan for k in pvalues}, 0.0
    for i, key in enumerate(order):
        running = max(running, min(1.0, (len(order) - i) * finite[key]))
        out[key] = running
    return out


@dataclass
class Agreement:
    """Pairwise agreement of witnesses' module rankings and the verdict (module docstring).

    ``tau`` / ``p`` are k×k matrices in the order of ``names`` (diagonal τ = 1, p = NaN; ``p`` holds
    the raw one-sided p, ``pairs`` also the Holm-adjusted one).
    """

    names: list[str]
    modules: list[str]
    tau: np.ndarray
    p: np.ndarray
    pairs: list[PairResult]
    verdict: str
    reason: str
    alpha: float = ALPHA
    notes: list[str] = field(default_factory=list)

    def sentence(self, what: str = "the update") -> str:
        """E.g. "the three witnesses agree on where the update acts"."""
        count = _NUMBERS.get(len(self.names), str(len(self.names)))
        verb = {AGREE: "agree", DISAGREE: "disagree", INCONCLUSIVE: "are inconclusive"}[self.verdict]
        return f"the {count} witnesses {verb} on where {what} acts"

    def to_dict(self) -> dict[str, Any]:
        """JSON form (NaN → None)."""
        def grid(m: np.ndarray) -> list[list[float | None]]:
            return [[float(v) if math.isfinite(v) else None for v in row] for row in m]
        return {"names": list(self.names), "modules": list(self.modules), "tau": grid(self.tau),
                "p": grid(self.p), "pairs": [p.to_dict() for p in self.pairs], "verdict": self.verdict,
                "reason": self.reason, "alpha": self.alpha, "notes": list(self.notes)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Agreement":
        def grid(m) -> np.ndarray:
            return np.array([[math.nan if v is None else v for v in row] for row in m], dtype=float)
        pairs = [PairResult(**{k: (math.nan if v is None else v) for k, v in p.items()}) for p in data["pairs"]]
        return cls(list(data["names"]), list(data["modules"]), grid(data["tau"]), grid(data["p"]), pairs,
                   data["verdict"], data["reason"], float(data.get("alpha", ALPHA)), list(data.get("notes", [])))


def _verdict(pairs: list[PairResult], n: int, alpha: float) -> tuple[str, str]:
    m = len(pairs)
    if n < 3:
        return INCONCLUSIVE, f"only {n} module(s) scored by every witness; a ranking needs ≥ 3"
    undefined = [f"{p.a}~{p.b}" for p in pairs if not math.isfinite(p.tau)]
    if undefined:
        return INCONCLUSIVE, f"τ undefined for {', '.join(undefined)} (a witness scores every module the same)"
    if m / math.factorial(n) >= alpha:
        return INCONCLUSIVE, (f"{n} modules: even perfect agreement gives p ≥ 1/{n}! = {1 / math.factorial(n):.3g}, "
                              f"not below α = {alpha} after Holm over {m} pairs")
    low = [p for p in pairs if p.tau <= 0]
    if low:
        return DISAGREE, "; ".join(f"{p.a}~{p.b} τ = {p.tau:+.2f} ≤ 0 (p of the opposite order {p.p_lower:.3f})"
                                   for p in low)
    weak = [p for p in pairs if not p.p_holm < alpha]
    if weak:
        return INCONCLUSIVE, "every τ > 0, but not significant for " + ", ".join(
            f"{p.a}~{p.b} (τ = {p.tau:+.2f}, Holm p {p.p_holm:.3f})" for p in weak)
    return AGREE, f"every pair τ > 0 with Holm p < {alpha}"


def agreement(rankings: Mapping[str, Mapping[str, float]], *, alpha: float = ALPHA, exact_max: int = EXACT_MAX,
              draws: int = DRAWS, seed: int = 0) -> Agreement:
    """Kendall's τ-b and permutation p for every pair of ``rankings`` (witness → {module: score}).

    Only modules every witness scored with a finite value are compared (the others are named in
    ``notes``); the order of modules is the first witness's.
    """
    names = list(rankings)
    if len(names) < 2:
        raise ConfigError(f"agreement needs at least two witnesses, got {names}")
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must lie in (0, 1), got {alpha}")
    first = rankings[names[0]]
    common = [m for m in first if all(m in rankings[w] and math.isfinite(float(rankings[w][m])) for w in names)]
    every = {m for w in names for m in rankings[w]}
    notes = [f"compared on {len(common)} common module(s); left out: {', '.join(sorted(every - set(common)))}"] \
        if set(common) != every else []
    vectors = {w: [float(rankings[w][m]) for m in common] for w in names}
    pairs = []
    for a, b in combinations(names, 2):
        r = permutation_test(vectors[a], vectors[b], exact_max=exact_max, draws=draws, seed=seed)
        pairs.append(PairResult(a, b, r.tau, r.p, r.p_lower, r.n, r.exact))
    adjusted = holm({f"{p.a}~{p.b}": p.p for p in pairs})
    pairs = [PairResult(**{**p.__dict__, "p_holm": adjusted[f"{p.a}~{p.b}"]}) for p in pairs]
    k = len(names)
    tau, pm = np.eye(k), np.full((k, k), math.nan)
    for p in pairs:
        i, j = names.index(p.a), names.index(p.b)
        tau[i, j] = tau[j, i] = p.tau
        pm[i, j] = pm[j, i] = p.p
    verdict, reason = _verdict(pairs, len(common), alpha)
    return Agreement(names, common, tau, pm, pairs, verdict, reason, alpha, notes)


__all__ = ["AGREE", "ALPHA", "Agreement", "DISAGREE", "EXACT_MAX", "INCONCLUSIVE", "PairResult", "agreement",
           "holm", "kendall_tau", "permutation_test"]
