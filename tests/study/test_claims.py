"""Claim verdicts with known answers on synthetic score rows (per-example predictions, several seeds):
each rule says supported when the effect is planted, not supported when the opposite is shown beyond
its CI, and inconclusive when a precondition fails. Preconditions apply to the *tuned* rows a claim
measures and to the adapters it uses; reference rows (the base, reverts, grafts of other modules) may sit
at chance with a zero-width CI, and a competitor that trains fine but gains nothing is a finding."""
from __future__ import annotations

import numpy as np
import pytest

from affectlocus.evaluation.runner import chance_level, classification_metrics
from affectlocus.study import claims, health, stats

K = 3
METRIC = "balanced_accuracy"
DRAWS = 300
SEEDS = (0, 1, 2)
MODS = claims.SINGLE


# ---- synthetic rows ------------------------------------------------------------------------------
class World:
    """One evaluation set (2 tasks × ``n`` examples, K classes) with a per-example difficulty ``u``:
    a configuration with skill ``p`` answers example i right when its difficulty < p. Every seed
    perturbs the difficulties a little (the same way for every configuration at that seed), so
    configurations are paired and seeds disagree somewhat."""

    def __init__(self, n: int = 120, seed: int = 0, seed_noise: float = 0.15):
        rng = np.random.default_rng(seed)
        self.truth = {t: rng.permutation(np.arange(n) % K) for t in ("t1", "t2")}
        self.u = {t: (rng.permutation(n) + 0.5) / n for t in self.truth}
        # mixed, then ranked: still uniform, so a seed's skill p still means "a share p right"
        self.u_seed = {s: {t: (np.argsort(np.argsort((1 - seed_noise) * u + seed_noise * rng.random(n))) + 0.5) / n
                           for t, u in self.u.items()} for s in SEEDS}
        self.rng = rng

    def single(self, name: str, p: float, u=None, seed=None) -> dict:
        u = self.u if u is None else u
        per_task = {}
        for t, y in self.truth.items():
            wrong = (y + 1 + (np.arange(len(y)) % (K - 1))) % K
            pred = np.where(u[t] < p, y, wrong)
            mean = float(classification_metrics(y, pred, K)[METRIC][0])
            per_task[t] = {"mean": mean, "n": len(y), "chance": chance_level(y, K, METRIC),
                           "labels": [f"l{c}" for c in range(K)], "pred": pred.tolist(), "truth": y.tolist()}
        row = {"name": name, "metric": METRIC, "mean": float(np.mean([v["mean"] for v in per_task.values()])),
               "chance": 1 / K, "per_task": per_task}
        if seed is not None:
            row["seed"] = seed
        row["ci"] = stats.example_ci(row, DRAWS)
        return row

    def base(self, p: float = 0.4) -> dict:
        return self.single("base", p)

    def constant(self, name: str, seeds=None) -> dict:
        """A constant predictor (one label for every example): balanced accuracy exactly 1/K on every
        resample, so a zero-width CI; ``seeds``: a multi-seed row of such predictors."""
        def one(seed=None):
            row = self.single(name, 0.0, seed=seed)
            for v in row["per_task"].values():
                v["pred"] = [0] * len(v["truth"])
                v["mean"] = float(classification_metrics(np.asarray(v["truth"]), np.zeros(len(v["truth"]), int),
                                                         K)[METRIC][0])
            row["mean"] = float(np.mean([v["mean"] for v in row["per_task"].values()]))
            row["ci"] = stats.example_ci(row, DRAWS)
            return row
        if seeds is None:
            return one()
        rows = [one(s) for s in seeds]
        return stats.over_seeds(name, rows, stats.Bootstrap.for_rows([{"per_seed": rows}], DRAWS))

    def multi(self, name: str, p: float, seeds=SEEDS, independent: bool = False) -> dict:
        """A multi-seed row; ``independent``: its own difficulties (not paired with the others)."""
        rows = []
        for s in seeds:
            u = ({t: self.rng.random(len(y)) for t, y in self.truth.items()} if independent
                 else self.u_seed[s])
            rows.append(self.single(name, p, u=u, seed=s))
        return stats.over_seeds(name, rows, stats.Bootstrap.for_rows([{"per_seed": rows}], DRAWS))


@pytest.fixture(scope="module")
def w() -> World:
    return World()


CLAIM_DRAWS = 500
_for_rows = stats.Bootstrap.for_rows.__func__


