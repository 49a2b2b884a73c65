"""Losses shared across methods."""

from __future__ import annotations

from medlearn.losses.contrastive import InfoNCELoss, MomentumQueue, NCEQueueLoss, contrast_logits, info_nce

__all__ = ["InfoNCELoss", "MomentumQueue", "NCEQueueLoss", "contrast_logits", "info_nce"]
