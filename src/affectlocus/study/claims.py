"""The study's claims, judged from the numbers: each gets a :class:`Label` and its evidence.

Every rule is printed with its evidence (:data:`RULES` goes under the report's verdict table), so a
reader can disagree with a threshold but not with the arithmetic. Inputs are score rows
(:mod:`.stats`): each carries per-example predictions, so every difference is a **paired** bootstrap
over training seeds and examples, and comparisons of gate against several modules use one-sided
bootstrap p-values with **Holm's** correction.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from functools import partial
from typing import Any, Mapping, Sequence

from ..errors import DataError
from ..sites import CANONICAL
from . import stats
from .results import ci_above_zero as _above, ci_below_zero as _below, fmt_ci
from .stats import Row


class Label(str, Enum):
    """A claim's verdict (the strings stored in ``results.json`` and printed in the report); formats
    and prints as its plain string on every Python (like 3.11's ``StrEnum``)."""

    SUPPORTED = "supported"
    NOT_SUPPORTED = "not supported"
    INCONCLUSIVE = "inconclusive"

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = Label.SUPPORTED, Label.NOT_SUPPORTED, Label.INCONCLUSIVE
#: The single modules claims 2, 3 and 5 compare gate with.
SINGLE = CANONICAL
#: The size-normalised diff metrics of claim 1 (gate's share of the per-layer change).
SHARE_METRICS = ("relative", "rms")
MIN_SEEDS = 3
ALPHA = 0.05
RECOVERY_SUPPORT, RECOVERY_REFUTE = 0.50, 0.25
HEADLINE_MARGIN = 0.90
PAPER_SHARE, PAPER_PARAMS = 0.966, 0.25
#: The claim the `attribute` step's witnesses are judged on (:func:`.witnesses.witnesses_agree`).
WITNESSES_CLAIM = "the three witnesses (ΔW size, mediation, attribution) agree on where the affective update acts"
_ci = partial(fmt_ci, spec="+.3f", missing="[no CI]")

RULES = (
    "Scores are task means of the study's metric (balanced accuracy by default, chance = 1/K). CIs are 95 % "
    "percentile intervals of a "
    "hierarchical bootstrap: training seeds resampled, then each task's examples resampled; every "
    "difference is paired (the same draw applied to both configurations, which are scored on the same "
    "examples).",
    f"Preconditions (else **inconclusive**): at least {MIN_SEEDS} training seeds for the all-module and "
    f"gate-only adapters; no training failure among the adapters a claim uses (NaN loss, final loss not "
    f"below 0.8 × the first, or a constant predictor); the tuned model beats the base (paired CI of "
    f"tuned − base above 0); the tuned configurations' CIs present and of non-zero width (reference rows — "
    f"the base, a revert — may sit at chance).",
    "**Not supported** only when the opposite effect is shown beyond its CI (or, for one-vs-several "
    f"comparisons, by a Holm-adjusted one-sided bootstrap p < {ALPHA}).",
    "Claim 1 (gate dominates the update): gate's share of the per-layer size-normalised change "
    "(`relative` and `rms`), affective minus the non-affective control fine-tune, bootstrapped over layers "
    "(mean over seeds per layer). Supported when the excess is above 0 beyond its CI for both metrics; "
    "not supported when below 0 beyond its CI for both. The control has the same shapes and LoRA init, so "
    "the comparison cancels the shape bias of a LoRA's `rms` (A is initialised at scale ~1/√d_in).",
    f"Claim 2 (inheritance): recovery = (gate graft − base) / (all graft − base). Supported when recovery "
    f"≥ {RECOVERY_SUPPORT:.0%}, gate graft − base > 0 beyond CI, gate beats every other grafted single "
    f"module (Holm) and beats the control adapter's gate graft beyond CI; not supported when the recovery "
    f"CI lies below {RECOVERY_REFUTE:.0%} or another module beats gate (Holm).",
    "Claim 3 (GET most efficient): base-subtracted gains of single-module LoRAs. Supported only with all "
    "seven single modules trained and gate's gain above every other (Holm); not supported when another "
    "single module's gain exceeds gate's (Holm).",
    f"Claim 4 (headline): GET's share of the all-module gain, (GET − base) / (all − base), paired CI, "
    f"against the study's {PAPER_SHARE:.1%} at ~{PAPER_PARAMS:.0%} of the parameters. Supported when the "
    f"CI lies above {HEADLINE_MARGIN:.0%}; not supported when it lies below.",
    "Claim 5 (necessity): drop = tuned − tuned-with-one-module-reverted. Supported when gate's drop is "
    "above 0 beyond CI, above every other module's drop (Holm), above the random parameter-matched revert's "
    "drop beyond CI, and replacing gate's update with the control's gate update also drops beyond CI (when "
    "run); not supported when another module's or the random revert's drop exceeds gate's (Holm / CI).",
    "Where, three ways (`attribute` step): on the all-module affective adapters, modules are ranked by ΔW "
    "size (`rms`), mediation (sufficiency: KL at the prompt's last token) and |attribution| (integrated "
    "gradients of the true label's loss), each summed over the witnessed layers, normalised per seed "
    "(÷ Σ|score|) and averaged over seeds. Kendall's τ-b per pair of witnesses with a one-sided exact "
    f"permutation p (all 7! orderings), Holm over the pairs. The witnesses agree (supported) when every τ > 0 "
    f"with Holm p < {ALPHA}; disagree (not supported) when some τ ≤ 0; inconclusive otherwise (also with a "
    "constant ranking or too few modules for p < α).",
)


@dataclass
class Verdict:
    """One claim's verdict: the claim, its :class:`Label`, the evidence (text) and the numbers it rests on."""

    claim: str
    verdict: Label
    evidence: str
    numbers: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        try:
            self.verdict = Label(self.verdict)
        except ValueError:
            raise DataError(f"unknown verdict {self.verdict!r}; one of "
                            f"{', '.join(repr(v.value) for v in Label)}") from None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``results.json``'s ``verdicts``)."""
        return {**asdict(self), "verdict": self.verdict.value}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Verdict":
        """Read the JSON form back."""
        return cls(data["claim"], Label(data["verdict"]), data["evidence"], dict(data.get("numbers") or {}))


def precheck(rows: Mapping[str, Row], health: Mapping | None, uses: Sequence[str],
             min_seeds: int = MIN_SEEDS) -> str | None:
    """Why a claim cannot be judged (or None).

    ``rows``: the *tuned* configurations whose skill the claim measures (a missing or zero-width CI
    makes it undecidable; reference rows such as the base or a revert may sit at chance).
    ``uses``: module-set keys of the health table whose adapters the claim uses: fewer than
    ``min_seeds`` seeds (all-module and GET), a training failure (any), or — for the all-module and
    GET adapters, whose gain the claims decompose — not beating the base make it inconclusive. A
    competitor that trains fine but gains less is a finding, not a failure.
    """
    for name, row in rows.items():
        if row is None:
            return f"`{name}` was not measured"
        ci = row.get("ci")
        if not ci or ci[0] == ci[1]:
            return f"`{name}` has {'no' if not ci else 'a zero-width'} CI"
    tuned = (health or {}).get("tuned", {})
    for key in uses:
        entries = tuned.get(key)
        if not entries:
            return f"no `{key}` adapter in the health table"
        if key in ("all", "gate") and len(entries) < min_seeds:
            return f"`{key}` has {len(entries)} seed(s); the rule needs ≥ {min_seeds}"
        bad = [f"seed {e['seed']}" for e in entries if e.get("failed")]
        if bad:
            return f"the `{key}` adapter is a training failure at {', '.join(bad)}"
        if key in ("all", "gate"):
            weak = [f"seed {e['seed']}" for e in entries if not e.get("beats_base")]
            if weak:
                return f"the `{key}` adapter does not beat the base at {', '.join(weak)}: no skill to locate"
    return None


def gate_dominates(layers: Mapping[str, Mapping[str, list]], health: Mapping | None,
                   ranking: Mapping[str, Mapping[str, float]] | None = None) -> Verdict:
    """Claim 1. ``layers``: ``{"affective"|"control": {metric: [{module: value} per layer]}}``."""
    claim = "gate_proj dominates the affective weight update (beyond the control's share)"
    if not layers.get("control"):
        return Verdict(claim, INCONCLUSIVE, "needs the non-affective control fine-tune")
    why = precheck({}, health, ["all", "control"])
    res = {m: stats.layer_share_diff(layers["affective"][m], layers["control"][m])
           for m in SHARE_METRICS}
    text = "; ".join(f"{m}: gate share {r['affective']:.3f} vs control {r['control']:.3f}, excess "
                     f"{r['diff']:+.3f} {_ci(r['ci'])} over {r['layers']} layers" for m, r in res.items())
    if ranking:
        order = sorted(ranking, key=lambda k: -ranking[k].get("rms", 0.0))
        text += f". Affective modules by rms: {' > '.join(order[:4])}"
    numbers = dict(res)
    if why:
        return Verdict(claim, INCONCLUSIVE, f"{why}. {text}", numbers)
    if all(_above(r["ci"]) for r in res.values()):
        return Verdict(claim, SUPPORTED, text, numbers)
    if all(_below(r["ci"]) for r in res.values()):
        return Verdict(claim, NOT_SUPPORTED, text + " (gate's share is smaller than in the control)", numbers)
    return Verdict(claim, INCONCLUSIVE, text, numbers)


def _vs_others(target: Row, others: Mapping[str, Row], boot: stats.Bootstrap) -> tuple[dict, dict]:
    """Holm-adjusted one-sided p of target > m and of m > target, for every other row m."""
    diffs = {m: stats.paired_diff(target, r, boot) for m, r in others.items()}
    p_gate = stats.holm({m: d["p"] for m, d in diffs.items()}) if diffs else {}
    p_other = stats.holm({m: stats.paired_diff(r, target, boot)["p"] for m, r in others.items()}) if diffs else {}
    return p_gate, p_other


def gate_transfers(rows: Mapping[str, Row], control: Mapping[str, Row] | None, health: Mapping | None) -> Verdict:
    """Claim 2: grafting gate alone into the base recovers most of the all-module gain."""
    claim = "gate_proj alone transfers the affective skill (inheritance)"
    need = {k: rows.get(k) for k in ("none", "all", "gate")}
    if need["none"] is None:
        return Verdict(claim, INCONCLUSIVE, "needs the base score (`none`)")
    if not any(m in SINGLE and m != "gate" for m in rows):
        return Verdict(claim, INCONCLUSIVE, "needs at least one other single-module graft to compare gate with")
    # the control adapter is used (its gate graft) when given: a failed control would pass that check vacuously
    why = precheck({"all": need["all"], "gate": need["gate"]}, health,
                   ["all"] + (["control"] if control and control.get("gate") is not None else []))
    if why:
        return Verdict(claim, INCONCLUSIVE, why)
    base, full, gate = need["none"], need["all"], need["gate"]
    control = {m: r for m, r in (control or {}).items() if r is not None}
    rows = {m: r for m, r in rows.items() if r is not None}
    boot = stats.Bootstrap.for_rows(list(rows.values()) + list(control.values()))
    gain = stats.paired_diff(full, base, boot)
    if not _above(gain["ci"]):
        return Verdict(claim, INCONCLUSIVE, f"the all-module graft does not beat the base beyond its CI "
                                            f"({gain['diff']:+.3f} {_ci(gain['ci'])}): nothing to transfer")
    rec = stats.paired_ratio(gate, base, full, base, boot)
    g_gain = stats.paired_diff(gate, base, boot)
    others = {m: r for m, r in rows.items() if m in SINGLE and m != "gate"}
    p_gate, p_other = _vs_others(gate, others, boot)
    text = (f"gate alone recovers {100 * rec['ratio']:.0f}% {_ci(rec['ci'], spec='.0%')} of the all-module gain "
            f"{gain['diff']:+.3f} {_ci(gain['ci'])}; gate − base {g_gain['diff']:+.3f} {_ci(g_gain['ci'])}")
    if others:
        text += "; single grafts compared: " + ", ".join(
            f"{m} {stats.point(r):.3f} (Holm p gate>{m} {p_gate[m]:.3f})" for m, r in others.items())
    ctrl_ok = True
    if control and control.get("gate") is not None:
        c = stats.paired_diff(gate, control["gate"], boot)
        ctrl_ok = _above(c["ci"])
        text += f"; affective gate − control's gate graft {c['diff']:+.3f} {_ci(c['ci'])}"
    numbers = {"recovery": rec, "gain": gain, "gate_gain": g_gain, "holm_p_gate_beats": p_gate}
    if any(p < ALPHA for p in p_other.values()):
        best = min(p_other, key=p_other.get)
        return Verdict(claim, NOT_SUPPORTED, text + f" — {best} beats gate (Holm p {p_other[best]:.3f})", numbers)
    if rec["ci"] and rec["ci"][1] < RECOVERY_REFUTE:
        return Verdict(claim, NOT_SUPPORTED, text, numbers)
    if rec["ratio"] >= RECOVERY_SUPPORT and _above(g_gain["ci"]) and all(p < ALPHA for p in p_gate.values()) \
            and ctrl_ok:
        return Verdict(claim, SUPPORTED, text, numbers)
    return Verdict(claim, INCONCLUSIVE, text, numbers)


def gate_most_efficient(rows: Mapping[str, Row], params: Mapping[str, int], base: Row | None,
                        health: Mapping | None) -> Verdict:
    """Claim 3: among single-module LoRAs, gate-only (GET) gains most over the base."""
    claim = "gate_proj is the most efficient single module to tune (GET)"
    singles = {m: r for m, r in rows.items() if m in SINGLE and r is not None}
    if base is None or "gate" not in singles or len(singles) < 2:
        return Verdict(claim, INCONCLUSIVE, f"needs the base score, gate and at least one other single-module "
                                            f"LoRA; have {sorted(singles)}{'' if base else ' and no base'}")
    why = precheck(singles, health, list(singles))
    boot = stats.Bootstrap.for_rows([base, *singles.values()])
    gains = {m: stats.paired_diff(r, base, boot) for m, r in singles.items()}
    missing_params = [m for m in singles if not params.get(m)]
    per_m = {m: gains[m]["diff"] / params[m] * 1e6 for m in singles if params.get(m)}
    others = {m: r for m, r in singles.items() if m != "gate"}
    p_gate, p_other = _vs_others(singles["gate"], others, boot)
    text = ("gains over base: " + ", ".join(f"{m} {g['diff']:+.3f} {_ci(g['ci'])}" for m, g in gains.items())
            + ("; per million trainable parameters: " + ", ".join(f"{m} {v:+.3f}" for m, v in per_m.items())
               if per_m else "") + (f"; no parameter count for {missing_params}" if missing_params else "")
            + f"; single modules compared: {', '.join(singles)}")
    numbers = {"gains": gains, "per_million": per_m, "holm_p_gate_beats": p_gate}
    if why:
        return Verdict(claim, INCONCLUSIVE, f"{why}. {text}", numbers)
    if any(p < ALPHA for p in p_other.values()):
        best = min(p_other, key=p_other.get)
        return Verdict(claim, NOT_SUPPORTED, text + f" — {best} gains more than gate (Holm p {p_other[best]:.3f})",
                       numbers)
    if len(singles) < len(SINGLE):
        return Verdict(claim, INCONCLUSIVE, text + f" — only {len(singles)} of the 7 single modules were trained "
                                                   f"(the quick demo); `--full` trains all seven", numbers)
    if all(p < ALPHA for p in p_gate.values()):
        return Verdict(claim, SUPPORTED, text, numbers)
    return Verdict(claim, INCONCLUSIVE, text, numbers)


def get_headline(rows: Mapping[str, Row], params: Mapping[str, int], base: Row | None,
                 health: Mapping | None) -> Verdict:
    """Claim 4: GET keeps (nearly) all of the all-module gain at ~25 % of the trainable parameters."""
    claim = (f"GET reaches the all-module gain (study: {PAPER_SHARE:.1%} of it with ~{PAPER_PARAMS:.0%} of "
             f"the parameters)")
    gate, full = rows.get("gate"), rows.get("all")
    if base is None:
        return Verdict(claim, INCONCLUSIVE, "needs the base score")
    why = precheck({"gate": gate, "all": full}, health, ["all", "gate"])
    p_ratio = params["gate"] / params["all"] if params.get("gate") and params.get("all") else None
    if why:
        return Verdict(claim, INCONCLUSIVE, why)
    boot = stats.Bootstrap.for_rows([base, gate, full])
    share = stats.paired_ratio(gate, base, full, base, boot)
    text = (f"GET's share of the all-module gain {100 * share['ratio']:.1f}% {_ci(share['ci'], spec='.0%')}"
            + (f" with {100 * p_ratio:.1f}% of its trainable parameters" if p_ratio else
               " (no parameter counts)") + f"; margin {HEADLINE_MARGIN:.0%}")
    numbers = {"share": share, "param_ratio": p_ratio}
    if share["undefined_draws"] > 0.025:
        return Verdict(claim, INCONCLUSIVE, text + f" — in {100 * share['undefined_draws']:.0f}% of the bootstrap "
                                                   f"draws the all-module gain is not positive", numbers)
    if share["ci"] and share["ci"][0] >= HEADLINE_MARGIN:
        return Verdict(claim, SUPPORTED, text, numbers)
    if share["ci"] and share["ci"][1] < HEADLINE_MARGIN:
        return Verdict(claim, NOT_SUPPORTED, text, numbers)
    return Verdict(claim, INCONCLUSIVE, text, numbers)


def gate_necessary(tuned: Row | None, reverted: Mapping[str, Row], random: Row | None,
                   swap: Row | None, health: Mapping | None) -> Verdict:
    """Claim 5: reverting gate's update costs more than reverting any other module or a random
    parameter-matched set of entries."""
    claim = "removing gate_proj's update hurts most (necessity)"
    if "gate" not in reverted or len(reverted) < 2:
        return Verdict(claim, INCONCLUSIVE, "needs reverted-gate and at least one other module")
    why = precheck({"tuned": tuned}, health,
                   ["all"] + (["control"] if swap is not None else []))   # swap uses the control's gate
    if why:
        return Verdict(claim, INCONCLUSIVE, why)
    boot = stats.Bootstrap.for_rows([tuned, *reverted.values(), *(r for r in (random, swap) if r)])
    drops = {m: stats.paired_diff(tuned, r, boot) for m, r in reverted.items()}
    others = {m: r for m, r in reverted.items() if m != "gate"}
    # gate's drop exceeds m's  ⇔  reverted[m] > reverted[gate]
    p_gate = stats.holm({m: stats.paired_diff(r, reverted["gate"], boot)["p"] for m, r in others.items()})
    p_other = stats.holm({m: stats.paired_diff(reverted["gate"], r, boot)["p"] for m, r in others.items()})
    text = "drop when one module's update is reverted: " + ", ".join(
        f"{m} {d['diff']:+.3f} {_ci(d['ci'])}" for m, d in sorted(drops.items(), key=lambda kv: -kv[1]["diff"]))
    numbers = {"drops": drops, "holm_p_gate_beats": p_gate}
    rnd_ok = True
    if random is not None:
        r = stats.paired_diff(random, reverted["gate"], boot)
        numbers["gate_minus_random_drop"] = r
        rnd_ok = _above(r["ci"])
        text += f"; gate's drop − random parameter-matched revert's drop {r['diff']:+.3f} {_ci(r['ci'])}"
        if _below(r["ci"]):
            return Verdict(claim, NOT_SUPPORTED, text + " (a random revert of as many entries hurts more)", numbers)
    swap_ok = True
    if swap is not None:
        s = stats.paired_diff(tuned, swap, boot)
        numbers["swap_drop"] = s
        swap_ok = _above(s["ci"])
        text += f"; drop when gate's update is replaced by the control's {s['diff']:+.3f} {_ci(s['ci'])}"
    if any(p < ALPHA for p in p_other.values()):
        best = min(p_other, key=p_other.get)
        return Verdict(claim, NOT_SUPPORTED, text + f" — reverting {best} hurts more (Holm p {p_other[best]:.3f})",
                       numbers)
    if _above(drops["gate"]["ci"]) and all(p < ALPHA for p in p_gate.values()) and rnd_ok and swap_ok:
        return Verdict(claim, SUPPORTED, text, numbers)
    return Verdict(claim, INCONCLUSIVE, text, numbers)


__all__ = ["INCONCLUSIVE", "Label", "NOT_SUPPORTED", "RULES", "SHARE_METRICS", "SINGLE", "SUPPORTED", "Verdict",
           "WITNESSES_CLAIM",
           "gate_dominates",
           "gate_most_efficient", "gate_necessary", "gate_transfers", "get_headline", "precheck"]
