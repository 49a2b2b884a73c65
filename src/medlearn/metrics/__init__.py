"""Metrics shared across methods."""

from __future__ import annotations

from medlearn.metrics.classification import AUCResult, MultiLabelAUC, multilabel_auc

__all__ = ["AUCResult", "MultiLabelAUC", "multilabel_auc"]
