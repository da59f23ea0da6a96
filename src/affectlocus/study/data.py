"""Training data for the study, in exactly the token layout the evaluator scores.

Affective pairs are :func:`affectlocus.tasks.prompts.label_training_pairs` of each task's *train*
split (the label prompt's prefix + query, then the true label's continuation), so a fine-tune is
trained on the very format its score reads. The arithmetic control uses the same chat layout with
its own instruction.
"""
from __future__ import annotations

from itertools import zip_longest
from typing import Sequence

from ..tasks.prompts import PromptStyle, answer_prompt_pairs, label_training_pairs
from ..tuning.data import SFTDataset, arithmetic_control as _arithmetic

CONTROL_INSTRUCTION = "Solve the word problem. Answer with exactly one number."


def affective_examples(tasks: Sequence, n_per_task: int, balance: bool = True,
                       max_chars: int | None = None) -> list[tuple[object, object]]:
    """``(task, example)`` from each task's train split: ``n_per_task`` per task, texts of at most
    ``max_chars`` characters, taken round-robin over the labels (in split order) when ``balance``.

    Balancing matters because the scores are balanced accuracies and some splits are skewed (the
    tweets' train split is ~58% negative, ~10% positive); a rare label runs out first and the others
    fill the remaining places.
    """
    out = []
    for task in tasks:
        pool = [e for e in task.train if max_chars is None or len(e.text) <= max_chars]
        examples = _round_robin(pool, n_per_task) if balance else pool[:n_per_task]
        out += [(task, ex) for ex in examples]
    return out


def affective_dataset(tokenizer, tasks: Sequence, n_per_task: int, *, balance: bool = True,
                      max_chars: int | None = None, style: PromptStyle | None = None,
                      max_length: int | None = None) -> SFTDataset:
    """The affective fine-tuning set (see :func:`affective_examples`) as token ids."""
    pairs = []
    for task in tasks:
        examples = [ex for t, ex in affective_examples([task], n_per_task, balance, max_chars)]
        pairs += label_training_pairs(tokenizer, task, examples, style=style)
    return SFTDataset.from_ids(pairs, _pad(tokenizer), max_length)


def control_dataset(tokenizer, n: int, seed: int = 0, max_length: int | None = None) -> SFTDataset:
    """The non-affective control supervision (arithmetic word problems; the study used GSM8K)."""
    return SFTDataset.from_ids(answer_prompt_pairs(tokenizer, CONTROL_INSTRUCTION, _arithmetic(n, seed)),
                               _pad(tokenizer), max_length)


def _pad(tokenizer) -> int:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return int(pad or 0)


def _round_robin(examples: Sequence, n: int) -> list:
    groups: dict[str, list] = {}
    for ex in examples:
        groups.setdefault(ex.label, []).append(ex)
    return [ex for row in zip_longest(*groups.values()) for ex in row if ex is not None][:n]
