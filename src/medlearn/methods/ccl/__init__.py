"""CCL-Net: class-correlation learning for soft labels (Wei et al., MICCAI 2020)."""

from __future__ import annotations

from medlearn.methods.ccl.model import CCLHead, CCLOutput
from medlearn.methods.ccl.module import CCLClassifier
from medlearn.methods.ccl.recipe import demo, reproduce, write_contract_data
from medlearn.registry import MethodSpec, register

__all__ = ["CCLClassifier", "CCLHead", "CCLOutput"]

register(MethodSpec(
    name="ccl",
    paper="Wei et al., Learning and Exploiting Interclass Visual Correlations for Medical Image Classification "
          "(CCL-Net), MICCAI 2020",
    summary="single-label classification with soft labels from learned inter-class correlations (a plug-in "
            "CCL block on any backbone); hard / label-smoothing / distillation baselines in the same path",
    contract_configs=["demo.yaml"],
    write_contract_data=write_contract_data,
    demo=demo,
    reproduce=reproduce,
))
