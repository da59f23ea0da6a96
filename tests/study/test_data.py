"""The study's training data: label-balanced affective examples in the evaluator's exact layout,
and the arithmetic control."""
from __future__ import annotations

from collections import Counter

from affectlocus.tasks.datasets import Example, Task
from affectlocus.tasks.prompts import PromptStyle, build_label_prompts, char_tokenizer
from affectlocus.study.data import affective_dataset, affective_examples, control_dataset
from affectlocus.tuning.data import IGNORE


def _task(labels, texts=None):
    texts = texts or [f"text {i}" for i in range(len(labels))]
    train = [Example(t, lab, str(i)) for i, (t, lab) in enumerate(zip(texts, labels))]
    return Task("t", ("negative", "neutral", "positive"), "en", train, train[:3], "synthetic", "test", 0)


def test_balanced_examples_take_labels_round_robin_in_split_order():
    task = _task(["negative"] * 10 + ["neutral"] * 4 + ["positive"] * 2)
    picked = [ex for _, ex in affective_examples([task], 9)]
    assert Counter(e.label for e in picked) == {"negative": 4, "neutral": 3, "positive": 2}  # rare label runs out
    assert [e.text for e in picked[:3]] == ["text 0", "text 10", "text 14"]
    assert [e.label for _, e in affective_examples([task], 9, balance=False)] == ["negative"] * 9
    assert len(affective_examples([task], 100)) == 16  # never more than the split holds


def test_long_texts_are_skipped_when_asked():
    task = _task(["negative", "positive"] * 3, ["short", "x" * 50] * 3)
    assert {e.text for _, e in affective_examples([task], 10, max_chars=10)} == {"short"}


def test_training_tokens_are_exactly_what_the_evaluator_scores():
    tok = char_tokenizer()
    task = _task(["negative", "neutral", "positive"])
    style = PromptStyle(shots_per_label=0)
    data = affective_dataset(tok, [task], 3, style=style)
    prompts = build_label_prompts(tok, task.labels, [e.text for e in task.train], style=style)
    for i, ex in enumerate(task.train):
        answer = prompts.label_ids[task.labels.index(ex.label)]
        assert data.input_ids[i] == prompts.prefix_ids + prompts.query_ids[i] + answer
        assert data.labels[i] == [IGNORE] * (len(data.input_ids[i]) - len(answer)) + answer


def test_control_answers_are_computed_numbers_in_the_chat_layout():
    tok = char_tokenizer()
    data = control_dataset(tok, 30, seed=3)
    assert len(data) == 30 and data.input_ids == control_dataset(tok, 30, seed=3).input_ids
    answers = [tok.decode([t for t in lab if t != IGNORE], skip_special_tokens=True) for lab in data.labels]
    assert all(a.isdigit() for a in answers)
    assert "<|im_start|>assistant" in tok.decode(data.input_ids[0])