@pytest.fixture(autouse=True)
def fast_bootstrap(monkeypatch):
    """The claims build their bootstraps with the study's default draws (2000); the verdict logic does
    not depend on the count, so the tests use fewer (one test undoes this and runs the default)."""
    monkeypatch.setattr(stats.Bootstrap, "for_rows", classmethod(
        lambda cls, rows, draws=CLAIM_DRAWS, seed=0: _for_rows(cls, rows, draws, seed)))


def entry(seed: int, failed: bool = False, beats: bool = True) -> dict:
    return {"seed": seed, "failed": failed, "beats_base": beats, "collapsed": False}


def make_health(seeds: int = 3, aux: int = 1, singles=MODS, failed=(), weak=(), control: bool = True) -> dict:
    """A health table: all/gate with ``seeds`` seeds, other singles and the control with ``aux``;
    ``failed`` / ``weak`` keys fail / do not beat the base at their first seed."""
    tuned = {}
    keys = ["all", "gate", *(m for m in singles if m != "gate")] + (["control"] if control else [])
    for k in keys:
        n = seeds if k in ("all", "gate") else aux
        tuned[k] = [entry(s, failed=(k in failed and s == 0), beats=(k != "control" and not (k in weak and s == 0)))
                    for s in range(n)]
    return {"tuned": tuned}


def no_ci(row: dict) -> dict:
    return {**row, "ci": None}


def test_constant_rows_sit_at_chance_with_a_zero_width_ci(w) -> None:
    for row in (w.constant("base"), w.constant("revert", seeds=SEEDS)):
        assert row["mean"] == pytest.approx(1 / K)
        assert row["ci"][0] == row["ci"][1] == pytest.approx(1 / K)


# ---- precheck ------------------------------------------------------------------------------------
def test_precheck_passes_a_healthy_study(w) -> None:
    rows = {"all": w.multi("all", 0.85), "gate": w.multi("gate", 0.8)}
    assert claims.precheck(rows, make_health(), ["all", "gate", "control", "q"]) is None


def test_precheck_judges_only_the_rows_it_is_given(w) -> None:
    """A tuned row at a constant predictor is undecidable; the same row is not looked at when the
    caller leaves it out as a reference (a base or a revert may legitimately sit at chance)."""
    const = w.constant("gate", seeds=SEEDS)
    assert "`gate` has a zero-width CI" in claims.precheck({"gate": const}, make_health(), ["gate"])
    assert claims.precheck({"all": w.multi("all", 0.85)}, make_health(), ["all"]) is None


@pytest.mark.parametrize("rows, hl, uses, why", [
    ({"x": None}, make_health(), ["all"], "not measured"),
    ({"x": {"ci": None}}, make_health(), ["all"], "no CI"),
    ({"x": {"ci": [0.5, 0.5]}}, make_health(), ["all"], "zero-width"),
    ({}, None, ["all"], "no `all` adapter"),
    ({}, make_health(control=False), ["control"], "no `control` adapter"),
    ({}, make_health(seeds=1), ["all"], "1 seed(s)"),
    ({}, make_health(seeds=2), ["gate"], "2 seed(s)"),
    ({}, make_health(failed=["all"]), ["all"], "training failure at seed 0"),
    ({}, make_health(failed=["control"]), ["control"], "training failure"),
    ({}, make_health(failed=["up"]), ["up"], "`up` adapter is a training failure"),
    ({}, make_health(failed=["q"], aux=3), ["q"], "`q` adapter is a training failure at seed 0"),
    ({}, make_health(weak=["gate"]), ["gate"], "`gate` adapter does not beat the base at seed 0"),
    ({}, make_health(weak=["all"]), ["all"], "`all` adapter does not beat the base"),
    ({}, make_health(weak=["q", "gate"]), ["all", "q", "gate"], "`gate` adapter does not beat"),  # q: no reason
])
def test_precheck_reasons(rows, hl, uses, why) -> None:
    got = claims.precheck(rows, hl, uses)
    assert got is not None and why in got


def test_precheck_control_and_aux_need_neither_seeds_nor_a_gain() -> None:
    hl = make_health(aux=1)                    # control never beats the base; one seed is enough
    assert claims.precheck({}, hl, ["control", "up"]) is None
    assert claims.precheck({}, make_health(seeds=2), ["all"], min_seeds=2) is None
    # a single-module competitor that trains fine but gains nothing is a finding, not a failure
    assert claims.precheck({}, make_health(weak=["q", "up"]), ["all", "gate", "q", "up"]) is None
    assert claims.precheck({}, make_health(seeds=1), ["q", "control"]) is None   # seeds: only all / gate


