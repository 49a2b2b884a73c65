"""Gaussian heatmap targets, soft-argmax and sub-pixel decoding."""

from __future__ import annotations

import math

import pytest
import torch

from medlearn.nn.heatmaps import decode_heatmap, gaussian_heatmap, soft_argmax


def test_gaussian_target_against_a_naive_loop():
    pts = torch.tensor([[3.25, 5.5], [0.0, 0.0], [float("nan"), 1.0]])
    maps = gaussian_heatmap(pts, (7, 9), sigma=1.5, valid=torch.tensor([True, False, True]))
    assert maps.shape == (3, 1, 7, 9)
    for r in range(7):
        for c in range(9):
            want = math.exp(-((c - 3.25) ** 2 + (r - 5.5) ** 2) / (2 * 1.5**2))
            assert float(maps[0, 0, r, c]) == pytest.approx(want, rel=1e-6)
    assert maps[1].abs().sum() == 0 and maps[2].abs().sum() == 0  # not valid / not finite
    with pytest.raises(ValueError, match="sigma"):
        gaussian_heatmap(pts, (7, 9), sigma=0)


@pytest.mark.parametrize("sigma", [1.0, 2.0, 4.0])
def test_decoding_recovers_a_known_subpixel_peak(sigma):
    torch.manual_seed(0)
    pts = torch.rand(64, 2) * torch.tensor([40.0, 28.0]) + torch.tensor([4.0, 4.0])  # away from the border
    maps = gaussian_heatmap(pts, (36, 48), sigma).double()
    exact = decode_heatmap(maps, "log_quadratic")
    assert (exact - pts).abs().max() < 1e-3  # exact for a Gaussian (float32 rounding only)
    quad = decode_heatmap(maps, "quadratic")
    assert (quad - pts).abs().max() < 0.25 and (quad - pts).abs().mean() < 0.1
    arg = decode_heatmap(maps, "argmax")
    assert (arg - pts).abs().max() <= 0.5 + 1e-6 and torch.equal(arg, arg.round())
    # soft-argmax with a sharp beta leans towards the best pixel on a narrow peak: a training signal,
    # not the decoder of choice
    soft = decode_heatmap(maps, "soft_argmax", beta=50.0)
    assert (soft - pts).abs().max() < {1.0: 0.5, 2.0: 0.3, 4.0: 0.05}[sigma]


def test_log_quadratic_falls_back_where_neighbours_are_not_positive():
    m = torch.zeros(1, 1, 5, 5)
    m[0, 0, 2, 2], m[0, 0, 2, 3], m[0, 0, 2, 1] = 1.0, 0.5, -0.2  # a negative neighbour: raw parabola
    m[0, 0, 1, 2] = m[0, 0, 3, 2] = 0.3
    xy = decode_heatmap(m, "log_quadratic")[0]
    a, b, c = -0.2, 1.0, 0.5
    assert float(xy[0]) == pytest.approx(2 + 0.5 * (a - c) / (a - 2 * b + c), abs=1e-6)
    assert float(xy[1]) == pytest.approx(2.0, abs=1e-6)  # symmetric neighbours: no offset


def test_border_peak_and_flat_map():
    m = torch.zeros(2, 1, 6, 6)
    m[0, 0, 0, 5] = 1.0
    m[0, 0, 1, 5] = 0.5
    xy = decode_heatmap(m, "quadratic")
    assert xy[0, 0] == 5.0  # no right neighbour: no x offset
    assert 0 < float(xy[0, 1]) <= 0.5 or float(xy[0, 1]) == 0.0
    assert torch.isfinite(xy).all()  # all-zero map: argmax 0, offsets 0


def test_soft_argmax_is_differentiable_and_matches_a_naive_sum():
    torch.manual_seed(1)
    h = torch.rand(3, 1, 5, 7, requires_grad=True)
    out = soft_argmax(h, beta=3.0)
    for b in range(3):
        w = torch.softmax(3.0 * h[b, 0].detach().flatten(), 0).view(5, 7)
        xs = sum(float(w[r, c]) * c for r in range(5) for c in range(7))
        ys = sum(float(w[r, c]) * r for r in range(5) for c in range(7))
        assert out[b].tolist() == pytest.approx([xs, ys], abs=1e-5)
    out.sum().backward()
    assert h.grad is not None and h.grad.abs().sum() > 0


def test_bad_inputs():
    with pytest.raises(ValueError, match="method"):
        decode_heatmap(torch.zeros(1, 1, 4, 4), "centroid")
    with pytest.raises(ValueError, match="expected heatmaps"):
        decode_heatmap(torch.zeros(1, 2, 4, 4))
