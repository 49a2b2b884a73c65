"""MGAN / TC-MGAN: missing MR contrast synthesis from T2 with one conditional generator (Xin et al., ISBI 2020)."""

from __future__ import annotations

from medlearn.methods.mgan.module import MGAN, TumourEvaluator
from medlearn.methods.mgan.recipe import demo, reproduce, write_contract_data
from medlearn.registry import MethodSpec, register

__all__ = ["MGAN", "TumourEvaluator"]

register(MethodSpec(
    name="mgan",
    paper="Xin, Hu, Zheng, Liao, Multi-modality Generative Adversarial Networks with Tumor Consistency Loss for "
          "Brain MR Image Synthesis, ISBI 2020, arXiv:2005.00925",
    summary="synthesise missing MR contrasts (FLAIR, T1ce, T1) from T2 with one conditional GAN generator, "
            "tumour-consistent (TC-MGAN); pix2pix baseline; writes the missing contrasts of BraTS cases as NIfTI",
    contract_configs=["demo.yaml", "demo_pix2pix.yaml", "demo_evaluator.yaml"],
    write_contract_data=write_contract_data,
    demo=demo,
    reproduce=reproduce,
))
