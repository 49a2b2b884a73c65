"""The crossover loss: cross-entropy + consistency on the overlap - diversity on the non-overlap.

Crossover-Net (Yu et al., arXiv:2004.01397, 2020) asks the two branches to agree where their strips
overlap and to differ on the arms that do not: ``L = CE + lambda_con * L_con - lambda_div * L_div``,
with the terms computed on the branches' profiles ``P_v, P_h`` of shape ``(B, P, T)`` (channels x
positions along the strip) at the overlap positions ``O`` and the non-overlap positions ``N``.

Two readings (``mode``), both here, plus ``"none"`` (cross-entropy only, the no-extra-loss ablation):

- ``"code"``: the official implementation (``modules/CrossLoss.py`` + ``train_vh.py`` of
  github.com/Qianyu1226/Crossover-Net): ``d_O[c, t] = sqrt(sum_b (P_v - P_h)^2)`` for ``t`` in ``O``
  (the norm runs over the *batch* axis, as the code writes it), min-max normalised over its entries
  and averaged; the same for ``N``; ``lambda_con = lambda_div = 1``. The normalisation keeps the
  maximised term bounded. (The official training script also scrambles samples and positions when it
  flattens the profiles, ``view(-1, batch)`` then ``.t().view(batch, 64, 19)``; that is not copied:
  profiles here are the branches' real ones.)
- ``"capped"``: the per-sample reading of the paper's description: ``d(b, t) = ||P_v[b, :, t] -
  P_h[b, :, t]||_2``, ``L_con`` its mean over ``b`` and ``t`` in ``O``, ``L_div`` over ``N``, and
  ``L = CE + lambda_con L_con - lambda_div min(L_div, cap)``: the cap keeps the maximised distance
  from running away (the spec's pilot values: 0.1, 0.05, cap 5).

Written by hand (no library has it). Pure PyTorch: no Lightning.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LOSS_MODES", "MODE_DEFAULTS", "overlap_positions", "nonoverlap_positions", "profile_terms",
           "CrossoverLoss", "CrossoverLossParts"]

#: Loss modes.
LOSS_MODES = ("code", "capped", "none")
#: ``mode -> (lambda_con, lambda_div, cap)`` defaults.
MODE_DEFAULTS: dict[str, tuple[float, float, float | None]] = {"code": (1.0, 1.0, None),
                                                              "capped": (0.1, 0.05, 5.0),
                                                              "none": (0.0, 0.0, None)}


def overlap_positions(length: int, count: int = 4) -> list[int]:
    """The ``count`` central profile positions (the overlap square): ``T // 2 - count // 2`` onwards.

    Examples:
        >>> overlap_positions(19), overlap_positions(24)
        ([7, 8, 9, 10], [10, 11, 12, 13])
    """
    if not 0 < count <= length:
        raise ValueError(f"overlap count must be in [1, {length}], got {count}")
    start = length // 2 - count // 2
    return list(range(start, start + count))


def nonoverlap_positions(length: int, count: int) -> list[int]:
    """The first and the last ``count`` profile positions (the far ends of the arms).

    Examples:
        >>> nonoverlap_positions(19, 19 // 5)
        [0, 1, 2, 16, 17, 18]
    """
    if not 0 < 2 * count <= length:
        raise ValueError(f"non-overlap count must be in [1, {length // 2}], got {count}")
    return list(range(count)) + list(range(length - count, length))


def _min_max_mean(d: torch.Tensor) -> torch.Tensor:
    lo, hi = d.min(), d.max()
    return ((d - lo) / (hi - lo).clamp_min(1e-12)).mean()


def profile_terms(pv: torch.Tensor, ph: torch.Tensor, overlap: Sequence[int], nonoverlap: Sequence[int],
                  mode: str = "capped") -> tuple[torch.Tensor, torch.Tensor]:
    """The consistency (overlap) and diversity (non-overlap) terms of two profiles.

    Args:
        pv: ``(B, P, T)`` profiles of the vertical arm.
        ph: ``(B, P, T)`` profiles of the (transposed) horizontal arm.
        overlap: positions of the overlap.
        nonoverlap: positions of the non-overlap.
        mode: ``"code"`` (batch-axis norm, min-max normalised) or ``"capped"`` (per-sample norm over
            channels, plain means; the cap is applied by :class:`CrossoverLoss`).

    Returns:
        ``(L_con, L_div)`` scalars.
    """
    if pv.shape != ph.shape or pv.ndim != 3:
        raise ValueError(f"profiles must be equal (B, P, T) tensors, got {tuple(pv.shape)} and {tuple(ph.shape)}")
    o = torch.as_tensor(list(overlap), device=pv.device)
    n = torch.as_tensor(list(nonoverlap), device=pv.device)
    diff = pv - ph
    if mode == "code":
        d = torch.linalg.vector_norm(diff, dim=0)  # (P, T): over the batch axis, as the official code
        return _min_max_mean(d[:, o]), _min_max_mean(d[:, n])
    if mode == "capped":
        d = torch.linalg.vector_norm(diff, dim=1)  # (B, T): per sample, over channels
        return d[:, o].mean(), d[:, n].mean()
    raise ValueError(f"mode must be 'code' or 'capped', got {mode!r}")


@dataclass
class CrossoverLossParts:
    """The loss and its terms (for logging)."""

    total: torch.Tensor
    ce: torch.Tensor
    con: torch.Tensor
    div: torch.Tensor


class CrossoverLoss(nn.Module):
    """``CE + lambda_con * L_con - lambda_div * L_div`` (capped in ``"capped"`` mode); see the module docstring.

    Args:
        overlap: profile positions of the overlap.
        nonoverlap: profile positions of the non-overlap.
        mode: ``"code"``, ``"capped"`` or ``"none"`` (cross-entropy only).
        lambda_con: weight of the consistency term (``None``: the mode's default).
        lambda_div: weight of the diversity term (``None``: the mode's default).
        cap: upper bound of ``L_div`` (``None``: the mode's default; ``"code"`` has none).

    Examples:
        >>> loss = CrossoverLoss(overlap_positions(19), nonoverlap_positions(19, 3), mode="code")
        >>> parts = loss(torch.randn(8, 2), torch.randint(0, 2, (8,)), torch.rand(8, 64, 19), torch.rand(8, 64, 19))
        >>> parts.total.shape
        torch.Size([])
    """

    def __init__(self, overlap: Sequence[int], nonoverlap: Sequence[int], mode: str = "capped",
                 lambda_con: float | None = None, lambda_div: float | None = None, cap: float | None = None) -> None:
        super().__init__()
        if mode not in LOSS_MODES:
            raise ValueError(f"mode must be one of {LOSS_MODES}, got {mode!r}")
        if set(overlap) & set(nonoverlap):
            raise ValueError(f"overlap {list(overlap)} and non-overlap {list(nonoverlap)} positions intersect")
        dc, dd, dm = MODE_DEFAULTS[mode]
        self.mode = mode
        self.overlap, self.nonoverlap = [int(i) for i in overlap], [int(i) for i in nonoverlap]
        self.lambda_con = dc if lambda_con is None else float(lambda_con)
        self.lambda_div = dd if lambda_div is None else float(lambda_div)
        self.cap = dm if cap is None else float(cap)

    def forward(self, logits: torch.Tensor, target: torch.Tensor, pv: torch.Tensor | None = None,
                ph: torch.Tensor | None = None) -> CrossoverLossParts:
        """The loss of a batch: logits ``(B, K)``, targets ``(B,)``, profiles ``(B, P, T)`` (``"none"``: unused)."""
        ce = F.cross_entropy(logits, target)
        zero = ce.new_zeros(())
        if self.mode == "none" or pv is None or ph is None:
            if self.mode != "none":
                raise ValueError(f"mode {self.mode!r} needs both profiles")
            return CrossoverLossParts(ce, ce, zero, zero)
        con, div = profile_terms(pv, ph, self.overlap, self.nonoverlap, self.mode)
        div_used = div.clamp(max=self.cap) if self.cap is not None else div
        total = ce + self.lambda_con * con - self.lambda_div * div_used
        return CrossoverLossParts(total, ce, con, div)