def test_precheck_with_real_health_entries(w) -> None:
    """health.entry's flags feed precheck: a constant predictor is a failure; a gain beats the base."""
    base = w.base(0.4)
    good = w.single("gate", 0.8, seed=0)
    const = w.single("gate", 0.8, seed=1)
    const["per_task"]["t1"] = {**const["per_task"]["t1"], "pred": [0] * 120}
    e_good = health.entry(good, base, [2.0, 1.5, 1.0, 0.8, 0.7], 0, draws=DRAWS)
    e_const = health.entry(const, base, [2.0, 1.5, 1.0, 0.8, 0.7], 1, draws=DRAWS)
    e_flat = health.entry(w.single("all", 0.4, seed=2), base, [2.0, 2.0, 2.0], 2, draws=DRAWS)
    assert e_good["beats_base"] and not e_good["failed"]
    assert e_const["failed"] and e_const["constant_tasks"] == ["t1"]
    assert e_flat["failed"] and not e_flat["beats_base"]
    hl = {"tuned": {"all": [e_good, {**e_good, "seed": 1}, {**e_good, "seed": 2}],
                    "gate": [e_good, e_const, {**e_good, "seed": 2}]}}
    assert claims.precheck({}, hl, ["all"]) is None
    assert "failure at seed 1" in claims.precheck({}, hl, ["all", "gate"])


# ---- claim 1: gate dominates the update -----------------------------------------------------------
def layers(gate: float, n: int = 10, seed: int = 0, jitter: float = 0.4) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{m: (gate if m == "gate" else 1.0) * (1 + jitter * rng.random()) for m in MODS} for _ in range(n)]


def per_layer(aff_rel: float, aff_rms: float, ctl: float = 1.0) -> dict:
    return {"affective": {"relative": layers(aff_rel, seed=1), "rms": layers(aff_rms, seed=2)},
            "control": {"relative": layers(ctl, seed=3), "rms": layers(ctl, seed=4)}}


def test_gate_dominates_supported() -> None:
    ranking = {m: {"rms": 3.0 if m == "gate" else 1.0 + i / 10} for i, m in enumerate(MODS)}
    v = claims.gate_dominates(per_layer(3.0, 3.0), make_health(), ranking)
    assert v.verdict == claims.SUPPORTED, v.evidence
    assert v.numbers["relative"]["ci"][0] > 0 and v.numbers["rms"]["ci"][0] > 0
    assert "by rms: gate > down" in v.evidence


def test_gate_dominates_not_supported_when_gate_share_is_below_control() -> None:
    v = claims.gate_dominates(per_layer(0.3, 0.3), make_health(), None)
    assert v.verdict == claims.NOT_SUPPORTED, v.evidence
    assert v.numbers["rms"]["ci"][1] < 0


def test_gate_dominates_same_share_as_control_is_inconclusive() -> None:
    assert claims.gate_dominates(per_layer(2.0, 2.0, ctl=2.0), make_health(), None).verdict == claims.INCONCLUSIVE


def test_gate_dominates_metrics_disagree_is_inconclusive() -> None:
    v = claims.gate_dominates(per_layer(3.0, 0.3), make_health(), None)
    assert v.verdict == claims.INCONCLUSIVE, v.evidence


@pytest.mark.parametrize("hl, why", [
    (make_health(seeds=1), "1 seed"),
    (make_health(failed=["all"]), "training failure"),
    (make_health(failed=["control"]), "training failure"),
    (make_health(weak=["all"]), "does not beat the base"),
    (make_health(control=False), "no `control`"),
    (None, "no `all`"),
])
def test_gate_dominates_inconclusive_on_health(hl, why) -> None:
    v = claims.gate_dominates(per_layer(3.0, 3.0), hl, None)
    assert v.verdict == claims.INCONCLUSIVE and why in v.evidence
    assert v.numbers["rms"]["ci"][0] > 0           # the planted effect is still reported


def test_gate_dominates_needs_the_control() -> None:
    v = claims.gate_dominates({"affective": per_layer(3.0, 3.0)["affective"]}, make_health(), None)
    assert v.verdict == claims.INCONCLUSIVE and "control" in v.evidence


# ---- claim 2: inheritance -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def grafts(w) -> dict:
    rows = {"none": w.base(0.4), "all": w.multi("all", 0.85), "gate": w.multi("gate", 0.82)}
    for m, p in zip(("q", "up", "down"), (0.42, 0.45, 0.41)):
        rows[m] = w.multi(m, p)
    return rows


