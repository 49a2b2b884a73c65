"""``medlearn predict`` with a Segmenter writes one label map per input, on the input's own grid.

Through the CLI (``medlearn.cli.main``, in process), on tiny synthetic data whose grids the
preprocessing changes: 3D volumes in a manifest, each with its own shape, spacing, orientation and
origin, reoriented to RAS, resampled, cropped to the foreground and padded; 2D images of several
sizes (one a JPEG) resized to the network's side. Oracles: a module whose ``predict_labels``
returns the labels the network input itself shows (the phantoms' intensities are their labels),
so the written map must reproduce each input's own labels voxel for voxel wherever the network
saw the input, and be background where the preprocessing cropped it away.
"""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from medlearn.cli import main
from medlearn.data.decode import resize_image, resize_mask
from medlearn.tasks.segmentation import Segmenter

LABELS = [0, 2, 5]  # stored label values of classes 0 / 1 / 2: written as is, never re-indexed


def _affine(i: int) -> np.ndarray:
    """Case ``i``'s grid: flipped axes for some cases, anisotropic spacing, its own origin."""
    sx = -2.0 if i % 2 else 2.0
    sy = -2.0 if i % 3 == 0 else 2.0
    return np.array([[sx, 0, 0, 10.0 + i], [0, sy, 0, -7.0 * i], [0, 0, 3.0, 5.0], [0, 0, 0, 1]])


def _volume(i: int) -> np.ndarray:
    """Class indices 0/1/2 in a random block pattern inside a box (zero outside), shape per case."""
    rng = np.random.default_rng(i)
    shape = (10 + i, 12, 7 + i % 2)
    vol = np.zeros(shape, dtype=np.float32)
    vol[2:8, 3:10, 1:6] = rng.integers(1, 3, (6, 7, 5))
    vol[3:5, 4:7, 2:4] = 0  # a background hole: the foreground crop keeps it, the labels too
    return vol


@pytest.fixture(scope="module")
def volumes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A manifest of 6 volumes (2 train, 1 val, 3 test), image intensities = class indices."""
    root = tmp_path_factory.mktemp("volumes")
    rows = [["path", "seg", "split"]]
    for i, split in enumerate(["train", "train", "val", "test", "test", "test"]):
        vol = _volume(i)
        nib.save(nib.Nifti1Image(vol, _affine(i)), root / f"case_{i}.nii.gz")
        nib.save(nib.Nifti1Image(np.asarray(LABELS, np.uint8)[vol.astype(int)], _affine(i)),
                 root / f"case_{i}_seg.nii.gz")
        rows.append([f"case_{i}.nii.gz", f"case_{i}_seg.nii.gz", split])
    with (root / "labels.csv").open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    return root


def _volume_config(tmp: Path, root: Path, spatial_size: list[int]) -> Path:
    cfg = {
        "seed_everything": 0,
        "trainer": {"max_epochs": 1, "accelerator": "cpu", "devices": 1, "default_root_dir": str(tmp / "run")},
        "model": {"class_path": "medlearn.tasks.segmentation.Segmenter", "init_args": {
            "backbone": "smallcnn", "spatial_dims": 3, "in_channels": 1, "num_classes": 3,
            "label_values": LABELS, "regions": "labels", "background_value": 0.0}},
        "data": {"class_path": "medlearn.data.volumes.VolumeDataModule", "init_args": {
            "root": str(root), "layout": "manifest", "task": "segmentation", "spatial_size": spatial_size,
            "target_spacing": [1.0, 1.0, 1.5], "orientation": "RAS", "normalisation": "none",
            "foreground_threshold": 0.5, "batch_size": 2, "cache": False}},
    }
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, volumes: Path) -> tuple[Path, Path]:
    """One epoch of ``medlearn fit``: the config and its last checkpoint."""
    tmp = tmp_path_factory.mktemp("fit3d")
    cfg = _volume_config(tmp, volumes, [16, 16, 16])
    assert main(["fit", "--config", str(cfg)]) == 0
    ckpt = tmp / "run" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    return cfg, ckpt


def _read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_volume_label_maps_have_the_inputs_grid_and_label_values(trained, volumes):
    cfg, ckpt = trained
    assert main(["predict", "--config", str(cfg), "--ckpt_path", str(ckpt)]) == 0
    out = cfg.parent / "run" / "predict"
    rows = _read_rows(out / "predictions.csv")
    assert [r["name"] for r in rows] == ["case_3", "case_4", "case_5"]
    assert list(rows[0]) == ["name", "input", "label_map", "voxels_0", "voxels_2", "voxels_5"]
    for i, row in zip((3, 4, 5), rows):
        assert row["input"] == str(volumes / f"case_{i}.nii.gz")
        assert row["label_map"] == f"labels/case_{i}.nii.gz"
        img = nib.load(out / row["label_map"])
        data = np.asanyarray(img.dataobj)
        assert data.shape == _volume(i).shape and data.dtype == np.uint8
        assert np.allclose(img.affine, _affine(i))
        assert set(np.unique(data).tolist()) <= set(LABELS)
        assert [int(row[f"voxels_{v}"]) for v in LABELS] == [int((data == v).sum()) for v in LABELS]


def _labels_of_the_input(self: Segmenter, x: torch.Tensor) -> torch.Tensor:
    """The oracle network: the class each voxel's intensity names (the phantoms' images are their labels)."""
    cls = x[:, :1].float().round().clamp(0, 2).long()
    return torch.as_tensor(LABELS, dtype=torch.uint8)[cls]


@pytest.mark.parametrize("spatial_size,cropped", [([16, 16, 16], False), ([8, 16, 8], True)])
def test_volume_inverse_mapping_puts_every_voxel_back(trained, volumes, tmp_path, monkeypatch, spatial_size, cropped):
    _, ckpt = trained
    cfg = _volume_config(tmp_path, volumes, spatial_size)
    monkeypatch.setattr(Segmenter, "predict_labels", _labels_of_the_input)
    assert main(["predict", "--config", str(cfg), "--ckpt_path", str(ckpt)]) == 0
    out = tmp_path / "run"  # a folder without a training run: predict writes its records there
    assert (out / "predictions.csv").is_file()
    lut = np.asarray(LABELS)
    for i in (3, 4, 5):
        written = np.asanyarray(nib.load(out / "labels" / f"case_{i}.nii.gz").dataobj)
        truth = lut[_volume(i).astype(int)]
        if not cropped:  # the network saw all of the foreground: every voxel is back where it was
            np.testing.assert_array_equal(written, truth)
        else:  # the centred crop cut the foreground: kept voxels exact, the rest background
            agree = written == truth
            assert (agree | (written == 0)).all()
            lost = (truth != 0) & ~agree
            assert 0 < lost.sum() < (truth != 0).sum()
            # what was cut is whole slabs along the cropped axes (x, z), never scattered voxels
            kept_x = np.flatnonzero((written != 0).any(axis=(1, 2)))
            assert np.array_equal(kept_x, np.arange(kept_x[0], kept_x[-1] + 1))


# ------------------------------------------------------------------------------------------------ 2D


def _disc(h: int, w: int, seed: int) -> np.ndarray:
    """0/1 mask: an off-centre rectangle, so a flipped or shifted map would not match."""
    rng = np.random.default_rng(seed)
    m = np.zeros((h, w), dtype=np.uint8)
    y0, x0 = rng.integers(1, h // 3), rng.integers(1, w // 3)
    m[y0:y0 + h // 2, x0:x0 + w // 3] = 1
    return m


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A mask table (masks stored 0 / 255) of 4 training images and a folder of 3 images to predict."""
    root = tmp_path_factory.mktemp("images")
    rows = []
    for i in range(4):
        m = _disc(24, 24, i)
        Image.fromarray((40 + 180 * m).astype(np.uint8)).save(root / f"t{i}.png")
        Image.fromarray(255 * m).save(root / f"t{i}_mask.png")
        rows.append(f"t{i}.png,t{i}_mask.png,{'train' if i < 3 else 'val'}")
    (root / "masks.csv").write_text("image,mask,split\n" + "\n".join(rows) + "\n")
    pred = root / "new"
    (pred / "sub").mkdir(parents=True)
    for name, (h, w) in {"a.png": (30, 20), "sub/b.png": (17, 41), "c.jpg": (16, 16)}.items():
        Image.fromarray((40 + 180 * _disc(h, w, h * w)).astype(np.uint8)).save(pred / name, quality=100)
    return root


