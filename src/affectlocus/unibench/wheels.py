"""The five emotion wheels of MER-UniBench and the reference word normalisation.

The benchmark's tables ship with the package (:data:`PACKAGED_WHEELS`, copied unmodified from the
AffectGPT repository under Apache-2.0; see ``emotion_wheel/NOTICE``): ``EmotionWheels.load()`` reads
them, ``EmotionWheels.load(folder)`` reads another folder of the same layout.

A folder holds ``format.csv`` (base word → its surface forms), ``synonym.xlsx`` (eight runs of
``word_runN`` wheel word / ``synonym_runN`` synonyms) and ``wheel1..5.xlsx`` (``level1`` /
``level2`` / ``level3`` columns, blank cells continuing the row above). A word is mapped onto
wheel K exactly as AffectGPT's ``func_backward_case3`` does:

1. ``word.lower().strip()``; surface form → every base word listing it in ``format.csv`` (a base
   word also maps to itself); a word not in ``format.csv`` maps to nothing;
2. each base word → its wheel words through the merged synonym table (a wheel word maps to
   itself, a synonym to every wheel word it was listed for, over all eight runs);
3. the wheel words, **sorted**, are tried in turn: the first that appears anywhere on wheel K
   gives its level-1 cluster (level-1, level-2 and level-3 words all map to their level-1).

Quirks kept on purpose (they are in the published numbers): ``neutral`` maps to no wheel;
``fear`` is listed as a surface form of ``fearless`` and so may resolve through it; a word that
maps to nothing on one wheel still maps on the others. Lists such as ``"[a, b]"`` are parsed by
:func:`parse_labels` (the reference ``string_to_list``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from ..errors import DataError

#: The MER-UniBench tables shipped with the package (the default of every ``wheels`` argument).
PACKAGED_WHEELS: Path = Path(__file__).resolve().with_name("emotion_wheel")
#: The wheel files, in scoring order.
WHEEL_NAMES: tuple[str, ...] = ("wheel1", "wheel2", "wheel3", "wheel4", "wheel5")
#: The synonym table's runs (columns ``word_runN`` / ``synonym_runN``).
SYNONYM_RUNS: tuple[str, ...] = tuple(f"run{i}" for i in range(1, 9))
_SPLIT = re.compile("['\",]")


def parse_labels(value: Any) -> list[str]:
    """``"[a, b]"`` / ``"a, b"`` / ``"'a','b'"`` → ``["a", "b"]``; a list is returned unchanged.

    Mirrors the reference ``string_to_list``: one leading ``[`` and one trailing ``]`` are removed,
    the rest is split on quotes and commas, items stripped, empty items dropped; ``""`` and NaN give
    ``[]``. A numpy array is converted with ``tolist()`` first.
    """
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, list):
        return value
    if isinstance(value, tuple):
        return list(value)
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return []
    text = str(value)
    if text == "":
        return []
    if text[0] == "[":
        text = text[1:]
    if text[-1:] == "]":
        text = text[:-1]
    return [item.strip() for item in _SPLIT.split(text) if item.strip() not in ("", ",")]


def _require(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DataError(f"emotion-wheel folder {path.parent}: missing {what} (expected {path})")
    return path


def _read_wheel(path: Path) -> dict[str, dict[str, list[str]]]:
    """``wheelK.xlsx`` → ``{level1: {level2: [level3, ...]}}`` (blank cells continue the row above)."""
    df = pd.read_excel(path)
    missing = [c for c in ("level1", "level2", "level3") if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; "
                        f"has {', '.join(map(str, df.columns))}")
    tree: dict[str, dict[str, list[str]]] = {}
    l1 = l2 = l3 = ""
    for r1, r2, r3 in zip(df["level1"], df["level2"], df["level3"]):
        l1 = l1 if pd.isna(r1) else str(r1)
        l2 = l2 if pd.isna(r2) else str(r2)
        l3 = l3 if pd.isna(r3) else str(r3)
        l1, l2, l3 = l1.lower().strip(), l2.lower().strip(), l3.lower().strip()
        tree.setdefault(l1, {}).setdefault(l2, []).append(l3)
    return tree


def _level1_map(tree: dict[str, dict[str, list[str]]]) -> dict[str, str]:
    """Every word of a wheel → its level-1 cluster (later rows win, as in the reference)."""
    out: dict[str, str] = {}
    for l1, level2s in tree.items():
        out[l1] = l1
        for l2, level3s in level2s.items():
            out[l2] = l1
            for l3 in level3s:
                out[l3] = l1
    return out


def _read_synonyms(path: Path, wheel_words: set[str]) -> dict[str, list[str]]:
    """Merged synonym table: word or synonym → sorted wheel words it stands for (all runs)."""
    df = pd.read_excel(path)
    merged: dict[str, set[str]] = {}
    for run in SYNONYM_RUNS:
        wcol, scol = f"word_{run}", f"synonym_{run}"
        if wcol not in df.columns or scol not in df.columns:
            raise DataError(f"{path}: missing column {wcol!r} or {scol!r}; "
                            f"has {', '.join(map(str, df.columns))}")
        for word, synonyms in zip(df[wcol], df[scol]):
            if not isinstance(word, str):
                raise DataError(f"{path}: column {wcol} holds a non-text cell {word!r}")
            raw = word.strip().lower()
            if raw not in wheel_words:
                raise DataError(f"{path}: {wcol} word {raw!r} is on none of the wheels")
            merged.setdefault(raw, set()).add(raw)
            for syn in parse_labels(synonyms):
                merged.setdefault(str(syn).strip().lower(), set()).add(raw)
    return {k: sorted(v) for k, v in merged.items()}


def _read_formats(path: Path) -> dict[str, list[str]]:
    """``format.csv`` → surface form → sorted base words (each base word also maps to itself)."""
    df = pd.read_csv(path)
    for col in ("name", "format"):
        if col not in df.columns:
            raise DataError(f"{path}: missing column {col!r}; has {', '.join(map(str, df.columns))}")
    out: dict[str, set[str]] = {}
    for raw, forms in zip(df["name"], df["format"]):
        raw = "" if pd.isna(raw) else raw
        forms = "" if pd.isna(forms) else forms
        for form in parse_labels(forms):
            out.setdefault(form, set()).add(raw)
        out.setdefault(raw, set()).add(raw)
    return {k: sorted(v) for k, v in out.items()}


@dataclass
class EmotionWheels:
    """The normalisation tables; :meth:`cluster` maps a word onto one wheel's level-1 cluster."""

    formats: dict[str, list[str]]
    synonyms: dict[str, list[str]]
    wheels: list[dict[str, str]]
    names: tuple[str, ...] = WHEEL_NAMES
    source: str = ""
    _cache: list[dict[str, str | None]] = field(default_factory=list, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.wheels) != len(self.names):
            raise DataError(f"{len(self.wheels)} wheels given for names {self.names}")
        self._cache = [{} for _ in self.wheels]

    @classmethod
    def load(cls, directory: str | Path | None = None) -> "EmotionWheels":
        """Read ``format.csv``, ``synonym.xlsx`` and ``wheel1..5.xlsx`` from ``directory``
        (default: the packaged MER-UniBench tables, :data:`PACKAGED_WHEELS`)."""
        root = PACKAGED_WHEELS if directory is None else Path(directory)
        if not root.is_dir():
            raise DataError(f"emotion-wheel folder not found: {root} (expected format.csv, synonym.xlsx, "
                            "wheel1.xlsx … wheel5.xlsx there)")
        fmt = _require(root / "format.csv", "format.csv")
        syn = _require(root / "synonym.xlsx", "synonym.xlsx")
        paths = [_require(root / f"{n}.xlsx", f"{n}.xlsx") for n in WHEEL_NAMES]
        trees = [_read_wheel(p) for p in paths]
        wheels = [_level1_map(t) for t in trees]
        wheel_words = {w for m in wheels for w in m}
        return cls(formats=_read_formats(fmt), synonyms=_read_synonyms(syn, wheel_words),
                   wheels=wheels, source=str(root))

    def candidates(self, word: str) -> list[str]:
        """The sorted wheel words a word may stand for (before choosing a wheel)."""
        label = str(word).lower().strip()
        out: list[str] = []
        for base in self.formats.get(label, ()):
            out.extend(self.synonyms.get(base, ()))
        return sorted(out)

    def cluster(self, word: str, wheel: int) -> str | None:
        """Level-1 cluster of ``word`` on wheel index ``wheel`` (0-4), or None if it maps to none."""
        cache = self._cache[wheel]
        if word in cache:
            return cache[word]
        wheel_map = self.wheels[wheel]
        result = next((wheel_map[c] for c in self.candidates(word) if c in wheel_map), None)
        result = result or None  # the reference drops an empty cluster name too
        cache[word] = result
        return result

    def clusters(self, words: Iterable[str], wheel: int) -> set[str]:
        """The set of clusters of ``words`` on one wheel (unmappable words dropped)."""
        out = set()
        for w in words:
            c = self.cluster(w, wheel)
            if c is not None:
                out.add(c)
        return out


def as_wheels(wheels: EmotionWheels | str | Path | None = None) -> EmotionWheels:
    """``wheels`` itself if loaded, else :meth:`EmotionWheels.load` of it (None: the packaged tables)."""
    return wheels if isinstance(wheels, EmotionWheels) else EmotionWheels.load(wheels)


__all__ = ["EmotionWheels", "PACKAGED_WHEELS", "WHEEL_NAMES", "SYNONYM_RUNS", "as_wheels", "parse_labels"]
