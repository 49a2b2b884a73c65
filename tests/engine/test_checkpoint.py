"""Safe checkpoint I/O and the loud load_pretrained."""

from __future__ import annotations

import os
import pickle

import pytest
import torch
from torch import nn

from medlearn.engine.checkpoint import CheckpointError, atomic_save, load_pretrained, safe_load
from medlearn.methods.c2l.model import C2LEncoder
from medlearn.tasks import ImageClassifier


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_atomic_save_and_safe_load_roundtrip(tmp_path):
    p = tmp_path / "a.ckpt"
    atomic_save({"state_dict": {"w": torch.ones(2)}, "epoch": 3}, p)
    assert safe_load(p)["epoch"] == 3
    assert [f.name for f in tmp_path.iterdir()] == ["a.ckpt"]  # no temp file left behind


def test_atomic_save_keeps_old_file_when_writing_fails(tmp_path):
    p = tmp_path / "last.ckpt"
    atomic_save({"epoch": 1}, p)
    with pytest.raises((AttributeError, TypeError, pickle.PicklingError)):
        atomic_save({"bad": lambda: 0}, p)  # lambdas cannot be pickled
    assert safe_load(p)["epoch"] == 1
    assert [f.name for f in tmp_path.iterdir()] == ["last.ckpt"]


def test_safe_load_refuses_code_and_garbage(tmp_path):
    evil = tmp_path / "evil.ckpt"
    torch.save({"x": Evil()}, evil)
    with pytest.raises(CheckpointError, match="evil.ckpt"):
        safe_load(evil)
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.ckpt"):
        safe_load(junk)
    with pytest.raises(CheckpointError, match="not found"):
        safe_load(tmp_path / "missing.ckpt")
    good = tmp_path / "t.ckpt"
    torch.save({"state_dict": {"w": torch.ones(1)}}, good)
    data = good.read_bytes()
    (tmp_path / "trunc.ckpt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="trunc.ckpt"):
        safe_load(tmp_path / "trunc.ckpt")


def _c2l_state(backbone="plaincnn"):
    enc = C2LEncoder(backbone, 2, 1, 16)
    sd = enc.state_dict()
    student = {f"student.{k}": v for k, v in sd.items()}
    teacher = {f"teacher.{k}": v + 1 for k, v in sd.items() if v.is_floating_point()}
    # what a C2L checkpoint carries: the module and the encoder its MethodSpec declares
    declared = {"module": "medlearn.methods.c2l.module.C2L", "encoder_prefix": "student.backbone."}
    return {"state_dict": {**student, **teacher}, "medlearn": declared}, enc


def test_load_pretrained_maps_student_backbone_into_classifier():
    ckpt, enc = _c2l_state()
    clf = ImageClassifier("plaincnn", 2, 1, num_classes=3)
    head_before = clf.head.weight.clone()
    rep = load_pretrained(clf, ckpt, {"student.backbone.": "backbone."})
    for k, v in enc.backbone.state_dict().items():
        assert torch.equal(clf.backbone.state_dict()[k], v), k
    assert torch.equal(clf.head.weight, head_before)  # outside the map: untouched
    assert "head.weight" in rep.not_covered and rep.loaded
    assert any(k.startswith("teacher.") for k in rep.skipped_source)


def test_load_pretrained_fails_loudly():
    ckpt, _ = _c2l_state("plaincnn")
    clf = ImageClassifier("resnet18", 2, 1, num_classes=3)  # other architecture
    with pytest.raises(CheckpointError, match="do not fit") as e:
        load_pretrained(clf, ckpt, {"student.backbone.": "backbone."})
    assert len(e.value.problems) > 5
    with pytest.raises(CheckpointError, match="no key starts with"):
        load_pretrained(clf, ckpt, {"encoder.": "backbone."})
    partial = {"state_dict": {k: v for i, (k, v) in enumerate(ckpt["state_dict"].items()) if i != 0}}
    clf2 = ImageClassifier("plaincnn", 2, 1, num_classes=3)
    with pytest.raises(CheckpointError, match="has no source"):
        load_pretrained(clf2, partial, {"student.backbone.": "backbone."})


def test_classifier_pretrained_argument_auto_prefix(tmp_path):
    ckpt, enc = _c2l_state()
    p = tmp_path / "c2l.ckpt"
    torch.save(ckpt, p)
    clf = ImageClassifier("plaincnn", 2, 1, num_classes=2, pretrained=str(p))
    assert torch.equal(clf.backbone.state_dict()["body.features.0.weight"],
                       enc.backbone.state_dict()["body.features.0.weight"])
    assert "loaded" in clf.load_report


def test_undeclared_encoder_needs_an_explicit_prefix(tmp_path):
    ckpt, enc = _c2l_state()
    p = tmp_path / "plain.ckpt"
    torch.save({"state_dict": ckpt["state_dict"]}, p)  # e.g. a state dict saved by hand
    with pytest.raises(CheckpointError, match=r"declares no encoder.*'student\.', 'teacher\.'"):
        ImageClassifier("plaincnn", 2, 1, num_classes=2, pretrained=str(p))
    clf = ImageClassifier("plaincnn", 2, 1, num_classes=2, pretrained=str(p), pretrained_prefix="student.backbone.")
    assert torch.equal(clf.backbone.state_dict()["body.features.0.weight"],
                       enc.backbone.state_dict()["body.features.0.weight"])


def test_method_checkpoints_declare_their_encoder():
    from medlearn.methods.c2l.module import C2L
    from medlearn.methods.rubik.module import Rubik
    from medlearn.tasks.segmentation import Segmenter

    assert (C2L.encoder_prefix, Rubik.encoder_prefix) == ("student.backbone.", "octad.encoder.")
    assert (ImageClassifier.encoder_prefix, Segmenter.encoder_prefix) == ("backbone.", "net.backbone.")
    ckpt: dict = {}
    ImageClassifier("plaincnn", 2, 1, num_classes=2).on_save_checkpoint(ckpt)
    assert ckpt["medlearn"]["encoder_prefix"] == "backbone."
    assert ckpt["medlearn"]["module"] == "medlearn.tasks.classification.ImageClassifier"


def test_linear_probe_freezes_backbone_and_bn_stats():
    clf = ImageClassifier("plaincnn", 2, 1, num_classes=2, freeze_backbone=True)
    clf.train()
    assert not any(p.requires_grad for p in clf.backbone.parameters())
    assert all(p.requires_grad for p in clf.head.parameters())
    bn = next(m for m in clf.backbone.modules() if isinstance(m, nn.BatchNorm2d))
    before = bn.running_mean.clone()
    clf(torch.randn(4, 1, 32, 32) * 5 + 3)
    assert torch.equal(bn.running_mean, before)
