"""Prompt/answer encoding (loss on answer tokens only, chat template when present), batching, order."""
from __future__ import annotations

import json
import re

import pytest

import affectlocus as al
from affectlocus.tuning import arithmetic_control, build_dataset, encode_pair, load_pairs, save_pairs
from affectlocus.tuning.data import IGNORE, DataOrder


def _answer(tok, labels):
    return tok.decode([t for t in labels if t != IGNORE])


def test_chat_template_masks_the_prompt(tok):
    ids, labels = encode_pair(tok, "I loved it", "positive")
    assert tok.decode(ids) == "<|im_start|> user i loved it <|im_end|> <|im_start|> assistant positive <|im_end|>"
    assert _answer(tok, labels) == "positive <|im_end|>"
    assert labels[:len(ids) - 2] == [IGNORE] * (len(ids) - 2)


def test_without_template_answer_gets_eos(tok, plain_tok):
    for t in (plain_tok, tok):
        ids, labels = encode_pair(t, "I loved it", "positive", template=False)
        assert t.decode(ids) == "i loved it positive </s>"
        assert _answer(t, labels) == "positive </s>"


def test_embedded_tokenizer_uses_its_chat_template():
    tok = al.load_model("smollm2-135m")[1]
    ids, labels = encode_pair(tok, "Is this review positive? I loved it.", "positive")
    text = tok.decode(ids)
    assert text.startswith("<|im_start|>system") and "<|im_start|>user\nIs this review" in text
    assert _answer(tok, labels) == "positive<|im_end|>\n"


def test_truncation_keeps_the_answer(tok):
    ids, labels = encode_pair(tok, "the film was " * 20, "positive", max_length=8)
    assert len(ids) == 8 and _answer(tok, labels) == "positive <|im_end|>"
    with pytest.raises(al.DataError, match="empty answer"):
        encode_pair(tok, "x", "")


def test_dataset_collate_and_order(tok, pairs):
    data = build_dataset(pairs, tok)
    batch = data.collate([0, 3])
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    short = int(batch["attention_mask"][0].sum())
    assert (batch["input_ids"][0, short:] == tok.pad_token_id).all()
    assert (batch["labels"][0, short:] == IGNORE).all()
    assert data.answer_tokens(0) == 2
    order = DataOrder(len(data), seed=3)
    first = order.take(0, 2 * len(data))
    assert sorted(first[:len(data)]) == list(range(len(data))) == sorted(first[len(data):])
    assert first == DataOrder(len(data), seed=3).take(0, 2 * len(data)) != DataOrder(len(data), 4).take(0, 16)
    assert data.fingerprint() == build_dataset(pairs, tok).fingerprint() != build_dataset(pairs[:-1], tok).fingerprint()


def test_jsonl_roundtrip_and_errors(tmp_path, pairs, tok):
    path = save_pairs(pairs, tmp_path / "train.jsonl")
    assert load_pairs(path) == pairs
    (tmp_path / "bad.jsonl").write_text(json.dumps({"prompt": "x"}) + "\n")
    with pytest.raises(al.DataError, match=r"bad.jsonl:1: .*'answer'"):
        load_pairs(tmp_path / "bad.jsonl")
    with pytest.raises(al.DataError, match="not found"):
        load_pairs(tmp_path / "missing.jsonl")
    with pytest.raises(al.DataError, match="tokenizer"):
        build_dataset(pairs, None)
    with pytest.raises(al.DataError, match="pairs"):
        build_dataset([("only prompt",)], tok)


def test_arithmetic_control_answers_are_right():
    pairs = arithmetic_control(60, seed=1)
    assert pairs == arithmetic_control(60, seed=1) != arithmetic_control(60, seed=2)
    for prompt, answer in pairs:
        a, b = map(int, re.findall(r"\d+", prompt)[:2])
        if "more" in prompt:
            assert int(answer) == a + b
        elif "away" in prompt:
            assert int(answer) == a - b
        else:
            assert int(answer) == a * b


def test_length_grouped_order_is_a_seeded_permutation_with_similar_lengths_per_batch():
    import random as _random

    from affectlocus.tuning.data import DataOrder
    rng = _random.Random(0)
    lengths = [rng.randint(10, 100) for _ in range(96)]
    order = DataOrder(96, seed=3, lengths=lengths, batch=8)
    epoch = order.take(0, 96)
    assert sorted(epoch) == list(range(96))  # every example once per epoch
    assert order.take(0, 96) == DataOrder(96, seed=3, lengths=lengths, batch=8).take(0, 96)
    assert order.take(96, 96) != epoch  # a new shuffle each epoch
    spread = lambda ids: max(lengths[i] for i in ids) - min(lengths[i] for i in ids)  # noqa: E731
    grouped = sum(spread(epoch[s:s + 8]) for s in range(0, 96, 8))
    plain = DataOrder(96, seed=3).take(0, 96)
    assert grouped < 0.5 * sum(spread(plain[s:s + 8]) for s in range(0, 96, 8))
