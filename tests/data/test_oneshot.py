"""One-shot atlas data: reading and validating (every problem listed once), the layout, resampling
between grids through the affines, percentile scaling, the dataset and the DataModule."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medlearn.data.layouts import detect_layout, get_layout
from medlearn.data.oneshot import (
    AtlasInImagesWarning,
    OneShotDataModule,
    OneShotDataset,
    normalise_percentiles,
    read_label_names,
    read_oneshot,
    read_oneshot_folder,
    resized_grid,
    to_atlas_grid,
    to_image_grid,
)
from medlearn.io import read_image, write_image
from medlearn.io.errors import DataError
from medlearn.synth.oneshot import write_oneshot

SHAPE3 = (12, 10, 8)


def _save(path: Path, array: np.ndarray, affine: np.ndarray | None = None, dtype: str | None = None) -> Path:
    """Write a spatial array ((X, Y) is stored as (X, Y, 1)) as NIfTI."""
    arr = np.asarray(array)
    stored = arr[None, ..., None] if arr.ndim == 2 else arr[None]
    return write_image(path, stored, {"affine": np.eye(4) if affine is None else affine}, dtype=dtype, overwrite=True)


def _atlas_labels(shape: tuple[int, ...] = SHAPE3) -> np.ndarray:
    labels = np.zeros(shape, np.int16)
    labels[2:6, 2:6] = 2
    labels[6:10, 4:8] = 41  # non-contiguous values, as FreeSurfer's
    return labels


def _dataset(root: Path, n: int = 4, labelled: tuple[int, ...] = (2, 3)) -> Path:
    """A small 3D one-shot folder with labels {0, 2, 41}: atlas, n images, labels for some."""
    rng = np.random.default_rng(0)
    labels = _atlas_labels()
    _save(root / "atlas" / "image.nii.gz", labels.astype(np.float32) + rng.normal(0, 1, SHAPE3))
    _save(root / "atlas" / "labels.nii.gz", labels, dtype="int16")
    for i in range(n):
        _save(root / "images" / f"s{i}.nii.gz", rng.normal(0, 1, SHAPE3).astype(np.float32))
        if i in labelled:
            _save(root / "labels" / f"s{i}.nii.gz", np.roll(labels, i, axis=0), dtype="int16")
    return root


# ------------------------------------------------------------------------------------ reading


def test_folder_and_table_read_the_same_set_and_keep_label_values(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "d")
    (root / "labels.json").write_text(json.dumps({"0": "background", "2": "left", "41": "right"}))
    found = read_oneshot_folder(root)
    assert found.label_values == [0, 2, 41] and found.label_names == ["background", "left", "right"]
    assert found.names == ["s0", "s1", "s2", "s3"]
    assert [p.name for p in found.unlabelled] == ["s0.nii.gz", "s1.nii.gz"]
    assert {p.name: q.parent.name + "/" + q.name for p, q in found.eval_labels.items()} == {
        "s2.nii.gz": "labels/s2.nii.gz", "s3.nii.gz": "labels/s3.nii.gz"}

    (root / "list.csv").write_text("image,label\nimages/s0.nii.gz,\nimages/s2.nii.gz,labels/s2.nii.gz\n")
    table = read_oneshot(root / "atlas" / "image.nii.gz", root / "atlas" / "labels.nii.gz", root / "list.csv")
    assert table.names == ["s0", "s2"] and table.label_values == [0, 2, 41]
    assert table.eval_labels == {root / "images" / "s2.nii.gz": root / "labels" / "s2.nii.gz"}

    layout = get_layout("oneshot")
    assert layout.detect(root) and detect_layout(root, "oneshot").name == "oneshot"
    records = layout.read(root)
    assert len(records) == 1 and records.class_names == ["background", "left", "right"]


def test_mgz_images_and_natural_order(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "d", n=0, labelled=())
    (root / "images").mkdir()
    for name in ("s10", "s9"):
        nib.save(nib.Nifti1Image(np.ones(SHAPE3, np.float32), np.eye(4)), root / "images" / f"{name}.nii.gz")
    nib.save(nib.MGHImage(np.ones(SHAPE3, np.float32), np.eye(4)), root / "images" / "s11.mgz")
    (root / "images" / "notes.txt").write_text("not an image")
    assert read_oneshot_folder(root).names == ["s9", "s10", "s11"]


def test_table_problems_are_all_listed(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    labels = _atlas_labels()
    shifted = np.eye(4)
    shifted[0, 3] = 0.01  # beyond the 1e-3 tolerance
    _save(tmp_path / "atlas.nii.gz", rng.normal(0, 1, SHAPE3))
    _save(tmp_path / "atlas_seg.nii.gz", labels + 0.5 * (labels == 41), shifted, dtype="float32")
    _save(tmp_path / "ok.nii.gz", rng.normal(0, 1, SHAPE3))
    _save(tmp_path / "flat.nii.gz", rng.normal(0, 1, SHAPE3[:2]))  # 2D, the atlas is 3D
    _save(tmp_path / "ok_seg.nii.gz", labels.astype(np.float32) + 0.25, dtype="float32")  # non-integer
    _save(tmp_path / "b.nii.gz", rng.normal(0, 1, SHAPE3))
    _save(tmp_path / "b_seg.nii.gz", labels[:, :, :4], dtype="int16")  # another grid than b
    _save(tmp_path / "c.nii.gz", rng.normal(0, 1, SHAPE3))
    _save(tmp_path / "c_seg.nii.gz", labels + 5 * (labels == 2), dtype="int16")  # value 7: not an atlas value
    whole = (tmp_path / "ok.nii.gz").read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "table.csv").write_text(
        "image,label\n"
        "ok.nii.gz,ok_seg.nii.gz\n"  # line 2
        "missing.nii.gz,\n"  # line 3
        "flat.nii.gz,\n"  # line 4
        "ok.nii.gz,\n"  # line 5: listed twice
        "cut.nii.gz,\n"  # line 6
        ",\n"  # line 7
        "b.nii.gz,b_seg.nii.gz\n"
        "c.nii.gz,c_seg.nii.gz\n"
    )
    with pytest.raises(DataError) as exc:
        read_oneshot(tmp_path / "atlas.nii.gz", tmp_path / "atlas_seg.nii.gz", tmp_path / "table.csv")
    problems = exc.value.problems
    expected = [
        ("atlas_seg.nii.gz", "affine differs from atlas.nii.gz"),
        ("atlas_seg.nii.gz", "non-integer label values [41.5]"),
        ("line 3", "missing.nii.gz: file not found"),
        ("flat.nii.gz", "is 2D (12, 10) but the atlas is 3D"),
        ("line 5", "listed twice (first: line 2)"),
        ("cut.nii.gz", "truncated"),
        ("line 7", "empty image path"),
        ("ok_seg.nii.gz", "non-integer label values [0.25"),
        ("b_seg.nii.gz", "shape (12, 10, 4) differs from b.nii.gz (12, 10, 8)"),
    ]
    for name, reason in expected:
        assert any(name in p and reason in p for p in problems), f"{name}: {reason}\n{problems}"
    # the atlas label map is unusable here, so c's value 7 cannot be compared: it is not reported
    assert len(problems) == len(expected), problems
    assert exc.value.path == str(tmp_path / "table.csv") and f"{len(expected)} problem(s)" in str(exc.value)

    # with a usable atlas, labels outside its values are reported too
    _save(tmp_path / "atlas_seg.nii.gz", labels, dtype="int16")
    (tmp_path / "table.csv").write_text("image,label\nc.nii.gz,c_seg.nii.gz\n")
    with pytest.raises(DataError, match=r"c_seg.nii.gz: label values \[7\] are not in the atlas label map \[0, 2, 41"):
        read_oneshot(tmp_path / "atlas.nii.gz", tmp_path / "atlas_seg.nii.gz", tmp_path / "table.csv")


def test_folder_problems_are_all_listed(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "d", n=3, labelled=(1,))
    _save(root / "atlas" / "labels.nii.gz", np.full(SHAPE3, 3), dtype="int16")  # a single value
    _save(root / "images" / "s0.nii", np.zeros(SHAPE3))  # same name "s0" as s0.nii.gz
    _save(root / "labels" / "ghost.nii.gz", _atlas_labels(), dtype="int16")  # matches no image
    write_image(root / "images" / "multi.nii.gz", np.zeros((2, *SHAPE3), np.float32))  # 2 volumes
    (root / "labels.json").write_text(json.dumps({"0": "background", "x": "bad", "2": ""}))
    with pytest.raises(DataError) as exc:
        read_oneshot_folder(root)
    assert exc.value.path == str(root)
    assert any("labels.json" in p for p in exc.value.problems)
    assert any("key 'x' is not an integer" in p for p in exc.value.problems)
    assert any("label 2: the name must be a non-empty string" in p for p in exc.value.problems)

    (root / "labels.json").unlink()
    with pytest.raises(DataError) as exc:
        read_oneshot_folder(root)
    problems = exc.value.problems
    expected = [
        ("atlas/labels.nii.gz", "single value 3"),
        ("images/s0.nii.gz", "same name 's0' as images/s0.nii;"),
        ("images/multi.nii.gz", "has 2 volumes"),
        ("labels/ghost.nii.gz", "matches no image"),
    ]
    for name, reason in expected:
        assert any(p.startswith(name) and reason in p for p in problems), f"{name}: {reason}\n{problems}"
    assert len(problems) == len(expected), problems


def test_missing_parts_of_the_layout_are_listed(tmp_path: Path) -> None:
    (tmp_path / "atlas").mkdir()
    _save(tmp_path / "atlas" / "image.nii.gz", np.zeros(SHAPE3))
    with pytest.raises(DataError) as exc:
        read_oneshot_folder(tmp_path)
    assert len(exc.value.problems) == 2
    assert "atlas/labels.nii.gz (or .nii, .mgz, .mgh): missing" in exc.value.problems[0]
    assert "images/: missing" in exc.value.problems[1]
    assert not get_layout("oneshot").detect(tmp_path)
    assert not get_layout("oneshot").detect(tmp_path / "nowhere")
    with pytest.raises(DataError, match="not found"):
        read_oneshot(tmp_path / "a.nii.gz", tmp_path / "b.nii.gz", tmp_path / "imgs")


def test_the_atlas_among_the_images_is_excluded_with_a_warning(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "d", n=2, labelled=(1,))
    shutil.copy(root / "atlas" / "image.nii.gz", root / "images" / "atlas_copy.nii.gz")
    _save(root / "labels" / "atlas_copy.nii.gz", _atlas_labels(), dtype="int16")
    with pytest.warns(AtlasInImagesWarning, match="atlas_copy.nii.gz is the atlas"):
        found = read_oneshot_folder(root)
    assert found.names == ["s0", "s1"] and [p.name for p in found.excluded] == ["atlas_copy.nii.gz"]
    assert [p.name for p in found.eval_labels] == ["s1.nii.gz"]  # its label map is not an error either
    (root / "t.csv").write_text("image\natlas/image.nii.gz\nimages/s0.nii.gz\n")
    with pytest.warns(AtlasInImagesWarning):
        found = read_oneshot(root / "atlas" / "image.nii.gz", root / "atlas" / "labels.nii.gz", root / "t.csv")
    assert found.names == ["s0"]


def test_label_names_file(tmp_path: Path) -> None:
    (tmp_path / "l.json").write_text('{"41": "right", "0": "bg", "2": "left"}')
    assert read_label_names(tmp_path / "l.json") == {0: "bg", 2: "left", 41: "right"}
    (tmp_path / "l.json").write_text('{"0": "a", "1": "a"}')
    with pytest.raises(DataError, match="name 'a' used for several values"):
        read_label_names(tmp_path / "l.json")
    (tmp_path / "l.json").write_text("[1, 2]")
    with pytest.raises(DataError, match="non-empty JSON object"):
        read_label_names(tmp_path / "l.json")
    root = _dataset(tmp_path / "d", n=1, labelled=())
    (root / "labels.json").write_text('{"0": "bg", "2": "left", "3": "extra"}')
    with pytest.raises(DataError) as exc:
        read_oneshot_folder(root)
    assert any("label values [41] have no name" in p for p in exc.value.problems)
    assert any("named label values [3] are not in the atlas label map" in p for p in exc.value.problems)


# ---------------------------------------------------------------------------------- resampling


def test_identical_grids_are_a_no_op() -> None:
    rng = np.random.default_rng(2)
    affine = np.diag([0.7, 1.3, 2.0, 1.0])
    affine[:3, 3] = [5.0, -3.0, 1.0]
    for shape in ((9, 11, 7), (9, 11)):
        image = rng.normal(0, 1, shape).astype(np.float32)
        labels = rng.integers(0, 50, shape).astype(np.int32)
        np.testing.assert_array_equal(to_atlas_grid(image, affine, shape, affine), image)
        back = to_image_grid(labels, affine, shape, affine)
        np.testing.assert_array_equal(back, labels)
        assert back.dtype == np.int32
    flat = rng.normal(0, 1, (9, 11)).astype(np.float32)
    assert to_atlas_grid(flat, affine, (9, 11, 1), affine).shape == (9, 11, 1)


def _blocks(shape: tuple[int, ...], block: int) -> np.ndarray:
    """Labels {0, 2, 41} constant over ``block``-voxel cubes."""
    idx = np.indices(shape) // block
    return np.array([0, 2, 41])[(idx.sum(0)) % 3].astype(np.int64)


@pytest.mark.parametrize("dims", [2, 3])
def test_shifted_grid_round_trip_and_values(dims: int) -> None:
    atlas_shape = (20, 18, 16)[:dims]
    atlas_affine = np.diag([1.0, 1.0, 1.0, 1.0])
    atlas_affine[:3, 3] = [-10.0, -9.0, -8.0]
    shift = np.array([3, -2, 1])
    image_affine = atlas_affine.copy()
    image_affine[:dims, 3] += shift[:dims]  # image voxel v sits on atlas voxel v + shift
    image_shape = atlas_shape
    labels = _blocks(image_shape, 3)
    on_atlas = to_image_grid(labels, image_affine, atlas_shape, atlas_affine)
    inner = tuple(slice(4, n - 4) for n in atlas_shape)
    expected = np.zeros(atlas_shape, np.int64)
    src = tuple(slice(4 - s, n - 4 - s) for s, n in zip(shift, atlas_shape))
    expected[inner] = labels[src]
    np.testing.assert_array_equal(on_atlas[inner], expected[inner])
    back = to_image_grid(on_atlas, atlas_affine, image_shape, image_affine)
    np.testing.assert_array_equal(back[inner], labels[inner])
    assert set(np.unique(back).tolist()) <= {0, 2, 41}
    # a linear ramp comes out exactly (linear interpolation of a linear function); outside: 0
    ramp = np.indices(image_shape).sum(0).astype(np.float32)
    moved = to_atlas_grid(ramp, image_affine, atlas_shape, atlas_affine)
    np.testing.assert_allclose(moved[inner], (np.indices(atlas_shape).sum(0) - shift[:dims].sum())[inner], atol=1e-5)
    assert moved[(0,) * dims] == 0.0  # atlas voxel 0 is outside the image (shift 3 along x)


@pytest.mark.parametrize("dims", [2, 3])
def test_downsampled_grid_round_trip(dims: int) -> None:
    atlas_shape = (24, 20, 16)[:dims]
    atlas_affine = np.eye(4)
    image_shape = tuple(n // 2 for n in atlas_shape)
    image_affine = np.diag([2.0] * dims + [1.0] * (4 - dims))
    image_affine[:dims, 3] = 0.5  # coarse voxel k covers fine voxels 2k and 2k + 1
    labels = _blocks(image_shape, 2)
    fine = to_image_grid(labels, image_affine, atlas_shape, atlas_affine)
    assert fine.shape == atlas_shape
    inner_fine = tuple(slice(2, n - 2) for n in atlas_shape)
    up = labels
    for axis in range(dims):
        up = np.repeat(up, 2, axis=axis)
    np.testing.assert_array_equal(fine[inner_fine], up[inner_fine])
    back = to_image_grid(fine, atlas_affine, image_shape, image_affine)
    inner = tuple(slice(1, n - 1) for n in image_shape)
    np.testing.assert_array_equal(back[inner], labels[inner])
    # an image on the coarse grid brought to the atlas grid: a ramp in world x stays that ramp
    world_x = image_affine[0, 0] * np.indices(image_shape)[0] + image_affine[0, 3]
    moved = to_atlas_grid(world_x.astype(np.float32), image_affine, atlas_shape, atlas_affine)
    inner_lin = tuple(slice(1, n - 1) for n in atlas_shape)
    np.testing.assert_allclose(moved[inner_lin], np.indices(atlas_shape)[0][inner_lin].astype(np.float32), atol=1e-5)


def test_resized_grid_covers_the_same_field_of_view() -> None:
    affine = np.diag([1.5, 1.0, 2.0, 1.0])
    affine[:3, 3] = [-30.0, 4.0, 0.0]
    grid = resized_grid((40, 30, 20), affine, (20, 15, 10))
    corner = lambda a, v: (a @ np.append(v, 1.0))[:3]  # noqa: E731
    # outer faces coincide: the old voxel -0.5 edge equals the new one
    np.testing.assert_allclose(corner(affine, [-0.5, -0.5, -0.5]), corner(grid.affine, [-0.5, -0.5, -0.5]))
    np.testing.assert_allclose(corner(affine, [39.5, 29.5, 19.5]), corner(grid.affine, [19.5, 14.5, 9.5]))
    flat = resized_grid((40, 30), affine, (20, 15))
    assert flat.shape == (20, 15) and flat.affine[2, 2] == 2.0  # the slice axis is kept


def test_normalise_percentiles() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(100.0, 10.0, (20, 20))
    y = normalise_percentiles(x)
    assert y.dtype == np.float32 and y.min() == 0.0 and y.max() == 1.0
    lo, hi = np.percentile(x, [1, 99])
    inside = (x > lo) & (x < hi)
    np.testing.assert_allclose(y[inside], ((x - lo) / (hi - lo))[inside], atol=1e-6)
    assert (y[x <= lo] == 0).all() and (y[x >= hi] == 1).all()
    const = normalise_percentiles(np.full((4, 4), 7.0))
    assert not np.isnan(const).any() and (const == 0).all()
    sparse = np.zeros((30, 30))
    sparse[0, :3] = 5.0  # 0.3 % of the voxels: both percentiles are 0
    z = normalise_percentiles(sparse)
    assert z.max() == 1.0 and z[0, 0] == 1.0 and not np.isnan(z).any()
    with pytest.raises(ValueError):
        normalise_percentiles(x, 50, 50)


# ---------------------------------------------------------------------------------- DataModule


@pytest.fixture(scope="module")
def synth2d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_oneshot(tmp_path_factory.mktemp("os") / "d2", dims=2, n_train=6, n_eval=4, size=32, seed=1)


def test_datamodule_2d_batches_splits_and_info(synth2d: Path) -> None:
    dm = OneShotDataModule(str(synth2d), batch_size=3, val_fraction=0.25)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["atlas"].shape == (3, 1, 32, 32) and batch["atlas"].dtype == torch.float32
    assert batch["atlas_labels"].shape == (3, 32, 32) and batch["atlas_labels"].dtype == torch.int64
    assert batch["image"].shape == (3, 1, 32, 32)
    assert 0.0 <= float(batch["image"].min()) <= float(batch["image"].max()) <= 1.0
    assert "labels" not in batch and all(n.startswith("train_") for n in batch["name"])
    assert [len(dm.splits[k]) for k in ("train", "val", "test")] == [6, 1, 3]
    val = next(iter(dm.val_dataloader()))
    assert val["labels"].shape == (1, 32, 32) and val["name"][0].startswith("eval_")
    test = next(iter(dm.test_dataloader()))
    assert test["labels"].dtype == torch.int64 and set(test["labels"].unique().tolist()) <= {0, 1, 2, 3, 4}
    info = dm.data_info()
    assert info.n_train == 6 and info.num_classes == 5 and info.label_values == [0, 1, 2, 3, 4]
    assert info.class_names is not None and info.class_names[0] == "background"
    assert info.input_size == (32, 32) and info.in_channels == 1
    # the stored label map and the served one are the same (identity grid)
    name = val["name"][0]
    stored, _ = read_image(synth2d / "labels" / f"{name}.nii.gz")
    np.testing.assert_array_equal(val["labels"][0].numpy(), stored[0, :, :, 0])


def test_datamodule_size_and_labels_back_at_the_original_size(synth2d: Path) -> None:
    dm = OneShotDataModule(str(synth2d), batch_size=2, size=16)
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()))
    assert batch["image"].shape == (2, 1, 16, 16) and batch["labels"].shape == (2, 16, 16)
    assert dm.grid.shape == (16, 16) and dm.data_info().input_size == (16, 16)
    name = batch["name"][0]
    back = dm.labels_to_image(name, batch["labels"][0])
    assert back.shape == (32, 32) and dm.image_grid(name).shape == (32, 32)
    truth, _ = read_image(synth2d / "labels" / f"{name}.nii.gz")
    assert (back == truth[0, :, :, 0]).mean() > 0.85  # half-resolution labels, nearest back up
    with pytest.raises(KeyError):
        dm.image_grid("nope")


def test_dataset_caches_decoded_images(synth2d: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from medlearn.data import oneshot as module

    dm = OneShotDataModule(str(synth2d))
    image, labels = dm.atlas
    calls: list[str] = []
    real = module._read_spatial

    def counting(path: Path, dims: int) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
        calls.append(Path(path).name)
        return real(path, dims)

    monkeypatch.setattr(module, "_read_spatial", counting)
    ds = OneShotDataset(dm.oneshot, dm.oneshot.labelled, dm.grid, image, labels)
    first = ds[0]
    again = ds[0]
    assert calls == ["eval_0000.nii.gz", "eval_0000.nii.gz"]  # image and label map, read once
    assert torch.equal(first["image"], again["image"]) and "labels" in first
    ds.fill_cache()
    assert len(calls) == 2 * len(ds)
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_datamodule_3d_from_explicit_files_and_table(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "d", n=4, labelled=(2, 3))
    (root / "t.csv").write_text("image,label\n" + "".join(
        f"images/s{i}.nii.gz,{f'labels/s{i}.nii.gz' if i >= 2 else ''}\n" for i in range(4)))
    dm = OneShotDataModule(atlas=str(root / "atlas" / "image.nii.gz"),
                           atlas_labels=str(root / "atlas" / "labels.nii.gz"),
                           images=str(root / "t.csv"), batch_size=2, val_fraction=0.0)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 1, *SHAPE3) and batch["atlas_labels"].shape == (2, *SHAPE3)
    assert set(batch["atlas_labels"].unique().tolist()) == {0, 2, 41}
    assert dm.val_set is None and len(dm.splits["test"]) == 2
    test = next(iter(dm.test_dataloader()))
    assert set(test["labels"].unique().tolist()) == {0, 2, 41}
    assert dm.class_names == ["0", "2", "41"]


def test_datamodule_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="give root"):
        OneShotDataModule()
    with pytest.raises(ValueError, match="val_fraction"):
        OneShotDataModule("x", val_fraction=1.0)
    root = _dataset(tmp_path / "all", n=2, labelled=(0, 1))
    with pytest.raises(DataError, match="no unlabelled training images"):
        OneShotDataModule(str(root)).setup("fit")
    root = _dataset(tmp_path / "none", n=2, labelled=())
    dm = OneShotDataModule(str(root))
    with pytest.raises(DataError, match="no test split: no image has an evaluation label map"):
        dm.test_dataloader()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert dm.val_dataloader() == []


def test_evaluation_labels_as_a_mapping(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "d", n=3, labelled=(1, 2))
    atlas, seg = root / "atlas" / "image.nii.gz", root / "atlas" / "labels.nii.gz"
    found = read_oneshot(atlas, seg, root / "images", {root / "images" / "s1.nii.gz": root / "labels" / "s1.nii.gz"})
    assert [p.name for p in found.labelled] == ["s1.nii.gz"] and len(found.unlabelled) == 2
    with pytest.raises(DataError) as exc:
        read_oneshot(atlas, seg, root / "images", {root / "images" / "s7.nii.gz": root / "labels" / "s2.nii.gz",
                                                   root / "images" / "s0.nii.gz": root / "labels" / "none.nii.gz"})
    problems = exc.value.problems
    assert len(problems) == 2
    assert "labels/s2.nii.gz: evaluation label map for" in problems[0] and "not a listed image" in problems[0]
    assert problems[1] == "labels/none.nii.gz: file not found"