@pytest.fixture(scope="module")
def control_grafts(w) -> dict:
    return {"gate": w.multi("control gate", 0.41, seeds=(0,)), "all": w.multi("control all", 0.42, seeds=(0,))}


def test_gate_transfers_supported(grafts, control_grafts, monkeypatch) -> None:
    monkeypatch.undo()                                     # the study's default draws, once
    v = claims.gate_transfers(grafts, control_grafts, make_health())
    assert v.verdict == claims.SUPPORTED, v.evidence
    rec = v.numbers["recovery"]
    b = grafts["none"]["mean"]
    assert rec["ratio"] == pytest.approx((grafts["gate"]["mean"] - b) / (grafts["all"]["mean"] - b))
    assert 0.85 < rec["ratio"] < 1.0 and rec["ci"][0] > 0.5
    assert set(v.numbers["holm_p_gate_beats"]) == {"q", "up", "down"}
    assert "control's gate graft" in v.evidence


def test_gate_transfers_not_supported_when_another_module_beats_gate(w, grafts) -> None:
    rows = {**grafts, "gate": w.multi("gate", 0.6), "up": w.multi("up", 0.84)}
    v = claims.gate_transfers(rows, None, make_health())
    assert v.verdict == claims.NOT_SUPPORTED and "up beats gate" in v.evidence, v.evidence


def test_gate_transfers_not_supported_when_recovery_is_small(w, grafts) -> None:
    rows = {**grafts, "gate": w.multi("gate", 0.44)}
    v = claims.gate_transfers(rows, None, make_health())
    assert v.verdict == claims.NOT_SUPPORTED, v.evidence
    assert v.numbers["recovery"]["ci"][1] < claims.RECOVERY_REFUTE


def test_gate_transfers_inconclusive_when_the_control_gate_transfers_as_well(w, grafts) -> None:
    v = claims.gate_transfers(grafts, {"gate": w.multi("control gate", 0.82, seeds=(0,))}, make_health())
    assert v.verdict == claims.INCONCLUSIVE, v.evidence


def test_gate_transfers_inconclusive_when_the_graft_does_not_beat_base(w, grafts) -> None:
    rows = {**grafts, "all": w.multi("all", 0.4), "gate": w.multi("gate", 0.4)}
    v = claims.gate_transfers(rows, None, make_health())
    assert v.verdict == claims.INCONCLUSIVE and "nothing to transfer" in v.evidence


@pytest.mark.parametrize("hl, why", [
    (make_health(seeds=1), "1 seed"),
    (make_health(failed=["all"]), "training failure"),
    (make_health(weak=["all"]), "does not beat the base"),
    (make_health(failed=["control"]), "`control` adapter is a training failure"),
    (None, "no `all`"),
])
def test_gate_transfers_inconclusive_on_health(grafts, control_grafts, hl, why) -> None:
    v = claims.gate_transfers(grafts, control_grafts, hl)
    assert v.verdict == claims.INCONCLUSIVE and why in v.evidence, v.evidence


@pytest.mark.parametrize("missing", ["all", "gate"])
def test_gate_transfers_inconclusive_without_ci(grafts, missing) -> None:
    v = claims.gate_transfers({**grafts, missing: no_ci(grafts[missing])}, None, make_health())
    assert v.verdict == claims.INCONCLUSIVE and f"`{missing}` has no CI" in v.evidence
    rows = {k: r for k, r in grafts.items() if k != missing}
    v = claims.gate_transfers(rows, None, make_health())
    assert v.verdict == claims.INCONCLUSIVE and f"`{missing}` was not measured" in v.evidence


def test_gate_transfers_judged_with_the_base_at_a_constant_predictor(w, grafts, control_grafts) -> None:
    """The base is a reference row: at chance with a zero-width CI (or no CI) it is still a base."""
    for base in (w.constant("none"), no_ci(grafts["none"])):
        v = claims.gate_transfers({**grafts, "none": base}, control_grafts, make_health())
        assert v.verdict == claims.SUPPORTED, v.evidence
    # so are the other modules' grafts: one at chance is a competitor that lost, not a failure
    v = claims.gate_transfers({**grafts, "q": w.constant("q", seeds=SEEDS)}, control_grafts, make_health())
    assert v.verdict == claims.SUPPORTED, v.evidence


