"""Prompts for the evaluator: few-shot label prompts (shared prefix + per-example query) and
open-ended prompts for generation.

Label prompts are split into a **prefix** shared by every example of a task (instruction + few-shot
turns) and a **query** per example, tokenized separately and concatenated as ids; the scorer feeds
exactly ``prefix_ids + query_ids + label_ids`` (so a KV cache of the prefix can be reused exactly).
With a chat template the shots are earlier user/assistant turns and each label continuation is the
label plus the template's end-of-turn marker (``terminate=True``), so "sad" and "sadness" compete
fairly; without one a plain ``Text: …\\nAnswer: label`` layout is used. Shots come from the task's
train split: per label, sorted by id, shuffled by ``random.Random(seed)``, taken round-robin in label
order, then shuffled together — fixed for a given (task, seed, style).
"""
from __future__ import annotations

import hashlib
import os
import random
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from ..errors import DataError

#: Bump when any prompt text or layout changes: it is part of every results-cache key.
PROMPT_VERSION = "bench-prompts-1"
SENTIMENT_WORDS = frozenset({"negative", "neutral", "positive"})
_MARK = "\x00ZQXV\x00"


@dataclass(frozen=True)
class PromptStyle:
    """How label prompts are built (every field is part of the cache key)."""

    shots_per_label: int = 2
    max_shots: int = 12
    max_shot_chars: int = 200
    terminate: bool = True
    instruction: str | None = None  # overrides the built-in instruction; "{labels}" → "a, b, c"
    system: str | None = None  # overrides the built-in system line of generation prompts

    def key(self) -> str:
        return f"{PROMPT_VERSION}|" + "|".join(f"{k}={v}" for k, v in sorted(asdict(self).items()))


@dataclass
class LabelPrompts:
    """Token ids for label scoring: ``prefix_ids + query_ids[i] + label_ids[k]``."""

    prefix_ids: list[int]
    query_ids: list[list[int]]
    label_ids: list[list[int]]
    prefix_text: str
    query_texts: list[str]
    label_texts: list[str]
    shot_ids: list[str] = field(default_factory=list)


def label_kind(labels: Sequence[str]) -> str:
    """``"sentiment"`` when every label is negative/neutral/positive, else ``"emotion"``."""
    return "sentiment" if labels and set(labels) <= SENTIMENT_WORDS else "emotion"


def label_instruction(labels: Sequence[str]) -> str:
    what = "sentiment" if label_kind(labels) == "sentiment" else "emotion"
    return (f"Classify the {what} expressed in the text. "
            f"Answer with exactly one word from: {', '.join(labels)}.")


def generation_instruction(kind: str) -> str:
    if kind == "sentiment":
        return ("Is the sentiment of this text positive, negative or neutral, and which emotions does "
                "the author express? Answer in one short sentence.")
    return "Which emotions does the speaker express? Answer in one short sentence naming the emotions."


GENERATION_SYSTEM = "You are an expert in emotion analysis."


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def tokenizer_fingerprint(tokenizer) -> str:
    """A short hash of what shapes prompts: class, vocabulary size, special tokens, chat template."""
    parts = [type(tokenizer).__name__, str(len(tokenizer)), str(getattr(tokenizer, "chat_template", "")),
             str(sorted(getattr(tokenizer, "special_tokens_map", {}).items())),
             repr(tokenizer("Text: ok, happy 开心", add_special_tokens=True).input_ids)]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


def select_shots(train: Sequence, labels: Sequence[str], seed: int, style: PromptStyle) -> list:
    """Fixed, seeded few-shot examples from ``train`` (see module docstring)."""
    if style.shots_per_label <= 0 or not train:
        return []
    rng = random.Random(seed)
    pools = []
    for lab in labels:
        pool = sorted((e for e in train if e.label == lab and len(e.text) <= style.max_shot_chars),
                      key=lambda e: e.id)
        rng.shuffle(pool)
        pools.append(pool[: style.shots_per_label])
    shots = [pool[i] for i in range(style.shots_per_label) for pool in pools if i < len(pool)]
    shots = shots[: style.max_shots]
    rng.shuffle(shots)
    return shots


