"""Batched image augmentation on tensors (runs on the training device).

Self-supervised methods draw two or more random views of every image each step. Doing this on the
batch tensor, on the same device as the model, keeps the data loader a cheap "decode once, cache"
path and makes the views reproducible under ``torch.manual_seed``. Written by hand because
MONAI's and torchvision's random transforms work per sample on the CPU.

Geometric part (one ``affine_grid`` + ``grid_sample`` per batch, per-sample parameters): random
resized crop (area fraction and aspect ratio, as torchvision's ``RandomResizedCrop``), rotation,
horizontal flip. Intensity part: brightness and contrast jitter (``ColorJitter`` semantics on gray
images), normalisation, then Cutout (DeVries & Taylor 2017) holes zeroed after normalisation as in
the C2L code. Hue/saturation/grayscale are no-ops on gray radiographs and are not modelled.

Keypoints follow the geometric part: draw the matrices with :meth:`ViewAugment.affine`, pass them to
``forward(x, theta)`` and move the points with :func:`affine_points`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ViewAugment", "AugmentParams", "affine_points"]


@dataclass
class AugmentParams:
    """Parameters of :class:`ViewAugment` (defaults: the C2L pipeline)."""

    out_size: int = 224
    crop_scale: tuple[float, float] = (0.2, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    rotation: float = 10.0
    hflip: float = 0.5
    brightness: float = 0.4
    contrast: float = 0.4
    cutout_holes: int = 3
    cutout_size: float = 32 / 224
    mean: float = 0.449
    std: float = 0.226


class ViewAugment(nn.Module):
    """Draw one random view per image of a batch ``(B, C, H, W)`` in ``[0, 1]``.

    Args:
        params: an :class:`AugmentParams`; each field can also be given as a keyword.

    Returns (forward):
        ``(B, C, out_size, out_size)``, normalised with ``(x - mean) / std``.

    Examples:
        >>> aug = ViewAugment(out_size=32)
        >>> v = aug(torch.rand(4, 1, 40, 40))
        >>> v.shape
        torch.Size([4, 1, 32, 32])
    """

    def __init__(self, params: AugmentParams | None = None, **kwargs: Any) -> None:
        super().__init__()
        self.p = params or AugmentParams(**kwargs)

    def affine(self, b: int, device: torch.device) -> torch.Tensor:
        """Random ``(B, 2, 3)`` sampling matrices (normalised coordinates) for crop/rotate/flip."""
        p = self.p
        area = torch.empty(b, device=device).uniform_(*p.crop_scale)
        log_r = torch.empty(b, device=device).uniform_(math.log(p.crop_ratio[0]), math.log(p.crop_ratio[1]))
        ratio = torch.exp(log_r)
        sw = torch.sqrt(area * ratio).clamp(max=1.0)  # crop width / image width
        sh = torch.sqrt(area / ratio).clamp(max=1.0)
        cx = (torch.rand(b, device=device) * 2 - 1) * (1 - sw)
        cy = (torch.rand(b, device=device) * 2 - 1) * (1 - sh)
        ang = (torch.rand(b, device=device) * 2 - 1) * math.radians(p.rotation)
        flip = torch.where(torch.rand(b, device=device) < p.hflip, -1.0, 1.0)
        cos, sin = torch.cos(ang), torch.sin(ang)
        theta = torch.zeros(b, 2, 3, device=device)
        theta[:, 0, 0] = sw * cos * flip
        theta[:, 0, 1] = -sh * sin
        theta[:, 1, 0] = sw * sin * flip
        theta[:, 1, 1] = sh * cos
        theta[:, 0, 2] = cx
        theta[:, 1, 2] = cy
        return theta

    def forward(self, x: torch.Tensor, theta: torch.Tensor | None = None) -> torch.Tensor:
        """One view per image; ``theta`` ``(B, 2, 3)``: use these matrices (e.g. to move keypoints along)."""
        p = self.p
        b, c = x.shape[:2]
        x = x.float()
        if theta is None:
            theta = self.affine(b, x.device)
        grid = F.affine_grid(theta, [b, c, p.out_size, p.out_size], align_corners=False)
        v = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        if p.brightness > 0:
            v = v * torch.empty(b, 1, 1, 1, device=x.device).uniform_(1 - p.brightness, 1 + p.brightness)
        if p.contrast > 0:
            m = v.mean(dim=(1, 2, 3), keepdim=True)
            cf = torch.empty(b, 1, 1, 1, device=x.device).uniform_(1 - p.contrast, 1 + p.contrast)
            v = (v - m) * cf + m
        v = ((v.clamp(0, 1) - p.mean) / p.std)
        if p.cutout_holes > 0 and p.cutout_size > 0:
            v = v * self.cutout_mask(b, p.out_size, x.device)
        return v

    def cutout_mask(self, b: int, size: int, device: torch.device) -> torch.Tensor:
        """``(B, 1, S, S)`` mask with ``cutout_holes`` zeroed squares per image (centres uniform)."""
        side = max(1, round(self.p.cutout_size * size))
        yy = torch.arange(size, device=device).view(1, 1, size, 1)
        xx = torch.arange(size, device=device).view(1, 1, 1, size)
        mask = torch.ones(b, 1, size, size, device=device)
        for _ in range(self.p.cutout_holes):
            cy = torch.randint(0, size, (b, 1, 1, 1), device=device)
            cx = torch.randint(0, size, (b, 1, 1, 1), device=device)
            dy = yy - cy + side // 2
            dx = xx - cx + side // 2
            hole = (dy >= 0) & (dy < side) & (dx >= 0) & (dx < side)
            mask = mask * (~hole).float()
        return mask


def affine_points(theta: torch.Tensor, points: torch.Tensor, in_size: tuple[int, int],
                  out_size: tuple[int, int]) -> torch.Tensor:
    """Where ``points (B, 2)`` (pixel ``(x, y)`` of the input) land in ``grid_sample(x, affine_grid(theta))``.

    ``affine_grid(theta)`` maps each output position ``q`` (normalised, ``align_corners=False``) to the
    input position ``A q + t`` it samples; a point of the input therefore lands at ``A^-1 (p - t)``.
    ``in_size`` / ``out_size`` are ``(H, W)``. Points may land outside the output.
    """
    th = theta.double()
    h_in, w_in = in_size
    h_out, w_out = out_size
    p = points.double()
    pn = torch.stack([(2 * p[:, 0] + 1) / w_in - 1, (2 * p[:, 1] + 1) / h_in - 1], dim=1)
    q = torch.linalg.solve(th[:, :, :2], (pn - th[:, :, 2]).unsqueeze(-1)).squeeze(-1)
    return torch.stack([((q[:, 0] + 1) * w_out - 1) / 2, ((q[:, 1] + 1) * h_out - 1) / 2], dim=1).to(points.dtype)


def center_view(x: torch.Tensor, out_size: int, mean: float, std: float) -> torch.Tensor:
    """Deterministic evaluation view: resize to ``out_size`` and normalise."""
    if x.shape[-1] != out_size or x.shape[-2] != out_size:
        x = F.interpolate(x.float(), size=(out_size, out_size), mode="bilinear", align_corners=False, antialias=True)
    return (x.float() - mean) / std
