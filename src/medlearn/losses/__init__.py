"""Losses shared across methods."""

from __future__ import annotations

from medlearn.losses.contrastive import InfoNCELoss, MomentumQueue, NCEQueueLoss, contrast_logits, info_nce
from medlearn.losses.keypoint import KeypointRegistrationLoss, heatmap_mse, keypoint_registration

__all__ = ["InfoNCELoss", "MomentumQueue", "NCEQueueLoss", "contrast_logits", "info_nce", "KeypointRegistrationLoss",
           "heatmap_mse", "keypoint_registration"]
