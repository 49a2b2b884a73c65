"""The losses and selection rules of the cross-denoising network, as pure functions.

Zhang, Liu, Ma, Zhuo, Zheng, "Cross-denoising Network against Corrupted Labels in Medical Image
Segmentation with Domain Shift", IJCAI-PRICAI 2020, arXiv:2006.10990. The abstract states the
three parts; their exact formulas are not public (no official code), so each is the reading of
``methods/cross_denoise.md`` section 2.3, with the alternatives the spec names as options:

* **Peer review (cross sample selection).** Each network ranks the images of a batch by its own
  supervised loss ``l = CE (pixel mean) + Dice loss``; network A is updated on the
  ``keep(t) = round(n (1 - tau(t)))`` images with the smallest loss *under network B*, and vice
  versa, with ``tau(t) = tau_max * min(1, t / T_k)`` (the forget-rate ramp of Co-teaching, Han et
  al., NeurIPS 2018): :func:`tau_schedule`, :func:`keep_count`, :func:`small_loss_indices`. The
  pixel-level variant keeps, per image, the ``1 - tau(t)`` fraction of pixels with the smallest
  peer cross-entropy (:func:`pixel_keep_mask`).
* **Noise-tolerant loss.** ``L_nt = Dice loss + (1 / |M|) sum_{i in M} w_i CE_i``
  (:func:`noise_tolerant_loss`): the cross-entropy is averaged over the pixels ``M`` that are not
  flagged as a label / prediction discrepancy: the top ``q`` fraction of the image's own
  per-pixel cross-entropy (:func:`truncation_keep_mask`), and / or pixels where the peer predicts
  another class than the label with confidence above ``delta`` (:func:`peer_agreement_mask`).
  Optional "key-location" weights ``w_i = 1 - exp(-d_i^2 / (2 sigma^2))`` trust pixels far from
  the label's boundaries (:func:`boundary_weights`).
* **Class-imbalanced cross learning.** On a target batch, for each class ``c`` separately, the
  ``p_c`` most confident of the pixels a network predicts as ``c`` become pseudo-labels, the rest
  are ignored (the class-balanced selection of CBST, Zou et al., ECCV 2018, per batch):
  :func:`class_balanced_pseudo_labels`; each network's pseudo-labels supervise the other
  (:func:`pseudo_label_loss`).

Tensors: logits ``(B, C, H, W)``; targets ``(B, H, W)`` int64 class indices, ``-1`` = ignored.
No Lightning here; every function is checked against a naive reference in the tests.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["IGNORE", "soft_dice_loss", "per_image_loss", "tau_schedule", "keep_count", "small_loss_indices",
           "pixel_keep_mask", "truncation_keep_mask", "peer_agreement_mask", "boundary_weights",
           "noise_tolerant_loss", "class_balanced_pseudo_labels", "pseudo_label_loss", "ramp"]

#: Target value of an ignored pixel.
IGNORE = -1


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None,
                   eps: float = 1e-5) -> torch.Tensor:
    """Per-image soft Dice loss over the foreground classes.

    ``1 - mean_{c >= 1} (2 sum p y + eps) / (sum p + sum y + eps)`` with ``p`` the softmax.

    Args:
        logits: ``(B, C, H, W)``.
        target: ``(B, H, W)`` class indices (``-1`` pixels are left out, as pixels outside ``mask``).
        mask: ``(B, H, W)`` bool, the pixels that count (``None``: all labelled pixels).
        eps: smoothing.

    Returns:
        ``(B,)``.
    """
    c = logits.shape[1]
    probs = logits.float().softmax(1)
    valid = target >= 0 if mask is None else mask & (target >= 0)
    onehot = F.one_hot(target.clamp(min=0), c).permute(0, 3, 1, 2).float()
    w = valid[:, None].float()
    inter = (probs * onehot * w).sum((2, 3))[:, 1:]
    denom = (probs * w).sum((2, 3))[:, 1:] + (onehot * w).sum((2, 3))[:, 1:]
    return 1.0 - ((2.0 * inter + eps) / (denom + eps)).mean(1)


def _pixel_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), target.clamp(min=0), reduction="none")


def _masked_mean(values: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Per-image mean of ``values`` over ``mask`` (optionally weighted); 0 for an image with no pixel."""
    w = mask.float() if weights is None else mask.float() * weights
    return (values * w).sum((1, 2)) / w.sum((1, 2)).clamp(min=1e-8)


