"""Multi-label ROC-AUC against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from medlearn.metrics import MultiLabelAUC, multilabel_auc


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_matches_sklearn_per_class_and_mean(seed):
    rng = np.random.default_rng(seed)
    y = (rng.random((200, 5)) < 0.3).astype(float)
    s = y * rng.random((200, 5)) + rng.random((200, 5))  # informative but noisy, with ties absent
    s[:10, 0] = 0.5  # some ties
    res = multilabel_auc(s, y, list("abcde"))
    ref = [roc_auc_score(y[:, c], s[:, c]) for c in range(5)]
    assert [res.per_class[n] for n in "abcde"] == pytest.approx(ref, abs=1e-6)
    assert res.mean == pytest.approx(np.mean(ref), abs=1e-6)
    assert res.n_undefined == 0


def test_batched_accumulation_equals_one_shot():
    rng = np.random.default_rng(3)
    y = (rng.random((90, 3)) < 0.5).astype(np.float32)
    s = rng.random((90, 3)).astype(np.float32)
    m = MultiLabelAUC(["x", "y", "z"])
    for i in range(0, 90, 32):
        m.update(torch.from_numpy(s[i:i + 32]), torch.from_numpy(y[i:i + 32]))
    assert m.compute().mean == pytest.approx(multilabel_auc(s, y).mean, abs=1e-6)


def test_degenerate_class_is_nan_and_excluded_from_mean():
    y = np.array([[1, 0], [0, 0], [1, 0], [0, 0]], dtype=float)
    s = np.array([[0.9, 0.1], [0.1, 0.2], [0.8, 0.3], [0.3, 0.4]])
    res = multilabel_auc(s, y, ["ok", "never"])
    assert res.per_class["ok"] == 1.0
    assert np.isnan(res.per_class["never"])
    assert res.mean == 1.0 and res.n_undefined == 1


def test_shape_mismatch_is_an_error():
    m = MultiLabelAUC(["a", "b"])
    with pytest.raises(ValueError, match="shape"):
        m.update(torch.zeros(3, 3), torch.zeros(3, 3))
