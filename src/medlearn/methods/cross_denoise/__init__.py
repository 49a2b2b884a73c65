"""Cross-denoising network against corrupted labels under domain shift (Zhang et al., IJCAI 2020)."""

from __future__ import annotations

from medlearn.methods.cross_denoise.module import ARMS, CrossDenoise
from medlearn.methods.cross_denoise.recipe import demo, reproduce, write_contract_data
from medlearn.registry import MethodSpec, register

__all__ = ["ARMS", "CrossDenoise"]

register(MethodSpec(
    name="cross_denoise",
    paper="Zhang, Liu, Ma, Zhuo, Zheng, Cross-denoising Network against Corrupted Labels in Medical Image "
          "Segmentation with Domain Shift, IJCAI-PRICAI 2020 (arXiv:2006.10990)",
    summary="optic disc / cup segmentation from corrupted source masks with camera shift (REFUGE, Drishti-GS or any "
            "image,mask,domain table): two peer networks, peer sample selection, noise-tolerant loss, class-balanced "
            "cross pseudo-labels; single / two-net / co-teaching / ablation baselines in the same path",
    contract_configs=["demo.yaml"],
    write_contract_data=write_contract_data,
    demo=demo,
    reproduce=reproduce,
))