def test_gate_transfers_inconclusive_without_base_or_competitor(grafts) -> None:
    v = claims.gate_transfers({k: r for k, r in grafts.items() if k != "none"}, None, make_health())
    assert v.verdict == claims.INCONCLUSIVE and "base score (`none`)" in v.evidence
    alone = {k: grafts[k] for k in ("none", "all", "gate")}
    v = claims.gate_transfers(alone, None, make_health())
    assert v.verdict == claims.INCONCLUSIVE and "at least one other single-module graft" in v.evidence
    assert claims.gate_transfers({**alone, "up": grafts["up"]}, None, make_health()).verdict == claims.SUPPORTED


def test_gate_transfers_uses_the_control_adapter_only_when_its_graft_is_given(grafts, control_grafts) -> None:
    hl = make_health(failed=["control"])
    assert claims.gate_transfers(grafts, None, hl).verdict == claims.SUPPORTED
    assert claims.gate_transfers(grafts, {"all": control_grafts["all"]}, hl).verdict == claims.SUPPORTED
    assert "`control` adapter is a training failure" in claims.gate_transfers(grafts, control_grafts, hl).evidence


# ---- claim 3: GET most efficient ------------------------------------------------------------------
PARAMS = {"q": 100_000, "k": 25_000, "v": 25_000, "o": 100_000, "gate": 350_000, "up": 350_000, "down": 350_000,
          "all": 1_300_000}


@pytest.fixture(scope="module")
def singles(w) -> dict:
    rows = {"gate": w.multi("gate", 0.85), "all": w.multi("all", 0.87)}
    for m, p in zip(("q", "k", "v", "o", "up", "down"), (0.6, 0.58, 0.6, 0.62, 0.65, 0.6)):
        rows[m] = w.multi(m, p, seeds=(0,))
    return rows


def test_gate_most_efficient_supported(w, singles) -> None:
    v = claims.gate_most_efficient(singles, PARAMS, w.base(), make_health())
    assert v.verdict == claims.SUPPORTED, v.evidence
    assert "all" not in v.numbers["gains"]              # the all-module LoRA is not a single module
    assert v.numbers["per_million"]["gate"] == pytest.approx(v.numbers["gains"]["gate"]["diff"] / 0.35)
    assert max(v.numbers["holm_p_gate_beats"].values()) < claims.ALPHA


def test_gate_most_efficient_not_supported_when_another_module_gains_more(w, singles) -> None:
    rows = {**singles, "gate": w.multi("gate", 0.62), "up": w.multi("up", 0.88, seeds=(0,))}
    v = claims.gate_most_efficient(rows, PARAMS, w.base(), make_health())
    assert v.verdict == claims.NOT_SUPPORTED and "up gains more than gate" in v.evidence, v.evidence
    # judged before the count of trained modules: a quick demo can refute
    few = {m: rows[m] for m in ("gate", "up", "q")}
    assert claims.gate_most_efficient(few, PARAMS, w.base(), make_health(singles=("gate", "up", "q"))).verdict \
        == claims.NOT_SUPPORTED


def test_gate_most_efficient_inconclusive_with_a_partial_grid(w, singles) -> None:
    few = {m: singles[m] for m in ("gate", "up", "q")}
    v = claims.gate_most_efficient(few, PARAMS, w.base(), make_health(singles=("gate", "up", "q")))
    assert v.verdict == claims.INCONCLUSIVE and "only 3 of the 7" in v.evidence


@pytest.mark.parametrize("hl, why", [
    (make_health(seeds=1), "`gate` has 1 seed"),
    (make_health(failed=["up"]), "`up` adapter is a training failure"),
    (make_health(failed=["gate"]), "training failure"),
    (make_health(weak=["gate"]), "does not beat the base"),
    (make_health(failed=["k"]), "`k` adapter is a training failure"),
    (make_health(singles=("gate", "q")), "no `k` adapter"),
])
def test_gate_most_efficient_inconclusive_on_health(w, singles, hl, why) -> None:
    v = claims.gate_most_efficient(singles, PARAMS, w.base(), hl)
    assert v.verdict == claims.INCONCLUSIVE and why in v.evidence, v.evidence


