"""Neuron-level probes of gate_proj in the affective model.

- rank each layer's gate channels by the ΔW row norm (from the locate step's diff table) and by the
  activation difference between affective and neutral (arithmetic) inputs;
- ablate the top-k channels of each ranking in every layer vs k random channels (same k);
- fit a logistic-regression probe on mean-pooled gate activations per layer, base vs affective model.
"""
from __future__ import annotations

import numpy as np
import torch

from ..diff import DiffTable
from ..interventions import graft, neuron_mask, record
from ..registry import intervene
from ..sites import find_decoder
from ..tasks.prompts import answer_prompt_pairs, build_label_prompts
from ..tuning.data import arithmetic_control
from .data import CONTROL_INSTRUCTION


def _prompt_ids(study, task, examples) -> list[list[int]]:
    """The evaluator's prompt tokens (prefix + query) for ``examples`` of ``task``."""
    p = build_label_prompts(study.tok, task.labels, [e.text for e in examples], task.train, style=study.style)
    return [p.prefix_ids + q for q in p.query_ids]


def _pooled_gate(study, prompts: list[list[int]], layers: list[int]) -> dict[int, np.ndarray]:
    """Mean over tokens of gate_proj outputs, one prompt at a time (no padding in the means)."""
    rec = record(modules="gate", layers=layers)
    device = next(study.model.parameters()).device
    with torch.no_grad(), intervene(study.model, rec):
        for ids in prompts:
            study.model(input_ids=torch.tensor([ids], device=device), logits_to_keep=1)
    return {layer: np.stack([t[0].float().mean(0).cpu().numpy() for t in rec.outputs[f"layers.{layer}.gate"]])
            for layer in layers}


def run_neurons(study, results) -> dict:
    cfg, seed = study.cfg, study.cfg.seeds[0]
    n_layers = find_decoder(study.model).num_layers
    layers = list(range(n_layers))
    adapter = study.adapter("affect-all", "all", seed)
    width = study.model.get_submodule(
        f"{find_decoder(study.model).path}.0.mlp.gate_proj").weight.shape[0]
    ks = [k for k in cfg.neuron_k if k <= width] or [max(1, width // 8)]

    table = DiffTable.load((results.get("locate") or {}).get("tables", {}).get("affective")) \
        if (results.get("locate") or {}).get("tables") else None
    task = study.train_tasks[0]
    affective = _prompt_ids(study, task, task.train[:24])
    neutral = [p for p, _ in answer_prompt_pairs(study.tok, CONTROL_INSTRUCTION, arithmetic_control(24, seed=99))]
    with intervene(study.model, graft(adapter)):
        act_aff = _pooled_gate(study, affective, layers)
        act_neu = _pooled_gate(study, neutral, layers)
    rankings = {"activation difference": {l: np.argsort(-np.abs(act_aff[l].mean(0) - act_neu[l].mean(0)))
                                          for l in layers}}
    if table is not None and _has_rows(table):
        rankings["ΔW row norm"] = {l: np.argsort(-table.row_norms(l, "gate")) for l in layers}
    rng = np.random.default_rng(seed)
    rankings["random"] = {l: rng.permutation(width) for l in layers}

    curves: dict[str, list] = {}
    full = study.score(f"graft[all] affect-all s{seed}", graft(adapter))
    for name, ranking in rankings.items():
        curves[f"top-k by {name}" if name != "random" else "random k"] = [(0, full)] + [
            (k, study.score(f"neurons[{name}]@{k} s{seed}", graft(adapter),
                            neuron_mask({l: ranking[l][:k].tolist() for l in layers}, modules="gate")))
            for k in study.bar(ks, f"neurons {name}")]

    probe, chance = _probe(study, adapter, [l for l in cfg.probe_layers if -n_layers <= l < n_layers]
                           or [0, n_layers - 1])
    top = {name: {str(l): ranking[l][:8].tolist() for l in layers} for name, ranking in rankings.items()
           if name != "random"}
    return {"curves": curves, "probe": probe, "probe_chance": chance, "top_channels": top,
            "rows": {f"{c} k={k}": r for c, pts in curves.items() for k, r in pts if k}}


def _has_rows(table: DiffTable) -> bool:
    try:
        table.row_norms(0, "gate")
        return True
    except Exception:
        return False


def _probe(study, adapter, layers: list[int]) -> tuple[dict, float]:
    """Held-out accuracy of a logistic-regression probe on pooled gate activations, per layer."""
    from sklearn.linear_model import LogisticRegression
    task = study.eval_tasks[0]
    layers = sorted({l % find_decoder(study.model).num_layers for l in layers})
    train = study.train_tasks[0].train[-48:] if study.train_tasks[0].name == task.name else task.train[:48]
    test = task.test[:40]
    texts = _prompt_ids(study, task, train + test)
    y = np.array([task.labels.index(ex.label) for ex in train + test])
    n = len(train)
    out = {}
    for name, stack in (("base", ()), ("affective", (graft(adapter),))):
        with intervene(study.model, *stack):
            feats = _pooled_gate(study, texts, layers)
        out[name] = {}
        for l in layers:
            clf = LogisticRegression(max_iter=2000, C=1.0).fit(feats[l][:n], y[:n])
            out[name][str(l)] = float(clf.score(feats[l][n:], y[n:]))
    chance = float(np.bincount(y[n:]).max() / len(y[n:]))
    return out, chance
