"""Keypoint losses: heatmap MSE and the keypoint registration loss (intensity + location).

The keypoint registration loss is named in Yuan, Bian et al., "Identification of primary
angle-closure on AS-OCT images with Convolutional Neural Networks", arXiv:1910.10414 (AGE challenge,
MICCAI 2019), whose abstract says it constrains the model's attention to "the intensity and location
of the scleral spur area". **The exact published definition could not be verified** (the full text
was not reachable); this is medlearn's implementable reading of it (``methods/asoct.md`` section 2.3):

- intensity: ``L_int = mean_p w(p) (H^(p) - H(p))^2`` with the Gaussian target ``H`` and an optional
  foreground weight ``w(p) = 1 + alpha H(p)`` (``alpha = 0``: plain heatmap MSE);
- location: ``s^ = soft-argmax(beta H^)`` (differentiable) and ``L_loc = ||s^ - s||_2 / D``, ``D`` the
  diagonal of the map, so that it is scale-free;
- ``L_KR = L_int + lambda_loc * L_loc``. Soft-argmax is noisy at initialisation: the module warms up
  with ``L_int`` only (``loc_scale`` argument).

Samples whose keypoint is absent (the AGE ``-1`` spurs) are left out of both terms. Written by hand
(no library has it); the soft-argmax is :func:`medlearn.nn.heatmaps.soft_argmax`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from medlearn.nn.heatmaps import gaussian_heatmap, soft_argmax

__all__ = ["KeypointRegistrationLoss", "heatmap_mse", "keypoint_registration"]


def _valid_rows(points: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    ok = torch.isfinite(points).all(dim=1)
    return ok if valid is None else ok & valid.to(ok.device).bool()


def heatmap_mse(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None,
                fg_weight: float = 0.0) -> torch.Tensor:
    """``mean (1 + fg_weight * target) * (pred - target)^2`` over the valid samples' pixels.

    Args:
        pred: predicted maps ``(B, 1, H, W)`` (no activation).
        target: Gaussian targets of the same shape.
        valid: ``(B,)`` bool, samples to include (default all).
        fg_weight: ``alpha`` of the foreground weighting (0: plain MSE).

    Returns:
        A scalar; 0 (still attached to ``pred``) when no sample is valid.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    ok = torch.ones(pred.shape[0], dtype=torch.bool, device=pred.device) if valid is None else valid.bool()
    if not bool(ok.any()):
        return pred.sum() * 0.0
    p, t = pred[ok].float(), target[ok].float()
    return ((1.0 + fg_weight * t) * (p - t) ** 2).mean()


def keypoint_registration(pred: torch.Tensor, points: torch.Tensor, sigma: float, beta: float = 20.0,
                          lambda_loc: float = 1.0, fg_weight: float = 0.0, valid: torch.Tensor | None = None,
                          loc_scale: float = 1.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The keypoint registration loss ``L_int + loc_scale * lambda_loc * L_loc`` (see the module docstring).

    Args:
        pred: predicted maps ``(B, 1, H, W)`` (no activation; the target peaks at 1).
        points: keypoints ``(B, 2)`` = ``(x, y)`` in map pixels; rows with NaN are absent.
        sigma: target Gaussian's standard deviation in map pixels.
        beta: soft-argmax sharpness.
        lambda_loc: weight of the location term (1 with the diagonal-normalised distance).
        fg_weight: foreground weight ``alpha`` of the intensity term.
        valid: ``(B,)`` bool, samples to include (ANDed with finite points).
        loc_scale: multiplies the location term (0 during warm-up).

    Returns:
        ``(loss, parts)``; ``parts`` holds detached ``int``, ``loc`` (normalised distance) and
        ``loc_px`` (mean soft-argmax distance in map pixels). 0 (attached) when no sample is valid.
    """
    ok = _valid_rows(points, valid)
    target = gaussian_heatmap(points, pred.shape[2:], sigma, valid=ok).to(pred.dtype)
    l_int = heatmap_mse(pred, target, ok, fg_weight)
    zero = pred.sum() * 0.0
    if not bool(ok.any()):
        return zero, {"int": zero.detach(), "loc": zero.detach(), "loc_px": zero.detach()}
    h, w = pred.shape[2:]
    dist = torch.linalg.vector_norm(soft_argmax(pred[ok], beta) - points[ok].float(), dim=1)
    l_loc = dist.mean() / math.hypot(h, w)
    total = l_int + (loc_scale * lambda_loc) * l_loc if loc_scale * lambda_loc != 0 else l_int
    return total, {"int": l_int.detach(), "loc": l_loc.detach(), "loc_px": dist.mean().detach()}


class KeypointRegistrationLoss(nn.Module):
    """:func:`keypoint_registration` with its settings; ``lambda_loc = 0`` is the plain heatmap MSE.

    Args:
        sigma: target Gaussian's standard deviation in map pixels.
        beta: soft-argmax sharpness.
        lambda_loc: weight of the location term.
        fg_weight: foreground weight of the intensity term.

    Examples:
        >>> loss = KeypointRegistrationLoss(sigma=2.0)
        >>> pred = torch.zeros(2, 1, 16, 16, requires_grad=True)
        >>> value, parts = loss(pred, torch.tensor([[4.0, 5.0], [float("nan")] * 2]))
        >>> value.backward(); sorted(parts)
        ['int', 'loc', 'loc_px']
    """

    def __init__(self, sigma: float = 2.0, beta: float = 20.0, lambda_loc: float = 1.0, fg_weight: float = 0.0) -> None:
        super().__init__()
        self.sigma, self.beta, self.lambda_loc, self.fg_weight = float(sigma), float(beta), float(lambda_loc), \
            float(fg_weight)

    def forward(self, pred: torch.Tensor, points: torch.Tensor, valid: torch.Tensor | None = None,
                loc_scale: float = 1.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(loss, parts)`` of heatmaps ``pred (B, 1, H, W)`` vs ``points (B, 2)`` (:func:`keypoint_registration`)."""
        return keypoint_registration(pred, points, self.sigma, self.beta, self.lambda_loc, self.fg_weight, valid,
                                     loc_scale)