def test_gate_most_efficient_a_weak_but_healthy_competitor_does_not_block(w, singles) -> None:
    """`up` trains fine but gains (next to) nothing over the base, and its health entry says it does
    not beat the base: that is a finding for gate, not a failed precondition."""
    rows = {**singles, "up": w.multi("up", 0.41, seeds=(0,))}
    v = claims.gate_most_efficient(rows, PARAMS, w.base(), make_health(weak=["up", "k"]))
    assert v.verdict == claims.SUPPORTED, v.evidence
    assert v.numbers["gains"]["up"]["diff"] < v.numbers["gains"]["gate"]["diff"]
    # ... but a training failure of that competitor still blocks
    v = claims.gate_most_efficient(rows, PARAMS, w.base(), make_health(failed=["up"]))
    assert v.verdict == claims.INCONCLUSIVE and "`up` adapter is a training failure" in v.evidence
    # the all-module adapter is not used by this claim: its health does not matter
    assert claims.gate_most_efficient(rows, PARAMS, w.base(), make_health(weak=["all"])).verdict == claims.SUPPORTED


def test_gate_most_efficient_judged_with_the_base_at_a_constant_predictor(w, singles) -> None:
    for base in (w.constant("base"), no_ci(w.base())):
        v = claims.gate_most_efficient(singles, PARAMS, base, make_health())
        assert v.verdict == claims.SUPPORTED, v.evidence


def test_gate_most_efficient_inconclusive_without_base_ci_or_competitor(w, singles) -> None:
    v = claims.gate_most_efficient(singles, PARAMS, None, make_health())
    assert v.verdict == claims.INCONCLUSIVE and "no base" in v.evidence
    v = claims.gate_most_efficient({**singles, "gate": no_ci(singles["gate"])}, PARAMS, w.base(), make_health())
    assert v.verdict == claims.INCONCLUSIVE and "`gate` has no CI" in v.evidence
    # a tuned competitor is measured: a constant predictor (zero-width CI) cannot be compared
    v = claims.gate_most_efficient({**singles, "k": w.constant("k")}, PARAMS, w.base(), make_health())
    assert v.verdict == claims.INCONCLUSIVE and "`k` has a zero-width CI" in v.evidence
    alone = {"gate": singles["gate"], "all": singles["all"]}
    v = claims.gate_most_efficient(alone, PARAMS, w.base(), make_health())
    assert v.verdict == claims.INCONCLUSIVE and "at least one other" in v.evidence


# ---- claim 4: headline ----------------------------------------------------------------------------
def test_get_headline_supported(w, singles) -> None:
    rows = {"gate": w.multi("gate", 0.86), "all": singles["all"]}
    v = claims.get_headline(rows, PARAMS, w.base(), make_health())
    assert v.verdict == claims.SUPPORTED, v.evidence
    assert v.numbers["share"]["ci"][0] >= claims.HEADLINE_MARGIN
    assert v.numbers["param_ratio"] == pytest.approx(350 / 1300)
    assert "26.9% of its trainable parameters" in v.evidence


def test_get_headline_not_supported(w, singles) -> None:
    rows = {"gate": w.multi("gate", 0.6), "all": singles["all"]}
    v = claims.get_headline(rows, {}, w.base(), make_health())
    assert v.verdict == claims.NOT_SUPPORTED, v.evidence
    b = w.base()["mean"]
    assert v.numbers["share"]["ratio"] == pytest.approx((rows["gate"]["mean"] - b) / (rows["all"]["mean"] - b))
    assert v.numbers["param_ratio"] is None and "no parameter counts" in v.evidence


def test_get_headline_inconclusive_when_the_share_ci_straddles_the_margin(w, singles) -> None:
    rows = {"gate": w.multi("gate", 0.83, independent=True), "all": singles["all"]}
    v = claims.get_headline(rows, PARAMS, w.base(), make_health())
    lo, hi = v.numbers["share"]["ci"]
    assert lo < claims.HEADLINE_MARGIN <= hi
    assert v.verdict == claims.INCONCLUSIVE


@pytest.mark.parametrize("hl, why", [
    (make_health(seeds=1), "1 seed"),
    (make_health(failed=["gate"]), "`gate` adapter is a training failure"),
    (make_health(failed=["all"]), "`all` adapter is a training failure"),
    (make_health(weak=["gate"]), "does not beat the base"),
    (None, "no `all`"),
])
def test_get_headline_inconclusive_on_health(w, singles, hl, why) -> None:
    rows = {"gate": w.multi("gate", 0.86), "all": singles["all"]}
    v = claims.get_headline(rows, PARAMS, w.base(), hl)
    assert v.verdict == claims.INCONCLUSIVE and why in v.evidence, v.evidence


