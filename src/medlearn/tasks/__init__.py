"""Downstream task modules shared by the methods (e.g. fine-tuning a pretrained encoder)."""

from __future__ import annotations

from medlearn.tasks.classification import ImageClassifier

__all__ = ["ImageClassifier"]
