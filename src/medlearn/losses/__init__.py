"""Losses shared across methods."""

from __future__ import annotations

from medlearn.losses.contrastive import InfoNCELoss, MomentumQueue, NCEQueueLoss, contrast_logits, info_nce
from medlearn.losses.keypoint import KeypointRegistrationLoss, heatmap_mse, keypoint_registration
from medlearn.losses.registration import (
    LNCCLoss,
    anatomy_cycle_loss,
    gradient_smoothness,
    image_cycle_loss,
    lncc,
    lncc_loss,
    mse,
    soft_dice_loss,
    transformation_cycle_loss,
    warmup_ramp,
)

__all__ = ["InfoNCELoss", "MomentumQueue", "NCEQueueLoss", "contrast_logits", "info_nce", "KeypointRegistrationLoss",
           "heatmap_mse", "keypoint_registration", "LNCCLoss", "anatomy_cycle_loss", "gradient_smoothness",
           "image_cycle_loss", "lncc", "lncc_loss", "mse", "soft_dice_loss", "transformation_cycle_loss", "warmup_ramp"]
