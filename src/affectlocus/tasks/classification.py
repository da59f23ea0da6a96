"""Classification metrics on integer label arrays, vectorised over bootstrap rows, and chance levels."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def classification_metrics(y: np.ndarray, p: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Balanced accuracy (mean recall over classes present in the truth), accuracy, macro F1 (over
    classes present in the truth) and weighted F1 for each row of ``y``/``p`` (shape ``[R, n]``; a
    prediction of -1 is wrong for every class)."""
    y, p = np.atleast_2d(y), np.atleast_2d(p)
    n = y.shape[1]
    acc = (y == p).mean(axis=1)
    f1_sum = np.zeros(len(y))
    recall_sum = np.zeros(len(y))
    weighted = np.zeros(len(y))
    present = np.zeros(len(y))
    for c in range(k):
        yc, pc = y == c, p == c
        tp, sup, npred = (yc & pc).sum(1), yc.sum(1), pc.sum(1)
        denom = sup + npred
        f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)
        f1_sum += np.where(sup > 0, f1, 0.0)
        recall_sum += np.where(sup > 0, tp / np.maximum(sup, 1), 0.0)
        present += sup > 0
        weighted += f1 * sup / max(n, 1)
    return {"balanced_accuracy": recall_sum / np.maximum(present, 1), "accuracy": acc,
            "macro_f1": f1_sum / np.maximum(present, 1), "weighted_f1": weighted}


def chance_level(y: Sequence[int], k: int, metric: str) -> float:
    """The best score a constant predictor (one label for every example) gets on truth ``y``:
    1/(classes present in ``y``) for balanced accuracy, the majority share for accuracy, and so on."""
    y = np.asarray(y, dtype=int)
    if not len(y):
        return float("nan")
    return float(max(classification_metrics(y, np.full_like(y, c), k)[metric][0] for c in range(k)))


def percentile_ci(samples: np.ndarray | None, level: float = 0.95) -> list[float] | None:
    """Percentile interval of the finite bootstrap samples (None when there are none)."""
    if samples is None:
        return None
    s = np.asarray(samples, dtype=float)
    s = s[np.isfinite(s)]
    if s.size == 0:
        return None
    lo, hi = np.percentile(s, [50 * (1 - level), 50 * (1 + level)])
    return [float(lo), float(hi)]


__all__ = ["chance_level", "classification_metrics", "percentile_ci"]