def test_get_headline_inconclusive_without_ci_or_base(w, singles) -> None:
    rows = {"gate": w.multi("gate", 0.86), "all": singles["all"]}
    v = claims.get_headline(rows, PARAMS, None, make_health())
    assert v.verdict == claims.INCONCLUSIVE and "needs the base score" in v.evidence
    for bad in ({**rows, "gate": no_ci(rows["gate"])}, {**rows, "all": no_ci(rows["all"])}):
        v = claims.get_headline(bad, PARAMS, w.base(), make_health())
        assert v.verdict == claims.INCONCLUSIVE and "no CI" in v.evidence
    v = claims.get_headline({"all": rows["all"]}, PARAMS, w.base(), make_health())
    assert v.verdict == claims.INCONCLUSIVE and "`gate` was not measured" in v.evidence


def test_get_headline_judged_with_the_base_at_a_constant_predictor(w, singles) -> None:
    rows = {"gate": w.multi("gate", 0.86), "all": singles["all"]}
    for base in (w.constant("base"), no_ci(w.base())):
        v = claims.get_headline(rows, PARAMS, base, make_health())
        assert v.verdict == claims.SUPPORTED, v.evidence


def test_get_headline_inconclusive_when_the_all_module_gain_is_often_not_positive(w) -> None:
    """Health says the adapters beat the base, but here the all-module gain is so small that many
    bootstrap draws divide by a non-positive gain: the share is not defined there."""
    rows = {"gate": w.multi("gate", 0.41), "all": w.multi("all", 0.42)}
    v = claims.get_headline(rows, PARAMS, w.base(0.4), make_health())
    assert v.numbers["share"]["undefined_draws"] > 0.025
    assert v.verdict == claims.INCONCLUSIVE and "gain is not positive" in v.evidence, v.evidence


@pytest.mark.parametrize("undefined, ci, verdict", [
    (0.0, [0.92, 0.99], claims.SUPPORTED),
    (0.025, [0.92, 0.99], claims.SUPPORTED),           # at the threshold: still judged
    (0.026, [0.92, 0.99], claims.INCONCLUSIVE),
    (0.02, [0.30, 0.60], claims.NOT_SUPPORTED),
    (0.30, [0.30, 0.60], claims.INCONCLUSIVE),
])
def test_get_headline_undefined_draws_threshold(w, singles, monkeypatch, undefined, ci, verdict) -> None:
    monkeypatch.setattr(stats, "paired_ratio", lambda *a, **k: {"ratio": sum(ci) / 2, "ci": ci,
                                                                "undefined_draws": undefined})
    rows = {"gate": w.multi("gate", 0.86), "all": singles["all"]}
    v = claims.get_headline(rows, PARAMS, w.base(), make_health())
    assert v.verdict == verdict, v.evidence


# ---- claim 5: necessity ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ablation(w) -> dict:
    return {"tuned": w.multi("tuned", 0.85),
            "reverted": {"gate": w.multi("revert gate", 0.45), "up": w.multi("revert up", 0.78),
                         "o": w.multi("revert o", 0.84)},
            "random": w.multi("random revert", 0.82), "swap": w.multi("swap", 0.5)}


def test_gate_necessary_supported(ablation) -> None:
    a = ablation
    v = claims.gate_necessary(a["tuned"], a["reverted"], a["random"], a["swap"], make_health())
    assert v.verdict == claims.SUPPORTED, v.evidence
    assert v.numbers["drops"]["gate"]["ci"][0] > 0.3
    assert v.numbers["gate_minus_random_drop"]["ci"][0] > 0 and v.numbers["swap_drop"]["ci"][0] > 0
    assert v.evidence.index("gate +") < v.evidence.index("up +") < v.evidence.index("o +")  # sorted by drop
    # random and swap are optional
    assert claims.gate_necessary(a["tuned"], a["reverted"], None, None, make_health()).verdict == claims.SUPPORTED


def test_gate_necessary_not_supported_when_a_random_revert_hurts_more(w, ablation) -> None:
    a = ablation
    rev = {**a["reverted"], "gate": w.multi("revert gate", 0.65)}
    v = claims.gate_necessary(a["tuned"], rev, w.multi("random revert", 0.45), a["swap"], make_health())
    assert v.verdict == claims.NOT_SUPPORTED and "random revert" in v.evidence, v.evidence
    assert v.numbers["gate_minus_random_drop"]["ci"][1] < 0


