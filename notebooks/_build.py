"""Regenerate the notebooks from the cell sources below (run: .venv/bin/python notebooks/_build.py).

Every notebook reads AFFECTLOCUS_NB_SCALE (default 1.0): CI runs them at a reduced size so they
cannot rot; at 1.0 each runs top to bottom in a few minutes on 2 CPU cores.
"""
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
}


def build() -> None:
    for name, cells in NOTEBOOKS.items():
        nb = new_notebook(cells=[new_markdown_cell(src) if kind == "md" else new_code_cell(src)
                                 for kind, src in cells])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, HERE / name)


if __name__ == "__main__":
    build()
