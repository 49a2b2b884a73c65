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


def test_a_failed_write_names_the_os_error_and_keeps_the_previous_file(tmp_path, monkeypatch):
    import errno

    from medlearn.engine import checkpoint as ck

    p = tmp_path / "last.ckpt"
    atomic_save({"epoch": 1, "w": torch.zeros(100)}, p)

    class Full:
        def __init__(self, f):
            self.f, self.left = f, 100

        def write(self, data):
            if len(data) > self.left:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self.left -= len(data)
            return self.f.write(data)

        def flush(self):
            self.f.flush()

    monkeypatch.setattr(ck, "_WriteErrorRecorder", lambda f, real=ck._WriteErrorRecorder: real(Full(f)))
    with pytest.raises(ck.CheckpointWriteError, match="No space left on device.*previous last.ckpt is kept") as e:
        atomic_save({"epoch": 2, "w": torch.ones(10_000)}, p)
    assert e.value.errno == errno.ENOSPC and "\n" not in str(e.value)
    assert safe_load(p)["epoch"] == 1 and [f.name for f in tmp_path.iterdir()] == ["last.ckpt"]


def test_partial_writes_are_removed_and_nothing_else(tmp_path):
    from medlearn.engine.checkpoint import remove_partial_writes

    for name in (".last.ckpt.abc123.tmp", "last.ckpt", "best.ckpt", ".notes.tmp"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in remove_partial_writes(tmp_path)] == [".last.ckpt.abc123.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".notes.tmp", "best.ckpt", "last.ckpt"]


def _lightning_ckpt(**extra):
    return {"pytorch-lightning_version": "2.6.0", "state_dict": {"w": torch.ones(2)},
            "hyper_parameters": {"_class_path": "medlearn.tasks.ImageClassifier",
                                 "_instantiator": "lightning.pytorch.cli.instantiate_module"}, **extra}


def test_check_checkpoint_accepts_medlearn_and_refuses_what_names_other_code():
    from medlearn.engine.checkpoint import check_checkpoint

    assert check_checkpoint(_lightning_ckpt(), "a.ckpt") == "medlearn.tasks.ImageClassifier"
    with pytest.raises(CheckpointError, match="a.ckpt: written by medlearn.tasks.ImageClassifier, but this run"):
        check_checkpoint(_lightning_ckpt(), "a.ckpt", module="medlearn.methods.c2l.module.C2L")
    with pytest.raises(CheckpointError, match="plain state dict"):
        check_checkpoint({"w": torch.ones(2)}, "a.ckpt")
    with pytest.raises(CheckpointError, match="not written by Lightning"):
        check_checkpoint({"state_dict": {"w": torch.ones(2)}}, "a.ckpt")
    bad = _lightning_ckpt()
    bad["hyper_parameters"]["_instantiator"] = "os.system"
    with pytest.raises(CheckpointError, match="'os.system' to build its model"):
        check_checkpoint(bad, "a.ckpt")
    bad = _lightning_ckpt()
    bad["hyper_parameters"]["transform"] = {"class_path": "evil.Transform", "init_args": {}}
    with pytest.raises(CheckpointError, match="names the class 'evil.Transform'"):
        check_checkpoint(bad, "a.ckpt")
    ok = _lightning_ckpt()
    ok["hyper_parameters"]["transform"] = {"class_path": "monai.transforms.RandFlip"}
    assert check_checkpoint(ok, "a.ckpt")
    with pytest.raises(CheckpointError, match="written by 'mypkg.Model', not by a medlearn module"):
        check_checkpoint(_lightning_ckpt(medlearn={"module": "mypkg.Model"}), "a.ckpt")


def test_check_weights_fit_says_what_does_not_fit_in_one_line():
    from medlearn.engine.checkpoint import check_weights_fit

    model = nn.Sequential(nn.Linear(3, 2))
    check_weights_fit(model, model.state_dict(), "m.ckpt")
    sd = {"0.weight": torch.zeros(5, 3), "extra": torch.zeros(1)}
    with pytest.raises(CheckpointError) as e:
        check_weights_fit(model, sd, "m.ckpt")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("m.ckpt: its weights do not fit Sequential")
    assert "1 model keys missing (e.g. 0.bias)" in msg and "1 unknown keys (e.g. extra)" in msg
    assert "1 shapes differ (e.g. 0.weight)" in msg
    check_weights_fit(model, {"0.weight": torch.zeros(2, 3)}, "m.ckpt", strict=False)  # missing keys allowed
