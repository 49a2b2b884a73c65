"""C2L: Comparing to Learn (Zhou et al., MICCAI 2020) — contrastive pretraining on radiographs."""

from __future__ import annotations

from medlearn.engine.checkpoint import register_importer
from medlearn.methods.c2l.module import C2L
from medlearn.methods.c2l.official import OFFICIAL_IMPORTER, import_official
from medlearn.methods.c2l.recipe import demo, reproduce, write_contract_data
from medlearn.registry import MethodSpec, register

__all__ = ["C2L", "import_official"]

# the authors' released weights load wherever a medlearn C2L checkpoint does (``pretrained: <file>``)
register_importer(OFFICIAL_IMPORTER)

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
