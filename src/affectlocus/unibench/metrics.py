"""MER-UniBench metrics: the five-wheel hit rate (emotion tasks) and weighted F1 (sentiment tasks).

Both follow AffectGPT's ``evaluation.py`` / ``ew_metric.py`` exactly:

- **hit rate** (MER2023, MER2024, MELD, IEMOCAPFour): for each wheel, every sample whose ground
  truth maps to a cluster is scored; its hit is the number of ground-truth clusters among the
  predicted clusters (0 or 1 for a one-word truth); the wheel's score is the mean hit; the task's
  score is the mean over the wheels. Samples whose truth maps to nothing on a wheel (``neutral``
  always) are skipped on that wheel only.
- **sentiment** (CMUMOSI, CMUMOSEI, SIMS, SIMSv2): the judge's label ``positive`` → 1,
  ``negative`` → -1, anything else (``neutral``, ``mixed``, …) → 0; samples with valence 0 are
  dropped; ``truth = valence > 0``, ``pred = label > 0``; score = weighted F1, plus accuracy.

Predictions missing for a ground-truth sample (the reference would crash) count as empty / as 0
and are reported in ``n_missing``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from sklearn.metrics import accuracy_score, f1_score

from .wheels import EmotionWheels, as_wheels, parse_labels

#: judge label → number, as in the reference (anything else → 0)
SENTIMENT_VALUES: dict[str, int] = {"positive": 1, "negative": -1, "neutral": 0}


@dataclass
class HitRate:
    """Five-wheel hit rate. Fractions in [0, 1]; ``per_wheel[k]`` is None where wheel k scored nothing."""

    score: float | None
    per_wheel: list[float | None]
    n_scored: list[int]
    n_skipped: list[int]
    n_samples: int
    n_missing: int = 0
    kind: str = "emotion"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return asdict(self)


@dataclass
class SentimentScore:
    """Weighted F1 (``score``) and accuracy over samples with non-zero valence (fractions)."""

    score: float | None
    accuracy: float | None
    n_scored: int
    n_dropped_zero: int
    n_samples: int
    n_other_labels: int = 0
    n_missing: int = 0
    kind: str = "sentiment"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return asdict(self)


def _words(value: Any) -> list[str]:
    """Parsed, lower-cased, stripped words (as the reference does before mapping)."""
    return [str(w).lower().strip() for w in parse_labels(value)]


def hit_rate(predictions: Mapping[str, Any], truth: Mapping[str, Any],
             wheels: EmotionWheels | str | Path | None = None) -> HitRate:
    """Score ``predictions`` (name → words or ``"[a, b]"``) against ``truth`` (name → word).

    Samples are those of ``truth``; predictions for other names are ignored. ``wheels``: loaded
    tables or their folder; None: the MER-UniBench tables shipped with the package.
    """
    wheels = as_wheels(wheels)
    n_wheels = len(wheels.wheels)
    per_wheel: list[float | None] = []
    n_scored: list[int] = []
    missing = [name for name in truth if name not in predictions]
    truth_words = {name: _words(value) for name, value in truth.items()}
    pred_words = {name: _words(predictions.get(name, [])) for name in truth}
    for k in range(n_wheels):
        hits: list[int] = []
        for name, words in truth_words.items():
            gt = wheels.clusters(words, k)
            if not gt:
                continue
            hits.append(len(gt & wheels.clusters(pred_words[name], k)))
        n_scored.append(len(hits))
        per_wheel.append(float(np.mean(hits)) if hits else None)
    scored = [s for s in per_wheel if s is not None]
    return HitRate(
        score=float(np.mean(scored)) if scored else None,
        per_wheel=per_wheel,
        n_scored=n_scored,
        n_skipped=[len(truth) - n for n in n_scored],
        n_samples=len(truth),
        n_missing=len(missing),
    )


def sentiment_value(label: Any) -> int:
    """Judge label → 1 / -1 / 0 (exact match on ``positive`` / ``negative``; anything else 0)."""
    return SENTIMENT_VALUES.get(str(label), 0)


def sentiment_scores(pred_labels: Mapping[str, Any], truth_valence: Mapping[str, float]) -> SentimentScore:
    """Weighted F1 and accuracy of judge labels (name → positive/negative/…) against valences."""
    labels, preds = [], []
    other = missing = 0
    for name, val in truth_valence.items():
        if name not in pred_labels:
            missing += 1
            value = 0
        else:
            label = pred_labels[name]
            if str(label) not in SENTIMENT_VALUES:
                other += 1
            value = sentiment_value(label)
        labels.append(float(val))
        preds.append(value)
    y_val = np.asarray(labels, dtype=float)
    y_pred = np.asarray(preds, dtype=float)
    keep = y_val != 0
    n = int(keep.sum())
    if n == 0:
        f1 = acc = None
    else:
        t, p = y_val[keep] > 0, y_pred[keep] > 0
        acc = float(accuracy_score(t, p))
        f1 = float(f1_score(t, p, average="weighted", zero_division=0))  # = the default "warn" value
    return SentimentScore(score=f1, accuracy=acc, n_scored=n, n_dropped_zero=len(labels) - n,
                          n_samples=len(labels), n_other_labels=other, n_missing=missing)


def mean_score(scores: Sequence[float | None]) -> float | None:
    """Mean of the scores that exist (the benchmark's reported mean over tasks)."""
    vals = [s for s in scores if s is not None]
    return float(np.mean(vals)) if vals else None


__all__ = ["HitRate", "SentimentScore", "SENTIMENT_VALUES", "hit_rate", "sentiment_scores",
           "sentiment_value", "mean_score"]
