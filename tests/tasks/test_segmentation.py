"""BackboneUNet and Segmenter: shapes, gradients, pretrained encoders, labels, Dice, inference, a fit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from lightning.pytorch import seed_everything

from medlearn.engine.checkpoint import CheckpointError, load_pretrained
from medlearn.engine.config import load_config
from medlearn.engine.contract import reload_problems
from medlearn.engine.run import fit_from_config
from medlearn.methods.rubik.module import Rubik
from medlearn.metrics.segmentation import (
    BRATS,
    RegionSet,
    SegmentationMetrics,
    classes_to_labels,
    labels_to_classes,
    region_set,
)
from medlearn.nn import Backbone
from medlearn.nn.unet import BackboneUNet, encoder_stages
from medlearn.registry import config_dir
from medlearn.synth.brats import write_brats
from medlearn.tasks.segmentation import RandomPatch, Segmenter, random_patch

# ------------------------------------------------------------------------------------ the U-Net


@pytest.mark.parametrize("name,dims,side,stride", [
    ("smallcnn", 3, 16, 8), ("plaincnn", 3, 16, 8), ("resnet18", 3, 32, 32), ("smallcnn", 2, 16, 8),
])
def test_unet_shape_and_gradients(name, dims, side, stride):
    torch.manual_seed(0)
    net = BackboneUNet(name, dims, in_channels=2, out_channels=3)
    assert net.total_stride == stride
    x = torch.randn(2, 2, *([side] * dims))
    y = net(x)
    assert y.shape == (2, 3, *([side] * dims))
    y.square().mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"no gradient reaches {missing[:5]}"
    # the encoder is the factory backbone itself: its stages give the backbone's pooled features
    net.eval()
    with torch.no_grad():
        deep = net.encode(x)[-1]
        assert torch.allclose(deep.mean(dim=tuple(range(2, deep.ndim))), net.backbone(x), atol=1e-5)
    assert {k for k in net.state_dict() if k.startswith("backbone.")} == \
        {f"backbone.{k}" for k in net.backbone.state_dict()}


def test_unet_rejects_unsupported_encoders_and_sizes():
    with pytest.raises(ValueError, match="FlexibleUNet"):
        BackboneUNet("densenet121", 3, 1, 2)
    with pytest.raises(ValueError, match="FlexibleUNet"):
        encoder_stages(Backbone(torch.nn.Identity(), 1, "efficientnet-b0", 3, 1))
    net = BackboneUNet("smallcnn", 3, 1, 2)
    with pytest.raises(ValueError, match="multiple of the encoder's total stride 8"):
        net(torch.zeros(1, 1, 12, 16, 16))
    with pytest.raises(ValueError, match="expects"):
        net(torch.zeros(1, 2, 16, 16, 16))
    with pytest.raises(ValueError, match="decoder_channels needs 3"):
        BackboneUNet("smallcnn", 3, 1, 2, decoder_channels=(8, 8))
    assert BackboneUNet("smallcnn", 2, 1, 2, decoder_channels=(4, 4, 4))(torch.zeros(2, 1, 8, 8)).shape == (2, 2, 8, 8)


# ------------------------------------------------------------------------------- pretrained loads


@pytest.fixture(scope="module")
def rubik_ckpt(tmp_path_factory):
    torch.manual_seed(1)
    rubik = Rubik(encoder="smallcnn", in_channels=4, head_hidden=32)
    with torch.no_grad():  # non-default BatchNorm statistics too, so equality means something
        for name, buf in rubik.named_buffers():
            if "running" in name:
                buf.add_(torch.rand_like(buf))
    path = tmp_path_factory.mktemp("rubik") / "rubik.ckpt"
    ckpt = {"state_dict": rubik.state_dict()}
    rubik.on_save_checkpoint(ckpt)  # what Lightning adds: the module and the encoder it declares
    torch.save(ckpt, path)
    return path, {k: v.clone() for k, v in rubik.state_dict().items() if k.startswith("octad.encoder.")}


def test_load_rubik_encoder_into_unet(rubik_ckpt):
    path, enc = rubik_ckpt
    net = BackboneUNet("smallcnn", 3, 4, 4)
    report = load_pretrained(net, path, {"octad.encoder.": "backbone."})
    assert len(report.loaded) == len(enc) == len(net.backbone.state_dict())
    sd = net.state_dict()
    for k, v in enc.items():
        assert torch.equal(sd["backbone." + k[len("octad.encoder."):]], v), k
    assert report.not_covered and all(not k.startswith("backbone.") for k in report.not_covered)
    with pytest.raises(CheckpointError, match="do not fit"):  # a different encoder: loud failure
        load_pretrained(BackboneUNet("plaincnn", 3, 4, 4), path, {"octad.encoder.": "backbone."})


def test_segmenter_pretrained_auto_prefix(rubik_ckpt):
    path, enc = rubik_ckpt
    model = Segmenter(backbone="smallcnn", in_channels=4, pretrained=str(path))
    assert "octad.encoder." in model.load_report
    sd = model.state_dict()
    for k, v in enc.items():
        assert torch.equal(sd["net.backbone." + k[len("octad.encoder."):]], v), k


def test_freeze_encoder_epochs():
    model = Segmenter(backbone="smallcnn", in_channels=1, freeze_encoder_epochs=2)
    model.train()
    assert not any(p.requires_grad for p in model.net.backbone.parameters())
    assert not model.net.backbone.training and model.net.decoder.training
    assert all(p.requires_grad for p in model.net.decoder.parameters())
    model._set_encoder_frozen(False)
    assert all(p.requires_grad for p in model.net.backbone.parameters()) and model.net.backbone.training


# ------------------------------------------------------------------------------- labels and Dice


def test_label_value_mapping_is_exact():
    seg = torch.tensor([0, 1, 2, 4, 4, 0, 2]).view(1, 1, 7)
    cls = labels_to_classes(seg, [0, 1, 2, 4])
    assert cls.dtype == torch.long and cls.flatten().tolist() == [0, 1, 2, 3, 3, 0, 2]
    assert torch.equal(classes_to_labels(cls, [0, 1, 2, 4]), seg)
    with pytest.raises(ValueError, match=r"\[3\]"):
        labels_to_classes(torch.tensor([0, 3, 4]), [0, 1, 2, 4])
    with pytest.raises(ValueError, match=r"\[-1, 7\]"):
        labels_to_classes(torch.tensor([-1, 7, 4]), [0, 1, 2, 4])


def _naive_dice(pred: torch.Tensor, true: torch.Tensor) -> float:
    p, t = pred.bool(), true.bool()
    if t.sum() == 0:
        return 1.0 if p.sum() == 0 else 0.0
    return 2.0 * float((p & t).sum()) / float(p.sum() + t.sum())


def _naive_regions(lab: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"WT": (lab == 1) | (lab == 2) | (lab == 4), "TC": (lab == 1) | (lab == 4), "ET": lab == 4}


def _dice(m: SegmentationMetrics) -> dict[str, float]:
    return {k.removeprefix("dice/"): v for k, v in m.compute().items() if k.startswith("dice/")}


def test_dice_hand_worked_case():
    # one case, 1 x 4 x 4 x 1: ground truth ET 2 voxels, core 1, oedema 3
    true = torch.zeros(1, 1, 4, 4, 1, dtype=torch.long)
    true[0, 0, 0, :2, 0] = 4
    true[0, 0, 1, 0, 0] = 1
    true[0, 0, 2, :3, 0] = 2
    m = SegmentationMetrics(BRATS)
    m.update(true.clone(), true)
    assert _dice(m) == {"WT": 1.0, "TC": 1.0, "ET": 1.0}
    m.reset()
    m.update(torch.zeros_like(true), true)
    assert _dice(m) == {"WT": 0.0, "TC": 0.0, "ET": 0.0}
    m.reset()
    # by hand: prediction = everything tumour labelled oedema, plus one false-positive voxel
    pred = torch.where(true > 0, 2, 0)
    pred[0, 0, 3, 3, 0] = 2
    # WT: |P|=7, |T|=6, overlap 6 -> 12/13; TC: |P|=0, |T|=3 -> 0; ET: |P|=0, |T|=2 -> 0
    m.update(pred, true)
    got = _dice(m)
    assert got["WT"] == pytest.approx(12 / 13) and got["TC"] == 0.0 and got["ET"] == 0.0


def test_dice_matches_naive_over_cases():
    g = torch.Generator().manual_seed(0)
    values = torch.tensor([0, 1, 2, 4])
    true = values[torch.randint(0, 4, (3, 1, 6, 6, 6), generator=g)]
    pred = values[torch.randint(0, 4, (3, 1, 6, 6, 6), generator=g)]
    pred[2] = 0  # an empty prediction
    true[1][true[1] == 4] = 2  # a case without enhancing tumour (ET empty)
    pred[1][pred[1] == 4] = 1
    m = SegmentationMetrics(BRATS)
    m.update(pred[:2], true[:2])  # accumulated over two batches
    m.update(pred[2:], true[2:])
    got = _dice(m)
    for r in ("WT", "TC", "ET"):
        naive = [_naive_dice(_naive_regions(pred[i])[r], _naive_regions(true[i])[r]) for i in range(3)]
        assert got[r] == pytest.approx(sum(naive) / 3, abs=1e-6), r
    assert _naive_dice(_naive_regions(pred[1])["ET"], _naive_regions(true[1])["ET"]) == 1.0  # both empty
    lab = SegmentationMetrics(RegionSet.per_label([0, 1, 2, 4], ["bg", "c1", "c2", "c4"]))
    lab.update(pred, true)
    got = _dice(lab)
    for name, v in zip(["c1", "c2", "c4"], [1, 2, 4]):
        naive = [_naive_dice(pred[i] == v, true[i] == v) for i in range(3)]
        assert got[name] == pytest.approx(sum(naive) / 3, abs=1e-6), name


# ---------------------------------------------------------------------------------- inference


def test_sliding_window_equals_whole_volume():
    torch.manual_seed(0)
    whole = Segmenter(backbone="smallcnn", in_channels=4)
    sw = Segmenter(backbone="smallcnn", in_channels=4, roi_size=(16, 16, 16), sw_batch_size=2)
    sw.load_state_dict(whole.state_dict())
    whole.eval()
    sw.eval()
    x = torch.randn(2, 4, 16, 16, 16)
    with torch.no_grad():
        assert torch.allclose(sw.infer(x), whole.infer(x), atol=1e-5)
        # smaller windows over a larger volume: same shape
        assert sw.infer(torch.randn(1, 4, 24, 16, 32)).shape == (1, 4, 24, 16, 32)


@pytest.mark.filterwarnings("ignore:Num foregrounds 0")
def test_random_patch():
    seg = torch.zeros(1, 20, 20, 20, dtype=torch.long)
    seg[0, 15:18, 2:5, 9:12] = 4
    item = {"image": torch.randn(4, 20, 20, 20), "seg": seg, "name": "c0"}
    t = random_patch((8, 8, 8), pos_ratio=1.0)
    assert isinstance(t, RandomPatch)
    torch.manual_seed(3)
    a = t(item)
    assert a["image"].shape == (4, 8, 8, 8) and a["seg"].shape == (1, 8, 8, 8) and a["name"] == "c0"
    assert type(a["image"]) is torch.Tensor and a["seg"].dtype == torch.long
    assert (a["seg"] == 4).any()  # centred on tumour
    torch.manual_seed(3)
    b = t(item)
    assert torch.equal(a["image"], b["image"])  # seeded from the torch RNG
    assert item["image"].shape == (4, 20, 20, 20)  # the cached item is untouched
    small = RandomPatch((8, 8, 8), pos_ratio=0.0)(
        {"image": torch.zeros(4, 6, 6, 6), "seg": torch.zeros(1, 6, 6, 6, dtype=torch.long)})
    assert small["image"].shape == (4, 8, 8, 8) and float(small["image"].min()) == -1.0  # padded


# ------------------------------------------------------------------------------ a real short fit


def test_fit_from_config_and_reload(tmp_path):
    root = write_brats(tmp_path / "brats", n_cases=8, size=32, seed=0)
    cfg = load_config(config_dir("rubik") / "demo_segment.yaml", {
        "data.init_args.root": str(root), "data.init_args.spatial_size": [32, 32, 32],
        "trainer.max_epochs": 2,
    })
    seed_everything(0)
    res = fit_from_config(cfg, tmp_path / "run", progress="none")
    assert res.best_ckpt is not None and res.best_ckpt.is_file()
    assert "test/dice/WT" in res.test and 0.0 <= res.test["test/dice/WT"] <= 1.0
    assert {"test/dice/TC", "test/dice/ET", "test/dice_mean"} <= set(res.test)
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert "val/dice_mean" in metrics.columns and metrics["val/dice_mean"].notna().sum() == 2
    assert (tmp_path / "run" / "figures" / "test_dice_per_region.png").is_file()
    assert (tmp_path / "run" / "figures" / "test_example_slice.png").is_file()
    loaded = Segmenter.load_from_checkpoint(res.best_ckpt, map_location="cpu", weights_only=True)
    model = res.model  # after test: the best checkpoint's weights
    model.eval()
    loaded.eval()
    x = torch.randn(1, 4, 32, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


# --------------------------------------------------------------------------- distances, region sets


def _naive_surface(mask: np.ndarray) -> np.ndarray:
    """Border pixels of a 2D mask (4-neighbourhood), as coordinates."""
    m = np.pad(mask.astype(bool), 1)
    inner = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
    return np.argwhere(mask.astype(bool) & ~inner).astype(float)


def _naive_hd(a: np.ndarray, b: np.ndarray, q: float) -> tuple[float, float]:
    """(q-th percentile symmetric Hausdorff, mean symmetric surface distance) by brute force."""
    pa, pb = _naive_surface(a), _naive_surface(b)
    d = np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1))
    ab, ba = d.min(1), d.min(0)
    return max(np.percentile(ab, q), np.percentile(ba, q)), float(np.concatenate([ab, ba]).mean())


def test_surface_distances_match_a_brute_force_oracle():
    g = torch.Generator().manual_seed(1)
    true = torch.zeros(3, 1, 24, 24, dtype=torch.long)
    pred = torch.zeros_like(true)
    for i in range(3):  # two labels as nested blobs, shifted in the prediction
        r0, c0 = (int(v) for v in torch.randint(3, 9, (2,), generator=g))
        true[i, 0, r0:r0 + 10, c0:c0 + 9] = 1
        true[i, 0, r0 + 3:r0 + 6, c0 + 2:c0 + 6] = 2
        pred[i, 0, r0 + 1:r0 + 12, c0 + i:c0 + 8 + i] = 1
        pred[i, 0, r0 + 4:r0 + 6, c0 + 2:c0 + 7] = 2
    rs = RegionSet((("disc", (1, 2)), ("cup", (2,))))
    m = SegmentationMetrics(rs, distances=True)
    m.update(pred, true)
    got = m.compute()
    for name, vals in (("disc", (1, 2)), ("cup", (2,))):
        hd, asd = zip(*[_naive_hd(np.isin(pred[i, 0].numpy(), vals), np.isin(true[i, 0].numpy(), vals), 95)
                        for i in range(3)])
        assert got[f"hd95/{name}"] == pytest.approx(np.mean(hd), rel=1e-5), name
        assert got[f"asd/{name}"] == pytest.approx(np.mean(asd), rel=1e-5), name
    assert got["hd95_undefined"] == 0.0


def test_empty_masks_and_region_set_checks():
    true = torch.zeros(2, 1, 8, 8, dtype=torch.long)
    pred = torch.zeros_like(true)
    true[1, 0, 2:5, 2:5] = 1  # case 0: both empty (distance 0); case 1: prediction empty (undefined)
    m = SegmentationMetrics(RegionSet.per_label([0, 1]), distances=True)
    m.update(pred, true)
    got = m.compute()
    assert got["dice/label_1"] == pytest.approx(0.5) and got["hd95/label_1"] == 0.0 and got["hd95_undefined"] == 1.0
    with pytest.raises(ValueError, match=r"label values \[4\]"):
        region_set("brats", [0, 1, 2])
    with pytest.raises(ValueError, match="regions must be"):
        region_set("kidney", [0, 1])
    assert region_set({"tumour": [1, 2]}, [0, 1, 2]).names == ["tumour"]
    assert region_set("labels", [0, 3, 7], ["bg", "a", "b"]).regions == (("a", (3,)), ("b", (7,)))
    assert BRATS.masks(torch.tensor([[[0, 1, 2, 4]]])).tolist() == [[[0, 1, 1, 1], [0, 1, 0, 1], [0, 0, 0, 1]]]


# ---------------------------------------------------------------------------------- 2D, end to end


def test_2d_segmenter_on_an_image_mask_table(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    rows = []
    for i in range(24):  # a bright disc with a brighter cup, labels 0 / 1 rim / 2 cup
        yy, xx = np.mgrid[:32, :32]
        cy, cx = 16 + rng.integers(-4, 5), 16 + rng.integers(-4, 5)
        r = np.hypot(yy - cy, xx - cx)
        mask = np.where(r < 4, 2, np.where(r < 9, 1, 0)).astype(np.uint8)
        img = (60 + 80 * (mask >= 1) + 80 * (mask == 2) + rng.normal(0, 10, (32, 32))).clip(0, 255).astype(np.uint8)
        Image.fromarray(img).save(tmp_path / f"f{i}.png")
        Image.fromarray(mask * 100).save(tmp_path / f"f{i}_mask.png")  # stored as 0 / 100 / 200
        rows.append(f"f{i}.png,f{i}_mask.png,p{i}")
    (tmp_path / "masks.csv").write_text("image,mask,group\n" + "\n".join(rows) + "\n")
    cfg = {
        "seed_everything": 0,
        "trainer": {"max_epochs": 15, "accelerator": "cpu", "devices": 1},
        "model": {"class_path": "medlearn.tasks.segmentation.Segmenter", "init_args": {
            "backbone": "smallcnn", "spatial_dims": 2, "in_channels": 1, "num_classes": 3,
            "label_values": [0, 1, 2], "regions": "disc_cup", "lr": 0.01, "background_value": 0.0}},
        "data": {"class_path": "medlearn.data.segmentation2d.ImageMaskDataModule", "init_args": {
            "root": str(tmp_path), "image_size": 32, "channels": 1, "batch_size": 4, "val_fraction": 0.25,
            "test_fraction": 0.25, "value_map": {0: 0, 100: 1, 200: 2}, "label_values": [0, 1, 2]}},
    }
    res = fit_from_config(cfg, tmp_path / "run", progress="none")
    assert {"test/dice/disc", "test/dice/cup", "test/dice_mean", "test/hd95/disc", "test/asd_mean"} <= set(res.test)
    assert res.test["test/dice/disc"] > 0.5  # a few epochs on an easy task: it learns the disc
    assert res.model.class_names == ["background", "rim", "cup"]
    assert (tmp_path / "run" / "figures" / "test_example_slice.png").is_file()
    assert not reload_problems(res.model, res.last_ckpt)
