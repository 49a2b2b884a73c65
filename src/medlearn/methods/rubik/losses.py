"""Rubik's cube pretext losses and accuracies.

Zhuang, Li, Wu, Ma, Zheng: "Self-supervised Feature Learning for 3D Medical Images by Playing a
Rubik's Cube", MICCAI 2019, arXiv:1910.02241 (section 2.3): cross-entropy on the permutation
label plus binary cross-entropy on the two 8-slot rotation vectors; Rubik's Cube+ (Zhu et al.,
MedIA 2020) adds a BCE on the 8-slot mask vector. Reductions and weights follow the
re-implementation (``trainers/rkb_trainer.py`` of ``EndoluminalSurgicalVision-IMR/Medical-SSL``):
mean-reduced full BCE (both classes) per direction, ``L = 0.5 * L_P + 0.5 * (L_hor + L_ver)``;
its RC+ trainer (``rkb_plus_trainer.py``) weights all terms by 1 (``w_order = w_rot = w_mask = 1``).

Inputs are the outputs of :class:`~medlearn.methods.rubik.model.SiameseOctad` (logits) and the
targets of :meth:`~medlearn.methods.rubik.puzzle.RubikPuzzle.batch`.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

__all__ = ["pretext_accuracy", "rubik_loss"]


def rubik_loss(out: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor], w_order: float = 0.5,
               w_rot: float = 0.5, w_mask: float = 1.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``w_order * CE(order) + w_rot * (BCE(hor) + BCE(ver)) [+ w_mask * BCE(mask)]``.

    Args:
        out: ``order (B, K)``, ``hor (B, 8)``, ``ver (B, 8)`` logits, optionally ``mask (B, 8)``;
            the rotation terms are added iff ``out`` has ``hor``/``ver``, the mask term iff it has ``mask``.
        targets: ``order (B,)`` class indices, ``hor``, ``ver`` (and ``mask``) ``(B, 8)`` in {0, 1}.
        w_order: weight of the permutation loss.
        w_rot: weight of the rotation loss (sum of the two directions).
        w_mask: weight of the mask loss.

    Returns:
        The total loss (scalar, differentiable) and the detached parts ``order``, ``hor``, ``ver``,
        ``rot`` (= hor + ver)[, ``mask``] for logging.

    Raises:
        KeyError: ``out`` has a mask head but ``targets`` no ``mask``.
    """
    order = F.cross_entropy(out["order"], targets["order"].long())
    total = w_order * order
    parts = {"order": order}
    if "hor" in out:  # absent in the order-only ablation
        hor = F.binary_cross_entropy_with_logits(out["hor"], targets["hor"].to(out["hor"].dtype))
        ver = F.binary_cross_entropy_with_logits(out["ver"], targets["ver"].to(out["ver"].dtype))
        total = total + w_rot * (hor + ver)
        parts.update(hor=hor, ver=ver, rot=hor + ver)
    if "mask" in out:
        if "mask" not in targets:
            raise KeyError("the model has a mask head but the targets have no 'mask' (build the puzzle with mask=True)")
        mask = F.binary_cross_entropy_with_logits(out["mask"], targets["mask"].to(out["mask"].dtype))
        total = total + w_mask * mask
        parts["mask"] = mask
    return total, {key: value.detach() for key, value in parts.items()}


@torch.no_grad()
def pretext_accuracy(out: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Order accuracy (argmax) and per-slot accuracies of the binary heads at probability 0.5.

    A slot is predicted positive iff ``sigmoid(logit) >= 0.5``, i.e. ``logit >= 0`` (the
    re-implementation's ``pred.ge(0.5)``). Per-slot accuracies are averaged over all ``B * 8`` slots;
    the re-implementation's early-stopping score is ``(order + (hor + ver) / 2) / 2`` of these.

    Returns:
        Scalar tensors ``order_acc``, ``hor_acc``, ``ver_acc``[, ``mask_acc`` if ``out`` has ``mask``].
    """
    acc = {"order_acc": (out["order"].argmax(dim=1) == targets["order"].long()).float().mean()}
    for key in ("hor", "ver", "mask"):
        if key in out:
            acc[f"{key}_acc"] = ((out[key] >= 0) == (targets[key] > 0.5)).float().mean()
    return acc
