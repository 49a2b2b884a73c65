"""Crossover-Net: segmentation by classifying each pixel from a vertical + horizontal strip (Yu et al., 2020)."""

from __future__ import annotations

from medlearn.methods.crossover.module import CrossoverSegmenter, MaskPredictionWriter
from medlearn.methods.crossover.recipe import demo, reproduce, write_contract_data
from medlearn.registry import MethodSpec, register

__all__ = ["CrossoverSegmenter", "MaskPredictionWriter"]

register(MethodSpec(
    name="crossover",
    paper="Yu, Shi, Zheng, Gao, Zhu, Dai, Crossover-Net: Leveraging the Vertical-Horizontal Crossover Relation for "
          "Robust Segmentation, arXiv:2004.01397 (2020); Pattern Recognition (2021)",
    summary="segment non-elongated structures (kidney tumour CT, LV cavity MR, breast masses) by classifying every "
            "pixel from a cross-shaped patch; square-patch, single-strip and U-Net baselines; full-mask prediction",
    contract_configs=["demo.yaml"],
    write_contract_data=write_contract_data,
    demo=demo,
    reproduce=reproduce,
))
