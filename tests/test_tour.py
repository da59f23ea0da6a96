"""The tour scores with the evaluator's prompt and scorer, rebuilt under every intervention."""
from __future__ import annotations

import numpy as np
import pytest

import affectlocus as al
from affectlocus.tasks.datasets import Example, Task
from affectlocus.tasks.prompts import PromptStyle, char_tokenizer
from affectlocus.tour import LABELS, PROMPTS, label_probs

TEXTS = [t for t, _ in PROMPTS]


pytestmark = pytest.mark.usefixtures("one_thread")


def test_label_probs_equal_the_evaluators_zero_shot_probs(tiny):
    model, tok = tiny("llama", seed=3), char_tokenizer()
    test = [Example(t, lab, f"t{i}") for i, (t, lab) in enumerate(PROMPTS)]
    task = Task("tour-toy", LABELS, "en", test[:2], test, "toy", "tests", 0)
    probs = label_probs(model, tok, TEXTS)
    assert probs.shape == (len(TEXTS), len(LABELS))
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-9)
    scores = al.evaluate(model, tok, [task], style=PromptStyle(shots_per_label=0), n_boot=0, progress=False)
    ref = np.array([r["probs"] for r in scores.records["tour-toy"]])
    np.testing.assert_allclose(probs, ref, atol=1e-6, rtol=0)


def test_label_probs_follow_an_intervention_and_come_back(tiny):
    model, tok = tiny("llama", seed=3), char_tokenizer()
    plain = label_probs(model, tok, TEXTS)
    with al.intervene(model, al.zero(modules="o", layers="0:")):
        zeroed = label_probs(model, tok, TEXTS)
    assert not np.allclose(plain, zeroed)
    assert np.array_equal(plain, label_probs(model, tok, TEXTS))


@pytest.mark.slow
def test_tour_on_the_embedded_model(capsys):
    from affectlocus.tour import run_tour
    out = run_tour()
    assert out["restored"]
    assert set(out["probs"]) == set(out["accuracy"]) == {"plain", "gate zeroed", "o zeroed", "plain again"}
    assert all(np.array(v).shape == (len(PROMPTS), 2) for v in out["probs"].values())
    assert "identical probabilities: True" in capsys.readouterr().out