def test_image_label_maps_are_at_the_inputs_size_with_the_stored_values(images, tmp_path, monkeypatch):
    cfg = {
        "seed_everything": 0,
        "trainer": {"max_epochs": 1, "accelerator": "cpu", "devices": 1, "default_root_dir": str(tmp_path / "run")},
        "model": {"class_path": "medlearn.tasks.segmentation.Segmenter", "init_args": {
            "backbone": "smallcnn", "spatial_dims": 2, "in_channels": 1, "num_classes": 2,
            "label_values": [0, 1], "regions": "labels", "background_value": 0.0}},
        "data": {"class_path": "medlearn.data.segmentation2d.ImageMaskDataModule", "init_args": {
            "root": str(images), "image_size": 16, "channels": 1, "batch_size": 2, "test_fraction": 0.0,
            "value_map": {0: 0, 255: 1}, "label_values": [0, 1], "predict_root": str(images / "new"), "cache": False}},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["fit", "--config", str(path)]) == 0
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"

    def bright(self: Segmenter, x: torch.Tensor) -> torch.Tensor:  # the oracle network: bright = label 1
        return (x[:, :1] > 0.5).to(torch.uint8)

    monkeypatch.setattr(Segmenter, "predict_labels", bright)
    assert main(["predict", "--config", str(path), "--ckpt_path", str(ckpt)]) == 0
    out = tmp_path / "run" / "predict"
    rows = _read_rows(out / "predictions.csv")
    assert [r["name"] for r in rows] == ["a.png", "c.jpg", "sub/b.png"]
    assert list(rows[0]) == ["name", "input", "label_map", "pixels_0", "pixels_255"]
    for row, maps_to in zip(rows, ["labels/a.png", "labels/c.png", "labels/sub/b.png"]):
        assert row["label_map"] == maps_to and row["input"] == str(images / "new" / row["name"])
        src = np.asarray(Image.open(row["input"]).convert("L"), dtype=np.float32) / 255.0
        written = np.asarray(Image.open(out / row["label_map"]))
        assert written.shape == src.shape and written.dtype == np.uint8  # the input's size
        assert set(np.unique(written).tolist()) <= {0, 255}  # as the masks store them (value_map inverted)
        # the network's 16 x 16 prediction, brought back by nearest neighbour on the pixel-centre grid
        small = resize_image(torch.from_numpy(src)[None], (16, 16))[0] > 0.5
        expected = 255 * resize_mask(small.numpy().astype(np.int64), src.shape)[0].numpy()
        np.testing.assert_array_equal(written, expected)
        # and it lands on the object: most of the image agrees with its own bright region
        assert ((written == 255) == (src > 0.5)).mean() > 0.85
        counts = [int(row["pixels_0"]), int(row["pixels_255"])]
        assert counts == [int((written == 0).sum()), int((written == 255).sum())]
