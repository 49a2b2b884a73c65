"""C2L: Comparing to Learn (Zhou et al., MICCAI 2020) — contrastive pretraining on radiographs."""

from __future__ import annotations

from medlearn.methods.c2l.module import C2L
from medlearn.methods.c2l.recipe import demo, reproduce, write_contract_data
from medlearn.registry import MethodSpec, register

__all__ = ["C2L"]

register(MethodSpec(
    name="c2l",
    paper="Zhou et al., Comparing to Learn: Surpassing ImageNet Pretraining on Radiographs by Comparing "
          "Image Representations, MICCAI 2020",
    summary="contrastive pretraining on unlabeled radiographs (teacher-student, queue, mixup); "
            "fine-tune on few labels",
    contract_configs=["demo.yaml", "demo_finetune.yaml"],
    write_contract_data=write_contract_data,
    demo=demo,
    encoders={C2L: "student.backbone."},
    reproduce=reproduce,
))
