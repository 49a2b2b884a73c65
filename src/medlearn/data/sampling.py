"""Which records a run sees, and in what order: splits, subsets, and epoch-seeded samplers.

This module owns every random choice the data layer makes, each deterministic from a seed:
grouped splits (:func:`group_split` by any key, :func:`patient_split`, :func:`case_split`,
:func:`stratified_group_split` by group and class), fixed-size subsets (:func:`subsample`), the
per-epoch samplers (:class:`EpochShuffleSampler`, :class:`EpochBalancedSampler`) and the loader
every DataModule builds on them (:func:`seeded_loader`).

PyTorch's ``RandomSampler`` draws its seed from the global torch RNG when an epoch's iterator is
created; Lightning may create that iterator before a resumed run's RNG state is restored, so the
resumed epoch would be shuffled differently. :class:`EpochShuffleSampler` instead permutes with a
private generator seeded from ``seed`` and the epoch that Lightning passes to ``set_epoch``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence, Sized
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from medlearn.data.records import ImageRecord, VolumeRecord
from medlearn.io.errors import DataError

__all__ = ["EpochShuffleSampler", "EpochBalancedSampler", "seeded_loader", "group_split", "case_split",
           "patient_split", "stratified_group_split", "subsample"]

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
    """A fresh random permutation per epoch, reproducible from ``(seed, epoch)``.

    Epoch handling as :class:`_EpochSeeded`.

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
        fractions: expected share of each class among the draws (default equal shares).
    """

    def __init__(self, labels: Sequence[int] | torch.Tensor, seed: int = 0, num_samples: int | None = None,
                 fractions: Sequence[float] | None = None) -> None:
        super().__init__(seed)
        lab = torch.as_tensor(labels, dtype=torch.long).view(-1)
        if lab.numel() == 0:
            raise ValueError("EpochBalancedSampler needs at least one label")
        counts = torch.bincount(lab).double()
        share = torch.ones_like(counts)
        if fractions is not None:
            if len(fractions) != counts.numel() or min(fractions) < 0:
                raise ValueError(f"fractions needs {counts.numel()} non-negative shares, got {list(fractions)}")
            share = torch.as_tensor(list(fractions), dtype=torch.float64)
        self.weights = share[lab] / counts[lab].clamp(min=1)
        self.n = int(num_samples or lab.numel())

    def _draw(self, generator: torch.Generator) -> list[int]:
        return torch.multinomial(self.weights, self.n, replacement=True, generator=generator).tolist()


def seeded_loader(ds: Dataset, batch_size: int, train: bool, drop_last: bool, num_workers: int,
                  seed: int, sampler: Sampler[int] | None = None) -> DataLoader:
    """The DataLoader every medlearn DataModule uses.

    Training: ``sampler``, by default :class:`EpochShuffleSampler` (order from ``(seed, epoch)``),
    and, with ``drop_last``, batches no larger than the dataset (so an epoch is never empty);
    evaluation: sequential. Always a private generator, so creating an epoch's iterator never
    draws from the global torch RNG (that would shift every later random draw of a resumed run).

    Args:
        ds: the dataset (sized).
        batch_size: per-process batch size.
        train: training (sampled, optionally dropping the last incomplete batch) or evaluation
            (sequential, every item).
        drop_last: drop the last incomplete training batch (ignored for evaluation).
        num_workers: worker processes (persistent when > 0).
        seed: seed of the default sampler and of the loader's generator (workers' base seeds).
        sampler: the training sampler instead of :class:`EpochShuffleSampler`, e.g. an
            :class:`EpochBalancedSampler` drawing ``len(ds)`` items per epoch.

    Returns:
        The loader.
    """
    sized = cast(Sized, ds)  # map-style datasets have a length; torch's Dataset type does not declare it
    bs = min(batch_size, len(sized)) if train and drop_last else batch_size
    if not train:
        sampler = None
    elif sampler is None:
        sampler = EpochShuffleSampler(sized, seed=seed)
    return DataLoader(ds, batch_size=bs, sampler=sampler, drop_last=train and drop_last, num_workers=num_workers,
                      persistent_workers=num_workers > 0, pin_memory=False,
                      generator=torch.Generator().manual_seed(seed))


def group_split(records: Sequence[T], fraction: float, seed: int, key: Callable[[T], str],
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


def patient_split(
    records: Sequence[ImageRecord], val_fraction: float, seed: int
) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """Split records into train and validation by patient (no patient in both).

    ``round(val_fraction * n_patients)`` patients, drawn at random, go to validation (at least one
    and at most all but one when ``0 < val_fraction`` and there are two or more patients). Input
    order is kept within each part.

    Args:
        records: the records to split.
        val_fraction: fraction of *patients* for validation, in [0, 1).
        seed: random seed; the same seed and records give the same split.

    Returns:
        ``(train, val)`` lists of records.

    Raises:
        ValueError: if ``val_fraction`` is outside [0, 1).
    """
    return group_split(records, val_fraction, seed, key=lambda r: r.patient, name="val_fraction")


def _class_of(record: Any) -> int:
    return record.label


def _group_of(record: Any) -> str:
    return record.group


def stratified_group_split(records: Sequence[T], fractions: Sequence[float], seed: int,
                           key: Callable[[T], str] = _group_of,
                           label: Callable[[T], int] = _class_of) -> list[list[T]]:
    """Split records by group into ``len(fractions) + 1`` parts, stratified by class.

    Each group gets the majority label of its images (ties: the lowest index). Within each class
    the groups are shuffled (``seed`` and the class index seed the generator) and
    ``round(fraction * n_groups_of_class)`` of them go to each held-out part in turn (at least one
    per part when the class has more groups than parts); the rest form part 0. Input order is kept
    within each part; no group is in two parts.

    Args:
        records: the records (by default :class:`~medlearn.data.records.LabelledImage`).
        fractions: held-out fractions, e.g. ``(0.1, 0.2)`` for validation and test; sum < 1.
        seed: random seed.
        key: grouping key (default: ``record.group``).
        label: class of a record (default: ``record.label``); a constant gives a plain grouped
            split with the same draws as one class.

    Returns:
        ``[rest, part_1, part_2, ...]``.

    Raises:
        ValueError: fractions negative or summing to 1 or more.
    """
    fr = [float(f) for f in fractions]
    if any(f < 0 for f in fr) or sum(fr) >= 1:
        raise ValueError(f"fractions must be >= 0 and sum to < 1, got {fr}")
    votes: dict[str, dict[int, int]] = {}
    for r in records:
        v = votes.setdefault(key(r), {})
        c = label(r)
        v[c] = v.get(c, 0) + 1
    group_label = {g: min(v, key=lambda k: (-v[k], k)) for g, v in votes.items()}
    part_of: dict[str, int] = {}
    for c in sorted(set(group_label.values())):
        gs = sorted(g for g, lab in group_label.items() if lab == c)
        perm = np.random.default_rng([int(seed), int(c)]).permutation(len(gs))
        start = 0
        for j, f in enumerate(fr, start=1):
            n = round(f * len(gs))
            if f > 0 and len(gs) > len(fr):
                n = max(n, 1)
            n = min(n, len(gs) - start - (1 if len(gs) > len(fr) else 0))
            for i in perm[start:start + max(n, 0)]:
                part_of[gs[i]] = j
            start += max(n, 0)
    parts: list[list[T]] = [[] for _ in range(len(fr) + 1)]
    for r in records:
        parts[part_of.get(key(r), 0)].append(r)
    return parts


def subsample(records: Sequence[T], n: int, seed: int) -> list[T]:
    """Choose ``n`` records at random without replacement, deterministically.

    Args:
        records: records (or paths) to choose from.
        n: how many to keep.
        seed: random seed.

    Returns:
        The chosen records, in their input order.

    Raises:
        DataError: if ``n`` exceeds the number of records.
        ValueError: if ``n`` is negative.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if n > len(records):
        where = Path(".")
        if records:
            first = records[0]
            where = Path(first.path if isinstance(first, ImageRecord) else str(first)).parent
        raise DataError(where, f"asked for {n} images but only {len(records)} are available")
    keep = np.sort(np.random.default_rng(seed).choice(len(records), size=n, replace=False))
    return [records[int(i)] for i in keep]


def case_split(
    records: Sequence[VolumeRecord], fraction: float, seed: int
) -> tuple[list[VolumeRecord], list[VolumeRecord]]:
    """Split records into two parts by case (no case in both), deterministically.

    ``round(fraction * n_cases)`` cases, drawn at random, go to the second part (at least one and
    at most all but one when ``fraction > 0`` and there are two or more cases). Input order is kept.

    Args:
        records: the records.
        fraction: fraction of *cases* for the second part, in [0, 1).
        seed: random seed.

    Returns:
        ``(kept, held_out)``.

    Raises:
        ValueError: ``fraction`` outside [0, 1).
    """
    return group_split(records, fraction, seed, key=lambda r: r.case)