def per_image_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The ranking (and plain training) loss per image: pixel-mean cross-entropy + soft Dice loss.

    Returns:
        ``(B,)``.
    """
    return _masked_mean(_pixel_ce(logits, target), target >= 0) + soft_dice_loss(logits, target)


def tau_schedule(epoch: float, tau_max: float, t_k: float) -> float:
    """Forget rate ``tau(t) = tau_max * min(1, t / T_k)`` (``T_k <= 0``: ``tau_max`` from the start).

    Examples:
        >>> [tau_schedule(t, 0.25, 10) for t in (0, 5, 10, 30)]
        [0.0, 0.125, 0.25, 0.25]
    """
    if t_k <= 0:
        return float(tau_max)
    return float(tau_max) * min(1.0, max(0.0, float(epoch)) / float(t_k))


def ramp(epoch: float, start: float, end: float, lo: float, hi: float) -> float:
    """Linear ramp from ``lo`` at ``start`` to ``hi`` at ``end`` (held after; ``lo`` before).

    Examples:
        >>> [ramp(t, 10, 20, 0.2, 0.5) for t in (5, 10, 15, 25)]
        [0.2, 0.2, 0.35, 0.5]
    """
    if end <= start:
        return float(hi) if epoch >= start else float(lo)
    f = min(1.0, max(0.0, (float(epoch) - start) / (end - start)))
    return float(lo) + (float(hi) - float(lo)) * f


def keep_count(n: int, tau: float) -> int:
    """Images kept of a batch of ``n``: ``round(n (1 - tau))``, at least 1."""
    return max(1, min(n, int(round(n * (1.0 - float(tau))))))


def small_loss_indices(losses: torch.Tensor, keep: int) -> torch.Tensor:
    """Indices of the ``keep`` smallest values of ``losses (B,)`` (the small-loss set), smallest first.

    Ties go to the lower index (a stable sort), so the choice is deterministic.
    """
    order = torch.sort(losses.detach(), stable=True).indices
    return order[:keep]


def pixel_keep_mask(peer_pixel_loss: torch.Tensor, tau: float, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Per image, the ``1 - tau`` fraction of (valid) pixels with the smallest peer loss (pixel-level selection).

    Args:
        peer_pixel_loss: ``(B, H, W)`` the peer's per-pixel loss.
        tau: the forget rate.
        valid: ``(B, H, W)`` bool pixels that may be kept (``None``: all).

    Returns:
        ``(B, H, W)`` bool; per image ``keep_count(n_valid, tau)`` pixels (ties: lower flat index).
    """
    b = peer_pixel_loss.shape[0]
    flat = peer_pixel_loss.detach().reshape(b, -1).float()
    ok = torch.ones_like(flat, dtype=torch.bool) if valid is None else valid.reshape(b, -1)
    keep = torch.zeros_like(ok)
    for i in range(b):
        idx = torch.nonzero(ok[i]).squeeze(1)
        if idx.numel() == 0:
            continue
        k = keep_count(int(idx.numel()), tau)
        order = torch.sort(flat[i, idx], stable=True).indices[:k]
        keep[i, idx[order]] = True
    return keep.reshape(peer_pixel_loss.shape)


