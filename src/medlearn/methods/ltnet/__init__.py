"""LT-Net: one-shot atlas segmentation by reversible atlas-to-image correspondence (Wang et al., CVPR 2020)."""

from __future__ import annotations

from medlearn.methods.ltnet.module import LTNet
from medlearn.methods.ltnet.recipe import demo, oneshot, reproduce, write_contract_data
from medlearn.registry import MethodSpec, register

__all__ = ["LTNet", "oneshot"]

register(MethodSpec(
    name="ltnet",
    paper="Wang, Cao, Wei, Wang, Ma, Wang, Meng, Zheng, LT-Net: Label Transfer by Learning Reversible Voxel-wise "
          "Correspondence for One-shot Medical Image Segmentation, CVPR 2020, arXiv:2003.07072",
    summary="label a folder of scans from one labelled atlas (medlearn oneshot): learned atlas-to-image registration "
            "with forward-backward cycle consistency; VoxelMorph-style baseline in the same code path",
    contract_configs=["demo.yaml"],
    write_contract_data=write_contract_data,
    demo=demo,
    reproduce=reproduce,
))
