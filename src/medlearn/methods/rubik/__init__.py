"""Rubik's cube recovery (Zhuang et al., MICCAI 2019) and Rubik's Cube+ (Zhu et al., MedIA 2020):
self-supervised pretraining of 3D encoders on unlabeled CT / MR volumes.
"""

from __future__ import annotations

from medlearn.methods.rubik.module import Rubik
from medlearn.methods.rubik.recipe import demo, reproduce, write_contract_brats, write_contract_data
from medlearn.registry import MethodSpec, register

__all__ = ["Rubik"]

register(MethodSpec(
    name="rubik",
    paper="Zhuang et al., Self-supervised Feature Learning for 3D Medical Images by Playing a Rubik's Cube, "
          "MICCAI 2019 (+ Rubik's Cube+, MedIA 2020)",
    summary="self-supervised pretraining of 3D encoders on unlabeled CT/MR volumes (cube order, rotation, "
            "masking); transfer to 3D classification and segmentation",
    contract_configs=["demo.yaml", "demo_classify.yaml", "demo_segment.yaml", "demo_brats.yaml"],
    write_contract_data=write_contract_data,
    contract_data_for={"demo_segment.yaml": write_contract_brats, "demo_brats.yaml": write_contract_brats},
    demo=demo,
    encoders={Rubik: "octad.encoder."},
    reproduce=reproduce,
))
