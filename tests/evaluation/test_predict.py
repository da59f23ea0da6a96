"""Label scoring equals a slow reference (prefix KV reuse, padding, multi-token labels); generation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from affectlocus.tasks.datasets import Example
from affectlocus.evaluation.predict import LabelScorer, generate_answers, reference_logprobs
from affectlocus.tasks.prompts import (PromptStyle, build_label_prompts, char_tokenizer, generation_prompts,
                                       select_shots, turn_end)
from affectlocus.models import tiny_model

LABELS = ("negative", "neutral", "positive")
TRAIN = [Example(t, lab, f"tr{i}") for i, (t, lab) in enumerate([
    ("awful", "negative"), ("so bad", "negative"), ("it is a film", "neutral"), ("ok", "neutral"),
    ("loved it", "positive"), ("great fun", "positive"), ("terrible mess", "negative"), ("nice", "positive")])]
TEXTS = ["what a mess", "great", "the movie was long and had actors in it", "boring", "joy!", "meh", "fine"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tok():
    return char_tokenizer()


def _prompts(tok, style=None):
    return build_label_prompts(tok, LABELS, TEXTS, TRAIN, seed=0, style=style or PromptStyle(shots_per_label=1))


@pytest.mark.parametrize("arch", ["llama", "gemma2", "phi3"])
def test_label_scoring_equals_slow_reference(tok, arch):
    model = tiny_model(arch, seed=3)
    p = _prompts(tok)
    assert all(len(ids) > 1 for ids in p.label_ids)  # multi-token labels
    ref = reference_logprobs(model, p.prefix_ids, p.query_ids, p.label_ids)
    for reuse in (True, False):
        scorer = LabelScorer(model, p.prefix_ids, p.label_ids, reuse_prefix=reuse)
        fast = scorer.score(p.query_ids, batch_size=3)  # ragged batches: padding inside every batch
        np.testing.assert_allclose(fast.logprobs, ref, atol=1e-4, rtol=0)
        assert scorer.forward_calls == 3 + (1 if reuse else 0)  # the prefix is computed once


def test_plain_prompt_and_sliding_window_fallback(tok):
    plain = char_tokenizer(chat=False)
    p = _prompts(plain)
    assert p.prefix_text.startswith("Classify the sentiment") and p.query_texts[0].endswith("Answer:")
    model = tiny_model("llama", seed=4)
    ref = reference_logprobs(model, p.prefix_ids, p.query_ids, p.label_ids)
    np.testing.assert_allclose(LabelScorer(model, p.prefix_ids, p.label_ids).score(p.query_ids, 4).logprobs,
                               ref, atol=1e-4, rtol=0)
    # a sliding window shorter than prefix + query: the exact plain path is used instead
    small = tiny_model("gemma3", seed=4, sliding_window=32)
    p = _prompts(tok)
    ref = reference_logprobs(small, p.prefix_ids, p.query_ids[:3], p.label_ids)
    np.testing.assert_allclose(LabelScorer(small, p.prefix_ids, p.label_ids).score(p.query_ids[:3]).logprobs,
                               ref, atol=1e-4, rtol=0)


def test_logits_only_at_answer_positions(tok):
    model = tiny_model("llama", seed=5)
    p = _prompts(tok)
    rows = []
    handle = model.lm_head.register_forward_hook(lambda m, i, o: rows.append(tuple(i[0].shape[:2])))
    try:
        LabelScorer(model, p.prefix_ids, p.label_ids).score(p.query_ids[:4], batch_size=4)
    finally:
        handle.remove()
    needed = 1 + sum(len(ids) - 1 for ids in p.label_ids)  # last query token + all but each label's last
    assert rows == [(1, 1), (4, needed)]  # the prefix forward keeps one position only


def test_label_scores_views(tok):
    model = tiny_model("llama", seed=6)
    p = _prompts(tok)
    s = LabelScorer(model, p.prefix_ids, p.label_ids).score(p.query_ids)
    np.testing.assert_allclose(s.probs.sum(1), 1.0)
    np.testing.assert_allclose(s.normalised, s.logprobs / np.array([len(x) for x in p.label_ids]))
    assert s.pred.tolist() == s.logprobs.argmax(1).tolist()


def test_prompts_are_fixed_seeded_and_shared(tok):
    style = PromptStyle(shots_per_label=2)
    a = select_shots(TRAIN, LABELS, 0, style)
    assert [e.id for e in a] == [e.id for e in select_shots(TRAIN, LABELS, 0, style)]
    assert {e.label for e in a} == set(LABELS) and len(a) == 6
    assert [e.id for e in a] != [e.id for e in select_shots(TRAIN, LABELS, 1, style)]
    p = build_label_prompts(tok, LABELS, TEXTS, TRAIN, seed=0, style=style)
    assert all(f"Text: {t}" in q for t, q in zip(TEXTS, p.query_texts))
    assert all(e.text in p.prefix_text for e in a)
    assert p.label_texts == [f"{lab}{turn_end(tok)}" for lab in LABELS] and turn_end(tok) == "<|im_end|>"
    assert build_label_prompts(tok, LABELS, TEXTS, TRAIN, seed=0,
                               style=PromptStyle(terminate=False, shots_per_label=0)).label_texts == list(LABELS)


def test_generation_is_greedy_deterministic_and_batch_independent(tok):
    model = tiny_model("llama", seed=7)
    prompts = generation_prompts(tok, ["great fun", "a very long and boring film indeed"], "sentiment")
    a = generate_answers(model, tok, prompts, max_new_tokens=6)
    assert a == generate_answers(model, tok, prompts, max_new_tokens=6)
    assert a == [generate_answers(model, tok, [q], max_new_tokens=6)[0] for q in prompts]
    assert tok.padding_side == "right"


@pytest.mark.slow
def test_embedded_model_label_scoring_equals_reference():
    import affectlocus as al
    model, tk = al.load_model("smollm2-135m")
    p = build_label_prompts(tk, LABELS, TEXTS[:2], TRAIN, seed=0, style=PromptStyle(shots_per_label=1))
    ref = reference_logprobs(model, p.prefix_ids, p.query_ids, p.label_ids)
    with torch.no_grad():
        fast = LabelScorer(model, p.prefix_ids, p.label_ids).score(p.query_ids, 2).logprobs
    np.testing.assert_allclose(fast, ref, atol=1e-4, rtol=0)
