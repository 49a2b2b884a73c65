"""Generic labelled 2D images: image,label tables, grouped stratified splits, dataset, DataModule."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medlearn.data import (
    EpochBalancedSampler,
    LabelledImage,
    LabelledImageDataModule,
    load_image2d,
    read_image_table,
    stratified_group_split,
)
from medlearn.io.errors import DataError


def _write(root: Path, names: list[str], mode: str = "RGB", size: int = 12) -> None:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for n in names:
        p = root / n
        p.parent.mkdir(parents=True, exist_ok=True)
        shape = (size, size, 3) if mode == "RGB" else (size, size)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode).save(p)


@pytest.fixture
def table(tmp_path: Path) -> Path:
    names = [f"img{i}.png" for i in range(30)]
    _write(tmp_path / "imgs", names)
    labels = ["cat", "dog", "fox"]
    rows = [f"img{i}{'' if i % 2 else '.png'},{labels[i % 3]},p{i // 2}" for i in range(30)]  # suffix optional
    (tmp_path / "labels.csv").write_text("image,label,patient_id\n" + "\n".join(rows) + "\n")
    return tmp_path


def test_reads_names_groups_and_inferred_classes(table: Path) -> None:
    recs, classes = read_image_table(table / "labels.csv", table / "imgs")
    assert classes == ["cat", "dog", "fox"] and len(recs) == 30
    assert [r.label for r in recs[:4]] == [0, 1, 2, 0]
    assert recs[1].path == table / "imgs" / "img1.png" and recs[0].group == "p0" == recs[1].group
    # explicit classes reorder the indices; indices are accepted as labels too
    recs, classes = read_image_table(table / "labels.csv", table / "imgs", classes=["fox", "dog", "cat"])
    assert [r.label for r in recs[:3]] == [2, 1, 0]


def test_integer_labels_and_relative_paths(tmp_path: Path) -> None:
    _write(tmp_path / "a", ["x.png"])
    _write(tmp_path / "b", ["y.png"], mode="L")
    (tmp_path / "t.csv").write_text("image,label\na/x.png,2\nb/y.png,0\n")
    recs, classes = read_image_table(tmp_path / "t.csv", group_col=None)
    assert classes == ["0", "1", "2"] and [r.label for r in recs] == [2, 0] and recs[0].group == "a/x.png"


def test_malformed_table_lists_every_bad_row(table: Path) -> None:
    (table / "bad.csv").write_text("image,label,split\nimg0.png,cat,\nimg1.png,wolf,\nnope.png,dog,\n"
                                   "img0.png,cat,\n,dog,\nimg3.png,,\nimg4.png,cat,later\n")
    with pytest.raises(DataError) as e:
        read_image_table(table / "bad.csv", table / "imgs", classes=["cat", "dog"])
    probs = e.value.problems
    assert len(probs) == 6
    assert "line 3" in probs[0] and "unknown class 'wolf'" in probs[0]
    assert "line 4" in probs[1] and "not found" in probs[1]
    assert "duplicate image, first on line 2" in probs[2]
    assert "empty image name" in probs[3] and "empty label" in probs[4] and "unknown split 'later'" in probs[5]
    (table / "cols.csv").write_text("file,diagnosis\nimg0.png,cat\n")
    with pytest.raises(DataError, match="missing required columns") as e:
        read_image_table(table / "cols.csv", table / "imgs")
    assert e.value.problems == ["missing column 'image'", "missing column 'label'"]
    with pytest.raises(DataError, match="grouping column"):
        read_image_table(table / "labels.csv", table / "imgs", group_col="lesion_id")


def _records(n_groups: int = 60, seed: int = 0) -> list[LabelledImage]:
    rng = np.random.default_rng(seed)
    recs = []
    for g in range(n_groups):
        label = int(rng.choice(4, p=[0.55, 0.25, 0.15, 0.05]))
        for j in range(int(rng.integers(1, 4))):
            recs.append(LabelledImage(Path(f"g{g}_{j}.png"), label, f"g{g}", f"g{g}_{j}"))
    return recs


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stratified_group_split(seed: int) -> None:
    recs = _records(seed=seed)
    train, val, test = stratified_group_split(recs, (0.1, 0.2), seed)
    assert len(train) + len(val) + len(test) == len(recs)
    groups = [{r.group for r in p} for p in (train, val, test)]
    assert not (groups[0] & groups[1]) and not (groups[0] & groups[2]) and not (groups[1] & groups[2])
    for label in range(4):  # every class with enough groups is in every part, train keeps the most
        n = len({r.group for r in recs if r.label == label})
        counts = [len({r.group for r in p if r.label == label}) for p in (train, val, test)]
        if n > 2:
            assert min(counts) >= 1 and counts[0] >= max(counts[1:])
            assert abs(counts[2] - 0.2 * n) <= 1.0
    again = stratified_group_split(recs, (0.1, 0.2), seed)
    assert [[r.name for r in p] for p in again] == [[r.name for r in p] for p in (train, val, test)]
    other = stratified_group_split(recs, (0.1, 0.2), seed + 10)
    assert [r.name for r in other[2]] != [r.name for r in test]
    with pytest.raises(ValueError):
        stratified_group_split(recs, (0.5, 0.5), seed)


def test_balanced_sampler_equalises_classes_and_is_reproducible() -> None:
    labels = torch.tensor([0] * 900 + [1] * 90 + [2] * 10)
    s = EpochBalancedSampler(labels, seed=3)
    s.set_epoch(0)
    a = list(s)
    s.set_epoch(0)
    assert list(s) == a and len(a) == 1000
    s.set_epoch(1)
    assert list(s) != a
    freq = Counter(int(labels[i]) for i in a)
    assert all(abs(freq[c] / 1000 - 1 / 3) < 0.06 for c in range(3))


def test_load_image2d_rgb_and_gray(tmp_path: Path) -> None:
    rgb = np.zeros((8, 10, 3), dtype=np.uint8)
    rgb[..., 0] = 255
    Image.fromarray(rgb).save(tmp_path / "r.png")
    Image.fromarray(np.full((8, 10), 51, dtype=np.uint8)).save(tmp_path / "g.png")
    x = load_image2d(tmp_path / "r.png", 6, channels=3)
    assert x.shape == (3, 6, 6) and torch.allclose(x[0], torch.ones(6, 6)) and float(x[1:].max()) == 0.0
    assert torch.allclose(load_image2d(tmp_path / "r.png", 6, channels=1), torch.full((1, 6, 6), 1 / 3))
    g = load_image2d(tmp_path / "g.png", 6, channels=3)
    assert g.shape == (3, 6, 6) and torch.allclose(g, torch.full_like(g, 0.2))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(DataError, match="broken.png"):
        load_image2d(tmp_path / "broken.png", 6)


def test_datamodule_csv_split_column_sampler_and_batches(table: Path) -> None:
    lines = (table / "labels.csv").read_text().splitlines()
    rows = [ln + ("," + ("test" if i < 6 else "")) for i, ln in enumerate(lines[1:])]
    (table / "fixed.csv").write_text(lines[0] + ",split\n" + "\n".join(rows) + "\n")
    dm = LabelledImageDataModule(str(table), layout="csv", table="fixed.csv", image_dir="imgs", image_size=8,
                                 channels=1, batch_size=5, val_fraction=0.2, test_fraction=0.2,
                                 sampler="balanced", dihedral=True)
    dm.setup("fit")
    assert dm.resolved_layout == "csv" and dm.num_classes == 3
    assert [r.name for r in dm.splits["test"]] == [f"img{i}{'' if i % 2 else '.png'}" for i in range(6)]
    assert not ({r.group for r in dm.splits["train"]} & {r.group for r in dm.splits["val"]})
    assert int(dm.class_counts.sum()) == len(dm.splits["train"])
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (5, 1, 8, 8) and batch["label"].dtype == torch.long
    assert next(iter(dm.test_dataloader()))["image"].shape == (5, 1, 8, 8)
    with pytest.raises(DataError, match="does not exist"):
        LabelledImageDataModule(str(table / "nowhere")).setup("fit")


def test_balanced_epochs_keep_one_batch_when_the_batch_exceeds_the_training_set(table: Path) -> None:
    # with drop_last a batch larger than the training set would drop every batch: it is capped instead,
    # as for the shuffled sampler
    for sampler in ("shuffle", "balanced"):
        dm = LabelledImageDataModule(str(table), layout="csv", image_dir="imgs", image_size=8, batch_size=100,
                                     sampler=sampler, drop_last=True, val_fraction=0.2, test_fraction=0.2)
        dm.setup("fit")
        loader = dm.train_dataloader()
        n = len(dm.splits["train"])
        assert len(loader) == 1 and [len(b["name"]) for b in loader] == [n]
