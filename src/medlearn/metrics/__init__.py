"""Metrics shared across methods."""

from __future__ import annotations

from medlearn.metrics.binary import BinaryMetric, BinaryResult, binary_metrics, sensitivity_specificity
from medlearn.metrics.classification import AUCResult, MultiLabelAUC, multilabel_auc
from medlearn.metrics.keypoints import KeypointDistance, KeypointResult, keypoint_summary, point_distances
from medlearn.metrics.multiclass import (
    MulticlassMetrics,
    MulticlassResult,
    confusion_matrix,
    expected_calibration_error,
    multiclass_metrics,
)
from medlearn.metrics.registration import (
    dice_per_label,
    folding_fraction,
    inverse_consistency_error,
    jacobian_determinant,
    mean_dice,
)

__all__ = ["AUCResult", "MultiLabelAUC", "multilabel_auc", "BinaryMetric", "BinaryResult", "binary_metrics",
           "sensitivity_specificity", "KeypointDistance", "KeypointResult", "keypoint_summary", "point_distances",
           "MulticlassMetrics", "MulticlassResult", "confusion_matrix", "expected_calibration_error",
           "multiclass_metrics", "dice_per_label", "folding_fraction", "inverse_consistency_error",
           "jacobian_determinant", "mean_dice"]
