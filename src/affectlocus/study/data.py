"""Training data for the study: affective (prompt, label) pairs and the arithmetic control."""
from __future__ import annotations

import random
from typing import Sequence

from ..bench.label_scoring import prompt_text

_NAMES = ("Ana", "Ben", "Chen", "Dara", "Eli", "Fatima", "Goran", "Hana", "Ivo", "Jun")
_THINGS = ("apples", "books", "coins", "marbles", "pencils", "stamps", "tickets", "shells")


def affective_pairs(tokenizer, tasks: Sequence, n_per_task: int) -> list[tuple[str, str]]:
    """(chat prompt, label word) pairs from each task's *train* split (first ``n_per_task``)."""
    pairs = []
    for task in tasks:
        pairs += [(prompt_text(tokenizer, ex.text, task.labels), ex.label) for ex in task.train[:n_per_task]]
    return pairs


def arithmetic_control(tokenizer, n: int, seed: int = 0) -> list[tuple[str, str]]:
    """Generated arithmetic word problems with computed answers — the non-affective control
    supervision (the study used GSM8K). Same prompt format and answer length as the affective data."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        name, thing = rng.choice(_NAMES), rng.choice(_THINGS)
        a, b = rng.randint(2, 60), rng.randint(2, 40)
        if rng.random() < 0.5:
            text, answer = f"{name} has {a} {thing} and gets {b} more. How many {thing} now?", a + b
        else:
            a = a + b
            text, answer = f"{name} has {a} {thing} and gives away {b}. How many {thing} are left?", a - b
        pairs.append((prompt_text(tokenizer, text, ["a number"]), str(answer)))
    return pairs
