"""Binary AUC / sensitivity / specificity against scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, recall_score, roc_auc_score

from medlearn.metrics import BinaryMetric, binary_metrics, sensitivity_specificity


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.8])
def test_matches_sklearn(seed, threshold):
    rng = np.random.default_rng(seed)
    y = (rng.random(300) < 0.25).astype(int)
    s = np.clip(0.35 * y + rng.random(300) * 0.7, 0, 1)
    s[:20] = 0.5  # ties, and scores exactly at a threshold
    r = binary_metrics(s, y, threshold)
    pred = (s >= threshold).astype(int)
    assert r.auc == pytest.approx(roc_auc_score(y, s), abs=1e-6)
    assert r.sensitivity == pytest.approx(recall_score(y, pred, pos_label=1), abs=1e-12)
    assert r.specificity == pytest.approx(recall_score(y, pred, pos_label=0), abs=1e-12)
    assert r.accuracy == pytest.approx(accuracy_score(y, pred), abs=1e-6)
    assert (r.n_positive, r.n_negative) == (int(y.sum()), int((1 - y).sum()))


def test_batched_accumulation_equals_one_shot():
    rng = np.random.default_rng(4)
    y = (rng.random(100) < 0.4).astype(np.float32)
    s = rng.random(100).astype(np.float32)
    m = BinaryMetric(0.4)
    for i in range(0, 100, 32):
        m.update(torch.from_numpy(s[i:i + 32]), torch.from_numpy(y[i:i + 32]))
    assert m.compute() == binary_metrics(s, y, 0.4)
    m.reset()
    assert math.isnan(m.compute().auc)


def test_undefined_rates_are_nan():
    r = binary_metrics([0.2, 0.7], [0, 0])
    assert math.isnan(r.auc) and math.isnan(r.sensitivity) and r.specificity == 0.5
    sens, spec = sensitivity_specificity([0.9], [1])
    assert sens == 1.0 and math.isnan(spec)
    with pytest.raises(ValueError, match="0 or 1"):
        binary_metrics([0.2, 0.7], [0, 2])
    with pytest.raises(ValueError, match="differ"):
        binary_metrics([0.2, 0.7], [0])
