"""The official C2L code's checkpoints in medlearn, and the DenseNet-121 pretraining config.

The reference networks are written here from the torchvision architectures the official code
builds (``models/resnet_mixup.py``: torchvision-style ResNet-18 with a 512->128 ``fc``;
``models/DensenetModels.py``: torchvision DenseNet-121 with a 1024->128 ``classifier``), so their
state dicts carry torchvision's key names, independent of MONAI's. Checkpoints are saved the way
``train_C2L_*.py`` saves them: ``{"opt": argparse.Namespace, "model", "model_ema", "contrast",
"optimizer", "epoch"}``, networks inside ``nn.DataParallel`` (``encoder.module.`` /
``densenet121.module.`` prefixes).
"""

from __future__ import annotations

import argparse
import os
from collections import OrderedDict

import pytest
import torch
from lightning.pytorch import seed_everything
from torch import nn

from medlearn.engine.checkpoint import CheckpointError, load_pretrained, safe_load
from medlearn.engine.config import instantiate_class, load_config
from medlearn.engine.contract import training_step_problems
from medlearn.engine.run import fit_from_config
from medlearn.methods.c2l import import_official
from medlearn.methods.c2l.model import C2LEncoder
from medlearn.methods.c2l.recipe import write_contract_data
from medlearn.registry import config_dir
from medlearn.tasks import ImageClassifier


# -- torchvision-style references -----------------------------------------------------------------
class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                           if stride != 1 or cin != cout else None)

    def forward(self, x):
        out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(out + (x if self.downsample is None else self.downsample(x)))


class TorchvisionResNet18(nn.Module):
    """ResNet-18 with torchvision's module names; adaptive pooling (the official fixed 7x7 pool
    is the same at 224 px)."""

    def __init__(self, low_dim: int = 128) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        widths, cin = [64, 128, 256, 512], 64
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            setattr(self, f"layer{i + 1}", nn.Sequential(BasicBlock(cin, w, stride), BasicBlock(w, w, 1)))
            cin = w
        self.fc = nn.Linear(512, low_dim)

    def features(self, x):
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
        return x.mean(dim=(2, 3))

    def forward(self, x):
        return self.fc(self.features(x))


class DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int = 32, bn_size: int = 4) -> None:
        super().__init__()
        self.norm1, self.relu1 = nn.BatchNorm2d(cin), nn.ReLU()
        self.conv1 = nn.Conv2d(cin, bn_size * growth, 1, bias=False)
        self.norm2, self.relu2 = nn.BatchNorm2d(bn_size * growth), nn.ReLU()
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, 1, 1, bias=False)

    def forward(self, x):
        new = self.conv2(self.relu2(self.norm2(self.conv1(self.relu1(self.norm1(x))))))
        return torch.cat([x, new], 1)