def _render(tokenizer, messages: list[dict], generation: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)


def _chat(tokenizer, system: str, turns: list[dict], generation: bool) -> str:
    """Render with a system turn, or fold it into the first user turn if the template refuses one."""
    try:
        return _render(tokenizer, [{"role": "system", "content": system}, *turns], generation)
    except Exception:  # templates raise arbitrary errors ("System role not supported")
        if not turns:
            return ""
        first = {**turns[0], "content": f"{system}\n\n{turns[0]['content']}"}
        return _render(tokenizer, [first, *turns[1:]], generation)


def turn_end(tokenizer) -> str:
    """The text a chat template puts after an assistant message (e.g. ``<|im_end|>``), stripped."""
    try:
        text = _render(tokenizer, [{"role": "user", "content": "x"},
                                   {"role": "assistant", "content": _MARK}], False)
    except Exception:
        return tokenizer.eos_token or ""
    tail = text.split(_MARK, 1)[1] if _MARK in text else ""
    return tail.rstrip() or (tokenizer.eos_token or "")


def encode(tokenizer, text: str, bos: bool = False) -> list[int]:
    """Token ids of ``text`` without automatic special tokens (plus BOS if asked and the tokenizer adds one)."""
    ids = list(tokenizer(text, add_special_tokens=False).input_ids)
    if bos and text_needs_bos(tokenizer):
        ids = [tokenizer.bos_token_id] + ids
    return ids


