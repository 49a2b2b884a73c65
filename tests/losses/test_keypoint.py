"""Keypoint losses against naive references: heatmap MSE (foreground-weighted) and keypoint registration."""

from __future__ import annotations

import math

import pytest
import torch

from medlearn.losses.keypoint import KeypointRegistrationLoss, heatmap_mse, keypoint_registration


def _naive(pred, points, sigma, beta, lam, alpha, valid, loc_scale=1.0):
    """Loops over samples and pixels, straight from the definition."""
    b, _, h, w = pred.shape
    ints, locs = [], []
    for i in range(b):
        x, y = float(points[i, 0]), float(points[i, 1])
        if not (valid[i] and math.isfinite(x) and math.isfinite(y)):
            continue
        err, z, sx, sy = 0.0, 0.0, 0.0, 0.0
        for r in range(h):
            for c in range(w):
                t = math.exp(-((c - x) ** 2 + (r - y) ** 2) / (2 * sigma**2))
                p = float(pred[i, 0, r, c])
                err += (1 + alpha * t) * (p - t) ** 2
                e = math.exp(beta * p)
                z, sx, sy = z + e, sx + e * c, sy + e * r
        ints.append(err / (h * w))
        locs.append(math.hypot(sx / z - x, sy / z - y) / math.hypot(h, w))
    if not ints:
        return 0.0, 0.0, 0.0
    l_int, l_loc = sum(ints) / len(ints), sum(locs) / len(locs)
    return l_int + loc_scale * lam * l_loc, l_int, l_loc


@pytest.mark.parametrize("sigma,beta,lam,alpha", [(2.0, 20.0, 1.0, 0.0), (1.5, 5.0, 0.3, 10.0), (3.0, 10.0, 0.0, 2.0)])
@pytest.mark.parametrize("b", [1, 4])
def test_keypoint_registration_matches_the_naive_definition(sigma, beta, lam, alpha, b):
    torch.manual_seed(b)
    pred = torch.rand(b, 1, 9, 11, dtype=torch.float64)
    points = torch.rand(b, 2, dtype=torch.float64) * torch.tensor([10.0, 8.0])
    valid = torch.tensor([True, False, True, True][:b])
    if b > 2:
        points[2, 0] = float("nan")
    total, parts = keypoint_registration(pred, points, sigma, beta, lam, alpha, valid)
    want, l_int, l_loc = _naive(pred, points, sigma, beta, lam, alpha, valid)
    assert float(total) == pytest.approx(want, rel=1e-5)
    assert float(parts["int"]) == pytest.approx(l_int, rel=1e-5)
    assert float(parts["loc"]) == pytest.approx(l_loc, rel=1e-5)
    assert float(parts["loc_px"]) == pytest.approx(l_loc * math.hypot(9, 11), rel=1e-5)


def test_warm_up_drops_the_location_term_and_lambda_zero_is_mse():
    torch.manual_seed(0)
    pred = torch.rand(3, 1, 8, 8)
    pts = torch.rand(3, 2) * 7
    warm, parts = keypoint_registration(pred, pts, 2.0, loc_scale=0.0)
    assert float(warm) == pytest.approx(float(parts["int"]))
    mse, _ = KeypointRegistrationLoss(sigma=2.0, lambda_loc=0.0)(pred, pts)
    assert float(mse) == pytest.approx(float(warm))
    full, _ = KeypointRegistrationLoss(sigma=2.0, lambda_loc=1.0)(pred, pts)
    assert float(full) > float(mse)


def test_heatmap_mse_weighting_and_masking():
    torch.manual_seed(1)
    pred, target = torch.rand(4, 1, 5, 5), torch.rand(4, 1, 5, 5)
    assert float(heatmap_mse(pred, target)) == pytest.approx(float(((pred - target) ** 2).mean()))
    w = 1 + 10 * target
    assert float(heatmap_mse(pred, target, fg_weight=10)) == pytest.approx(float((w * (pred - target) ** 2).mean()))
    keep = torch.tensor([True, False, False, True])
    assert float(heatmap_mse(pred, target, keep)) == pytest.approx(float(((pred - target)[keep] ** 2).mean()))
    with pytest.raises(ValueError, match="differ"):
        heatmap_mse(pred, target[:, :, :4])


def test_gradients_and_the_all_absent_batch():
    pred = torch.zeros(2, 1, 12, 12, requires_grad=True)
    loss, _ = keypoint_registration(pred, torch.tensor([[3.0, 4.0], [8.0, 2.0]]), 2.0)
    loss.backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    pred.grad = None
    loss, parts = keypoint_registration(pred, torch.full((2, 2), float("nan")), 2.0)
    assert float(loss.detach()) == 0.0 and loss.requires_grad and float(parts["loc"]) == 0.0
    loss.backward()
    assert pred.grad is not None and pred.grad.abs().sum() == 0


def test_a_perfect_map_has_no_intensity_loss_and_a_small_location_loss():
    from medlearn.nn.heatmaps import gaussian_heatmap

    pts = torch.tensor([[10.3, 6.7], [4.0, 12.5]])
    pred = gaussian_heatmap(pts, (16, 20), 2.0)
    _, parts = keypoint_registration(pred, pts, 2.0, beta=20.0)
    assert float(parts["int"]) == pytest.approx(0.0, abs=1e-12)
    assert float(parts["loc_px"]) < 0.3  # soft-argmax of a sigma-2 bump at beta 20
