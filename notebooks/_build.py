"""Regenerate the notebooks from the cell sources below (run: .venv/bin/python notebooks/_build.py).

Every notebook reads AFFECTLOCUS_NB_SCALE (default 1.0): CI runs them at a reduced size so they
cannot rot; at 1.0 each runs top to bottom in a few minutes on 2 CPU cores. Arguments: only these
notebooks (e.g. ``05_three_witnesses.ipynb``), the others are left as they are.
"""
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).parent
SETUP = """import os, time
os.environ.setdefault("HF_HUB_OFFLINE", "1")
SCALE = float(os.environ.get("AFFECTLOCUS_NB_SCALE", "1.0"))
import torch
import affectlocus as al
from affectlocus.tasks import load_task
from affectlocus.tasks.prompts import PromptStyle, build_label_prompts, label_training_pairs
from affectlocus.tuning.data import SFTDataset
model, tok = al.load_model("smollm2-135m")   # SmolLM2-135M-Instruct, Q4_1-dequantised, embedded
task = load_task("rt-polarity")
style = PromptStyle(shots_per_label=0)        # zero-shot label prompts, for training and scoring alike
steps, n_eval = max(2, int(16 * SCALE)), max(16, int(64 * SCALE))

def score():
    \"\"\"Balanced accuracy of the model as it is now (interventions included) on n_eval test reviews.\"\"\"
    return al.evaluate(model, tok, [task], style=style, n_boot=200, progress=False, max_examples=n_eval)

print(type(model).__name__, al.find_decoder(model).num_layers, "layers;", len(task.train), "training texts")"""

# 128 balanced training reviews as token ids in exactly the evaluator's format: the label prompt's
# prefix + query, then the true label and its end-of-turn marker (loss on the label only)
TRAIN_DATA = """neg, pos = ([e for e in task.train if e.label == lab][:64] for lab in task.labels)
examples = [e for pair in zip(neg, pos) for e in pair]
data = SFTDataset.from_ids(label_training_pairs(tok, task, examples, style=style), tok.pad_token_id,
                           max_length=128)"""

WITNESSES = [
    ("md", "# 05 · Three witnesses: where does the fine-tune act?\n\nThe size of ΔW is the weakest answer. "
           "Here one LoRA is asked three independent ways (`src/affectlocus/witnesses/`): the **spectrum** "
           "of ΔW (`al.spectrum`: how big and how many directions, intruder dimensions), **activation "
           "mediation** (`al.mediate`: through which module outputs does the change in the next-token "
           "distribution flow?) and **weight-path attribution** (`al.attribute`: integrated gradients of "
           "the answer loss along W + α·ΔW). Then: do their module rankings agree (Kendall's τ)?"),
    ("code", SETUP),
    ("code", TRAIN_DATA + """
# every 5th layer (CI: layers 0 and 15) is fine-tuned and probed, so the witnesses see one fine-tune
layers = list(range(0, 30, 5 if SCALE >= 1 else 15))
t = time.time()
res = al.train(model, tok, data, "nb-runs/witness-lora", modules="all", layers=layers, r=8, alpha=16,
               steps=steps, batch_size=8 if SCALE >= 1 else 4, lr=1e-3, max_length=128, progress=False)
res.restore()
tuned = "nb-runs/witness-lora"   # a peft adapter folder; any source works (checkpoint, .pth, model)
print(f"LoRA on all 7 modules of layers {layers}: {steps} steps, final loss {res.losses[-1]:.3f} "
      f"({time.time() - t:.0f} s)")"""),
    ("code", """from affectlocus.tuning.data import collate
# held-out reviews in the training/evaluation prompt format: the prompt alone (mediation reads the
# next-token distribution where the label is predicted) and prompt + true label (attribution's loss)
n = max(2, int(8 * SCALE))
pairs = label_training_pairs(tok, task, load_task("rt-polarity", max_test=n).test, style=style)
prompts = collate([{"input_ids": p, "labels": p} for p, _ in pairs], tok.pad_token_id)
answers = SFTDataset.from_ids(pairs, tok.pad_token_id).collate(range(len(pairs)))   # loss on the label only
print(f"{n} prompts, {prompts['input_ids'].shape[1]} tokens at most")"""),
    ("code", """t = time.time()
spec = al.spectrum(model, tuned, layers=layers, k=8)
print(f"spectrum: {time.time() - t:.0f} s, methods {spec.meta['methods']}")
spec.to_frame().groupby("module", sort=False)[["sigma_1", "effective_rank", "stable_rank", "intruders"]].mean()"""),
    ("code", """t = time.time()
med = al.mediate(model, tuned, prompts, layers=layers)   # metric: KL of the next-token distributions
print(f"mediation: {time.time() - t:.0f} s, total KL(p_tuned ‖ p_base) = {med.meta['total']:.4f}", *med.notes)"""),
    ("code", """t = time.time()
att = al.attribute(model, tuned, answers, layers=layers, steps=8)
print(f"attribution: {time.time() - t:.0f} s, L(tuned) − L(base) = {att.total:.4f}, "
      f"Σ attribution = {att.meta['sum']:.4f}, completeness error = {att.error:.2%}", *att.notes)"""),
    ("code", """from matplotlib.figure import Figure
fig = Figure(figsize=(16, 3.8), layout="constrained")
for ax, (table, column) in zip(fig.subplots(1, 3), [(spec, "sigma_1"), (med, "sufficiency"),
                                                    (att, "attribution")]):
    table.heatmap(column, ax=ax)
from IPython.display import Image
fig.savefig("three_witnesses.png", dpi=90)   # shown as a PNG whatever the matplotlib backend
Image("three_witnesses.png")"""),
    ("code", """from affectlocus.witnesses.agreement import agreement
rankings = {"spectrum σ1": spec.by_module("sigma_1"), "mediation": med.by_module("sufficiency"),
            "attribution": att.by_module("attribution", absolute=True)}   # each summed over layers
for name, scores in rankings.items():
    print(f"{name:12s}", " > ".join(sorted(scores, key=scores.get, reverse=True)))
agree = agreement(rankings)   # Kendall's τ-b per pair, exact one-sided permutation p, Holm over the pairs
for pair in agree.pairs:
    print(f"τ({pair.a}, {pair.b}) = {pair.tau:+.2f}   p = {pair.p:.3f}   Holm p = {pair.p_holm:.3f}")"""),
    ("code", """# what this run shows — computed, not written in advance
print("top module per witness:", {name: max(scores, key=scores.get) for name, scores in rankings.items()})
print(f"verdict: {agree.sentence('the fine-tune')} ({agree.reason})")
print(f"attribution completeness error {att.error:.2%} at 8 steps "
      f"({'within' if att.error <= 0.05 else 'outside'} the 5% the path integral should reach)")
print(f"this run: {steps} training steps on layers {layers}, {n} prompts (AFFECTLOCUS_NB_SCALE={SCALE})")"""),
    ("md", "How to read it: the spectrum measures the update itself (σ₁ still grows with matrix size); "
           "mediation measures which *outputs* carry the change of the next-token distribution — a site "
           "downstream of a changed one (e.g. `down` after `gate`) can carry change it did not make; "
           "attribution splits the change of the answer loss over the weight updates, summing to the "
           "measured total up to the completeness error. Seven modules are few for a rank test, and at "
           "reduced size (few steps, layers, prompts) any agreement or disagreement is weak evidence. The "
           "CLI (`affectlocus mediate|attribute|spectrum BASE TUNED --data … --out DIR`) runs the same "
           "functions."),
]

