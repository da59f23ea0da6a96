"""The study's training data: label-balanced affective pairs and the arithmetic control."""
from __future__ import annotations

from collections import Counter

from affectlocus.bench.datasets import Example, Task
from affectlocus.bench.prompts import char_tokenizer
from affectlocus.study.data import affective_pairs, arithmetic_control


def _task(labels):
    train = [Example(f"text {i}", lab, str(i)) for i, lab in enumerate(labels)]
    return Task("t", ("negative", "neutral", "positive"), "en", train, train[:3], "synthetic", "test", 0)


def test_balanced_pairs_take_labels_round_robin_in_split_order():
    task = _task(["negative"] * 10 + ["neutral"] * 4 + ["positive"] * 2)
    pairs = affective_pairs(char_tokenizer(), [task], 9)
    assert Counter(a for _, a in pairs) == {"negative": 4, "neutral": 3, "positive": 2}  # rare label runs out
    assert "text 0" in pairs[0][0] and "text 10" in pairs[1][0] and "text 14" in pairs[2][0]
    assert [a for _, a in affective_pairs(char_tokenizer(), [task], 9, balance=False)] == ["negative"] * 9
    assert len(affective_pairs(char_tokenizer(), [task], 100)) == 16  # never more than the split holds


def test_arithmetic_control_answers_are_computed():
    pairs = arithmetic_control(char_tokenizer(), 30, seed=3)
    assert len(pairs) == 30 and pairs == arithmetic_control(char_tokenizer(), 30, seed=3)
    assert all(answer.isdigit() for _, answer in pairs)
