"""Multi-class (single-label) classification metrics: accuracy, balanced accuracy, macro F1, Cohen's
kappa, negative log-likelihood and expected calibration error.

Balanced accuracy (the mean per-class recall) is the ranking metric of the ISIC 2018 Task 3 challenge
(Codella et al., arXiv:1902.03368; Tschandl et al., HAM10000, Sci. Data 2018); plain accuracy on
ISIC mostly measures the majority class NV. NLL and ECE (Guo et al., "On Calibration of Modern
Neural Networks", ICML 2017; equal-width confidence bins, Naeini et al. AAAI 2015) show the
calibration effect of soft labels (label smoothing, distillation, CCL-Net).

Everything is computed from the ``(N, K)`` probabilities and the integer targets; the counting
metrics from the confusion matrix. Conventions follow scikit-learn (the tests use it as the
oracle): balanced accuracy averages the recall over the classes that occur in the targets; macro
F1 averages over the classes that occur in the targets or the predictions, an F1 with no
predicted and no true sample counting 0; kappa is unweighted. Written by hand (a few lines of
numpy) so the accumulating :class:`MulticlassMetrics` needs no scikit-learn call per epoch and
can also return the confusion matrix and per-class recall for reports.
:class:`MulticlassMetrics` accumulates per batch in MONAI's ``Cumulative`` buffer, which gathers
across DDP ranks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from medlearn.metrics.buffer import CaseBuffer

__all__ = ["MulticlassResult", "MulticlassMetrics", "multiclass_metrics", "confusion_matrix",
           "expected_calibration_error"]


@dataclass
class MulticlassResult:
    """Metrics of one evaluated set.

    Attributes:
        accuracy: fraction of correct argmax predictions.
        balanced_accuracy: mean recall over classes present in the targets (ISIC 2018 metric).
        macro_f1: unweighted mean F1 over classes present in targets or predictions.
        kappa: Cohen's kappa (unweighted) between targets and predictions.
        nll: mean negative log-likelihood of the true class (probabilities clipped at 1e-12).
        ece: expected calibration error of the top-1 confidence (``n_bins`` equal-width bins).
        confusion: ``(K, K)`` counts, rows = true class, columns = predicted class.
        recall: per-class recall (NaN for classes absent from the targets).
        n: number of samples.
    """

    accuracy: float
    balanced_accuracy: float
    macro_f1: float
    kappa: float
    nll: float
    ece: float
    confusion: np.ndarray
    recall: np.ndarray
    n: int
    extra: dict[str, float] = field(default_factory=dict)

    def scalars(self) -> dict[str, float]:
        """The scalar metrics under short names (``acc``, ``bal_acc``, ``f1``, ``kappa``, ``nll``, ``ece``)."""
        return {"acc": self.accuracy, "bal_acc": self.balanced_accuracy, "f1": self.macro_f1,
                "kappa": self.kappa, "nll": self.nll, "ece": self.ece}


def confusion_matrix(targets: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """``(K, K)`` int64 counts, rows = true class, columns = predicted class."""
    t = np.asarray(targets, dtype=np.int64).ravel()
    p = np.asarray(preds, dtype=np.int64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"targets and preds differ in length: {t.shape} vs {p.shape}")
    bad = (t < 0) | (t >= num_classes) | (p < 0) | (p >= num_classes)
    if bad.any():
        raise ValueError(f"labels outside [0, {num_classes}): {np.unique(np.concatenate([t[bad], p[bad]]))}")
    return np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def expected_calibration_error(probs: np.ndarray, targets: np.ndarray, n_bins: int = 15) -> float:
    """Top-1 expected calibration error with ``n_bins`` equal-width confidence bins.

    ``ECE = sum_b (n_b / N) |acc_b - conf_b|`` where bin ``b`` holds the samples whose top-1
    probability lies in ``(b / n_bins, (b + 1) / n_bins]`` (the first bin also takes 0).
    """
    probs = np.asarray(probs, dtype=np.float64)
    t = np.asarray(targets, dtype=np.int64).ravel()
    if len(t) == 0:
        return float("nan")
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == t).astype(np.float64)
    bins = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    gap = np.abs(np.bincount(bins, weights=correct, minlength=n_bins) - np.bincount(bins, weights=conf,
                                                                                     minlength=n_bins))
    return float(gap.sum() / len(t)) if count.sum() else float("nan")


def multiclass_metrics(probs: np.ndarray | torch.Tensor, targets: np.ndarray | torch.Tensor,
                       num_classes: int | None = None, n_bins: int = 15) -> MulticlassResult:
    """All metrics of :class:`MulticlassResult` from ``(N, K)`` probabilities and ``(N,)`` targets.

    Args:
        probs: class probabilities (rows sum to 1; softmax outputs).
        targets: integer class indices.
        num_classes: K (default ``probs.shape[1]``).
        n_bins: ECE bins.

    Raises:
        ValueError: on shape mismatches or targets outside ``[0, K)``.

    Examples:
        >>> r = multiclass_metrics(np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]), np.array([0, 1, 1]))
        >>> round(r.accuracy, 3), round(r.balanced_accuracy, 3)
        (0.667, 0.75)
    """
    p = probs.detach().float().cpu().numpy() if isinstance(probs, torch.Tensor) else np.asarray(probs)
    t = targets.detach().cpu().numpy() if isinstance(targets, torch.Tensor) else np.asarray(targets)
    p = p.astype(np.float64)
    t = t.astype(np.int64).ravel()
    k = int(num_classes or p.shape[1])
    if p.ndim != 2 or p.shape[0] != t.shape[0] or p.shape[1] != k:
        raise ValueError(f"expected probs (N, {k}) and targets (N,), got {p.shape} and {t.shape}")
    n = len(t)
    cm = confusion_matrix(t, p.argmax(axis=1), k).astype(np.float64)
    true_count, pred_count, tp = cm.sum(1), cm.sum(0), np.diag(cm)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(true_count > 0, tp / true_count, np.nan)
        denom = true_count + pred_count
        f1 = np.where(denom > 0, 2 * tp / denom, 0.0)
    present = true_count > 0
    used = present | (pred_count > 0)
    acc = float(tp.sum() / n) if n else float("nan")
    bal = float(np.nanmean(recall[present])) if present.any() else float("nan")
    mf1 = float(f1[used].mean()) if used.any() else float("nan")
    pe = float((true_count * pred_count).sum() / n**2) if n else float("nan")
    kappa = float((acc - pe) / (1 - pe)) if n and pe < 1 else float("nan")
    nll = float(-np.log(np.clip(p[np.arange(n), t], 1e-12, None)).mean()) if n else float("nan")
    return MulticlassResult(acc, bal, mf1, kappa, nll, expected_calibration_error(p, t, n_bins),
                            cm.astype(np.int64), recall, n)


class MulticlassMetrics:
    """Accumulate ``(B, K)`` probabilities and ``(B,)`` targets batch by batch; compute at the end.

    The buffers are MONAI ``Cumulative`` objects, so under DDP :meth:`compute` sees every rank's
    samples.

    Args:
        num_classes: K.
        n_bins: ECE bins.

    Examples:
        >>> m = MulticlassMetrics(2)
        >>> m.update(torch.tensor([[0.9, 0.1], [0.3, 0.7]]), torch.tensor([0, 1]))
        >>> m.compute().accuracy
        1.0
    """

    def __init__(self, num_classes: int, n_bins: int = 15) -> None:
        self.num_classes = int(num_classes)
        self.n_bins = n_bins
        self._buf = CaseBuffer()

    def reset(self) -> None:
        """Forget the accumulated predictions."""
        self._buf.reset()

    def update(self, probs: torch.Tensor, targets: torch.Tensor) -> None:
        """Add a batch of probabilities ``(B, K)`` and integer targets ``(B,)``."""
        if probs.ndim != 2 or probs.shape[1] != self.num_classes or probs.shape[0] != targets.numel():
            raise ValueError(f"expected probs (B, {self.num_classes}) and targets (B,), got {tuple(probs.shape)} "
                             f"and {tuple(targets.shape)}")
        self._buf.extend(probs.detach().float(), targets.detach().long().view(-1, 1).float())

    def compute(self) -> MulticlassResult:
        """Metrics over everything added since the last :meth:`reset`."""
        buf = self._buf.get_buffer()
        if buf is None or len(buf) == 0 or buf[0].numel() == 0:
            raise ValueError("no samples were added")
        probs, targets = buf
        return multiclass_metrics(probs, targets.view(-1).long(), self.num_classes, self.n_bins)