def truncation_keep_mask(pixel_loss: torch.Tensor, q: float, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Per image, every (valid) pixel except the top ``q`` fraction by loss (the label-free discrepancy filter).

    ``floor(q * n)`` pixels are flagged per image (ties: the higher flat index is flagged first).
    """
    b = pixel_loss.shape[0]
    flat = pixel_loss.detach().reshape(b, -1).float()
    ok = torch.ones_like(flat, dtype=torch.bool) if valid is None else valid.reshape(b, -1)
    keep = ok.clone()
    for i in range(b):
        idx = torch.nonzero(ok[i]).squeeze(1)
        n_flag = int(np.floor(float(q) * idx.numel()))
        if n_flag <= 0:
            continue
        order = torch.sort(flat[i, idx], stable=True).indices
        keep[i, idx[order[-n_flag:]]] = False
    return keep.reshape(pixel_loss.shape)


def peer_agreement_mask(peer_logits: torch.Tensor, target: torch.Tensor, delta: float) -> torch.Tensor:
    """Pixels *not* flagged by the peer: flagged = the peer predicts a class other than the label with
    confidence above ``delta``.

    Returns:
        ``(B, H, W)`` bool (ignored pixels are False).
    """
    p = peer_logits.detach().float().softmax(1)
    conf, pred = p.max(1)
    flagged = (pred != target) & (conf > float(delta))
    return (target >= 0) & ~flagged


def boundary_weights(target: torch.Tensor, sigma: float) -> torch.Tensor:
    """Key-location weights ``w = 1 - exp(-d^2 / (2 sigma^2))``, ``d`` = distance to the nearest label boundary.

    A pixel's ``d`` is its Euclidean distance (SciPy ``distance_transform_edt``) to the nearest
    pixel of another class; the weight is ~0 on a boundary and ~1 deep inside a region.

    Args:
        target: ``(B, H, W)`` class indices.
        sigma: width of the down-weighted band, in pixels.

    Returns:
        ``(B, H, W)`` float32 on ``target``'s device.
    """
    from scipy.ndimage import distance_transform_edt

    t = target.detach().cpu().numpy()
    out = np.empty(t.shape, dtype=np.float32)
    for i in range(t.shape[0]):
        d = np.full(t.shape[1:], np.inf)
        for c in np.unique(t[i]):
            region = t[i] == c
            if region.all():
                continue
            d = np.where(region, np.minimum(d, distance_transform_edt(region)), d)
        d = np.where(np.isinf(d), 1e6, d)
        out[i] = 1.0 - np.exp(-(d ** 2) / (2.0 * float(sigma) ** 2))
    return torch.from_numpy(out).to(target.device)


def noise_tolerant_loss(logits: torch.Tensor, target: torch.Tensor, keep: torch.Tensor,
                        weights: torch.Tensor | None = None) -> torch.Tensor:
    """``L_nt`` per image: soft Dice loss (all labelled pixels) + cross-entropy averaged over ``keep`` pixels.

    Args:
        logits: ``(B, C, H, W)``.
        target: ``(B, H, W)``.
        keep: ``(B, H, W)`` bool, the pixels the cross-entropy is averaged over (``M``).
        weights: optional ``(B, H, W)`` key-location weights of the cross-entropy.

    Returns:
        ``(B,)``.
    """
    ce = _masked_mean(_pixel_ce(logits, target), keep & (target >= 0), weights)
    return soft_dice_loss(logits, target) + ce


def class_balanced_pseudo_labels(probs: torch.Tensor, p: float | Sequence[float],
                                 classes: Sequence[int] | None = None) -> torch.Tensor:
    """Class-balanced pseudo-labels: per predicted class, its ``p_c`` most confident pixels of the batch.

    For each class ``c``, among the pixels whose argmax is ``c``, the ``round(p_c * n_c)`` (at
    least 1 when ``n_c > 0`` and ``p_c > 0``) with the highest confidence keep the label ``c``;
    every other pixel is :data:`IGNORE`. Ties: the lower flat index first.

    Args:
        probs: ``(B, C, H, W)`` class probabilities (detached; computed without gradient).
        p: the kept fraction, one for all classes or one per class.
        classes: the classes that may be pseudo-labelled (``None``: all).

    Returns:
        ``(B, H, W)`` int64 labels, :data:`IGNORE` where none.
    """
    pr = probs.detach().float()
    c = pr.shape[1]
    ps = [float(p)] * c if isinstance(p, (int, float)) else [float(v) for v in p]
    if len(ps) != c:
        raise ValueError(f"p has {len(ps)} values for {c} classes")
    conf, pred = pr.max(1)
    flat_conf, flat_pred = conf.reshape(-1), pred.reshape(-1)
    out = torch.full_like(flat_pred, IGNORE)
    for k in range(c) if classes is None else classes:
        idx = torch.nonzero(flat_pred == k).squeeze(1)
        n = int(idx.numel())
        if n == 0 or ps[k] <= 0:
            continue
        m = max(1, min(n, int(round(ps[k] * n))))
        order = torch.sort(-flat_conf[idx], stable=True).indices[:m]
        out[idx[order]] = k
    return out.reshape(pred.shape)


def pseudo_label_loss(logits: torch.Tensor, pseudo: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against pseudo-labels, ignored pixels left out; 0 when every pixel is ignored."""
    if not bool((pseudo >= 0).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), pseudo, ignore_index=IGNORE)
