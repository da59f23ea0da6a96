"""Label scoring: fast, batched evaluation of the model *as it is* (any interventions active), with CIs.

Each example is a chat prompt asking for one label word; the prediction is the label whose first
token has the highest next-token logit (labels must start with distinct tokens — checked). The score
of a task is **balanced accuracy** (mean per-class recall, chance = 1/K), robust to label imbalance.
The configuration score is the mean over tasks; its 95% CI comes from a seeded bootstrap over
examples within each task.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .._io import atomic_write_text
from ..errors import DataError

SYSTEM = "You are a careful annotator. Answer with exactly one word."


def prompt_text(tokenizer, text: str, labels: Sequence[str]) -> str:
    """The chat prompt for one example (plain text when the tokenizer has no chat template)."""
    question = f"Text: {text}\nWhich label fits best: {', '.join(labels)}?"
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}],
            tokenize=False, add_generation_prompt=True)
    return f"{SYSTEM}\n{question}\nAnswer:"


def label_token_ids(tokenizer, labels: Sequence[str]) -> list[int]:
    ids = [tokenizer(lab, add_special_tokens=False).input_ids[0] for lab in labels]
    if len(set(ids)) != len(ids):
        raise DataError(f"labels {list(labels)} share a first token; first-token scoring needs distinct ones")
    return ids


def balanced_accuracy(pred: np.ndarray, truth: np.ndarray, k: int) -> float:
    recalls = [float((pred[truth == c] == c).mean()) for c in range(k) if (truth == c).any()]
    return float(np.mean(recalls)) if recalls else float("nan")


@dataclass
class EvalTask:
    name: str
    labels: tuple[str, ...]
    prompts: list[str]
    truth: np.ndarray


class Evaluator:
    """Scores the model *as it currently is* (so any intervention stack active) on fixed tasks."""

    def __init__(self, model, tokenizer, tasks: Sequence, n_eval: int, batch_size: int = 16,
                 bootstrap: int = 1000, seed: int = 0, cache_dir: str | Path | None = None):
        self.model, self.tokenizer = model, tokenizer
        self.batch_size, self.bootstrap, self.seed = batch_size, bootstrap, seed
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.tasks: list[EvalTask] = []
        for task in tasks:
            test = task.test[:n_eval]
            index = {lab: i for i, lab in enumerate(task.labels)}
            self.tasks.append(EvalTask(task.name, tuple(task.labels),
                                       [prompt_text(tokenizer, ex.text, task.labels) for ex in test],
                                       np.array([index[ex.label] for ex in test])))
        self.forward_calls = 0

    @torch.no_grad()
    def predict(self, task: EvalTask) -> np.ndarray:
        """Predicted label index per example (left-padded batches, logits at the last position only)."""
        ids = label_token_ids(self.tokenizer, task.labels)
        side = self.tokenizer.padding_side
        self.tokenizer.padding_side = "left"
        device = next(self.model.parameters()).device
        out = []
        try:
            for i in range(0, len(task.prompts), self.batch_size):
                enc = self.tokenizer(task.prompts[i:i + self.batch_size], return_tensors="pt", padding=True,
                                     add_special_tokens=False).to(device)
                logits = self.model(**enc, logits_to_keep=1).logits[:, -1, ids]
                self.forward_calls += 1
                out.append(logits.float().argmax(-1).cpu().numpy())
        finally:
            self.tokenizer.padding_side = side
        return np.concatenate(out)

    def score(self, name: str) -> dict:
        """Score the current model; cached under ``name`` in ``cache_dir`` (one JSON per name)."""
        path = self.cache_dir / f"{_safe(name)}.json" if self.cache_dir else None
        if path is not None and path.exists():
            return json.loads(path.read_text())
        preds = {t.name: self.predict(t) for t in self.tasks}
        row = self.summarise(preds)
        row["name"] = name
        if path is not None:
            atomic_write_text(path, json.dumps(row))
        return row

    def summarise(self, preds: dict[str, np.ndarray]) -> dict:
        rng = np.random.default_rng(self.seed)
        per_task, boots = {}, []
        for t in self.tasks:
            p, y, k = preds[t.name], t.truth, len(t.labels)
            samples = np.array([balanced_accuracy(p[idx], y[idx], k) for idx in
                                (rng.integers(0, len(y), len(y)) for _ in range(self.bootstrap))]) \
                if self.bootstrap else np.array([])
            boots.append(samples)
            per_task[t.name] = {"mean": balanced_accuracy(p, y, k), "n": int(len(y)),
                                "ci": _ci(samples), "chance": 1.0 / k,
                                "predictions": p.tolist()}
        mean = float(np.mean([v["mean"] for v in per_task.values()]))
        ci = _ci(np.nanmean(np.stack(boots), axis=0)) if self.bootstrap else [mean, mean]
        return {"mean": mean, "ci": ci, "per_task": per_task}


def _ci(samples: np.ndarray) -> list[float]:
    if samples.size == 0:
        return [float("nan"), float("nan")]
    return [float(np.nanpercentile(samples, 2.5)), float(np.nanpercentile(samples, 97.5))]


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.+=" else "_" for c in name)[:150]
