"""Contrastive losses with a momentum queue of negatives.

``MomentumQueue`` is the FIFO memory of normalised keys used by MoCo (He et al., CVPR 2020,
arXiv:1911.05722) and C2L (Zhou et al., MICCAI 2020, arXiv:2007.07423). ``info_nce`` is the softmax
form of the contrastive loss (van den Oord et al. 2018) with negatives taken from the queue only;
``NCEQueueLoss`` is the noise-contrastive form of InsDis / CMC (Wu et al. CVPR 2018; Tian et al.
ECCV 2020) with the partition constant frozen at the first batch, which the official C2L command
selects by default.

All three are plain modules/functions with no trainer knowledge: they run in plain PyTorch, in
Lightning and under DDP. Under DDP, :meth:`MomentumQueue.enqueue` gathers the keys of every rank
first, so every rank holds the same queue as a single process that saw the global batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from medlearn.nn.distributed import gather_cat

__all__ = ["MomentumQueue", "info_nce", "InfoNCELoss", "NCEQueueLoss", "contrast_logits"]


class MomentumQueue(nn.Module):
    """FIFO queue of ``size`` keys of dimension ``dim`` (a buffer, saved in checkpoints).

    Args:
        size: number of keys K. Keep K well below the number of training images: otherwise an
            image's own older keys act as negatives (the C2L spec's measured failure mode).
        dim: key dimension.
        init: ``"uniform"`` fills with U(-s, s), s = 1/sqrt(dim/3) and no normalisation, as the
            C2L code does; ``"normal"`` fills with L2-normalised Gaussian vectors (MoCo).
    """

    queue: torch.Tensor
    ptr: torch.Tensor

    def __init__(self, size: int, dim: int, init: str = "uniform") -> None:
        super().__init__()
        if size <= 0 or dim <= 0:
            raise ValueError(f"queue size and dim must be positive, got {size}, {dim}")
        if init == "uniform":
            s = 1.0 / math.sqrt(dim / 3.0)
            q = torch.rand(size, dim) * 2 * s - s
        elif init == "normal":
            q = F.normalize(torch.randn(size, dim), dim=1)
        else:
            raise ValueError(f"init must be 'uniform' or 'normal', got {init!r}")
        self.register_buffer("queue", q)
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @property
    def size(self) -> int:
        """Number of keys the queue holds."""
        return self.queue.shape[0]

    def negatives(self) -> torch.Tensor:
        """A detached copy of the queue ``(K, D)``, safe to keep while the queue is overwritten."""
        return self.queue.detach().clone()

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor, gather: bool = True) -> None:
        """Push ``keys`` ``(B, D)`` (all ranks' keys under DDP when ``gather``), overwriting the oldest."""
        keys = keys.detach().to(self.queue.dtype)
        if gather:
            keys = gather_cat(keys)
        n = keys.shape[0]
        k = self.size
        if n >= k:
            self.queue.copy_(keys[-k:])
            self.ptr.zero_()
            return
        p = int(self.ptr)
        idx = (torch.arange(n, device=self.queue.device) + p) % k
        self.queue[idx] = keys
        self.ptr.fill_((p + n) % k)


def contrast_logits(q: torch.Tensor, k: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    """Similarities ``[q.k, q.n_1 .. q.n_K]`` as ``(B, 1 + K)``; the positive is column 0.

    Args:
        q: queries ``(B, D)``, L2-normalised.
        k: positive keys ``(B, D)``, L2-normalised.
        negatives: ``(K, D)``.
    """
    pos = (q * k).sum(dim=1, keepdim=True)
    neg = q @ negatives.t()
    return torch.cat([pos, neg], dim=1)


def info_nce(q: torch.Tensor, k: torch.Tensor, negatives: torch.Tensor, temperature: float) -> torch.Tensor:
    """Softmax InfoNCE: ``-log(exp(q.k/t) / (exp(q.k/t) + sum_j exp(q.n_j/t)))``, batch mean.

    Args:
        q: ``(B, D)`` normalised queries (carry the gradient).
        k: ``(B, D)`` normalised positive keys (treated as constants by the caller).
        negatives: ``(K, D)`` keys from the queue (no in-batch negatives, as in C2L).
        temperature: softmax temperature.

    Returns:
        Scalar loss.
    """
    logits = contrast_logits(q, k, negatives).float() / temperature
    target = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
    return F.cross_entropy(logits, target)


class InfoNCELoss(nn.Module):
    """Module form of :func:`info_nce`; returns ``(loss, logits)`` so callers can log accuracy."""

    def __init__(self, temperature: float = 0.07) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, q: torch.Tensor, k: torch.Tensor, negatives: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss, logits)`` of normalised queries ``q (B, D)``, positive keys ``k (B, D)``, ``negatives (K, D)``."""
        logits = contrast_logits(q, k, negatives).float() / self.temperature
        target = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
        return F.cross_entropy(logits, target), logits


class NCEQueueLoss(nn.Module):
    """Noise-contrastive estimation with a frozen partition constant (InsDis / CMC form).

    ``P_i = exp(s_i / t) / Z`` with ``Z = mean(exp(s / t)) * n_data`` frozen at the first call;
    with noise ``Pn = 1 / n_data`` and ``m = K`` negatives the loss is
    ``-[log(P_0 / (P_0 + m Pn + eps)) + sum_j log(m Pn / (P_j + m Pn + eps))]`` averaged over the batch.
    Kept for fidelity to the official C2L command; the released code had an undefined ``eps``, here
    ``eps = 1e-7`` as in CMC.

    Args:
        n_data: size of the training set (the noise distribution is uniform over it).
        temperature: t.
    """

    z: torch.Tensor

    def __init__(self, n_data: int, temperature: float = 0.07, eps: float = 1e-7) -> None:
        super().__init__()
        if n_data <= 0:
            raise ValueError(f"n_data must be positive, got {n_data}")
        self.n_data = n_data
        self.temperature = temperature
        self.eps = eps
        self.register_buffer("z", torch.tensor(-1.0))

    def forward(self, q: torch.Tensor, k: torch.Tensor, negatives: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss, logits)`` of the NCE form for ``q (B, D)``, ``k (B, D)``, ``negatives (K, D)`` (normalised)."""
        logits = contrast_logits(q, k, negatives).float() / self.temperature
        e = torch.exp(logits)
        if float(self.z) < 0:
            with torch.no_grad():
                z = e.mean() * self.n_data
                self.z.fill_(float(gather_cat(z.reshape(1)).mean()))
        p = e / self.z
        m = negatives.shape[0]
        pn = 1.0 / self.n_data
        log_pos = torch.log(p[:, 0] / (p[:, 0] + m * pn + self.eps))
        log_neg = torch.log((m * pn) / (p[:, 1:] + m * pn + self.eps)).sum(dim=1)
        return -(log_pos + log_neg).mean(), logits
