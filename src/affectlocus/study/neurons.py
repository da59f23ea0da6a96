"""Neuron-level probes of the gate projection in the affective model (built on :mod:`affectlocus.neurons`).

- rank each layer's gate channels by the ΔW row norm (from the locate step's diff table) and by the
  activation difference between affective and neutral (arithmetic) inputs;
- ablate the top-k channels of each ranking in every layer vs k random channels (same k);
- fit a logistic-regression probe on mean-pooled gate activations per layer, base vs affective model.
"""
from __future__ import annotations

import numpy as np

from ..diff import DiffTable
from ..errors import DataError
from ..interventions import graft, neuron_mask
from ..neurons import NeuronRanking, probe, rank_neurons
from ..registry import intervene
from ..sites import find_decoder, select
from ..tasks.prompts import answer_prompt_pairs, build_label_prompts
from ..tuning.data import arithmetic_control
from .data import CONTROL_INSTRUCTION


def _prompt_ids(study, task, examples) -> list[list[int]]:
    """The evaluator's prompt tokens (prefix + query) for ``examples`` of ``task``."""
    p = build_label_prompts(study.tok, task.labels, [e.text for e in examples], task.train, style=study.style)
    return [p.prefix_ids + q for q in p.query_ids]


def run_neurons(study, results) -> dict:
    cfg, seed, model = study.cfg, study.cfg.seeds[0], study.model
    n_layers = find_decoder(model).num_layers
    adapter = study.affect("all", seed)
    width = select(model, "gate", 0)[0].shape[0]  # canonical gate rows (the gate half of a fused gate_up)
    ks = [k for k in cfg.neuron_k if k <= width] or [max(1, width // 8)]

    tables = (results.get("locate") or {}).get("tables")
    table = DiffTable.load(tables.get("affective")) if tables else None
    task = study.train_tasks[0]
    affective = _prompt_ids(study, task, task.train[:24])
    neutral = [p for p, _ in answer_prompt_pairs(study.tok, CONTROL_INSTRUCTION, arithmetic_control(24, seed=99))]
    rankings: dict[str, NeuronRanking] = {}
    with intervene(model, graft(adapter)):  # one prompt at a time: no padding in the means
        rankings["activation difference"] = rank_neurons(model, affective, neutral, by="activation", batch_size=1)
    if table is not None:
        try:
            rankings["ΔW row norm"] = rank_neurons(model, by="weight", table=table)
        except DataError:  # the table has no neuron norms
            pass
    rankings["random"] = rank_neurons(model, by="random", seed=seed)

    curves: dict[str, list] = {}
    full = study.score(f"graft[all] affect-all s{seed}", graft(adapter))
    for name, ranking in rankings.items():
        curves[f"top-k by {name}" if name != "random" else "random k"] = [(0, full)] + [
            (k, study.score(f"neurons[{name}]@{k} s{seed}", graft(adapter),
                            neuron_mask(ranking.top(k), modules="gate")))
            for k in study.bar(ks, f"neurons {name}")]

    accuracy, chance = _probe(study, adapter, [l for l in cfg.probe_layers if -n_layers <= l < n_layers]
                              or [0, n_layers - 1])
    top = {name: {str(l): chans for l, chans in ranking.top(min(8, width)).items()}
           for name, ranking in rankings.items() if name != "random"}
    return {"curves": curves, "probe": accuracy, "probe_chance": chance, "top_channels": top,
            "rows": {f"{c} k={k}": r for c, pts in curves.items() for k, r in pts if k}}


def _probe(study, adapter, layers: list[int]) -> tuple[dict, float]:
    """Held-out accuracy of a logistic-regression probe on pooled gate activations, per layer."""
    task = study.eval_tasks[0]
    train = study.train_tasks[0].train[-48:] if study.train_tasks[0].name == task.name else task.train[:48]
    examples = train + task.test[:40]
    texts = _prompt_ids(study, task, examples)
    y = np.array([task.labels.index(ex.label) for ex in examples])
    out, chance = {}, 0.0
    for name, stack in (("base", ()), ("affective", (graft(adapter),))):
        with intervene(study.model, *stack):
            res = probe(study.model, texts, y, layers=layers, train=len(train), batch_size=1)
        out[name], chance = {str(l): a for l, a in res.accuracy.items()}, res.chance
    return out, chance