class TorchvisionDenseNet121(nn.Module):
    """DenseNet-121 with torchvision's module names (``features.denseblockN.denselayerM.norm1`` ...)."""

    def __init__(self, low_dim: int = 128) -> None:
        super().__init__()
        parts: OrderedDict[str, nn.Module] = OrderedDict(
            conv0=nn.Conv2d(3, 64, 7, 2, 3, bias=False), norm0=nn.BatchNorm2d(64), relu0=nn.ReLU(),
            pool0=nn.MaxPool2d(3, 2, 1))
        c = 64
        for i, n in enumerate((6, 12, 24, 16)):
            block = nn.Sequential(OrderedDict((f"denselayer{j + 1}", DenseLayer(c + 32 * j)) for j in range(n)))
            parts[f"denseblock{i + 1}"] = block
            c += 32 * n
            if i < 3:
                parts[f"transition{i + 1}"] = nn.Sequential(OrderedDict(
                    norm=nn.BatchNorm2d(c), relu=nn.ReLU(), conv=nn.Conv2d(c, c // 2, 1, bias=False),
                    pool=nn.AvgPool2d(2, 2)))
                c //= 2
        parts["norm5"] = nn.BatchNorm2d(c)
        self.features = nn.Sequential(parts)
        self.classifier = nn.Linear(c, low_dim)

    def forward(self, x):
        return self.classifier(torch.relu(self.features(x)).mean(dim=(2, 3)))


def _randomised(net: nn.Module, seed: int) -> nn.Module:
    """Random weights and BatchNorm statistics (a trained network is not at its init), eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if name.endswith("running_var"):
                t.copy_(0.5 + torch.rand(t.shape, generator=g))
            elif name.endswith("running_mean") or name.endswith("bias"):
                t.copy_(0.1 * torch.randn(t.shape, generator=g))
            elif t.is_floating_point() and t.ndim == 1:  # BatchNorm scale
                t.copy_(0.75 + 0.5 * torch.rand(t.shape, generator=g))
            elif t.is_floating_point():
                fan_in = max(1, t[0].numel())
                t.copy_(torch.randn(t.shape, generator=g) * (2.0 / fan_in) ** 0.5)
    return net.eval()


def _official_file(path, student: nn.Module, teacher: nn.Module, prefix: str, legacy: bool = False):
    """Save the way ``train_C2L_*.py`` does (every 10 epochs, ``ckpt_epoch_N.pth``)."""
    opt = argparse.Namespace(model="resnet18", batch_size=256, epochs=150, learning_rate=0.03,
                             lr_decay_epochs=[60, 80, 100], nce_k=16384, nce_t=0.07, alpha=0.999, c2l=True)
    state = {
        "opt": opt,
        "model": {prefix + k: v for k, v in student.state_dict().items()},
        "contrast": {"params": torch.tensor([-1.0, 0.07]), "memory": torch.rand(64, 128)},
        "optimizer": {"state": {}, "param_groups": [{"lr": 3e-5, "momentum": 0.9, "params": [0, 1]}]},
        "epoch": 150,
        "model_ema": {prefix + k: v for k, v in teacher.state_dict().items()},
    }
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    return path


@pytest.fixture(scope="module")
def resnet_ckpt(tmp_path_factory):
    student = _randomised(TorchvisionResNet18(), 0)
    teacher = _randomised(TorchvisionResNet18(), 1)
    path = _official_file(tmp_path_factory.mktemp("official") / "ckpt_epoch_150.pth", student, teacher,
                          "encoder.module.")
    return path, student, teacher


def _grey(n=2, size=64, seed=3):
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed))


# -- the reference really has torchvision's layout -------------------------------------------------
def test_reference_has_the_torchvision_resnet18_keys():
    keys = list(TorchvisionResNet18().state_dict())
    assert len(keys) == 122  # torchvision's resnet18().state_dict(), num_batches_tracked included
    for k in ("conv1.weight", "bn1.running_var", "layer1.0.conv1.weight", "layer2.0.downsample.0.weight",
              "layer2.0.downsample.1.num_batches_tracked", "layer4.1.bn2.bias", "fc.weight", "fc.bias"):
        assert k in keys
    assert "layer2.0.downsample.0.bias" not in keys and "layer1.0.downsample.0.weight" not in keys


# -- the importer ---------------------------------------------------------------------------------
def test_import_official_grey_model_equals_official_model_on_repeated_grey(resnet_ckpt):
    path, student, _ = resnet_ckpt
    sd = import_official(path)
    assert sd["student.backbone.body.conv1.weight"].shape == (64, 1, 7, 7)
    assert torch.count_nonzero(sd["student.backbone.body.layer3.0.downsample.0.bias"]) == 0
    enc = C2LEncoder("resnet18", 2, 1, 128)
    enc.load_state_dict({k[len("student."):]: v for k, v in sd.items()}, strict=True)
    enc.eval()
    x = _grey()
    with torch.no_grad():
        ref_feat, ref_emb = student.features(x.repeat(1, 3, 1, 1)), student(x.repeat(1, 3, 1, 1))
        feat, emb = enc.backbone(x), enc(x)
    assert torch.allclose(feat, ref_feat, atol=1e-5, rtol=1e-5)
    assert torch.allclose(emb, ref_emb, atol=1e-5, rtol=1e-5)


def test_import_official_rgb_and_teacher(resnet_ckpt):
    path, student, teacher = resnet_ckpt
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))  # three different channels
    for weights, ref, prefix in (("model", student, "student."), ("model_ema", teacher, "teacher.")):
        sd = import_official(path, weights=weights, in_channels=3)
        assert all(k.startswith(prefix) for k in sd)
        enc = C2LEncoder("resnet18", 2, 3, 128)
        enc.load_state_dict({k[len(prefix):]: v for k, v in sd.items()}, strict=True)
        with torch.no_grad():
            assert torch.allclose(enc.eval()(x), ref(x), atol=1e-5, rtol=1e-5), weights


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-format"])
def test_classifier_pretrained_on_the_official_file(resnet_ckpt, tmp_path, legacy):
    """``pretrained: <official file>`` in a fine-tuning config: found through load_pretrained's importer."""
    _, student, teacher = resnet_ckpt
    path = _official_file(tmp_path / "c2l_res18.pth", student, teacher, "encoder.module.", legacy=legacy)
    clf = ImageClassifier("resnet18", 2, 1, num_classes=14, pretrained=str(path)).eval()
    assert "read as C2L official" in clf.load_report and "backbone.body.conv1.weight" in clf.load_report
    x = _grey()
    with torch.no_grad():
        assert torch.allclose(clf.backbone(x), student.features(x.repeat(1, 3, 1, 1)), atol=1e-5, rtol=1e-5)


def test_load_pretrained_keeps_rgb_for_a_three_channel_model(resnet_ckpt):
    path, student, _ = resnet_ckpt
    clf = ImageClassifier("resnet18", 2, 3, num_classes=2)
    rep = load_pretrained(clf, path, {"student.backbone.": "backbone."}, ignore=("num_batches_tracked",))
    assert not rep.adapted and rep.imported
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(clf.eval().backbone(x), student.features(x), atol=1e-5, rtol=1e-5)


def test_partial_or_foreign_checkpoints_are_refused(resnet_ckpt, tmp_path):
    path, _, _ = resnet_ckpt
    ckpt = safe_load(path)
    cut = dict(ckpt, model={k: v for k, v in ckpt["model"].items() if k != "encoder.module.layer3.1.bn2.running_var"})
    with pytest.raises(CheckpointError, match=r"missing: backbone\.body\.layer3\.1\.bn2\.running_var"):
        import_official(cut)
    extra = dict(ckpt, model={**ckpt["model"], "encoder.module.layer5.0.conv1.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match=r"unexpected: backbone\.body\.layer5\.0\.conv1\.weight"):
        import_official(extra)
    wide = dict(ckpt, model={**ckpt["model"], "encoder.module.conv1.weight": torch.zeros(128, 3, 7, 7)})
    with pytest.raises(CheckpointError, match="conv1.weight: checkpoint"):
        import_official(wide)
    torch.save(cut, tmp_path / "cut.pth")
    with pytest.raises(CheckpointError, match="missing"):  # the automatic path refuses it too
        ImageClassifier("resnet18", 2, 1, num_classes=2, pretrained=str(tmp_path / "cut.pth"))
    with pytest.raises(CheckpointError, match="do not fit the model"):  # a ResNet-18 into a DenseNet
        ImageClassifier("densenet121", 2, 1, num_classes=2, pretrained=str(path))
    with pytest.raises(CheckpointError, match="not an official C2L checkpoint"):
        import_official({"state_dict": {"conv1.weight": torch.zeros(1)}})
    with pytest.raises(CheckpointError, match="no 'model_ema'"):
        import_official({"model": ckpt["model"]}, weights="model_ema")


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_weights_only_reading_still_refuses_code(resnet_ckpt, tmp_path):
    """The importer allows the saved options (argparse.Namespace), nothing that runs code."""
    path, _, _ = resnet_ckpt
    ckpt = safe_load(path)
    assert isinstance(ckpt["opt"], argparse.Namespace) and ckpt["opt"].nce_k == 16384
    torch.save({**ckpt, "opt": _Evil()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="could run code, so it was not loaded"):
        import_official(tmp_path / "evil.pth")


def test_densenet121_official_checkpoint(tmp_path):
    student = _randomised(TorchvisionDenseNet121(), 5)
    teacher = _randomised(TorchvisionDenseNet121(), 6)
    path = _official_file(tmp_path / "ckpt_epoch_150.pth", student, teacher, "densenet121.module.")
    clf = ImageClassifier("densenet121", 2, 1, num_classes=14, pretrained=str(path)).eval()
    assert "features.conv0.weight" in clf.load_report
    x = _grey(size=64)
    with torch.no_grad():
        ref = torch.relu(student.features(x.repeat(1, 3, 1, 1))).mean(dim=(2, 3))
        assert torch.allclose(clf.backbone(x), ref, atol=1e-5, rtol=1e-5)
    sd = import_official(path)
    enc = C2LEncoder("densenet121", 2, 1, 128)
    enc.load_state_dict({k[len("student."):]: v for k, v in sd.items()}, strict=True)
    with torch.no_grad():
        assert torch.allclose(enc.eval()(x), student(x.repeat(1, 3, 1, 1)), atol=1e-5, rtol=1e-5)


# -- the DenseNet-121 pretraining config -----------------------------------------------------------
def test_densenet121_config_builds_and_trains_one_step(tmp_path):
    root = write_contract_data(tmp_path)
    cfg = load_config(config_dir("c2l") / "chestxray14_densenet121.yaml", {
        "data.init_args.root": str(root), "data.init_args.batch_size": 8, "data.init_args.image_size": 32,
        "data.init_args.num_workers": 0, "model.init_args.view_size": 32, "model.init_args.queue_size": 64,
        "model.init_args.channels_last": False})
    assert cfg["model"]["init_args"]["backbone"] == "densenet121"
    seed_everything(0)
    model = instantiate_class(cfg["model"])
    assert model.student.head.in_features == 1024 and model.student.head.out_features == 128
    dm = instantiate_class(cfg["data"])
    dm.setup("fit")
    problems = training_step_problems(model, next(iter(dm.train_dataloader())))
    assert not problems, problems


# -- the fine-tuning recipe end to end -------------------------------------------------------------
def test_paper_finetune_config_fits_from_the_official_file(resnet_ckpt, tmp_path):
    """chestxray14_finetune.yaml as shipped feeds the network smaller images (224) than it decodes
    (256); with ``pretrained: <official file>`` it runs through the run builder (tiny sizes here)."""
    path, student, _ = resnet_ckpt
    root = write_contract_data(tmp_path)
    classes = ["Cardiomegaly", "Effusion", "Nodule", "Consolidation"]
    cfg = load_config(config_dir("c2l") / "chestxray14_finetune.yaml", {
        "data.init_args.root": str(root), "data.init_args.classes": classes, "data.init_args.batch_size": 8,
        "data.init_args.num_workers": 0, "data.init_args.image_size": 48, "model.init_args.image_size": 40,
        "model.init_args.num_classes": 4, "model.init_args.class_names": classes,
        "model.init_args.pretrained": str(path), "trainer.max_epochs": 1, "trainer.limit_train_batches": 1,
        "trainer.limit_val_batches": 1, "trainer.accelerator": "cpu", "trainer.precision": "32-true"})
    model = instantiate_class(cfg["model"])
    assert "read as C2L official" in model.load_report
    conv1 = model.backbone.body.conv1.weight.detach().clone()
    assert torch.equal(conv1, student.conv1.weight.sum(1, keepdim=True))
    res = fit_from_config(cfg, tmp_path / "run", test=False, progress="none", model=model)
    assert res.last_ckpt.is_file()
    assert not torch.equal(model.backbone.body.conv1.weight.detach(), conv1)  # full fine-tuning moved it
