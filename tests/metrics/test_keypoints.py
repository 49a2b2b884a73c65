"""Keypoint distance metrics against a naive NumPy reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medlearn.metrics import KeypointDistance, keypoint_summary, point_distances


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_numpy(seed):
    rng = np.random.default_rng(seed)
    target = rng.random((120, 2)) * 500
    pred = target + rng.normal(0, 4, (120, 2))
    target[[3, 50, 77]] = np.nan  # absent spurs
    m = KeypointDistance(radii=(3.0, 5.0, 10.0))
    for i in range(0, 120, 25):
        m.update(torch.from_numpy(pred[i:i + 25]), torch.from_numpy(target[i:i + 25]))
    r = m.compute()
    d = np.array([math.dist(p, t) for p, t in zip(pred, target) if not np.isnan(t).any()])
    assert r.n == 117
    assert r.aed == pytest.approx(d.mean(), rel=1e-12)
    assert r.median == pytest.approx(np.median(d), rel=1e-12)
    assert r.p95 == pytest.approx(np.percentile(d, 95), rel=1e-12)
    assert r.max == pytest.approx(d.max(), rel=1e-12)
    for rad in (3.0, 5.0, 10.0):
        assert r.within[rad] == pytest.approx(np.mean(d <= rad))
    assert set(r.as_dict("test/")) == {"test/aed", "test/median", "test/p95", "test/max", "test/within3",
                                       "test/within5", "test/within10"}


def test_hand_worked_and_empty():
    assert point_distances(np.array([[0.0, 0.0], [1.0, 1.0]]), np.array([[3.0, 4.0], [1.0, 1.0]])).tolist() == [5, 0]
    r = keypoint_summary([5.0, 0.0, float("nan")], radii=(1.0,))
    assert (r.aed, r.n, r.within[1.0]) == (2.5, 2, 0.5)
    empty = KeypointDistance().compute()
    assert empty.n == 0 and math.isnan(empty.aed)
    with pytest.raises(ValueError, match="point sets"):
        point_distances(np.zeros((3, 2)), np.zeros((2, 2)))
