"""The study's scores: :func:`affectlocus.evaluation.runner.evaluate` (the one evaluator) turned into score rows.

The runner does the work — exact multi-token label scoring with the shared prefix's KV cache,
batching, logits only at answer positions — and caches per-example records keyed by the model's
weight fingerprint, the active intervention stack, the task and its examples (never by a name: a
checkpoint replaced at the same path changes the fingerprint). This module only shapes its output
into :class:`~.results.ScoreRow` (stored and handed on in its JSON form, which :mod:`.stats` and
:mod:`.claims` read), and remembers rows already computed in this process under the same key.
"""
from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..evaluation.runner import Scores, evaluate, model_env
from ..tasks import Task
from ..tasks.prompts import PromptStyle
from . import stats
from .results import ScoreRow, TaskRow


class StudyEvaluator:
    """Scores the model *as it currently is* (any intervention stack active) on fixed tasks."""

    def __init__(self, model, tokenizer, tasks: Sequence[Task], *, metric: str = "balanced_accuracy",
                 style: PromptStyle | None = None, batch_size: int = 16, bootstrap: int = 1000,
                 cache_dir: str | Path | None = None, bf16: bool | None = None):
        self.model, self.tokenizer, self.tasks = model, tokenizer, list(tasks)
        self.metric, self.style, self.batch_size = metric, style or PromptStyle(), batch_size
        self.bootstrap, self.cache_dir = bootstrap, cache_dir
        device = next(model.parameters()).device
        #: bf16 autocast while scoring (None → on a GPU); part of the cache key
        self.bf16 = device.type == "cuda" if bf16 is None else bool(bf16)
        self._autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if self.bf16 else nullcontext
        self._memo: dict[str, dict] = {}
        self.evaluations = 0  # rows built (not served from the in-process memo)
        self.examples_computed = 0  # examples the model ran on (not served from the disk cache)

    def score(self, name: str) -> dict:
        """A score row (JSON form) of the current model, labelled ``name`` (the label is not part of any key)."""
        env = model_env(self.model, self.tokenizer)  # the weights are fingerprinted once per call
        key = json.dumps(env, sort_keys=True)
        if key not in self._memo:
            with self._autocast():
                scores = evaluate(self.model, self.tokenizer, self.tasks, seed=0, cache_dir=self.cache_dir,
                                  batch_size=self.batch_size, style=self.style, metric=self.metric, n_boot=0,
                                  progress=False, cache_tag="bf16-autocast" if self.bf16 else "", env=env)
            row = to_row(scores, self.tasks, self.metric)
            row.ci = stats.example_ci(row.to_dict(), self.bootstrap) if self.bootstrap else None
            self._memo[key] = row.to_dict()
            self.evaluations += 1
            self.examples_computed += int(scores.meta.get("stats", {}).get("computed", 0))
        return {**self._memo[key], "name": name}


def to_row(scores: Scores, tasks: Sequence[Task], metric: str) -> ScoreRow:
    """A :class:`~affectlocus.evaluation.runner.Scores` as a study score row (no CI yet)."""
    per_task = {}
    for task in tasks:
        t = scores.tasks[task.name]
        index = {lab: k for k, lab in enumerate(task.labels)}
        recs = scores.records[task.name]
        per_task[task.name] = TaskRow(
            mean=t.score, n=t.n, chance=t.chance, labels=list(task.labels),
            pred=[index.get(r["pred"], -1) if r["pred"] is not None else -1 for r in recs],
            truth=[index[r["label"]] for r in recs])
    return ScoreRow(metric=metric, mean=float(np.mean([v.mean for v in per_task.values()])),
                    chance=float(np.mean([v.chance for v in per_task.values()])), per_task=per_task)


__all__ = ["StudyEvaluator", "to_row"]
