"""The DataModule base: loaders defined once, lazy setup, seeds, drop-last rule, samplers, caches, errors."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
import torch
from torch.utils.data import Dataset, Sampler

from medlearn import data
from medlearn.data.datamodule import CachedDataset, SplitDataModule
from medlearn.data.sampling import EpochBalancedSampler, EpochShuffleSampler
from medlearn.io.errors import DataError

LOADERS = ("train_dataloader", "val_dataloader", "test_dataloader", "predict_dataloader")


class _Items(Dataset):
    """``n`` items ``{"x": i}``, with a cache that counts how it is filled."""

    def __init__(self, n: int, offset: int = 0) -> None:
        self.n, self.offset = n, offset
        self.filled = 0

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"x": torch.tensor(self.offset + i)}

    def fill_cache(self) -> None:
        self.filled += 1


class _Toy(SplitDataModule[_Items]):
    no_test_reason = "test_fraction is 0"

    def __init__(self, n_train: int = 10, n_val: int = 3, n_test: int = 4, n_predict: int = 0, batch_size: int = 4,
                 num_workers: int = 0, cache: bool = True, split_seed: int = 0, label_seed: int = 0,
                 drop_last: bool | None = None, task: str = "unlabeled") -> None:
        super().__init__("toy-root")
        self.save_hyperparameters()
        self.setup_calls: list[str | None] = []

    def setup(self, stage: str | None = None) -> None:
        self.setup_calls.append(stage)
        h = self.hparams
        if self.train_set is None:
            self.train_set = _Items(h.n_train)
            self.val_set = _Items(h.n_val, 100) if h.n_val else None
            self.test_set = _Items(h.n_test, 200) if h.n_test else None
        if stage == "predict" and h.n_predict and self.predict_set is None:
            self.predict_set = _Items(h.n_predict, 300)


def _xs(loader: Any) -> list[list[int]]:
    return [b["x"].tolist() for b in loader]


def test_every_datamodule_inherits_the_loaders_and_defines_none_itself() -> None:
    modules = [data.RadiographDataModule, data.LabelledImageDataModule, data.VolumeDataModule,
               data.ImageMaskDataModule, data.ASOCTDataModule]
    for cls in modules:
        assert issubclass(cls, SplitDataModule)
        own = set(vars(cls)) & {*LOADERS, "_loader", "_seed", "_ready"}
        assert not own, f"{cls.__name__} redefines {sorted(own)}"
        for name in LOADERS:
            assert inspect.getattr_static(cls, name) is inspect.getattr_static(SplitDataModule, name)


def test_loaders_set_up_their_stage_first() -> None:
    dm = _Toy()
    assert len(_xs(dm.train_dataloader())) == 2  # 10 items, batches of 4, the last dropped (unlabeled)
    dm.val_dataloader()
    dm.test_dataloader()
    dm.predict_dataloader()
    assert dm.setup_calls == ["fit", "validate", "test", "predict"]


def test_order_is_seeded_by_split_and_label_seed_and_the_epoch() -> None:
    def epochs(**kwargs: Any) -> list[list[list[int]]]:
        loader = _Toy(drop_last=False, **kwargs).train_dataloader()
        assert isinstance(loader.sampler, EpochShuffleSampler)
        out = []
        for epoch in range(2):
            loader.sampler.set_epoch(epoch)
            out.append(_xs(loader))
        return out

    a = epochs(split_seed=1, label_seed=2)
    assert a == epochs(split_seed=1, label_seed=2)
    assert a[0] != a[1] and sorted(sum(a[0], [])) == list(range(10))
    assert a != epochs(split_seed=1, label_seed=3)
    loader = _Toy(split_seed=1, label_seed=2).train_dataloader()
    assert loader.generator is not None and loader.generator.initial_seed() == 1 + 7919 * 2


@pytest.mark.parametrize(("drop_last", "task", "expected"), [
    (None, "unlabeled", True), (None, "classification", False), (False, "unlabeled", False), (True, "x", True)])
def test_drop_last_rule(drop_last: bool | None, task: str, expected: bool) -> None:
    dm = _Toy(drop_last=drop_last, task=task)
    assert dm.train_drop_last() is expected
    assert dm.train_dataloader().drop_last is expected
    assert dm.test_dataloader().drop_last is False


def test_evaluation_is_sequential_and_complete() -> None:
    dm = _Toy()
    assert _xs(dm.val_dataloader()) == [[100, 101, 102]]
    assert _xs(dm.test_dataloader()) == [[200, 201, 202, 203]]
    assert _xs(dm.predict_dataloader()) == [[200, 201, 202, 203]]  # no predict set: the test part


def test_predict_set_replaces_the_test_part() -> None:
    assert _xs(_Toy(n_predict=2).predict_dataloader()) == [[300, 301]]


def test_missing_parts() -> None:
    dm = _Toy(n_val=0, n_test=0)
    assert dm.val_dataloader() == []
    with pytest.raises(DataError, match="toy-root: no test split: test_fraction is 0"):
        dm.test_dataloader()
    with pytest.raises(DataError, match="nothing to predict: .*test_fraction is 0"):
        dm.predict_dataloader()


def test_caches_are_filled_before_workers_only() -> None:
    assert isinstance(_Items(1), CachedDataset)
    dm = _Toy(num_workers=1)
    dm.train_dataloader()  # creating a loader starts no worker
    dm.test_dataloader()
    assert dm.train_set is not None and dm.test_set is not None
    assert (dm.train_set.filled, dm.test_set.filled) == (1, 1)
    for kwargs in ({"num_workers": 0}, {"num_workers": 1, "cache": False}):
        dm = _Toy(**kwargs)
        dm.train_dataloader()
        assert dm.train_set is not None and dm.train_set.filled == 0


class _Balanced(_Toy):
    def train_sampler(self, dataset: _Items) -> Sampler[int] | None:
        return EpochBalancedSampler([i % 2 for i in range(len(dataset))], seed=self.loader_seed())


def test_train_sampler_hook() -> None:
    loader = _Balanced(drop_last=False).train_dataloader()
    assert isinstance(loader.sampler, EpochBalancedSampler) and loader.sampler.seed == 0
    assert sum(len(b) for b in _xs(loader)) == 10
    assert isinstance(_Balanced().test_dataloader().sampler, torch.utils.data.SequentialSampler)


def test_hparams_have_attribute_access() -> None:
    dm = _Toy(batch_size=3)
    assert dm.hparams.batch_size == 3 and dm.hparams["batch_size"] == 3
