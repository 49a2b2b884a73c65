"""Binary classification metrics: ROC-AUC, sensitivity, specificity, accuracy.

The AGE challenge (Fu et al., MedIA 2020) scores angle-closure classification over all angles by
AUC, sensitivity and specificity; screening tasks in general report this triple. Sensitivity is the
recall of the positive class, TP / (TP + FN); specificity the recall of the negative class,
TN / (TN + FP); a sample is predicted positive when its score is ``>= threshold``. A rate whose
denominator is empty (no positives, or no negatives) is NaN, not 0 or 1; AUC is NaN when only one
class is present.

:class:`BinaryMetric` accumulates scores and targets batch by batch in MONAI ``Cumulative`` buffers,
which gather across DDP ranks, and computes everything once at the end; :func:`binary_metrics` is
the one-shot form. AUC is MONAI's ``compute_roc_auc`` (Hanley & McNeil 1982; ties count one half).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from monai.metrics import compute_roc_auc

from medlearn.metrics.buffer import CaseBuffer

__all__ = ["BinaryMetric", "BinaryResult", "binary_metrics", "sensitivity_specificity"]


@dataclass
class BinaryResult:
    """Binary metrics of an evaluated set."""

    auc: float
    sensitivity: float
    specificity: float
    accuracy: float
    threshold: float
    n_positive: int
    n_negative: int

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        """``{prefix + "auc": ..., ...}`` of the four rates."""
        return {f"{prefix}{k}": float(getattr(self, k)) for k in ("auc", "sensitivity", "specificity", "accuracy")}


def _flat(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).detach().float().reshape(-1).cpu()


def sensitivity_specificity(scores: torch.Tensor | np.ndarray, targets: torch.Tensor | np.ndarray,
                            threshold: float = 0.5) -> tuple[float, float]:
    """``(TP / (TP + FN), TN / (TN + FP))`` with positives predicted at ``score >= threshold`` (NaN if undefined)."""
    s, t = _flat(scores), _flat(targets)
    if s.shape != t.shape:
        raise ValueError(f"scores {tuple(s.shape)} and targets {tuple(t.shape)} differ")
    pred, pos = s >= threshold, t > 0.5
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    sens = float((pred & pos).sum()) / n_pos if n_pos else math.nan
    spec = float((~pred & ~pos).sum()) / n_neg if n_neg else math.nan
    return sens, spec


def binary_metrics(scores: torch.Tensor | np.ndarray, targets: torch.Tensor | np.ndarray,
                   threshold: float = 0.5) -> BinaryResult:
    """AUC, sensitivity, specificity and accuracy of scores (probability of the positive class) vs 0/1 targets.

    Raises:
        ValueError: scores and targets of different sizes, or targets other than 0 / 1.
    """
    s, t = _flat(scores), _flat(targets)
    if s.shape != t.shape:
        raise ValueError(f"scores {tuple(s.shape)} and targets {tuple(t.shape)} differ")
    if not bool(((t == 0) | (t == 1)).all()):
        raise ValueError("binary targets must be 0 or 1")
    n_pos = int(t.sum())
    n_neg = int(t.numel() - n_pos)
    if n_pos and n_neg:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            auc = float(compute_roc_auc(s, t))  # type: ignore[arg-type]  # a float for 1-D scores
    else:
        auc = math.nan
    sens, spec = sensitivity_specificity(s, t, threshold)
    acc = float(((s >= threshold) == (t > 0.5)).float().mean()) if t.numel() else math.nan
    return BinaryResult(auc, sens, spec, acc, float(threshold), n_pos, n_neg)


class BinaryMetric:
    """Accumulate ``(B,)`` scores and 0/1 targets; :meth:`compute` the :class:`BinaryResult` (DDP-gathered).

    Args:
        threshold: score at and above which a sample is predicted positive.

    Examples:
        >>> m = BinaryMetric()
        >>> m.update(torch.tensor([0.9, 0.2, 0.6]), torch.tensor([1, 0, 0]))
        >>> r = m.compute(); (r.auc, r.sensitivity, r.specificity)
        (1.0, 1.0, 0.5)
    """

    def __init__(self, threshold: float = 0.5) -> None:
        self.threshold = float(threshold)
        self._buffer = CaseBuffer()

    def reset(self) -> None:
        """Forget the accumulated scores."""
        self._buffer.reset()

    def update(self, scores: torch.Tensor, targets: torch.Tensor) -> None:
        """Add scores ``(B,)`` and binary targets ``(B,)``."""
        s, t = scores.detach().float().reshape(-1), targets.detach().float().reshape(-1)
        if s.shape != t.shape:
            raise ValueError(f"scores {tuple(s.shape)} and targets {tuple(t.shape)} differ")
        self._buffer.extend(s, t)

    def compute(self) -> BinaryResult:
        """AUC, sensitivity, specificity and accuracy over everything accumulated."""
        buf = self._buffer.get_buffer()  # None before any update, else [scores, targets]
        if buf is None:
            return BinaryResult(math.nan, math.nan, math.nan, math.nan, self.threshold, 0, 0)
        s, t = buf
        return binary_metrics(s, t, self.threshold)
