"""Metrics shared across methods."""

from __future__ import annotations

from medlearn.metrics.classification import AUCResult, MultiLabelAUC, multilabel_auc
from medlearn.metrics.multiclass import (
    MulticlassMetrics,
    MulticlassResult,
    confusion_matrix,
    expected_calibration_error,
    multiclass_metrics,
)

__all__ = ["AUCResult", "MultiLabelAUC", "multilabel_auc", "MulticlassMetrics", "MulticlassResult",
           "confusion_matrix", "expected_calibration_error", "multiclass_metrics"]
