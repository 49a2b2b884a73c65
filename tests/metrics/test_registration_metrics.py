"""Registration metrics on cases with known answers: Dice per label by counting, Jacobian determinants of affine
and separable fields, hand-built folds, inverse consistency of shifts, affine inverses and against compose()."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medlearn.metrics.registration import (
    dice_per_label,
    folding_fraction,
    inverse_consistency_error,
    jacobian_determinant,
    mean_dice,
)
from medlearn.nn.registration import compose


def _grid(shape) -> np.ndarray:
    return np.stack(np.meshgrid(*(np.arange(s, dtype=np.float64) for s in shape), indexing="ij"))


def _affine(a: np.ndarray, t: np.ndarray, shape) -> np.ndarray:
    return (np.einsum("ij,j...->i...", a, _grid(shape)) + t.reshape(-1, *([1] * len(shape))))[None]


def test_dice_per_label_by_counting_and_its_conventions():
    rng = np.random.default_rng(0)
    pred, target = rng.integers(0, 4, (3, 9, 10)), rng.integers(0, 4, (3, 9, 10))
    target[target == 3] = 2  # label 3: only in pred
    got = dice_per_label(pred, target, labels=[0, 1, 2, 3, 7])
    for lab in (0, 1, 2):
        inter = sum(1 for p, t in zip(pred.ravel(), target.ravel()) if p == lab and t == lab)
        assert got[lab] == pytest.approx(2 * inter / (np.sum(pred == lab) + np.sum(target == lab)))
    assert got[3] == 0.0 and math.isnan(got[7])
    assert mean_dice(got) == pytest.approx(np.mean([got[0], got[1], got[2], 0.0]))
    # default labels: every non-zero value in either map; torch works too
    assert list(dice_per_label(torch.from_numpy(pred), torch.from_numpy(target))) == [1, 2, 3]
    assert dice_per_label(pred, pred, labels=[1, 2])[1] == 1.0
    assert math.isnan(mean_dice({5: math.nan}))
    with pytest.raises(ValueError, match="shape"):
        dice_per_label(pred, target[:, :5])


@pytest.mark.parametrize("shape", [(9, 11), (6, 7, 8)])
def test_jacobian_of_an_affine_field_is_det_of_identity_plus_a(shape):
    d = len(shape)
    rng = np.random.default_rng(d)
    for _ in range(3):
        a = rng.uniform(-0.9, 0.9, (d, d))
        f = _affine(a, rng.normal(size=d), shape)
        det = jacobian_determinant(torch.from_numpy(f))
        assert det.shape == (1, *shape)
        np.testing.assert_allclose(det, np.linalg.det(np.eye(d) + a), atol=1e-10)  # edges included: exact


def test_jacobian_of_a_separable_smooth_field():
    shape = (40, 44)
    p = _grid(shape)
    a, c, k = 4.0, 0.8, 0.3
    f = np.stack([a * np.sin(k * p[0]), c * np.sin(k * p[1])])[None]
    want = (1 + a * k * np.cos(k * p[0])) * (1 + c * k * np.cos(k * p[1]))
    det = jacobian_determinant(f)[0]
    # inside, a central difference of sin(k p) is exactly sin(k) cos(k p)
    central = (1 + a * np.sin(k) * np.cos(k * p[0])) * (1 + c * np.sin(k) * np.cos(k * p[1]))
    np.testing.assert_allclose(det[1:-1, 1:-1], central[1:-1, 1:-1], atol=1e-12)
    np.testing.assert_allclose(det[1:-1, 1:-1], want[1:-1, 1:-1], atol=0.05)  # ~ the analytic determinant
    assert np.mean(want <= 0) > 0.1  # a * k > 1: real folds
    assert folding_fraction(f) == pytest.approx(np.mean(want <= 0), abs=0.02)


def test_folding_fraction_of_a_known_fold():
    # phi_0 along the first axis goes back on itself: central differences are 0 at row 5 and -1 at row 6
    phi = np.array([0, 1, 2, 3, 4, 5, 4, 3, 6, 7, 8, 9], dtype=np.float64)
    f = np.zeros((1, 2, 12, 7))
    f[0, 0] = (phi - np.arange(12))[:, None]
    det = jacobian_determinant(f)[0]
    np.testing.assert_allclose(det[:, 0], [1, 1, 1, 1, 1, 0, -1, 1, 2, 1, 1, 1])
    assert folding_fraction(f) == pytest.approx(2 / 12)
    # 3D, along the last axis, in a batch of two where only the second folds
    g = np.zeros((2, 3, 4, 5, 12))
    g[1, 2] = phi - np.arange(12)
    assert folding_fraction(g) == pytest.approx(0.5 * 2 / 12)
    assert folding_fraction(np.zeros((1, 2, 5, 5))) == 0.0


def test_point_reflection_folds_in_3d_but_not_in_2d():
    # phi(p) = -p: det(-I) = +1 in 2D (a rotation by pi), -1 in 3D (orientation reversed)
    assert folding_fraction(_affine(-2 * np.eye(2), np.zeros(2), (6, 7))) == 0.0
    assert folding_fraction(_affine(-2 * np.eye(3), np.zeros(3), (4, 5, 6))) == 1.0
    with pytest.raises(ValueError):
        jacobian_determinant(np.zeros((1, 3, 5, 5)))


@pytest.mark.parametrize("shape", [(10, 12), (6, 7, 8)])
def test_inverse_consistency_of_shifts_and_affine_inverses(shape):
    d = len(shape)
    s = np.array([1.5, -0.5, 2.0][:d]).reshape(1, d, *([1] * d)) * np.ones((1, d, *shape))
    assert inverse_consistency_error(s, -s) == pytest.approx(0.0, abs=1e-12)
    assert inverse_consistency_error(s, s) == pytest.approx(2 * np.linalg.norm(s[0, :].reshape(d, -1)[:, 0]))
    # phi_F(p) = M p + t and its inverse phi_B(q) = M^-1 (q - t): exact away from the edges
    big = tuple(2 * n for n in shape)
    rng = np.random.default_rng(d)
    m = np.eye(d) + rng.uniform(-0.05, 0.05, (d, d))
    t = rng.uniform(-1, 1, d)
    mi = np.linalg.inv(m)
    fwd, bwd = _affine(m - np.eye(d), t, big), _affine(mi - np.eye(d), -mi @ t, big)
    c = compose(torch.from_numpy(fwd), torch.from_numpy(bwd))[0].numpy()
    inner = (slice(None), *(slice(n // 2, n + n // 2) for n in shape))
    np.testing.assert_allclose(c[inner], 0.0, atol=1e-9)
    # and the metric, on the same fields, is the mean norm of that composition (edges included)
    assert inverse_consistency_error(fwd, bwd) == pytest.approx(float(np.sqrt((c * c).sum(axis=0)).mean()), abs=1e-9)


@pytest.mark.parametrize("shape", [(2, 2, 12, 13), (1, 3, 6, 7, 8)])
def test_inverse_consistency_agrees_with_torch_composition(shape):
    rng = np.random.default_rng(7)
    f, g = rng.normal(size=shape) * 2, rng.normal(size=shape) * 2
    want = compose(torch.from_numpy(f), torch.from_numpy(g)).norm(dim=1).mean()
    assert inverse_consistency_error(torch.from_numpy(f), g) == pytest.approx(float(want), rel=1e-10)
