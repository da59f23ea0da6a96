"""Training data for the study: affective (prompt, label) pairs and the arithmetic control."""
from __future__ import annotations

from typing import Sequence

from ..bench.label_scoring import prompt_text
from ..tuning.data import arithmetic_control as _arithmetic


def affective_pairs(tokenizer, tasks: Sequence, n_per_task: int) -> list[tuple[str, str]]:
    """(chat prompt, label word) pairs from each task's *train* split (first ``n_per_task``)."""
    pairs = []
    for task in tasks:
        pairs += [(prompt_text(tokenizer, ex.text, task.labels), ex.label) for ex in task.train[:n_per_task]]
    return pairs


def arithmetic_control(tokenizer, n: int, seed: int = 0) -> list[tuple[str, str]]:
    """The non-affective control supervision (:func:`affectlocus.tuning.arithmetic_control`; the study
    used GSM8K) in the same chat-prompt format as the affective data."""
    return [(prompt_text(tokenizer, text, ["a number"]), answer) for text, answer in _arithmetic(n, seed)]
