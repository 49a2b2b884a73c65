"""AS-OCT angle-closure classification and scleral-spur localisation (Yuan et al., AGE challenge, MICCAI 2019)."""

from __future__ import annotations

from medlearn.methods.asoct.module import ASOCTPredictor, SpurLocalizer
from medlearn.methods.asoct.recipe import demo, reproduce, write_contract_data
from medlearn.registry import MethodSpec, register

__all__ = ["ASOCTPredictor", "SpurLocalizer"]

register(MethodSpec(
    name="asoct",
    paper="Yuan, Bian et al., Identification of primary angle-closure on AS-OCT images with Convolutional Neural "
          "Networks, arXiv:1910.10414 (AGE challenge, MICCAI 2019)",
    summary="classify angle closure and localise the scleral spur on AS-OCT scans (AGE layout): ResNet "
            "classifier, EfficientNet U-Net + PPM heatmap with keypoint registration loss; AGE submission",
    contract_configs=["demo_localize.yaml", "demo_classify.yaml"],
    write_contract_data=write_contract_data,
    demo=demo,
    encoders={SpurLocalizer: "net.backbone."},
    reproduce=reproduce,
))
