"""LT-Net: label transfer, the one-shot job end to end (grids, values, files), the CLI's answers to mistakes."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medlearn.cli import main
from medlearn.methods.ltnet.module import LTNet, one_hot_labels
from medlearn.synth.oneshot import write_oneshot


def test_one_hot_and_zero_field_transfer_keep_label_values() -> None:
    labels = torch.tensor([[[0, 2, 41], [41, 2, 0]]])
    oh = one_hot_labels(labels, [0, 2, 41])
    assert oh.shape == (1, 3, 2, 3) and torch.equal(oh.argmax(1), torch.tensor([[[0, 1, 2], [2, 1, 0]]]))
    zero = torch.zeros(1, 2, 2, 3)
    for rule in ("linear", "nearest"):
        m = LTNet(spatial_dims=2, label_transfer=rule, label_values=[0, 2, 41])
        assert torch.equal(m.transfer(labels, zero), labels)


def test_vm_arm_and_ltnet_losses() -> None:
    torch.manual_seed(0)
    atlas, image = torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32)
    lab = (atlas[:, 0] > 0.5).long()
    lt = LTNet(spatial_dims=2, label_values=[0, 1]).losses(atlas, lab, image)
    vm = LTNet(spatial_dims=2, backward=False, label_values=[0, 1]).losses(atlas, lab, image)
    assert {"cyc", "trans", "acc", "dB"} <= set(lt) and not ({"cyc", "trans", "acc", "dB"} & set(vm))
    assert torch.isfinite(lt["total"]) and lt["total"] >= lt["sim"]


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_oneshot(tmp_path_factory.mktemp("os") / "data", dims=2, n_train=6, n_eval=0, seed=2)
    # one image on another grid: 2x coarser, shifted, stored as .nii
    src = sorted((root / "images").glob("*.nii.gz"))[0]
    img = nib.load(src)
    data = np.asarray(img.dataobj)[::2, ::2]
    aff = img.affine @ np.diag([2.0, 2.0, 1.0, 1.0])
    aff[:3, 3] += [1.0, -1.0, 0.0]
    nib.save(nib.Nifti1Image(data, aff), root / "images" / "coarse.nii")
    return root


def test_oneshot_job_writes_labels_on_each_grid(phantoms: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    rc = main(["oneshot", "--atlas", str(phantoms / "atlas" / "image.nii.gz"), "--atlas-labels",
               str(phantoms / "atlas" / "labels.nii.gz"), "--images", str(phantoms / "images"), "--out", str(out),
               "--epochs", "1", "--config", str(Path(__file__).parents[2] / "src/medlearn/configs/ltnet/demo.yaml")])
    assert rc == 0
    atlas_values = set(np.unique(np.asarray(nib.load(phantoms / "atlas" / "labels.nii.gz").dataobj)).tolist())
    images = sorted(p.name for p in (phantoms / "images").iterdir())
    assert sorted(p.name for p in out.iterdir() if p.name.endswith((".nii", ".nii.gz"))) == images
    for name in images:
        lab, img = nib.load(out / name), nib.load(phantoms / "images" / name)
        assert lab.shape == img.shape and np.allclose(lab.affine, img.affine)
        values = np.asarray(lab.dataobj)
        assert np.issubdtype(values.dtype, np.integer) and set(np.unique(values).tolist()) <= atlas_values
    assert (out / "run" / "report.html").is_file() and list((out / "run" / "checkpoints").glob("*.ckpt"))
    assert (out / "labels.csv").read_text().count("\n") == len(images) + 1
    # the same folder again is refused unless --overwrite
    assert main(["oneshot", "--atlas", str(phantoms / "atlas" / "image.nii.gz"), "--atlas-labels",
                 str(phantoms / "atlas" / "labels.nii.gz"), "--images", str(phantoms / "images"),
                 "--out", str(out)]) == 2


def test_oneshot_cli_mistakes(phantoms: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    atlas = str(phantoms / "atlas" / "image.nii.gz")
    assert main(["oneshot", "--atlas", atlas, "--atlas-labels", str(tmp_path / "nope.nii.gz"), "--images",
                 str(phantoms / "images"), "--out", str(tmp_path / "o")]) == 2
    assert "--atlas-labels" in capsys.readouterr().err
    # the atlas image given as its own label map: continuous values are refused by the reader
    rc = main(["oneshot", "--atlas", atlas, "--atlas-labels", atlas, "--images", str(phantoms / "images"),
               "--out", str(tmp_path / "o2")])
    assert rc == 2 and "data error" in capsys.readouterr().err
