"""Multi-class metrics against scikit-learn; ECE against a naive per-sample loop."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    cohen_kappa_score,
    f1_score,
    log_loss,
)
from sklearn.metrics import confusion_matrix as sk_confusion

from medlearn.metrics import MulticlassMetrics, expected_calibration_error, multiclass_metrics


def _probs(rng: np.random.Generator, y: np.ndarray, k: int, signal: float) -> np.ndarray:
    logits = rng.normal(size=(len(y), k))
    logits[np.arange(len(y)), y] += signal
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _naive_ece(p: np.ndarray, y: np.ndarray, n_bins: int) -> float:
    total = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        members = [i for i in range(len(y)) if (lo < p[i].max() <= hi) or (b == 0 and p[i].max() == 0)]
        if not members:
            continue
        acc = sum(float(p[i].argmax() == y[i]) for i in members) / len(members)
        conf = sum(float(p[i].max()) for i in members) / len(members)
        total += len(members) / len(y) * abs(acc - conf)
    return total


@pytest.mark.parametrize("seed,k,n,imbalanced", [(0, 7, 300, True), (1, 3, 50, False), (2, 7, 120, True),
                                                  (3, 2, 40, False)])
def test_matches_sklearn(seed, k, n, imbalanced):
    rng = np.random.default_rng(seed)
    prior = rng.dirichlet(np.ones(k) * (0.5 if imbalanced else 50))
    y = rng.choice(k, size=n, p=prior)
    p = _probs(rng, y, k, signal=1.5)
    r = multiclass_metrics(p, y, k)
    pred = p.argmax(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns when a class is absent from y_true
        assert r.accuracy == pytest.approx(accuracy_score(y, pred))
        assert r.balanced_accuracy == pytest.approx(balanced_accuracy_score(y, pred))
        assert r.macro_f1 == pytest.approx(f1_score(y, pred, average="macro", zero_division=0))
        assert r.kappa == pytest.approx(cohen_kappa_score(y, pred))
    assert r.nll == pytest.approx(log_loss(y, p, labels=list(range(k))), rel=1e-9)
    np.testing.assert_array_equal(r.confusion, sk_confusion(y, pred, labels=list(range(k))))
    assert r.n == n


def test_absent_classes_follow_sklearn():
    # class 2 never true (predicted once), class 3 never true nor predicted
    y = np.array([0, 0, 1, 1, 1])
    pred = np.array([0, 2, 1, 1, 0])
    p = np.eye(4)[pred] * 0.7 + 0.075
    r = multiclass_metrics(p, y, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert r.balanced_accuracy == pytest.approx(balanced_accuracy_score(y, pred))
    assert r.macro_f1 == pytest.approx(f1_score(y, pred, average="macro", zero_division=0))
    assert np.isnan(r.recall[2]) and np.isnan(r.recall[3])


def test_hand_worked_case():
    p = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    y = np.array([0, 1, 1, 1])
    r = multiclass_metrics(p, y)
    assert r.accuracy == 0.75
    assert r.balanced_accuracy == pytest.approx((1 + 2 / 3) / 2)
    assert r.nll == pytest.approx(-np.mean(np.log([0.9, 0.8, 0.4, 0.7])))
    # confidences 0.9, 0.8, 0.6, 0.7 in separate 10-bins; correct, correct, wrong, correct
    assert r.ece == pytest.approx((0.1 + 0.2 + 0.6 + 0.3) / 4)
    assert expected_calibration_error(p, y, n_bins=10) == pytest.approx(0.3)


@pytest.mark.parametrize("seed,n_bins", [(0, 15), (1, 10), (2, 5)])
def test_ece_matches_naive_loop(seed, n_bins):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 5, size=200)
    p = _probs(rng, y, 5, signal=rng.uniform(0, 3))
    p[:5] = np.eye(5)[y[:5]]  # confidence exactly 1.0 (last bin edge)
    p[5:10] = 0.2  # confidence exactly 0.2 = a bin edge for 5/10/15 bins
    assert expected_calibration_error(p, y, n_bins) == pytest.approx(_naive_ece(p, y, n_bins), abs=1e-12)


def test_perfect_and_constant_predictions():
    y = np.array([0, 1, 2, 2])
    r = multiclass_metrics(np.eye(3)[y], y)
    assert (r.accuracy, r.balanced_accuracy, r.macro_f1, r.kappa, r.ece) == (1.0, 1.0, 1.0, 1.0, 0.0)
    r = multiclass_metrics(np.tile([0.2, 0.2, 0.6], (4, 1)), y)
    assert r.kappa == 0.0 and r.balanced_accuracy == pytest.approx(1 / 3)


def test_accumulator_equals_one_shot_and_rejects_bad_shapes():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 4, size=90)
    p = _probs(rng, y, 4, 1.0)
    m = MulticlassMetrics(4)
    for i in range(0, 90, 32):
        m.update(torch.tensor(p[i:i + 32]), torch.tensor(y[i:i + 32]))
    a, b = m.compute(), multiclass_metrics(p, y)
    assert a.scalars() == pytest.approx(b.scalars())
    with pytest.raises(ValueError):
        m.update(torch.zeros(3, 5), torch.zeros(3))
    m.reset()
    with pytest.raises(ValueError, match="no samples"):
        m.compute()
    with pytest.raises(ValueError, match="outside"):
        multiclass_metrics(np.full((2, 3), 1 / 3), np.array([0, 3]))
