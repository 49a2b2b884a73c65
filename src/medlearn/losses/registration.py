"""Deformable registration losses (2D / 3D): LNCC, MSE, smoothness, soft Dice and LT-Net's cycle terms.

Similarity and regularisation follow VoxelMorph (Balakrishnan et al., IEEE TMI 2019; read in
``voxelmorph/torch/losses.py``):

* :func:`lncc`: local normalised cross-correlation in ``w^D`` windows, VoxelMorph's ``NCC``: with
  window sums ``S``, ``n = w^D`` and means ``u = S / n``,
  ``cross = S_IJ - u_J S_I - u_I S_J + u_I u_J n``, ``var_I = S_II - 2 u_I S_I + u_I^2 n`` (the
  centred sums ``sum (I - u_I)(J - u_J)`` and ``sum (I - u_I)^2``), ``cc = cross^2 / (var_I var_J + eps)``
  and ``lncc = mean(cc)`` (in [0, 1]; the loss is ``-lncc``). ``padding="zeros"`` is VoxelMorph's
  (windows at the border reach into zeros and keep ``n = w^D``); ``padding="valid"`` scores only the
  voxels whose whole window is inside the image, which makes it exactly invariant to ``a I + b``.
* :func:`gradient_smoothness`: VoxelMorph's ``Grad``: per spatial axis the mean of squared (``l2``)
  or absolute (``l1``) forward differences of the field, averaged over the axes.

LT-Net's cycle terms (Wang et al., "LT-Net: Label Transfer by Learning Reversible Voxel-wise
Correspondence for One-shot Medical Image Segmentation", CVPR 2020; formulas as written in
``methods/oneshot_seg.md`` section 2.2, the paper's own could not be verified):

* image cycle ``mean |l^ - l|`` (:func:`image_cycle_loss`);
* transformation cycle ``mean_p ||dB(p) + dF(p + dB(p))||^2`` (:func:`transformation_cycle_loss`, with
  :func:`medlearn.nn.registration.compose`);
* anatomy cycle ``1 - mean_c Dice(l^_s[c], l_s[c])`` over foreground structures (:func:`anatomy_cycle_loss`);
* :func:`warmup_ramp` for ramping the cycle weights in (the cycle terms alone pull towards the identity map).

No Lightning, no matplotlib.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medlearn.nn.registration import compose

__all__ = ["lncc", "lncc_loss", "LNCCLoss", "mse", "gradient_smoothness", "soft_dice_loss", "image_cycle_loss",
           "transformation_cycle_loss", "anatomy_cycle_loss", "warmup_ramp"]


def _window(window: int | Sequence[int], nd: int) -> tuple[int, ...]:
    win = (int(window),) * nd if isinstance(window, int) else tuple(int(w) for w in window)
    if len(win) != nd or any(w < 1 or w % 2 == 0 for w in win):
        raise ValueError(f"window must be one odd size or {nd} odd sizes, got {window}")
    return win


def _box_sum(x: torch.Tensor, win: tuple[int, ...], valid: bool) -> torch.Tensor:
    """Sums over ``win`` boxes, per channel, separably (zero padding ``w // 2``, or only full windows)."""
    nd, c = x.ndim - 2, x.shape[1]
    conv = F.conv2d if nd == 2 else F.conv3d
    for axis, w in enumerate(win):
        if w == 1:
            continue
        size = [1] * nd
        size[axis] = w
        pad = [0] * nd
        pad[axis] = 0 if valid else w // 2
        x = conv(x, x.new_ones((c, 1, *size)), padding=tuple(pad), groups=c)
    return x


def lncc(a: torch.Tensor, b: torch.Tensor, window: int | Sequence[int] = 9, eps: float = 1e-5,
         padding: str = "zeros") -> torch.Tensor:
    """Mean squared local correlation of two images (VoxelMorph ``NCC``; the loss is its negative).

    Args:
        a: ``(B, C, *spatial)``, 2D or 3D (each channel is scored separately, then averaged).
        b: same shape.
        window: odd window size, one for all axes or one per axis (VoxelMorph: 9).
        eps: added to ``var_a * var_b`` (VoxelMorph: 1e-5); flat windows score 0.
        padding: ``"zeros"`` (VoxelMorph: every voxel, border windows reach into zeros) or ``"valid"``
            (only voxels whose window lies inside the image).

    Returns:
        A scalar in [0, 1] (1: locally affine-related images everywhere), float32 or the inputs' float dtype.

    Raises:
        ValueError: shapes differ, not 2D / 3D, an even window, or ``"valid"`` with a window larger than the image.
    """
    if a.shape != b.shape or a.ndim not in (4, 5):
        raise ValueError(f"lncc needs two (B, C, H, W) or (B, C, D, H, W) tensors of one shape, got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    if padding not in ("zeros", "valid"):
        raise ValueError(f"padding must be 'zeros' or 'valid', got {padding!r}")
    win = _window(window, a.ndim - 2)
    valid = padding == "valid"
    if valid and any(w > s for w, s in zip(win, a.shape[2:])):
        raise ValueError(f"window {win} is larger than the image {tuple(a.shape[2:])} (padding='valid')")
    dtype = a.dtype if a.is_floating_point() and a.dtype != torch.float16 and a.dtype != torch.bfloat16 \
        else torch.float32
    i, j = a.to(dtype), b.to(dtype)
    n = float(math.prod(win))
    s_i, s_j = _box_sum(i, win, valid), _box_sum(j, win, valid)
    s_ii, s_jj, s_ij = _box_sum(i * i, win, valid), _box_sum(j * j, win, valid), _box_sum(i * j, win, valid)
    u_i, u_j = s_i / n, s_j / n
    cross = s_ij - u_j * s_i - u_i * s_j + u_i * u_j * n
    var_i = s_ii - 2 * u_i * s_i + u_i * u_i * n
    var_j = s_jj - 2 * u_j * s_j + u_j * u_j * n
    return (cross * cross / (var_i * var_j + eps)).mean()


def lncc_loss(a: torch.Tensor, b: torch.Tensor, window: int | Sequence[int] = 9, eps: float = 1e-5,
              padding: str = "zeros") -> torch.Tensor:
    """``-lncc(a, b)`` (VoxelMorph's NCC loss, in [-1, 0]); arguments of :func:`lncc`."""
    return -lncc(a, b, window, eps, padding)


class LNCCLoss(nn.Module):
    """:func:`lncc_loss` with its settings.

    Args:
        window: odd window size (one, or one per axis).
        eps: stabiliser of the denominator.
        padding: ``"zeros"`` (VoxelMorph) or ``"valid"``.

    Examples:
        >>> x = torch.rand(1, 1, 16, 16)
        >>> round(float(LNCCLoss(window=5)(x, 2 * x)), 3)
        -1.0
    """

    def __init__(self, window: int | Sequence[int] = 9, eps: float = 1e-5, padding: str = "zeros") -> None:
        super().__init__()
        self.window = window if isinstance(window, int) else tuple(int(w) for w in window)
        self.eps, self.padding = float(eps), padding

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``-lncc(a, b)``."""
        return lncc_loss(a, b, self.window, self.eps, self.padding)


def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared difference (VoxelMorph ``MSE``).

    Raises:
        ValueError: shapes differ.
    """
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} and {tuple(b.shape)}")
    return ((a - b) ** 2).mean()


def gradient_smoothness(ddf: torch.Tensor, penalty: str = "l2", loss_mult: float = 1.0) -> torch.Tensor:
    """VoxelMorph's ``Grad``: mean over spatial axes of the mean squared (or absolute) forward difference.

    Args:
        ddf: ``(B, D, *spatial)`` field (any channel count; every channel is differenced along every axis).
        penalty: ``"l2"`` (squares) or ``"l1"`` (absolute values).
        loss_mult: multiplies the result (VoxelMorph passes ``int_downsize`` with integration).

    Returns:
        A scalar; 0 for a constant field.
    """
    if penalty not in ("l1", "l2"):
        raise ValueError(f"penalty must be 'l1' or 'l2', got {penalty!r}")
    nd = ddf.ndim - 2
    if nd < 1:
        raise ValueError(f"ddf must be (B, D, *spatial), got {tuple(ddf.shape)}")
    terms = []
    for axis in range(2, ddf.ndim):
        d = ddf.diff(dim=axis)
        terms.append((d * d if penalty == "l2" else d.abs()).mean())
    return loss_mult * torch.stack(terms).mean()


def soft_dice_loss(a: torch.Tensor, b: torch.Tensor, include_background: bool = False,
                   eps: float = 1e-5) -> torch.Tensor:
    """``1 - mean_{b, c} 2 sum(a b) / (sum a + sum b + eps)`` of one-hot / probability maps.

    The Dice of every sample and channel is taken over the spatial axes, then averaged (a channel
    empty in both maps scores Dice 0, so keep absent structures out of the channels).

    Args:
        a: ``(B, C, *spatial)`` maps in [0, 1] (channel 0 the background).
        b: same shape.
        include_background: also score channel 0.
        eps: added to the denominator.

    Returns:
        A scalar in [0, 1]; ~0 (``eps / (2 sum a)``) for identical maps.

    Raises:
        ValueError: shapes differ, or no channel is left to score.
    """
    if a.shape != b.shape or a.ndim < 3:
        raise ValueError(f"soft_dice_loss needs two (B, C, *spatial) maps of one shape, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    if not include_background:
        if a.shape[1] < 2:
            raise ValueError("without the background there is no channel to score (C = 1)")
        a, b = a[:, 1:], b[:, 1:]
    axes = tuple(range(2, a.ndim))
    dice = 2 * (a * b).sum(dim=axes) / (a.sum(dim=axes) + b.sum(dim=axes) + eps)
    return 1 - dice.mean()


def image_cycle_loss(reconstructed: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """LT-Net's image cycle: ``mean |reconstructed - original|`` (L1).

    Raises:
        ValueError: shapes differ.
    """
    if reconstructed.shape != original.shape:
        raise ValueError(f"shapes differ: {tuple(reconstructed.shape)} and {tuple(original.shape)}")
    return (reconstructed - original).abs().mean()


def transformation_cycle_loss(forward_ddf: torch.Tensor, backward_ddf: torch.Tensor) -> torch.Tensor:
    """LT-Net's transformation cycle: ``mean_p ||dB(p) + dF(p + dB(p))||^2``.

    ``compose(dF, dB)`` (:func:`medlearn.nn.registration.compose`, border padding): the displacement of
    the reconstructed atlas ``warp(warp(l, dF), dB)``, zero when ``dB`` inverts ``dF``. The squared norm
    is summed over the field's channels and averaged over the batch and the voxels.

    Args:
        forward_ddf: ``dF`` ``(B, D, *spatial)``, atlas -> subject.
        backward_ddf: ``dB`` of the same shape, warped atlas -> atlas.

    Returns:
        A scalar, in squared voxels.
    """
    c = compose(forward_ddf, backward_ddf)
    return (c * c).sum(dim=1).mean()


def anatomy_cycle_loss(reconstructed_labels: torch.Tensor, atlas_labels: torch.Tensor,
                       include_background: bool = False, eps: float = 1e-5) -> torch.Tensor:
    """LT-Net's anatomy cycle: :func:`soft_dice_loss` between the reconstructed and the original one-hot atlas labels.

    Args:
        reconstructed_labels: ``warp(warp(onehot(l_s), dF), dB)`` ``(B, C, *spatial)`` (linear interpolation).
        atlas_labels: ``onehot(l_s)``, same shape.
        include_background: also score channel 0 (LT-Net: foreground structures only).
        eps: added to the Dice denominator.
    """
    return soft_dice_loss(reconstructed_labels, atlas_labels, include_background, eps)


def warmup_ramp(step: float, start: float, end: float) -> float:
    """Linear ramp: 0 up to ``start``, 1 from ``end``, ``(step - start) / (end - start)`` in between.

    ``end <= start`` is a step from 0 to 1 at ``start``.

    Examples:
        >>> [warmup_ramp(s, 300, 600) for s in (0, 300, 450, 600, 900)]
        [0.0, 0.0, 0.5, 1.0, 1.0]
    """
    if end <= start:
        return 1.0 if step >= start else 0.0
    return float(min(max((step - start) / (end - start), 0.0), 1.0))
