"""Downstream task modules shared by the methods (e.g. fine-tuning a pretrained encoder)."""

from __future__ import annotations

from medlearn.tasks.classification import ImageClassifier
from medlearn.tasks.downstream import binary_scores, fit_binary_segmenter, score_segmenter, segment
from medlearn.tasks.probe import Features, ProbeResult, extract_features, linear_probe
from medlearn.tasks.segmentation import RandomPatch, Segmenter, random_patch

__all__ = ["ImageClassifier", "Features", "ProbeResult", "extract_features", "linear_probe", "RandomPatch",
           "Segmenter", "random_patch", "binary_scores", "fit_binary_segmenter", "score_segmenter", "segment"]
