"""The study's four claims, judged from the numbers: supported / not supported / inconclusive.

Each rule is deliberately simple and printed with its evidence, so a reader can disagree with the
threshold but not with the arithmetic. A "score row" is ``{"mean": float, "ci": [lo, hi]}`` (means
over tasks; CIs from the bootstrap). Two rows *separate* when their CIs do not overlap.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not supported", "inconclusive"
Row = Mapping[str, object]
SINGLE = ("q", "k", "v", "o", "gate", "up", "down")


@dataclass
class Verdict:
    claim: str
    verdict: str
    evidence: str

    def to_dict(self) -> dict:
        return asdict(self)


def _ci(row: Row) -> tuple[float, float]:
    lo, hi = row.get("ci") or (row["mean"], row["mean"])
    return float(lo), float(hi)


def separated(a: Row, b: Row) -> bool:
    """True when a's CI lies entirely above b's."""
    return _ci(a)[0] > _ci(b)[1]


def collapsed(row: Row) -> list[str]:
    """Tasks on which ``row``'s model gave the same label to every example (a constant predictor:
    balanced accuracy exactly 1/K, zero-width CI) — a failed fine-tune, not a measurement of a module."""
    if row.get("seeds"):  # mean over seeds: look into each seed's own row
        return [f"{t} (seed row {i})" for i, r in enumerate(row["seeds"]) for t in collapsed(r)]
    per_task = row.get("per_task") or {}
    return [t for t, v in per_task.items() if len(set(v.get("predictions") or [0, 1])) == 1]


def collapse_note(rows: Mapping[str, Row]) -> str | None:
    """One sentence naming the configurations that collapsed to a constant predictor, or None."""
    bad = {name: collapsed(row) for name, row in rows.items()}
    bad = {k: v for k, v in bad.items() if v}
    if not bad:
        return None
    return ("constant predictor (one label for every example; balanced accuracy = chance): "
            + "; ".join(f"`{k}` on {', '.join(v)}" for k, v in bad.items())
            + " — one short single-seed run can collapse; raise steps/seeds or lower lr")


def _ranked(values: Mapping[str, float]) -> list[str]:
    return sorted(values, key=lambda k: -values[k])


def gate_dominates(affect: Mapping[str, Mapping[str, float]],
                   control: Mapping[str, Mapping[str, float]] | None) -> Verdict:
    """Claim 1: gate_proj carries the largest update — by size-normalised metrics, and beyond control.

    ``affect`` / ``control``: ``{module: {"l2": mean over layers, "relative": …, "rms": …}}``.
    """
    claim = "gate_proj dominates the affective weight update"
    ranks = {m: _ranked({mod: v[m] for mod, v in affect.items()}) for m in ("l2", "relative", "rms")}
    text = "; ".join(f"{m}: {' > '.join(r[:3])}" for m, r in ranks.items())
    if ranks["relative"][0] != "gate" and ranks["rms"][0] != "gate":
        why = (" (raw L2 ranks it first, but raw L2 mostly tracks matrix size)" if ranks["l2"][0] == "gate"
               else "")
        return Verdict(claim, NOT_SUPPORTED, f"gate is not the top module by relative or rms change{why}. "
                                             f"Affective ranking {text}.")
    if ranks["relative"][0] != ranks["rms"][0]:
        return Verdict(claim, INCONCLUSIVE, f"size-normalised metrics disagree. Affective ranking {text}.")
    if control:
        c_rank = _ranked({mod: v["rms"] for mod, v in control.items()})
        share = lambda d: d["gate"]["rms"] / sum(v["rms"] for v in d.values())  # noqa: E731
        a_share, c_share = share(affect), share(control)
        detail = f"gate's share of rms change: affective {a_share:.3f} vs control {c_share:.3f}"
        if c_rank[0] == "gate" and a_share <= c_share * 1.05:
            return Verdict(claim, INCONCLUSIVE, f"gate also dominates the non-affective control fine-tune, "
                                                f"so the pattern is not specific to affect ({detail}). "
                                                f"Affective ranking {text}.")
        return Verdict(claim, SUPPORTED, f"gate tops relative and rms change; {detail}. Ranking {text}.")
    return Verdict(claim, SUPPORTED, f"gate tops relative and rms change (no control run). Ranking {text}.")


def gate_transfers(inherit: Mapping[str, Row]) -> Verdict:
    """Claim 2: grafting gate_proj alone into the base recovers most of the affective gain."""
    claim = "gate_proj alone transfers the affective skill (inheritance)"
    if not {"none", "all", "gate"} <= set(inherit):
        return Verdict(claim, INCONCLUSIVE, "needs the none, all and gate grafts")
    none, full, gate = inherit["none"], inherit["all"], inherit["gate"]
    gain = float(full["mean"]) - float(none["mean"])
    if not separated(full, none):
        why = " (the affective model collapsed to a constant predictor)" if collapsed(full) else ""
        return Verdict(claim, INCONCLUSIVE, f"the full affective graft does not beat the base beyond its CI "
                                            f"({full['mean']:.3f} vs {none['mean']:.3f}): nothing to transfer"
                                            + why)
    recovery = (float(gate["mean"]) - float(none["mean"])) / gain
    singles = {m: float(inherit[m]["mean"]) for m in SINGLE if m in inherit}
    best = _ranked(singles)[0] if singles else "gate"
    text = (f"gate alone recovers {100 * recovery:.0f}% of the all-module gain "
            f"({none['mean']:.3f} → {gate['mean']:.3f} of {full['mean']:.3f}); best single module: {best}")
    if recovery >= 0.5 and best == "gate" and separated(gate, none):
        return Verdict(claim, SUPPORTED, text)
    if best != "gate" and separated(inherit[best], gate):
        return Verdict(claim, NOT_SUPPORTED, text + ", which beats gate beyond CI")
    if recovery < 0.25:
        return Verdict(claim, NOT_SUPPORTED, text)
    return Verdict(claim, INCONCLUSIVE, text)


def gate_most_efficient(targeted: Mapping[str, Row], params: Mapping[str, int],
                        base: Row | None = None) -> Verdict:
    """Claim 3: among single-module LoRAs, gate-only (GET) scores best (and per parameter)."""
    claim = "gate_proj is the most efficient single module to tune (GET)"
    singles = {m: r for m, r in targeted.items() if m in SINGLE}
    if "gate" not in singles or len(singles) < 2:
        return Verdict(claim, INCONCLUSIVE, f"needs gate and at least one other single-module run; have "
                                            f"{sorted(singles)}")
    ranking = _ranked({m: float(r["mean"]) for m, r in singles.items()})
    base_mean = float(base["mean"]) if base else 0.0
    per_m = {m: (float(singles[m]["mean"]) - base_mean) / max(params.get(m, 1), 1) * 1e6 for m in singles}
    text = ("single-module scores: " + ", ".join(f"{m} {float(singles[m]['mean']):.3f}" for m in ranking)
            + "; gain per million trainable parameters: "
            + ", ".join(f"{m} {per_m[m]:.2f}" for m in _ranked(per_m)))
    if ranking[0] == "gate":
        if all(separated(singles["gate"], singles[m]) for m in ranking[1:]):
            return Verdict(claim, SUPPORTED, text)
        return Verdict(claim, INCONCLUSIVE, text + " (gate first, but CIs overlap)")
    if separated(singles[ranking[0]], singles["gate"]):
        return Verdict(claim, NOT_SUPPORTED, text + f" ({ranking[0]} beats gate beyond CI)")
    return Verdict(claim, INCONCLUSIVE, text + " (gate not first, CIs overlap)")


def gate_necessary(tuned: Row, reverted: Mapping[str, Row], controls: list[Row]) -> Verdict:
    """Claim 4: reverting gate_proj's update costs more than reverting any other module or a random
    parameter-matched set of entries."""
    claim = "removing gate_proj's update hurts most (necessity)"
    if "gate" not in reverted or len(reverted) < 2:
        return Verdict(claim, INCONCLUSIVE, "needs reverted-gate and at least one other module")
    if collapsed(tuned):
        return Verdict(claim, INCONCLUSIVE, f"the affective model is a constant predictor on "
                                            f"{', '.join(collapsed(tuned))}: there is no skill to remove")
    drops = {m: float(tuned["mean"]) - float(r["mean"]) for m, r in reverted.items()}
    ranking = _ranked(drops)
    ctrl = [float(tuned["mean"]) - float(c["mean"]) for c in controls]
    text = ("score drop when each module's update is reverted: "
            + ", ".join(f"{m} {drops[m]:+.3f}" for m in ranking)
            + (f"; random parameter-matched reverts: {', '.join(f'{d:+.3f}' for d in ctrl)}" if ctrl else ""))
    if not separated(tuned, reverted["gate"]):
        return Verdict(claim, NOT_SUPPORTED if ranking[0] != "gate" else INCONCLUSIVE,
                       text + " (reverting gate does not lower the score beyond CI)")
    if ranking[0] == "gate" and all(separated(reverted[m], reverted["gate"]) for m in ranking[1:]) \
            and all(drops["gate"] > d for d in ctrl):
        return Verdict(claim, SUPPORTED, text)
    if ranking[0] != "gate" and separated(reverted["gate"], reverted[ranking[0]]):
        return Verdict(claim, NOT_SUPPORTED, text + f" ({ranking[0]} hurts more, beyond CI)")
    return Verdict(claim, INCONCLUSIVE, text)