def text_needs_bos(tokenizer) -> bool:
    """Whether the tokenizer itself prepends BOS (then plain-text prompts get one too)."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return False
    ids = tokenizer("a", add_special_tokens=True).input_ids
    return bool(ids) and ids[0] == bos


def _query_turn(text: str) -> str:
    return f"Text: {text}"


def build_label_prompts(tokenizer, labels: Sequence[str], texts: Sequence[str], train: Sequence = (), *,
                        seed: int = 0, style: PromptStyle | None = None) -> LabelPrompts:
    """Prefix / query / label token ids for scoring ``labels`` after each of ``texts``."""
    style = style or PromptStyle()
    if not labels:
        raise DataError("label scoring needs at least one label")
    instruction = (style.instruction.replace("{labels}", ", ".join(labels)) if style.instruction
                   else label_instruction(labels))
    shots = select_shots(train, labels, seed, style)
    if has_chat_template(tokenizer):
        turns: list[dict[str, Any]] = []
        for s in shots:
            turns += [{"role": "user", "content": _query_turn(s.text)}, {"role": "assistant", "content": s.label}]
        prefix = _chat(tokenizer, instruction, turns, False) if turns else _system_only(tokenizer, instruction)
        fulls = [_chat(tokenizer, instruction, turns + [{"role": "user", "content": _query_turn(t)}], True)
                 for t in texts]
        if not all(f.startswith(prefix) for f in fulls):  # exotic template: share what is common
            prefix = os.path.commonprefix([prefix, *fulls]) if fulls else ""
        queries = [f[len(prefix):] for f in fulls]
        end = turn_end(tokenizer) if style.terminate else ""
        label_texts = [f"{lab}{end}" for lab in labels]
        prefix_ids = encode(tokenizer, prefix)
    else:
        prefix = f"{instruction}\n\n" + "".join(f"{_query_turn(s.text)}\nAnswer: {s.label}\n\n" for s in shots)
        queries = [f"{_query_turn(t)}\nAnswer:" for t in texts]
        label_texts = [f" {lab}" + ("\n" if style.terminate else "") for lab in labels]
        prefix_ids = encode(tokenizer, prefix, bos=True)
    query_ids = [encode(tokenizer, q) for q in queries]
    label_ids = [encode(tokenizer, lab) for lab in label_texts]
    for q, t in zip(query_ids, texts):
        if not q:
            raise DataError(f"empty query for text {t[:40]!r}: the prompt layout leaves nothing to score from")
    if any(not ids for ids in label_ids) or len({tuple(x) for x in label_ids}) != len(label_ids):
        raise DataError(f"labels {list(labels)} do not tokenize to distinct non-empty continuations")
    return LabelPrompts(prefix_ids, query_ids, label_ids, prefix, queries, label_texts, [s.id for s in shots])


def label_training_pairs(tokenizer, task, examples: Sequence, *, seed: int = 0,
                         style: PromptStyle | None = None) -> list[tuple[list[int], list[int]]]:
    """``(prompt ids, answer ids)`` per example: exactly the tokens the label scorer scores — the
    shared prefix and the example's query, then its true label's continuation (end-of-turn included).
    Training on these makes the fine-tune and the evaluation use one identical prompt format."""
    prompts = build_label_prompts(tokenizer, task.labels, [e.text for e in examples], task.train, seed=seed,
                                  style=style)
    index = {lab: k for k, lab in enumerate(task.labels)}
    return [(prompts.prefix_ids + q, prompts.label_ids[index[e.label]]) for e, q in zip(examples, prompts.query_ids)]


def answer_prompt_pairs(tokenizer, system: str, items: Sequence[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
    """``(prompt ids, answer ids)`` for free (question, answer) items in the label prompts' layout:
    ``system`` as the instruction, the question as the user turn, the answer ended like a label."""
    end = turn_end(tokenizer) if has_chat_template(tokenizer) else "\n"
    out = []
    for question, answer in items:
        if has_chat_template(tokenizer):
            prompt = encode(tokenizer, _chat(tokenizer, system, [{"role": "user", "content": question}], True))
            out.append((prompt, encode(tokenizer, f"{answer}{end}")))
        else:
            prompt = encode(tokenizer, f"{system}\n\n{_query_turn(question)}\nAnswer:", bos=True)
            out.append((prompt, encode(tokenizer, f" {answer}{end}")))
    return out


def _system_only(tokenizer, instruction: str) -> str:
    """The rendered system turn alone (empty when the template refuses a lone system turn)."""
    try:
        return _render(tokenizer, [{"role": "system", "content": instruction}], False)
    except Exception:
        return ""


def generation_prompts(tokenizer, texts: Sequence[str], kind: str, *,
                       style: PromptStyle | None = None) -> list[str]:
    """Open-ended prompts (zero-shot) asking for the emotions / sentiment of each text."""
    style = style or PromptStyle()
    system = style.system or GENERATION_SYSTEM
    ask = generation_instruction(kind)
    if has_chat_template(tokenizer):
        return [_chat(tokenizer, system, [{"role": "user", "content": f"{_query_turn(t)}\n\n{ask}"}], True)
                for t in texts]
    return [f"{system}\n\n{_query_turn(t)}\n{ask}\nAnswer:" for t in texts]


CHAR_CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                      "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def char_tokenizer(chat: bool = True):
    """A tiny offline character-level tokenizer (ASCII + a few specials, < 128 ids) for tiny random models.

    Every label is several tokens long, which exercises multi-token scoring. Non-ASCII characters
    map to ``<unk>``.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    special = ["<pad>", "<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    chars = ["\n"] + [chr(c) for c in range(32, 127)]
    vocab = {tok: i for i, tok in enumerate(special + chars)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    core.add_special_tokens(special)
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", unk_token="<unk>",
                                  bos_token="<s>", eos_token="</s>")
    if chat:
        tok.chat_template = CHAR_CHAT_TEMPLATE
    return tok


__all__ = ["CHAR_CHAT_TEMPLATE", "GENERATION_SYSTEM", "LabelPrompts", "PROMPT_VERSION", "PromptStyle",
           "answer_prompt_pairs", "build_label_prompts", "char_tokenizer", "encode", "generation_prompts",
           "has_chat_template", "label_instruction", "label_kind", "label_training_pairs", "select_shots",
           "tokenizer_fingerprint", "turn_end"]
