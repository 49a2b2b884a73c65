"""Keypoint heatmaps: Gaussian targets, soft-argmax, and sub-pixel decoding.

A heatmap localiser (Tompson et al., "Joint Training of a Convolutional Network and a Graphical
Model for Human Pose Estimation", NeurIPS 2014; Newell et al., "Stacked Hourglass Networks", ECCV
2016; in AS-OCT: the AGE baselines and Yuan et al., arXiv:1910.10414) regresses, for each keypoint, a
map whose target is a Gaussian bump ``H(p) = exp(-||p - s||^2 / (2 sigma^2))`` centred on the point
``s``, and reads the point back from the predicted map.

Decoding (:func:`decode_heatmap`):

- ``"argmax"``: the best pixel (integer precision);
- ``"quadratic"``: argmax, then a parabola through the best pixel and its two neighbours along each
  axis (offset ``(a - c) / (2 (a - 2b + c))``), at most half a pixel;
- ``"log_quadratic"``: the same parabola fitted to the *logarithm* of the map, which is exact for a
  Gaussian (its log is a parabola; the 2D isotropic Gaussian separates into the two axes). This is the
  1D form of DARK's Taylor expansion (Zhang et al., "Distribution-Aware Coordinate Representation for
  Human Pose Estimation", CVPR 2020). Where a neighbour is not positive it falls back to
  ``"quadratic"``; at the border the offset along that axis is 0;
- ``"soft_argmax"``: the expectation of the pixel coordinates under ``softmax(beta * H)`` (Luvizon et
  al., "Human Pose Regression by Combining Indirect Part Detection and Contextual Information", 2017),
  differentiable, used by the keypoint registration loss.

Coordinates are ``(x, y)`` = (column, row) with pixel centres at integers, as in
:mod:`medlearn.data.image_view`. Written by hand: MONAI has no keypoint heatmap utilities.

Examples:
    >>> import torch
    >>> h = gaussian_heatmap(torch.tensor([[10.3, 7.8]]), (16, 24), sigma=2.0)
    >>> [round(v, 4) for v in decode_heatmap(h, "log_quadratic")[0].tolist()]
    [10.3, 7.8]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["DECODERS", "decode_heatmap", "gaussian_heatmap", "soft_argmax"]

#: Names accepted by :func:`decode_heatmap`.
DECODERS: tuple[str, ...] = ("argmax", "quadratic", "log_quadratic", "soft_argmax")


def gaussian_heatmap(points: torch.Tensor, size: Sequence[int], sigma: float,
                     valid: torch.Tensor | None = None) -> torch.Tensor:
    """Gaussian target maps ``(B, 1, H, W)`` peaking (value 1) at ``points (B, 2)`` = ``(x, y)``.

    Args:
        points: keypoints in pixel coordinates of the map (sub-pixel allowed).
        size: ``(H, W)`` of the map.
        sigma: standard deviation in map pixels.
        valid: ``(B,)`` bool; rows that are False (or whose point is not finite) get an all-zero map.
    """
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    h, w = int(size[0]), int(size[1])
    p = points.float()
    ok = torch.isfinite(p).all(dim=1)
    if valid is not None:
        ok = ok & valid.to(ok.device).bool()
    p = torch.where(ok[:, None], p, torch.zeros_like(p))
    xs = torch.arange(w, device=p.device, dtype=p.dtype)
    ys = torch.arange(h, device=p.device, dtype=p.dtype)
    gx = torch.exp(-((xs[None, :] - p[:, :1]) ** 2) / (2.0 * sigma**2))  # (B, W)
    gy = torch.exp(-((ys[None, :] - p[:, 1:]) ** 2) / (2.0 * sigma**2))  # (B, H)
    maps = gy[:, :, None] * gx[:, None, :]
    return (maps * ok[:, None, None].to(maps.dtype))[:, None]


def _grids(h: int, w: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    ys, xs = torch.meshgrid(torch.arange(h, device=like.device, dtype=like.dtype),
                            torch.arange(w, device=like.device, dtype=like.dtype), indexing="ij")
    return xs.reshape(-1), ys.reshape(-1)


def soft_argmax(heatmap: torch.Tensor, beta: float = 20.0) -> torch.Tensor:
    """Expected ``(x, y)`` under ``softmax(beta * heatmap)`` over the pixels: ``(B, 1, H, W) -> (B, 2)``.

    ``beta`` sharpens the distribution: on a map scaled to [0, 1], 10-50 keeps the background's mass
    small (softmax is invariant to adding a constant, so no minimum needs subtracting).
    """
    b, _, h, w = heatmap.shape
    prob = torch.softmax(beta * heatmap.float().reshape(b, -1), dim=1)
    xs, ys = _grids(h, w, prob)
    return torch.stack([(prob * xs).sum(1), (prob * ys).sum(1)], dim=1)


def _axis_offset(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, log: bool) -> torch.Tensor:
    """Parabola vertex offset through (-1, a), (0, b), (1, c), clamped to [-0.5, 0.5]; 0 when flat."""
    if log:
        positive = (a > 0) & (b > 0) & (c > 0)
        la, lb, lc = (torch.log(torch.where(positive, v, torch.ones_like(v))) for v in (a, b, c))
        return torch.where(positive, _axis_offset(la, lb, lc, False), _axis_offset(a, b, c, False))
    den = a - 2.0 * b + c
    curved = den < 0
    off = 0.5 * (a - c) / torch.where(curved, den, -torch.ones_like(den))
    return torch.where(curved, off, torch.zeros_like(off)).clamp(-0.5, 0.5)


def decode_heatmap(heatmap: torch.Tensor, method: str = "log_quadratic", beta: float = 20.0) -> torch.Tensor:
    """Keypoint ``(x, y)`` of each map: ``(B, 1, H, W) -> (B, 2)`` float32 (see the module docstring).

    Args:
        heatmap: predicted maps, one channel.
        method: one of :data:`DECODERS`.
        beta: sharpness of ``"soft_argmax"``.

    Raises:
        ValueError: an unknown method or a map that is not ``(B, 1, H, W)``.
    """
    if method not in DECODERS:
        raise ValueError(f"method must be one of {DECODERS}, got {method!r}")
    if heatmap.ndim != 4 or heatmap.shape[1] != 1:
        raise ValueError(f"expected heatmaps (B, 1, H, W), got {tuple(heatmap.shape)}")
    hm = heatmap.detach().float()
    if method == "soft_argmax":
        return soft_argmax(hm, beta)
    b, _, h, w = hm.shape
    flat = hm.reshape(b, -1)
    idx = flat.argmax(dim=1)
    row, col = torch.div(idx, w, rounding_mode="floor"), idx % w
    xy = torch.stack([col, row], dim=1).float()
    if method == "argmax":
        return xy
    m = hm[:, 0]
    ar = torch.arange(b, device=hm.device)
    centre = m[ar, row, col]
    left = m[ar, row, (col - 1).clamp(min=0)]
    right = m[ar, row, (col + 1).clamp(max=w - 1)]
    up = m[ar, (row - 1).clamp(min=0), col]
    down = m[ar, (row + 1).clamp(max=h - 1), col]
    log = method == "log_quadratic"
    dx = torch.where((col > 0) & (col < w - 1), _axis_offset(left, centre, right, log), torch.zeros_like(centre))
    dy = torch.where((row > 0) & (row < h - 1), _axis_offset(up, centre, down, log), torch.zeros_like(centre))
    return xy + torch.stack([dx, dy], dim=1)
