"""Vertical cup-to-disc ratio: a hand-worked case, a naive oracle on random maps, empty-disc conventions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medlearn.metrics.fundus import VerticalCDRError, vertical_cdr, vertical_diameter


def naive_vcdr(lab: np.ndarray) -> float:
    """Rows holding disc / cup pixels, by plain loops."""
    def extent(values: set[int]) -> int:
        rows = [r for r in range(lab.shape[0]) if any(int(v) in values for v in lab[r])]
        return 0 if not rows else rows[-1] - rows[0] + 1

    d, c = extent({1, 2}), extent({2})
    return math.nan if d == 0 else c / d


def test_hand_worked_case() -> None:
    lab = torch.zeros(2, 1, 12, 12, dtype=torch.long)
    lab[0, 0, 2:10, 3:9] = 1  # disc rows 2..9: 8 rows
    lab[0, 0, 4:7, 4:8] = 2   # cup rows 4..6: 3 rows
    lab[1, 0, 5, 5] = 1       # a one-pixel disc, no cup
    assert vertical_diameter(lab[:, 0] >= 1).tolist() == [8.0, 1.0]
    assert vertical_cdr(lab).tolist() == pytest.approx([3 / 8, 0.0])


@pytest.mark.parametrize("seed", range(5))
def test_matches_a_naive_oracle_on_random_maps(seed: int) -> None:
    rng = np.random.default_rng(seed)
    lab = np.zeros((6, 1, 20, 17), dtype=np.int64)
    for i in range(6):
        if i == 5:
            continue  # an empty disc
        r0, r1 = sorted(rng.integers(0, 20, 2))
        c0, c1 = sorted(rng.integers(0, 17, 2))
        lab[i, 0, r0:r1 + 1, c0:c1 + 1] = 1
        lab[i, 0, rng.integers(0, 20, 4), rng.integers(0, 17, 4)] = rng.integers(1, 3, 4)  # scattered pixels
    got = vertical_cdr(torch.from_numpy(lab)).numpy()
    want = np.array([naive_vcdr(lab[i, 0]) for i in range(6)])
    np.testing.assert_allclose(got, want, equal_nan=True)
    assert math.isnan(got[5])


def test_error_metric_accumulates_and_counts_undefined() -> None:
    t = torch.zeros(3, 1, 10, 10, dtype=torch.long)
    t[:, 0, 1:9, 1:9] = 1
    t[:, 0, 3:7, 3:7] = 2            # vCDR 4/8 = 0.5
    p = t.clone()
    p[0, 0, 3, 3:7] = 1              # cup rows 4..6: 3/8
    p[2] = 0                         # empty disc: undefined
    m = VerticalCDRError()
    per = m.update(p[:2], t[:2])
    m.update(p[2:], t[2:])
    assert per.tolist() == pytest.approx([0.125, 0.0])
    out = m.compute()
    assert out["vcdr_err"] == pytest.approx(0.0625) and out["vcdr_undefined"] == 1.0 and m.count == 3
    with pytest.raises(ValueError, match="differ"):
        m.update(p[:1], t)
