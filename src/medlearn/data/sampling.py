"""Samplers whose order depends only on (seed, epoch), so that a resumed run sees the same batches.

PyTorch's ``RandomSampler`` draws its seed from the global torch RNG when an epoch's iterator is
created; Lightning may create that iterator before a resumed run's RNG state is restored, so the
resumed epoch would be shuffled differently. :class:`EpochShuffleSampler` instead permutes with a
private generator seeded from ``seed`` and the epoch that Lightning passes to ``set_epoch``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Sequence, Sized
from typing import TypeVar

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

__all__ = ["EpochShuffleSampler", "EpochBalancedSampler", "seeded_loader", "group_split"]

T = TypeVar("T")


class _EpochSeeded(Sampler[int]):
    """The epoch bookkeeping of the samplers here: a private generator seeded from ``(seed, epoch)``.

    Lightning calls :meth:`set_epoch` before every epoch. Where nobody does (plain PyTorch loops,
    or under Lightning's DDP sampler wrapper), the epoch advances by itself on every iteration.
    Subclasses set ``n`` and implement :meth:`_draw`.
    """

    n: int

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)
        self.epoch = 0
        self._explicit = False

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self._explicit = True

    def _draw(self, generator: torch.Generator) -> list[int]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[int]:
        order = self._draw(torch.Generator().manual_seed(self.seed * 100_003 + self.epoch))
        if not self._explicit:
            self.epoch += 1
        self._explicit = False
        return iter(order)

    def __len__(self) -> int:
        return self.n


class EpochShuffleSampler(_EpochSeeded):
    """A fresh random permutation per epoch, reproducible from ``(seed, epoch)`` (epoch handling
    as :class:`_EpochSeeded`).

    Args:
        data_source: the dataset (only its length is used).
        seed: base seed.
    """

    def __init__(self, data_source: Sized, seed: int = 0) -> None:
        super().__init__(seed)
        self.n = len(data_source)

    def _draw(self, generator: torch.Generator) -> list[int]:
        return torch.randperm(self.n, generator=generator).tolist()


class EpochBalancedSampler(_EpochSeeded):
    """Class-balanced sampling with replacement, reproducible from ``(seed, epoch)``.

    Each epoch draws ``len(labels)`` indices (or ``num_samples``) with probability proportional to
    ``1 / count(label)``, so every class is drawn equally often in expectation (the usual remedy
    for ISIC's 67 % NV). Epoch handling as :class:`EpochShuffleSampler`.

    Args:
        labels: ``(N,)`` integer class of each item.
        seed: base seed.
        num_samples: draws per epoch (default N).
    """

    def __init__(self, labels: Sequence[int] | torch.Tensor, seed: int = 0, num_samples: int | None = None) -> None:
        super().__init__(seed)
        lab = torch.as_tensor(labels, dtype=torch.long).view(-1)
        if lab.numel() == 0:
            raise ValueError("EpochBalancedSampler needs at least one label")
        counts = torch.bincount(lab).double()
        self.weights = 1.0 / counts[lab]
        self.n = int(num_samples or lab.numel())

    def _draw(self, generator: torch.Generator) -> list[int]:
        return torch.multinomial(self.weights, self.n, replacement=True, generator=generator).tolist()


def seeded_loader(ds: Dataset, batch_size: int, train: bool, drop_last: bool, num_workers: int,
                  seed: int) -> DataLoader:
    """The DataLoader every medlearn DataModule uses.

    Training: :class:`EpochShuffleSampler` (order from ``(seed, epoch)``) and, with ``drop_last``,
    batches no larger than the dataset; evaluation: sequential. Always a private generator, so
    creating an epoch's iterator never draws from the global torch RNG (that would shift every
    later random draw of a resumed run).
    """
    bs = min(batch_size, len(ds)) if train and drop_last else batch_size  # type: ignore[arg-type]
    sampler = EpochShuffleSampler(ds, seed=seed) if train else None  # type: ignore[arg-type]
    return DataLoader(ds, batch_size=bs, sampler=sampler, drop_last=train and drop_last, num_workers=num_workers,
                      persistent_workers=num_workers > 0, pin_memory=False,
                      generator=torch.Generator().manual_seed(seed))


def group_split(records: Sequence[T], fraction: float, seed: int, key: Callable[[T], Hashable],
                name: str = "fraction") -> tuple[list[T], list[T]]:
    """Split records into two parts by group (patient, case), no group in both, deterministically.

    ``round(fraction * n_groups)`` groups, drawn at random, go to the second part (at least one and
    at most all but one when ``fraction > 0`` and there are two or more groups). Input order is kept.

    Raises:
        ValueError: ``fraction`` outside [0, 1) (the message names the argument ``name``).
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {fraction}")
    groups = sorted({key(r) for r in records})
    n = round(fraction * len(groups))
    if fraction > 0 and len(groups) >= 2:
        n = min(max(n, 1), len(groups) - 1)
    perm = np.random.default_rng(seed).permutation(len(groups))
    held = {groups[i] for i in perm[:n]}
    return [r for r in records if key(r) not in held], [r for r in records if key(r) in held]
