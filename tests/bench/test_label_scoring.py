"""Label scoring: batched predictions equal a slow one-at-a-time reference; the run CLI caches."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import affectlocus as al
from affectlocus.bench import load_task
from affectlocus.bench.label_scoring import Evaluator, balanced_accuracy, label_token_ids


@pytest.fixture(scope="module")
def tok():
    return al.load_model("smollm2-135m")[1]


@pytest.fixture(scope="module")
def small(tok):
    from affectlocus.models import tiny_model
    return tiny_model("llama", seed=3, vocab_size=len(tok))


def test_batched_equals_slow_reference(small, tok):
    task = load_task("tweets-sentiment", max_test=24)
    ev = Evaluator(small, tok, [task], n_eval=24, batch_size=7, bootstrap=0)
    fast = ev.predict(ev.tasks[0])
    ids = label_token_ids(tok, task.labels)
    slow = []
    with torch.no_grad():
        for prompt in ev.tasks[0].prompts:
            enc = tok(prompt, return_tensors="pt", add_special_tokens=False)
            slow.append(int(small(**enc).logits[0, -1, ids].argmax()))
    assert fast.tolist() == slow
    assert tok.padding_side == "right"  # restored


def test_balanced_accuracy_and_bootstrap_are_deterministic(small, tok):
    assert balanced_accuracy(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), 2) == pytest.approx((1 + 2 / 3) / 2)
    task = load_task("rt-polarity", max_test=16)
    a = Evaluator(small, tok, [task], n_eval=16, bootstrap=50).score("x")
    b = Evaluator(small, tok, [task], n_eval=16, bootstrap=50).score("x")
    assert a == b and a["ci"][0] <= a["mean"] <= a["ci"][1]
