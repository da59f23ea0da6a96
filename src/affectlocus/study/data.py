"""Training data for the study: affective (prompt, label) pairs and the arithmetic control."""
from __future__ import annotations

from itertools import zip_longest
from typing import Sequence

from ..bench.label_scoring import prompt_text
from ..tuning.data import arithmetic_control as _arithmetic


def affective_pairs(tokenizer, tasks: Sequence, n_per_task: int, balance: bool = True) -> list[tuple[str, str]]:
    """(chat prompt, label word) pairs from each task's *train* split: ``n_per_task`` per task, taken
    round-robin over the labels (in split order) when ``balance``, else the first ``n_per_task``.

    Balancing matters because the scores are balanced accuracies and some splits are skewed (the
    tweets' train split is ~58% negative, ~10% positive); a rare label runs out first and the others
    fill the remaining places.
    """
    pairs = []
    for task in tasks:
        examples = _round_robin(task.train, n_per_task) if balance else list(task.train[:n_per_task])
        pairs += [(prompt_text(tokenizer, ex.text, task.labels), ex.label) for ex in examples]
    return pairs


def _round_robin(examples: Sequence, n: int) -> list:
    groups: dict[str, list] = {}
    for ex in examples:
        groups.setdefault(ex.label, []).append(ex)
    return [ex for row in zip_longest(*groups.values()) for ex in row if ex is not None][:n]


def arithmetic_control(tokenizer, n: int, seed: int = 0) -> list[tuple[str, str]]:
    """The non-affective control supervision (:func:`affectlocus.tuning.arithmetic_control`; the study
    used GSM8K) in the same chat-prompt format as the affective data."""
    return [(prompt_text(tokenizer, text, ["a number"]), answer) for text, answer in _arithmetic(n, seed)]
