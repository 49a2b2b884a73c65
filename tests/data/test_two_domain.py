"""The two-domain DataModule: which images are source / target / test, the paired seeded order, the noise
flags, per-domain evaluation batches, a second dataset as target, a table with a domain column, prediction."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medlearn.data.roi import DiscROI
from medlearn.data.two_domain import PairedEpochSampler, TwoDomainDataModule, read_noise_table
from medlearn.io.errors import DataError
from medlearn.synth.fundus import write_drishti, write_refuge


@pytest.fixture(scope="module")
def refuge(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_refuge(tmp_path_factory.mktemp("r") / "refuge", n_train=12, n_target=5, n_test=6, n_source_test=4,
                        seed=3)


def _dm(root: Path, **kw: object) -> TwoDomainDataModule:
    opts: dict[str, object] = dict(image_size=32, label_values=[0, 1, 2], batch_size=4,
                                   source_test="clean/source_test.csv", noise_table="clean/corruption.csv")
    opts.update(kw)
    return TwoDomainDataModule(str(root), **opts)  # type: ignore[arg-type]


def test_paired_sampler_is_seeded_and_cycles_the_target() -> None:
    s = PairedEpochSampler(10, 4, seed=7)
    e0, e1 = s.pairs(0), s.pairs(1)
    assert sorted(i for i, _ in e0) == list(range(10)) and e0 != e1
    counts = Counter(j for _, j in e0)
    assert set(counts) == {0, 1, 2, 3} and max(counts.values()) - min(counts.values()) <= 1
    s.set_epoch(1)
    assert list(s) == e1 and PairedEpochSampler(10, 4, seed=7).pairs(1) == e1  # a resumed run draws the same
    assert list(s) == e1  # without set_epoch the epoch advances by itself: the next call is epoch 2
    assert list(s) == s.pairs(2)
    with pytest.raises(ValueError, match="both domains"):
        PairedEpochSampler(3, 0)


def test_refuge_parts_batches_and_roles(refuge: Path) -> None:
    dm = _dm(refuge)
    dm.setup("fit")
    assert {r.domain for r in dm.splits["source_train"]} == {"zeiss"} and len(dm.splits["source_train"]) == 12
    assert len(dm.splits["target_train"]) == 5 and len(dm.splits["target_test"]) == 6
    assert len(dm.splits["source_test"]) == 4 and dm.data_info().n_train == 12
    batch = next(iter(dm.train_dataloader()))
    src, tgt = batch["source"], batch["target"]
    assert src["image"].shape == (4, 3, 32, 32) and src["seg"].shape == (4, 1, 32, 32) and "seg" not in tgt
    assert set(src["domain"]) == {"zeiss"} and set(tgt["domain"]) == {"canon"}
    noisy = read_noise_table(refuge / "clean" / "corruption.csv")
    assert [int(v) for v in src["noisy"]] == [noisy[Path(n).stem] for n in src["name"]]
    assert len(dm.train_dataloader()) == 3  # drop_last: 12 // 4
    roles = Counter(r for b in dm.test_dataloader() for r in b["role"])
    assert roles == {"source": 4, "target": 6}
    assert dm.val_dataloader() == []
    # the order is reproducible from the seed, and another split_seed draws another order
    first = [next(iter(_dm(refuge).train_dataloader()))["source"]["name"] for _ in range(2)]
    assert first[0] == first[1] == src["name"]
    assert next(iter(_dm(refuge, split_seed=1).train_dataloader()))["source"]["name"] != src["name"]


def test_validation_fraction_num_train_and_explicit_domains(refuge: Path) -> None:
    dm = _dm(refuge, val_fraction=0.25, num_train=6, source_domains=["zeiss"], target_domains=["canon"])
    dm.setup("fit")
    assert len(dm.splits["source_val"]) == 3 and len(dm.splits["source_train"]) == 6
    assert Counter(b for batch in dm.val_dataloader() for b in batch["role"]) == {"source": 3}
    with pytest.raises(DataError, match="cannot tell the source from the target"):
        _dm(refuge, source_domains=["zeiss"], target_domains=["zeiss"]).setup("fit")


def test_target_from_another_dataset(refuge: Path, tmp_path: Path) -> None:
    drishti = write_drishti(tmp_path / "d", n_train=4, n_test=3, size=48, seed=1)
    dm = _dm(refuge, target_root=str(drishti), source_test=None)
    dm.setup("fit")
    assert {r.domain for r in dm.splits["source_train"]} == {"zeiss"}
    assert len(dm.splits["target_train"]) == 4 and len(dm.splits["target_test"]) == 3
    assert set(next(iter(dm.train_dataloader()))["target"]["domain"]) == {"drishti"}
    assert Counter(r for b in dm.test_dataloader() for r in b["role"]) == {"target": 3}


def test_a_mask_table_with_domains_and_an_unlabelled_folder(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    (tmp_path / "img").mkdir()
    (tmp_path / "unl").mkdir()
    lines = ["image,mask,domain,split"]
    for i in range(10):
        dom = "A" if i < 6 else "B"
        Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(tmp_path / "img" / f"{i}.png")
        Image.fromarray(rng.integers(0, 3, (20, 20), dtype=np.uint8)).save(tmp_path / "img" / f"{i}_m.png")
        lines.append(f"img/{i}.png,img/{i}_m.png,{dom},{'test' if i in (4, 8, 9) else ''}")
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (30, 26, 3), dtype=np.uint8)).save(tmp_path / "unl" / f"u{i}.png")
    (tmp_path / "masks.csv").write_text("\n".join(lines) + "\n")
    dm = TwoDomainDataModule(str(tmp_path), image_size=16, label_values=[0, 1, 2], batch_size=2,
                             source_domains=["A"], target_images="unl")
    dm.setup("fit")
    assert len(dm.splits["source_train"]) == 5 and [r.name for r in dm.splits["source_test"]] == ["img/4.png"]
    assert len(dm.splits["target_train"]) == 2 and len(dm.target_train) == 5  # 2 rows + 3 unlabelled images
    names = {n for b in dm.train_dataloader() for n in b["target"]["name"]}
    assert names <= {"img/6.png", "img/7.png", "u0.png", "u1.png", "u2.png"}
    with pytest.raises(DataError, match="source from the target"):
        TwoDomainDataModule(str(tmp_path), image_size=16, label_values=[0, 1, 2]).setup("fit")  # no train rows


def test_prediction_folder_with_roi(refuge: Path) -> None:
    dm = TwoDomainDataModule(None, predict_root=str(refuge / "Test400"), image_size=16,
                             roi=DiscROI(fraction=0.5))
    batch = next(iter(dm.predict_dataloader()))
    assert batch["image"].shape[1:] == (3, 16, 16) and batch["orig_hw"][0].tolist() == [48, 48]
    assert (batch["roi"][:, 2] - batch["roi"][:, 0]).tolist() == [24] * batch["roi"].shape[0]
    assert batch["name"][0] == "T0001.jpg" and Path(batch["path"][0]).is_file()
    with pytest.raises(DataError, match="no training data"):
        dm.train_dataloader()
    with pytest.raises(ValueError, match="eval_centre"):
        TwoDomainDataModule(str(refuge), roi=DiscROI(eval_centre="mask"))


def test_caches_are_filled_before_loader_workers_start(refuge: Path) -> None:
    dm = _dm(refuge, num_workers=1)
    batch = next(iter(dm.train_dataloader()))
    assert batch["source"]["image"].shape[0] == 4
    target = dm.target_train.datasets[0].dataset  # type: ignore[union-attr]
    assert bool(target._cache.filled.all()) and bool(dm.train_set._mask_filled.all())  # type: ignore[union-attr]
