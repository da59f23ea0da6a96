"""Supervised fine-tuning data: (prompt, answer) pairs → token ids with the loss on answer tokens only.

With a chat template (when the tokenizer has one, unless ``template=False``) the prompt becomes a user
turn rendered with the generation prompt, and the answer is what the template adds for the assistant
turn (so its end-of-turn tokens are learned too). Without one, the prompt is tokenized as is (with the
tokenizer's special tokens, e.g. BOS) and the answer follows after a space, ending in the EOS token.
Data order is a pure function of (seed, position), so a resumed run sees exactly the batches an
uninterrupted run would.
"""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import torch

from ..errors import DataError

IGNORE = -100


def load_pairs(path: str | Path) -> list[tuple[str, str]]:
    """(prompt, answer) pairs from a JSONL file of ``{"prompt": ..., "answer": ...}`` objects."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"training data not found: {path} (expected JSONL with 'prompt' and 'answer')")
    pairs = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise DataError(f"{path}:{i}: not valid JSON ({exc})") from exc
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str) \
                or not isinstance(row.get("answer"), str):
            raise DataError(f"{path}:{i}: each line needs string fields 'prompt' and 'answer', got "
                            f"{sorted(row) if isinstance(row, dict) else type(row).__name__}")
        pairs.append((row["prompt"], row["answer"]))
    if not pairs:
        raise DataError(f"{path} holds no (prompt, answer) pairs")
    return pairs


def save_pairs(pairs: Iterable[tuple[str, str]], path: str | Path) -> Path:
    """Write pairs as the JSONL format :func:`load_pairs` reads."""
    path = Path(path)
    path.write_text("".join(json.dumps({"prompt": p, "answer": a}, ensure_ascii=False) + "\n"
                            for p, a in pairs), encoding="utf-8")
    return path


def _chat_texts(tokenizer, prompt: str, answer: str) -> tuple[str, str] | None:
    """(rendered prompt with generation prompt, assistant continuation) or None if not a prefix."""
    user = [{"role": "user", "content": prompt}]
    p_text = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(user + [{"role": "assistant", "content": answer}], tokenize=False)
    if not full.startswith(p_text) or len(full) == len(p_text):
        return None
    return p_text, full[len(p_text):]


def encode_pair(tokenizer, prompt: str, answer: str, max_length: int = 256,
                template: bool | None = None) -> tuple[list[int], list[int]]:
    """``(input_ids, labels)`` for one pair; labels are -100 on prompt tokens.

    Over-long examples lose prompt tokens from the left (the answer is kept whole when it fits).
    """
    if not answer:
        raise DataError(f"empty answer for prompt {prompt[:60]!r}: there would be nothing to learn")
    use = bool(getattr(tokenizer, "chat_template", None)) if template is None else template
    texts = _chat_texts(tokenizer, prompt, answer) if use else None
    eos = tokenizer.eos_token_id
    if texts is not None:
        p_ids = tokenizer(texts[0], add_special_tokens=False).input_ids
        a_ids = tokenizer(texts[1], add_special_tokens=False).input_ids
    else:
        if use:  # the template does not render the answer as a continuation: plain prompt + answer
            prompt = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                   add_generation_prompt=True)
        p_ids = tokenizer(prompt, add_special_tokens=not use).input_ids
        if prompt and not prompt[-1].isspace() and not answer[0].isspace():
            answer = " " + answer  # "Answer:" + "positive" → "Answer: positive"
        a_ids = tokenizer(answer, add_special_tokens=False).input_ids + ([eos] if eos is not None else [])
    if max_length < 2:
        raise DataError(f"max_length must be ≥ 2, got {max_length}")
    a_ids = a_ids[:max_length - 1]
    p_ids = p_ids[-(max_length - len(a_ids)):] if p_ids else p_ids
    return p_ids + a_ids, [IGNORE] * len(p_ids) + a_ids


@dataclass
class SFTDataset(torch.utils.data.Dataset):
    """Encoded examples: ``self[i]`` → ``{"input_ids": [...], "labels": [...]}``."""

    input_ids: list[list[int]]
    labels: list[list[int]]
    pad_id: int

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return {"input_ids": self.input_ids[i], "labels": self.labels[i]}

    @classmethod
    def from_ids(cls, pairs: Sequence[tuple[Sequence[int], Sequence[int]]], pad_id: int,
                 max_length: int | None = None) -> "SFTDataset":
        """Examples from already tokenized ``(prompt ids, answer ids)`` pairs (loss on the answer);
        over-long examples lose prompt tokens from the left, as in :func:`encode_pair`."""
        ids, labels = [], []
        for p_ids, a_ids in pairs:
            p_ids, a_ids = list(p_ids), list(a_ids)
            if not a_ids:
                raise DataError("a training pair has an empty answer: there would be nothing to learn")
            if max_length is not None:
                a_ids = a_ids[:max_length - 1]
                p_ids = p_ids[-(max_length - len(a_ids)):] if p_ids else p_ids
            ids.append(p_ids + a_ids)
            labels.append([IGNORE] * len(p_ids) + a_ids)
        if not ids:
            raise DataError("no training pairs given")
        return cls(ids, labels, int(pad_id))

    def answer_tokens(self, i: int) -> int:
        """Tokens that carry loss in example ``i`` (after the causal shift)."""
        return sum(1 for t in self.labels[i][1:] if t != IGNORE)

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for ids, labels in zip(self.input_ids, self.labels):
            h.update(json.dumps([ids, labels]).encode())
        return h.hexdigest()[:16]

    def collate(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """A right-padded batch of the given examples."""
        return collate([self[i] for i in indices], self.pad_id)


def build_dataset(pairs: Sequence[tuple[str, str]], tokenizer, max_length: int = 256,
                  template: bool | None = None) -> SFTDataset:
    """Encode (prompt, answer) pairs for training (see :func:`encode_pair`)."""
    if tokenizer is None:
        raise DataError("training needs a tokenizer (the model folder ships none: pass tokenizer=)")
    pairs = list(pairs)
    if not pairs:
        raise DataError("no training pairs given")
    for i, pair in enumerate(pairs[:3] + pairs[-3:]):
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            raise DataError(f"training data must be (prompt, answer) string pairs; got {pair!r}")
    encoded = [encode_pair(tokenizer, p, a, max_length, template) for p, a in pairs]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return SFTDataset([e[0] for e in encoded], [e[1] for e in encoded], int(pad or 0))


def collate(examples: Sequence[dict[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad ``input_ids`` (with ``pad_id``) and ``labels`` (with -100); build the attention mask."""
    width = max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e["input_ids"])
        ids[i, :n] = torch.tensor(e["input_ids"])
        labels[i, :n] = torch.tensor(e["labels"])
        mask[i, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


class DataOrder:
    """Example index at each position of an endless stream of seeded per-epoch permutations.

    With ``lengths`` and ``batch``, each epoch's permutation is cut into windows of ``batch × window``
    examples and every window is sorted by length (longest first), so consecutive positions — the
    examples of one batch — have similar lengths and right-padding wastes little compute (the
    length-grouped sampling of HF's ``group_by_length``). Either way the order is a pure function of
    (seed, position), so a resumed run sees exactly the batches an uninterrupted run would.
    """

    def __init__(self, n: int, seed: int, lengths: Sequence[int] | None = None, batch: int = 1,
                 window: int = 8):
        self.n, self.seed = n, seed
        self.lengths, self.span = (list(lengths), max(1, batch * window)) if lengths is not None else (None, 0)
        self._perms: dict[int, list[int]] = {}

    def _epoch(self, epoch: int) -> list[int]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        perm = torch.randperm(self.n, generator=gen).tolist()
        if self.lengths is None:
            return perm
        return [i for s in range(0, self.n, self.span)
                for i in sorted(perm[s:s + self.span], key=lambda i: -self.lengths[i])]

    def __getitem__(self, position: int) -> int:
        epoch = position // self.n
        if epoch not in self._perms:
            self._perms = {epoch: self._epoch(epoch)}
        return self._perms[epoch][position % self.n]

    def take(self, start: int, count: int) -> list[int]:
        return [self[p] for p in range(start, start + count)]


_NAMES = ("Ana", "Ben", "Chen", "Dara", "Eli", "Fatima", "Goran", "Hana", "Ivo", "Jun")
_THINGS = ("apples", "books", "coins", "marbles", "pencils", "stamps", "tickets", "shells")


def arithmetic_control(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """``n`` arithmetic word problems with computed answers — the study's non-affective control
    supervision (plain prompts; the chat template is applied at encoding time)."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        name, thing = rng.choice(_NAMES), rng.choice(_THINGS)
        a, b = rng.randint(2, 60), rng.randint(2, 40)
        kind = rng.randrange(3)
        if kind == 0:
            text, answer = f"{name} has {a} {thing} and gets {b} more. How many {thing} now?", a + b
        elif kind == 1:
            text, answer = f"{name} has {a + b} {thing} and gives away {b}. How many {thing} are left?", a
        else:
            a, b = a % 12 + 2, b % 9 + 2
            text, answer = f"{name} buys {a} bags with {b} {thing} each. How many {thing} in total?", a * b
        pairs.append((f"{text} Answer with a number.", str(answer)))
    return pairs
