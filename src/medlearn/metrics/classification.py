"""Classification metrics.

``MultiLabelAUC`` accumulates scores and multi-hot targets batch by batch and aggregates per-class
ROC-AUC (Hanley & McNeil 1982) at the end, the metric of ChestX-ray14 (Wang et al., CVPR 2017). It
is built on MONAI's ``ROCAUCMetric``, whose cumulative buffers gather across DDP ranks. A class
whose targets are all 0 or all 1 in the evaluated set has no defined AUC: it is reported as NaN and
left out of the mean (and its count is reported), instead of silently contributing 0.5.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from monai.metrics import ROCAUCMetric

__all__ = ["MultiLabelAUC", "AUCResult", "multilabel_auc"]


@dataclass
class AUCResult:
    """Per-class ROC-AUC and their mean over defined classes."""

    per_class: dict[str, float]
    mean: float
    n_undefined: int


class MultiLabelAUC:
    """Accumulate ``(B, C)`` scores and multi-hot targets; aggregate per-class ROC-AUC.

    Args:
        class_names: names of the C classes (used as keys of the result).

    Examples:
        >>> m = MultiLabelAUC(["a", "b"])
        >>> m.update(torch.tensor([[0.9, 0.1], [0.2, 0.8]]), torch.tensor([[1, 0], [0, 1]]))
        >>> m.compute().mean
        1.0
    """

    def __init__(self, class_names: Sequence[str]) -> None:
        self.class_names = list(class_names)
        self._metric = ROCAUCMetric(average="none")

    def reset(self) -> None:
        """Forget the accumulated predictions."""
        self._metric.reset()

    def update(self, scores: torch.Tensor, targets: torch.Tensor) -> None:
        """Add a batch: ``scores`` (B, C) (logits or probabilities), ``targets`` (B, C) in {0, 1}."""
        if scores.shape != targets.shape or scores.ndim != 2 or scores.shape[1] != len(self.class_names):
            raise ValueError(
                f"expected scores and targets of shape (B, {len(self.class_names)}), "
                f"got {tuple(scores.shape)} and {tuple(targets.shape)}"
            )
        self._metric(scores.detach().float(), targets.detach().float())

    def compute(self) -> AUCResult:
        """Per-class AUC (NaN where undefined) and the mean over defined classes (NaN if none)."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="y values can not be all")
            values = self._metric.aggregate()
        values = [float(np.asarray(v)) for v in (values if isinstance(values, (list, tuple)) else [values])]
        arr = np.asarray(values, dtype=float)
        defined = ~np.isnan(arr)
        mean = float(arr[defined].mean()) if defined.any() else float("nan")
        return AUCResult(dict(zip(self.class_names, values)), mean, int((~defined).sum()))


def multilabel_auc(scores: torch.Tensor | np.ndarray, targets: torch.Tensor | np.ndarray,
                   class_names: Sequence[str] | None = None) -> AUCResult:
    """One-shot form of :class:`MultiLabelAUC` on full arrays ``(N, C)``."""
    s = torch.as_tensor(np.asarray(scores), dtype=torch.float32)
    t = torch.as_tensor(np.asarray(targets), dtype=torch.float32)
    names = list(class_names) if class_names is not None else [str(i) for i in range(s.shape[1])]
    m = MultiLabelAUC(names)
    m.update(s, t)
    return m.compute()