def test_gate_necessary_not_supported_when_another_module_hurts_more(w, ablation) -> None:
    a = ablation
    rev = {**a["reverted"], "gate": w.multi("revert gate", 0.7), "up": w.multi("revert up", 0.45)}
    v = claims.gate_necessary(a["tuned"], rev, a["random"], None, make_health())
    assert v.verdict == claims.NOT_SUPPORTED and "reverting up hurts more" in v.evidence, v.evidence


def test_gate_necessary_inconclusive_when_the_control_gate_does_as_well(w, ablation) -> None:
    a = ablation
    v = claims.gate_necessary(a["tuned"], a["reverted"], a["random"], w.multi("swap", 0.85), make_health())
    assert v.verdict == claims.INCONCLUSIVE, v.evidence
    v = claims.gate_necessary(a["tuned"], a["reverted"], w.multi("random revert", 0.45, independent=True), None,
                              make_health())
    assert v.verdict == claims.INCONCLUSIVE, v.evidence       # random ≈ gate: neither beyond CI


@pytest.mark.parametrize("hl, why", [
    (make_health(seeds=1), "1 seed"),
    (make_health(failed=["all"]), "training failure"),
    (make_health(weak=["all"]), "does not beat the base"),
    (make_health(failed=["control"]), "`control` adapter is a training failure"),
    (None, "no `all`"),
])
def test_gate_necessary_inconclusive_on_health(ablation, hl, why) -> None:
    a = ablation
    v = claims.gate_necessary(a["tuned"], a["reverted"], a["random"], a["swap"], hl)
    assert v.verdict == claims.INCONCLUSIVE and why in v.evidence, v.evidence


def test_gate_necessary_uses_the_control_adapter_only_with_a_swap(ablation) -> None:
    a = ablation
    hl = make_health(failed=["control"])
    assert claims.gate_necessary(a["tuned"], a["reverted"], a["random"], None, hl).verdict == claims.SUPPORTED


def test_gate_necessary_inconclusive_without_ci_or_competitor(ablation) -> None:
    a = ablation
    v = claims.gate_necessary(no_ci(a["tuned"]), a["reverted"], a["random"], None, make_health())
    assert v.verdict == claims.INCONCLUSIVE and "`tuned` has no CI" in v.evidence
    v = claims.gate_necessary(None, a["reverted"], a["random"], None, make_health())
    assert v.verdict == claims.INCONCLUSIVE and "`tuned` was not measured" in v.evidence
    v = claims.gate_necessary(a["tuned"], {"gate": a["reverted"]["gate"]}, None, None, make_health())
    assert v.verdict == claims.INCONCLUSIVE and "at least one other" in v.evidence


def test_gate_necessary_judged_with_a_revert_at_chance(w, ablation) -> None:
    """Reverted rows are references: reverting gate may leave a constant predictor (zero-width CI) —
    the strongest evidence of necessity, not a reason to stop."""
    a = ablation
    const = w.constant("revert gate", seeds=SEEDS)
    assert const["ci"][0] == const["ci"][1]
    v = claims.gate_necessary(a["tuned"], {**a["reverted"], "gate": const}, a["random"], a["swap"], make_health())
    assert v.verdict == claims.SUPPORTED, v.evidence
    assert v.numbers["drops"]["gate"]["ci"][0] > 0.4
    rev = {**a["reverted"], "gate": no_ci(a["reverted"]["gate"])}
    assert claims.gate_necessary(a["tuned"], rev, None, None, make_health()).verdict == claims.SUPPORTED
    # a constant swap or random revert is a reference as well
    v = claims.gate_necessary(a["tuned"], a["reverted"], a["random"], w.constant("swap", seeds=SEEDS), make_health())
    assert v.verdict == claims.SUPPORTED, v.evidence
    # ... and the adapters of other modules are not used by this claim
    hl = make_health(failed=["up"], weak=["gate"], seeds=3)
    assert claims.gate_necessary(a["tuned"], a["reverted"], None, None, hl).verdict == claims.SUPPORTED


# ---- rules text ----------------------------------------------------------------------------------
def test_rules_and_verdict_dict() -> None:
    assert len(claims.RULES) == 9 and all(isinstance(r, str) and r for r in claims.RULES)
    assert f"at least {claims.MIN_SEEDS} training seeds" in claims.RULES[1]
    d = claims.Verdict("c", claims.SUPPORTED, "e", {"x": 1}).to_dict()
    assert d == {"claim": "c", "verdict": "supported", "evidence": "e", "numbers": {"x": 1}}
