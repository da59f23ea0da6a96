"""classification_metrics' balanced accuracy against sklearn, and chance_level per metric."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

from affectlocus.evaluation.runner import chance_level, classification_metrics

# random predictions may use a class the truth lacks; sklearn warns about it, the metric is still defined
pytestmark = pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")


@pytest.mark.parametrize("seed", range(6))
def test_balanced_accuracy_matches_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 7))
    n = int(rng.integers(5, 80))
    # skewed class frequencies, so balanced accuracy and accuracy differ
    y = rng.choice(k, size=(4, n), p=rng.dirichlet(np.ones(k) * 0.7))
    p = np.where(rng.random((4, n)) < 0.5, y, rng.integers(0, k, (4, n)))
    m = classification_metrics(y, p, k)
    assert m["balanced_accuracy"].shape == (4,)
    for r in range(4):
        assert m["balanced_accuracy"][r] == pytest.approx(balanced_accuracy_score(y[r], p[r]))
        assert m["accuracy"][r] == pytest.approx(accuracy_score(y[r], p[r]))
        assert m["macro_f1"][r] == pytest.approx(
            f1_score(y[r], p[r], labels=np.unique(y[r]), average="macro", zero_division=0))


def test_balanced_accuracy_unparsed_and_absent_classes() -> None:
    """-1 (no parsable answer) is wrong for every class; classes absent from the truth are skipped."""
    y = np.array([0, 0, 0, 0, 2, 2])          # class 1 never occurs (k = 3)
    p = np.array([0, -1, 1, 0, 2, -1])
    got = classification_metrics(y, p, 3)["balanced_accuracy"][0]
    assert got == pytest.approx((2 / 4 + 1 / 2) / 2)
    with pytest.warns(UserWarning):          # sklearn warns about the -1/1 predictions outside y_true
        assert got == pytest.approx(balanced_accuracy_score(y, p))


def test_balanced_accuracy_is_not_accuracy_on_imbalanced_data() -> None:
    y = np.array([0] * 9 + [1])
    p = np.zeros(10, dtype=int)               # constant majority predictor
    m = classification_metrics(y, p, 2)
    assert m["accuracy"][0] == pytest.approx(0.9)
    assert m["balanced_accuracy"][0] == pytest.approx(0.5)


def test_classification_metrics_broadcasts_1d() -> None:
    y = np.array([0, 1, 2, 1])
    m = classification_metrics(y, y, 3)
    assert all(v.shape == (1,) for v in m.values())
    assert m["balanced_accuracy"][0] == 1.0 and m["accuracy"][0] == 1.0


@pytest.mark.parametrize("seed", range(4))
def test_chance_level(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    k = int(rng.integers(2, 6))
    y = rng.choice(k, size=int(rng.integers(10, 60)), p=rng.dirichlet(np.ones(k)))
    present = len(np.unique(y))
    # a constant predictor recalls one present class fully: 1/K over the classes in the truth
    assert chance_level(y, k, "balanced_accuracy") == pytest.approx(1 / present)
    assert chance_level(y, k, "accuracy") == pytest.approx(np.bincount(y, minlength=k).max() / len(y))


def test_chance_level_known_values() -> None:
    y = [0, 0, 0, 1, 2, 2]
    assert chance_level(y, 3, "balanced_accuracy") == pytest.approx(1 / 3)
    assert chance_level(y, 3, "accuracy") == pytest.approx(0.5)
    assert chance_level([1, 1, 1, 1], 4, "accuracy") == pytest.approx(1.0)
    assert np.isnan(chance_level([], 3, "balanced_accuracy"))


def test_score_cis_are_the_percentile_intervals_as_tuples() -> None:
    from affectlocus.errors import ConfigError
    from affectlocus.evaluation.runner import Scores, bootstrap_rng, score_classification
    from affectlocus.tasks.classification import percentile_ci
    labels = ("a", "b", "c")
    truth = ["a", "b", "c", "a", "b", "c", "a", "a"]
    preds = ["a", "b", "a", None, "b", "c", "c", "a"]
    s = score_classification("t", labels, truth, preds, n_boot=200, seed=4)
    y = np.array([labels.index(t) for t in truth])
    p = np.array([labels.index(q) if q else -1 for q in preds])
    idx = bootstrap_rng(4, "t").integers(0, len(y), (200, len(y)))
    boot = classification_metrics(y[idx], p[idx], 3)
    assert s.ci == tuple(percentile_ci(boot["balanced_accuracy"])) and isinstance(s.ci, tuple)
    assert s.cis == {k: tuple(percentile_ci(v)) for k, v in boot.items()}
    assert score_classification("t", labels, truth, preds, n_boot=0).ci is None
    both = Scores.from_tasks([s, score_classification("u", labels, truth, preds, n_boot=200, seed=4)])
    assert both.mean_ci == tuple(percentile_ci(np.mean(np.stack([s.boot, both["u"].boot]), axis=0)))
    with pytest.raises(ConfigError, match="unknown metric 'f2'; choose one of balanced_accuracy"):
        score_classification("t", labels, truth, preds, metric="f2")
