"""Claim verdicts from hand-made numbers: each rule can say supported, not supported, inconclusive."""
from __future__ import annotations

from affectlocus.study import claims


def row(mean, half=0.01):
    return {"mean": mean, "ci": [mean - half, mean + half]}


def summary(gate, up=1.0, others=1.0):
    out = {m: {"l2": others * 10, "relative": others, "rms": others} for m in claims.SINGLE}
    out["gate"] = {"l2": gate * 10, "relative": gate, "rms": gate}
    out["up"] = {"l2": up * 30, "relative": up, "rms": up}
    return out


def test_gate_dominates():
    assert claims.gate_dominates(summary(3.0), summary(1.0)).verdict == claims.SUPPORTED
    assert claims.gate_dominates(summary(0.5, up=2.0), None).verdict == claims.NOT_SUPPORTED
    # raw L2 alone says gate (big matrix) — not enough
    v = claims.gate_dominates({**summary(0.5, up=0.4), "gate": {"l2": 99.0, "relative": 0.5, "rms": 0.5},
                               "q": {"l2": 1.0, "relative": 2.0, "rms": 2.0}}, None)
    assert v.verdict == claims.NOT_SUPPORTED and "matrix size" in v.evidence
    # the control fine-tune shows the same pattern → not specific to affect
    assert claims.gate_dominates(summary(3.0), summary(3.0)).verdict == claims.INCONCLUSIVE


def test_gate_transfers():
    base = {"none": row(0.5), "all": row(0.8), "q": row(0.55), "up": row(0.6)}
    assert claims.gate_transfers({**base, "gate": row(0.75)}).verdict == claims.SUPPORTED
    assert claims.gate_transfers({**base, "gate": row(0.52)}).verdict == claims.NOT_SUPPORTED
    flat = {"none": row(0.5, 0.1), "all": row(0.55, 0.1), "gate": row(0.55)}
    assert claims.gate_transfers(flat).verdict == claims.INCONCLUSIVE


def test_gate_most_efficient():
    params = {"q": 100, "gate": 200, "up": 200}
    assert claims.gate_most_efficient({"gate": row(0.8), "q": row(0.6), "up": row(0.7)}, params).verdict \
        == claims.SUPPORTED
    assert claims.gate_most_efficient({"gate": row(0.6), "q": row(0.8)}, params).verdict == claims.NOT_SUPPORTED
    assert claims.gate_most_efficient({"gate": row(0.70, 0.05), "up": row(0.71, 0.05)}, params).verdict \
        == claims.INCONCLUSIVE


def test_gate_necessary():
    tuned = row(0.8)
    assert claims.gate_necessary(tuned, {"gate": row(0.5), "q": row(0.78), "up": row(0.7)},
                                 [row(0.79)]).verdict == claims.SUPPORTED
    assert claims.gate_necessary(tuned, {"gate": row(0.7), "up": row(0.5)}, []).verdict == claims.NOT_SUPPORTED
    assert claims.gate_necessary(tuned, {"gate": row(0.8), "up": row(0.8)}, []).verdict == claims.INCONCLUSIVE


def test_collapsed_constant_predictors_are_named():
    from affectlocus.study.claims import collapse_note, collapsed, gate_transfers
    ok = {"mean": 0.7, "ci": [0.6, 0.8], "per_task": {"a": {"mean": 0.7, "predictions": [0, 1, 1]}}}
    flat = {"mean": 0.5, "ci": [0.5, 0.5], "per_task": {"a": {"mean": 0.5, "predictions": [1, 1, 1]},
                                                      "b": {"mean": 0.6, "predictions": [0, 2, 1]}}}
    assert collapsed(ok) == [] and collapsed(flat) == ["a"]
    assert collapsed({"mean": 0.5, "seeds": [ok, flat]}) == ["a (seed row 1)"]
    assert collapse_note({"base": ok}) is None
    assert "`all` on a" in collapse_note({"base": ok, "all": flat})
    v = gate_transfers({"none": {"mean": 0.55, "ci": [0.45, 0.65]}, "all": flat, "gate": ok})
    assert v.verdict == "inconclusive" and "constant predictor" in v.evidence
    from affectlocus.study.claims import gate_necessary
    v = gate_necessary(flat, {"gate": flat, "up": flat}, [flat])
    assert v.verdict == "inconclusive" and "no skill to remove" in v.evidence
