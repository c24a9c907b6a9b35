"""The metrics against scikit-learn's reference implementations on fixed, seeded inputs."""

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, cohen_kappa_score, f1_score, recall_score
from sklearn.metrics import confusion_matrix as sk_confusion

from kdbench.metrics import confusion_matrix, score

NAMES = ("W", "N1", "N2", "N3", "REM")


def draws(seed: int, n: int, k: int = 5, missing: tuple[int, ...] = ()):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    # predictions that agree ~60 % of the time, so no metric sits at a trivial value
    p = np.where(rng.random(n) < 0.6, y, rng.integers(0, k, n))
    for cls in missing:
        y[y == cls] = (cls + 1) % k
        p[p == cls] = (cls + 2) % k
    return y, p


@pytest.mark.parametrize("seed,n,missing", [(0, 200, ()), (1, 37, ()), (2, 500, (1,)), (3, 50, (1, 4))])
def test_metrics_match_scikit_learn(seed, n, missing):
    y, p = draws(seed, n, missing=missing)
    scores = score(y, p, NAMES)
    labels = list(range(5))
    np.testing.assert_array_equal(scores.confusion, sk_confusion(y, p, labels=labels))
    assert scores.accuracy == pytest.approx(accuracy_score(y, p))
    assert scores.mf1 == pytest.approx(f1_score(y, p, labels=labels, average="macro", zero_division=0))
    assert scores.kappa == pytest.approx(cohen_kappa_score(y, p, labels=labels))
    np.testing.assert_allclose(scores.per_class_accuracy,
                               recall_score(y, p, labels=labels, average=None, zero_division=0))


def test_metric_names_are_the_tracked_ones():
    y, p = draws(4, 100)
    flat = score(y, p, NAMES).as_dict("final_")
    assert set(flat) == {"final_accuracy", "final_mf1", "final_kappa", *(f"final_acc_{c}" for c in NAMES)}


def test_perfect_and_constant_predictions():
    y = np.array([0, 1, 2, 3, 4, 0, 2])
    perfect = score(y, y, NAMES)
    assert (perfect.accuracy, perfect.mf1, perfect.kappa) == (1.0, 1.0, 1.0)
    constant = score(y, np.zeros_like(y), NAMES)
    assert constant.kappa == pytest.approx(cohen_kappa_score(y, np.zeros_like(y)))
    assert constant.kappa == 0.0


def test_confusion_matrix_refuses_mismatched_lengths():
    with pytest.raises(ValueError, match="differ in shape"):
        confusion_matrix([0, 1], [0], 2)
