"""MGAN / TC-MGAN losses: tumour consistency (smoothed Dice), target classification, L1 reconstruction.

Xin et al., ISBI 2020 (arXiv:2005.00925), as the authors' code computes them (``loss.py``,
``utils.py``, ``train_gan.py``):

- :func:`soft_dice_loss`: ``1 - mean_b[(2 sum(p t) + 1) / (sum p + sum t + 1)]`` on probabilities,
  per sample; MONAI's :class:`~monai.losses.DiceLoss` with ``smooth_nr = smooth_dr = 1`` is this
  loss, so it is used. The tumour-consistency loss is this Dice of S(G(x, c), c) against the
  whole-tumour mask.
- :func:`target_classification_loss`: BCE-with-logits of the critic's class head against the
  one-hot target code, summed over classes and samples, divided by the batch size (StarGAN).
- :func:`reconstruction_l1`: the L1 between synthesised and real target, per sample ``"sum"``
  over pixels (official code) or ``"mean"`` (pix2pix), then the batch mean. At 128^2 the two
  differ by 16384x in effective weight: the config says which.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss

__all__ = ["reconstruction_l1", "soft_dice_loss", "target_classification_loss"]

_DICE = DiceLoss(sigmoid=False, smooth_nr=1.0, smooth_dr=1.0, batch=False, reduction="mean")


def soft_dice_loss(prob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Smoothed soft Dice loss per sample, batch mean (float32).

    Args:
        prob: ``(B, 1, H, W)`` probabilities.
        target: ``(B, 1, H, W)`` binary mask.

    Returns:
        A scalar in [0, 1).
    """
    return _DICE(prob.float(), target.float())


def target_classification_loss(logits: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
    """StarGAN's classification loss: ``sum BCE(logits, code) / B``.

    Args:
        logits: ``(B, K)`` class logits.
        code: ``(B, K)`` one-hot target code.
    """
    return F.binary_cross_entropy_with_logits(logits.float(), code.float(), reduction="sum") / logits.shape[0]


def reconstruction_l1(fake: torch.Tensor, real: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Batch mean of the per-sample pixel ``"sum"`` or ``"mean"`` of ``|real - fake|``.

    Raises:
        ValueError: an unknown reduction.
    """
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    d = (real.float() - fake.float()).abs().flatten(1)
    return (d.sum(1) if reduction == "sum" else d.mean(1)).mean()