NOTEBOOKS = {
    "01_locate.ipynb": [
        ("md", "# 01 · Locate: where does a fine-tune change the model?\n\nWe train a small all-module LoRA "
               "on movie-review sentiment, then diff it against the base **from the adapter's factors** (no "
               "B·A is ever formed). Raw L2 favours big matrices, so we look at size-normalised metrics "
               "(`rms`, `relative`) side by side — see `src/affectlocus/diff/`."),
        ("code", SETUP),
        ("code", TRAIN_DATA + """
# the data are token ids in the evaluator's prompt format, so no chat template is applied again
res = al.train(model, tok, data, "nb-runs/affect-all", modules="all", r=8, alpha=16, steps=steps, batch_size=8,
               lr=1e-3, max_length=128, progress=False)
res.restore()   # the base model back, without LoRA layers; the adapter is in nb-runs/affect-all
print(f"{res.trainable:,} trainable parameters, final loss {res.losses[-1]:.3f}")"""),
        ("code", """table = al.diff(model, "nb-runs/affect-all", modules="all", progress=False)
table.summary("rms")"""),
        ("code", """for metric in ("l2", "rms", "relative"):
    s = table.summary(metric)
    print(f"{metric:9s} ranking:", " > ".join(s.index if hasattr(s, "index") else s))"""),
        ("code", """fig = table.heatmap("rms")"""),
        ("md", "With Adam, short LoRA runs move every factor entry at a similar rate, so raw L2 mostly "
               "tracks matrix size (gate/up/down are 1536×576). Whether *gate dominates* survives "
               "normalisation is exactly what `affectlocus study` checks against a non-affective control."),
    ],
    "02_intervene.ipynb": [
        ("md", "# 02 · Intervene: graft, zero, interpolate — and undo exactly\n\nEverything here happens "
               "at runtime without copying the model; on exit every tensor is bit-identical "
               "(`src/affectlocus/registry.py`)."),
        ("code", SETUP),
        ("code", """sites = al.select(model, modules="gate", layers=range(10, 20))
print(len(sites), sites[0])
snapshot = {k: v.clone() for k, v in model.state_dict().items()}"""),
        ("code", """print("plain           ", round(score().mean, 3))
with al.intervene(model, al.zero(modules="gate", layers="10:20")):
    print("gate 10-19 zeroed", round(score().mean, 3))
with al.intervene(model, al.noise(relative=0.5, seed=0, modules="gate", layers="10:20")):
    print("gate + 50% noise ", round(score().mean, 3))"""),
        ("code", """rec = al.record(modules=["gate", "up"], layers=12)
enc = tok("What a wonderful, moving film.", return_tensors="pt")
with al.intervene(model, rec, al.zero_output(modules="up", layers=12, channels=list(range(64)))):
    model(**enc)
{k: tuple(v[0].shape) for k, v in rec.outputs.items()}"""),
        ("code", """identical = all(torch.equal(v, snapshot[k]) for k, v in model.state_dict().items())
al.assert_clean(model)
print("bit-identical after exit:", identical)"""),
        ("md", "Interventions compose (applied in order) and nest (unwound LIFO). A hook is only ever "
               "removed by its owner, so hooks of other tools (nnsight, your own) are never touched."),
    ],
    "03_get.ipynb": [
        ("md", "# 03 · GET: gate-only LoRA vs all seven projections\n\nSame data, rank, steps; we compare "
               "trainable parameters and balanced accuracy (`src/affectlocus/study/`)."),
        ("code", SETUP),
        ("code", TRAIN_DATA + """
rows = {"base": score()}
params = {}
for mods in ("gate", "all"):
    res = al.train(model, tok, data, f"nb-runs/get-{mods}", modules=mods, r=8, alpha=16, steps=steps,
                   batch_size=8, lr=1e-3, max_length=128, progress=False)
    res.restore()
    params[mods] = res.trainable
    with al.intervene(model, al.graft(f"nb-runs/get-{mods}")):
        rows[mods] = score()
for k, r in rows.items():
    print(f"{k:5s} {r.mean:.3f} [{r.mean_ci[0]:.3f}, {r.mean_ci[1]:.3f}]  params {params.get(k, 0):,}")
print(f"gate/all trainable parameters: {params['gate'] / params['all']:.3f}")"""),
        ("md", "At uniform rank, LoRA parameters per module are r·(in + out): on SmolLM2-135M gate-only is "
               "about 21% of all-seven; on Qwen2.5-7B exactly 25%. Whether GET keeps the score is measured, "
               "not assumed — with one seed and a short run, expect wide confidence intervals."),
    ],
    "04_neurons.ipynb": [
        ("md", "# 04 · Neurons: which gate channels carry sentiment?\n\nRecord gate_proj activations, rank "
               "channels by how differently they fire on positive vs negative reviews, ablate the top-k vs "
               "random-k, and fit a linear probe (`al.rank_neurons`, `al.neuron_mask`, `al.probe`)."),
        ("code", SETUP),
        ("code", """import numpy as np
n = max(8, int(32 * SCALE))
layer = 12
def prompts(label):
    \"\"\"The evaluator's (zero-shot) prompt token ids for n training reviews with this label.\"\"\"
    p = build_label_prompts(tok, task.labels, [e.text for e in task.train if e.label == label][:n], style=style)
    return [p.prefix_ids + q for q in p.query_ids]
pos, neg = prompts("positive"), prompts("negative")
# mean gate activation over each prompt's tokens; channels ordered by |mean(pos) − mean(neg)|
ranking = al.rank_neurons(model, pos, neg, modules="gate", layers=layer)
print("top channels:", ranking.top(10)[layer])"""),
        ("code", """print("plain      ", round(score().mean, 3))
random_ranking = al.rank_neurons(model, modules="gate", layers=layer, by="random", seed=0)
for k in (16, 128):
    with al.intervene(model, al.neuron_mask(ranking.top(k), modules="gate")):
        top = score().mean
    with al.intervene(model, al.neuron_mask(random_ranking.top(k), modules="gate")):
        rnd = score().mean
    print(f"k={k:4d} top-k {top:.3f}  random-k {rnd:.3f}")"""),
        ("code", """# a linear probe on pooled gate activations: first half trains, second half tests (classes interleaved)
mixed = [x for pair in zip(pos, neg) for x in pair]
result = al.probe(model, mixed, [1, 0] * len(pos), modules="gate", layers=[0, layer, -1], train=0.5)
print("probe accuracy per layer:", result.accuracy, " chance:", result.chance)"""),
        ("md", "Channels were ranked on the training texts and scored on held-out test texts. The full "
               "study (`affectlocus demo`) ranks by ΔW row norm as well, in the *affective* model."),
    ],
    "05_three_witnesses.ipynb": WITNESSES,
}


def build(names: list[str] | None = None) -> None:
    """Write every notebook, or only ``names`` (e.g. ``05_three_witnesses.ipynb``)."""
    for name, cells in NOTEBOOKS.items():
        if names and name not in names:
            continue
        nb = new_notebook(cells=[new_markdown_cell(src) if kind == "md" else new_code_cell(src)
                                 for kind, src in cells])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, HERE / name)


if __name__ == "__main__":
    build(sys.argv[1:])
