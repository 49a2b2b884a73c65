"""Two domains in one DataModule: a labelled source and an unlabelled target, evaluated per domain.

Unsupervised domain adaptation trains on labelled images of one camera / centre (the *source*)
and unlabelled images of another (the *target*), and is judged on labelled target test images,
next to a source test set (pOSAL, Wang et al., IEEE TMI 2019; BEAL, MICCAI 2019; Cross-denoising,
Zhang et al., IJCAI 2020). :class:`TwoDomainDataModule` serves that setting from any
``segmentation2d`` layout (REFUGE, Drishti-GS, an ``image,mask,...,domain`` table) through the
layout registry, with the decoding, label and ROI options of
:class:`~medlearn.data.segmentation2d.ImageMaskDataModule`:

* **Domains.** ``source_domains`` (default: the domains of the rows whose split is ``train``;
  REFUGE: ``zeiss``) and ``target_domains`` (default: every other domain; REFUGE: ``canon``), or
  a second dataset for the target (``target_root``, e.g. REFUGE Training400 -> Drishti-GS).
* **Parts.** Source rows marked ``val`` / ``test`` are its validation / test parts (else
  ``val_fraction`` of its groups is held out for validation); ``source_test`` replaces the source
  test part by another table or layout (e.g. a clean-label test set). Target rows marked ``test``
  are the target test part (else ``test_fraction`` of its groups); every other target row is an
  *unlabelled* training image: its mask is never read. ``target_images`` adds a folder of
  unlabelled target images.
* **Training batches** ``{"source": {...}, "target": {...}}``: one target image per source image
  (:class:`PairedDataset`), in an order drawn from ``(seed, epoch)`` by
  :class:`PairedEpochSampler`: a fresh permutation of the source per epoch, and target images
  cycling through fresh permutations, so an epoch is one pass over the source, reproducible and
  resumable, whatever the two sizes. Source items: ``image``, ``seg``, ``name``, ``domain``,
  ``noisy`` (1 / 0 from ``noise_table``, a ``corruption.csv`` of
  :func:`medlearn.synth.corrupt.corrupt_masks`; -1 unknown), with ``roi`` also ``roi``,
  ``orig_hw``; target items: ``image``, ``name``, ``domain``, ``roi``, ``orig_hw``.
* **Evaluation.** Validation (the source validation part) and test (source test, then target
  test) items carry ``role`` = ``"source"`` / ``"target"``, so a model scores each domain apart.
* **Prediction** (``predict_root``): a folder of images (no masks), cropped by the ROI's
  evaluation rule, each item with its box and original size, for ``medlearn predict``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Sampler

from medlearn.data.datamodule import LayoutSource
from medlearn.data.layouts import detect_layout, get_layout
from medlearn.data.records import MaskedImage, list_image_files
from medlearn.data.roi import DiscROI
from medlearn.data.sampling import seeded_loader, stratified_group_split, subsample
from medlearn.data.segmentation2d import FALLBACK_LAYOUT, KIND, ImageFolderDataset, ImageMaskDataModule
from medlearn.data.tables import read_columns
from medlearn.io.errors import DataError

__all__ = ["TwoDomainDataModule", "ImageFolderDataset", "PairedDataset", "PairedEpochSampler", "read_noise_table"]


# --- datasets ----------------------------------------------------------------------------------------
class _Tagged(Dataset):
    """Items of ``dataset`` restricted to ``keys`` (those present), with ``role`` and optional ``noisy`` flags."""

    def __init__(self, dataset: Dataset, role: str, keys: Sequence[str], noisy: Sequence[int] | None = None) -> None:
        self.dataset = dataset
        self.role = role
        self.keys = tuple(keys)
        self.noisy = list(noisy) if noisy is not None else None

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.dataset[index]
        out = {k: item[k] for k in self.keys if k in item}
        out["role"] = self.role
        if self.noisy is not None:
            out["noisy"] = self.noisy[index]
        return out

    def fill_cache(self) -> None:
        """Fill the wrapped dataset's cache."""
        _fill(self.dataset)


class PairedDataset(Dataset):
    """A source item and a target item per index ``(i, j)``: ``{"source": source[i], "target": target[j]}``.

    Its length is the source's (an epoch is a pass over the source); index it with the pairs of
    :class:`PairedEpochSampler`.
    """

    def __init__(self, source: Dataset, target: Dataset) -> None:
        self.source = source
        self.target = target

    def __len__(self) -> int:
        return len(self.source)  # type: ignore[arg-type]

    def __getitem__(self, index: tuple[int, int]) -> dict[str, Any]:
        i, j = index
        return {"source": self.source[i], "target": self.target[j]}

    def fill_cache(self) -> None:
        """Fill both datasets' caches (through concatenations)."""
        _fill(self.source)
        _fill(self.target)


def _fill(ds: Dataset) -> None:
    """Fill the cache of ``ds``, of the parts of a ``ConcatDataset`` and of a tagged dataset's inner one."""
    if isinstance(ds, ConcatDataset):
        for part in ds.datasets:
            _fill(part)
        return
    fill = getattr(ds, "fill_cache", None)
    if callable(fill):
        fill()


class PairedEpochSampler(Sampler[tuple[int, int]]):
    """``(source index, target index)`` pairs: a source permutation per epoch, target indices cycling.

    Epoch ``e`` draws a permutation of the ``n_source`` source indices and ``n_source`` target
    indices from concatenated permutations of the ``n_target`` target indices (so every target
    image is seen equally often, whatever the sizes), all from a private generator seeded with
    ``(seed, e)``. Lightning calls :meth:`set_epoch`; elsewhere the epoch advances by itself on
    every iteration (as :class:`~medlearn.data.sampling.EpochShuffleSampler`).

    Args:
        n_source: source items.
        n_target: target items.
        seed: base seed.

    Examples:
        >>> s = PairedEpochSampler(4, 3, seed=0)
        >>> s.set_epoch(0)
        >>> pairs = list(s)
        >>> sorted(i for i, _ in pairs), len(pairs)
        ([0, 1, 2, 3], 4)
    """

    def __init__(self, n_source: int, n_target: int, seed: int = 0) -> None:
        if n_source < 1 or n_target < 1:
            raise ValueError(f"both domains need items, got {n_source} source and {n_target} target")
        self.n_source, self.n_target = int(n_source), int(n_target)
        self.seed = int(seed)
        self.epoch = 0
        self._explicit = False

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose order to draw next."""
        self.epoch = int(epoch)
        self._explicit = True

    def pairs(self, epoch: int) -> list[tuple[int, int]]:
        """The pairs of ``epoch``."""
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        src = torch.randperm(self.n_source, generator=g).tolist()
        reps = -(-self.n_source // self.n_target)
        tgt = torch.cat([torch.randperm(self.n_target, generator=g) for _ in range(reps)])[:self.n_source].tolist()
        return list(zip(src, tgt))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = self.pairs(self.epoch)
        if not self._explicit:
            self.epoch += 1
        self._explicit = False
        return iter(order)

    def __len__(self) -> int:
        return self.n_source


def read_noise_table(path: str | Path) -> dict[str, int]:
    """``{mask stem: 1 corrupted / 0 clean}`` from a ``corruption.csv`` (columns ``mask``, ``corrupted``).

    Raises:
        DataError: a missing file or column, or a ``corrupted`` cell that is not 0 or 1 (every bad row listed).
    """
    cols = read_columns(Path(path), {"mask": "mask", "corrupted": "corrupted"}, group_col=None)
    out: dict[str, int] = {}
    problems = []
    for line, mask, flag in zip(cols.lines, cols["mask"], cols["corrupted"]):
        if flag not in ("0", "1"):
            problems.append(f"line {line} ({mask}): corrupted must be 0 or 1, got {flag!r}")
        else:
            out[Path(mask).stem] = int(flag)
    if problems:
        raise DataError(path, f"{len(problems)} invalid rows", problems)
    return out


# --- the DataModule ----------------------------------------------------------------------------------
_EVAL_KEYS = ("image", "seg", "name", "domain", "roi", "orig_hw")


class TwoDomainDataModule(ImageMaskDataModule):
    """Labelled source + unlabelled target training stream, per-domain evaluation (see the module docstring).

    Batches: training ``{"source": {"image", "seg", "name", "domain", "noisy"[, "roi", "orig_hw"]},
    "target": {"image", "name", "domain", "path", "roi", "orig_hw"}}``; validation / test
    ``{"image", "seg", "name", "domain", "role"[, "roi", "orig_hw"]}``; predict: as the target items.

    Args:
        root: the dataset (REFUGE folder, Drishti-GS folder, mask table ...); ``None`` for
            prediction only.
        layout: its ``segmentation2d`` layout or ``"auto"``.
        table: ``mask-table``: the table, relative to ``root`` (or absolute).
        image_col: ``mask-table``: image column.
        mask_col: ``mask-table``: mask column.
        group_col: ``mask-table``: grouping column (``"auto"``, a name, or ``None``).
        split_col: ``mask-table``: fixed-split column.
        domain_col: ``mask-table``: domain column.
        domains: keep only these domains of ``root`` before anything else (``None``: all).
        source_domains: the source's domains (default: those of the ``train`` rows, else all when
            ``target_root`` is given).
        target_domains: the target's domains (default: the others); ignored with ``target_root``.
        target_root: the target's own dataset (its ``test`` rows, or ``test_fraction`` of it, are
            the target test part; the rest unlabelled training images).
        target_layout: its layout (``"auto"``).
        target_layout_options: its reader's options.
        source_test: a table or layout root (relative to ``root``, or absolute) whose records are
            the source test part instead of the source's ``test`` rows (a clean-label test set).
        target_images: a folder of unlabelled target images added to the target training images.
        noise_table: a ``corruption.csv`` (relative to ``root``, or absolute) flagging which source
            training masks are corrupted, for diagnostics.
        predict_root: a folder of images to predict (``medlearn predict``).
        image_size: network input size, one side or ``[H, W]``.
        channels: 3 or 1.
        label_values: allowed label values (``None``: from ``value_map``, else found in the masks).
        value_map: ``{stored: label}`` for masks stored as other values (REFUGE and Drishti-GS
            decode their own).
        class_names: names of the label values.
        batch_size: source images per batch (as many target images come with them).
        num_workers: loader workers.
        val_fraction: share of the source groups held out for validation when no ``val`` rows.
        test_fraction: share of the target groups held out for testing when no ``test`` rows.
        split_seed: seed of the splits and of the training order.
        num_train: a random subset of this many source training images (``None``: all).
        label_seed: seed of that subset.
        cache: decode once, keep in memory.
        check_masks: read every mask in ``setup`` and report every unusable pair at once.
        drop_last: drop the last incomplete training batch (default on: selection and BatchNorm
            want full batches).
        layout_options: further options of ``root``'s reader.
        roi: a disc-centred crop (:class:`~medlearn.data.roi.DiscROI`): source training images by
            ``roi.train_centre``, every other image by ``roi.eval_centre``.

    Raises:
        ValueError: as :class:`~medlearn.data.segmentation2d.ImageMaskDataModule`; a ``roi``
            whose evaluation rule is ``"mask"`` (unlabelled images have no mask).
    """

    no_test_reason = "no target test images: mark test rows, set test_fraction > 0, or give source_test"

    def __init__(
        self,
        root: str | None = None,
        layout: str = "auto",
        table: str = "masks.csv",
        image_col: str = "image",
        mask_col: str = "mask",
        group_col: str | None = "auto",
        split_col: str | None = "split",
        domain_col: str | None = "domain",
        domains: list[str] | None = None,
        source_domains: list[str] | None = None,
        target_domains: list[str] | None = None,
        target_root: str | None = None,
        target_layout: str = "auto",
        target_layout_options: dict[str, Any] | None = None,
        source_test: str | None = None,
        target_images: str | None = None,
        noise_table: str | None = None,
        predict_root: str | None = None,
        image_size: int | list[int] = 256,
        channels: int = 3,
        label_values: list[int] | None = None,
        value_map: dict[int, int] | None = None,
        class_names: list[str] | None = None,
        batch_size: int = 8,
        num_workers: int = 0,
        val_fraction: float = 0.0,
        test_fraction: float = 0.2,
        split_seed: int = 0,
        num_train: int | None = None,
        label_seed: int = 0,
        cache: bool = True,
        check_masks: bool = True,
        drop_last: bool = True,
        layout_options: dict[str, Any] | None = None,
        roi: DiscROI | None = None,
    ) -> None:
        if roi is not None and roi.eval_centre == "mask":
            raise ValueError("unlabelled and test images have no mask: roi.eval_centre must be 'detector' or 'table'")
        super().__init__(root or ".", layout=layout, table=table, image_col=image_col, mask_col=mask_col,
                         group_col=group_col, split_col=split_col, domain_col=domain_col, domains=domains,
                         image_size=image_size, channels=channels, label_values=label_values, value_map=value_map,
                         class_names=class_names, batch_size=batch_size, num_workers=num_workers,
                         val_fraction=val_fraction, test_fraction=test_fraction, split_seed=split_seed,
                         num_train=num_train, label_seed=label_seed, cache=cache, check_masks=check_masks,
                         drop_last=drop_last, layout_options=layout_options, roi=roi, predict_root=predict_root)
        self.save_hyperparameters()
        self.source_train: _Tagged | None = None
        self.target_train: Dataset | None = None
        self.eval_val: Dataset | None = None
        self.eval_test: Dataset | None = None
        self.predict_images: ImageFolderDataset | None = None

    # --- reading ---

    def _resolve(self, path: str) -> Path:
        p = Path(path)
        return p if p.is_absolute() or self.hparams.root is None else self.root / p

    def _read_other(self, root: Path, layout: str, options: dict[str, Any] | None) -> list[MaskedImage]:
        name = layout if layout != "auto" else detect_layout(root, KIND, default=FALLBACK_LAYOUT).name
        found = get_layout(name, KIND).read(root, **{**self.grouping_options(root.name), **dict(options or {})})
        return list(found.records)

    def layout_sources(self) -> list[LayoutSource]:
        """``root`` (as :class:`~medlearn.data.segmentation2d.ImageMaskDataModule`), and the other
        dataset roots read through the layout registry: ``target_root`` with ``target_layout`` and its
        options, and ``source_test`` when it is a folder (a table is read as a mask table).
        """
        h = self.hparams
        sources = super().layout_sources() if h.root is not None else []
        if h.target_root is not None:
            sources.append(LayoutSource(self._resolve(h.target_root), KIND, str(h.target_layout),
                                        dict(h.target_layout_options or {})))
        if h.source_test is not None and not self._resolve(h.source_test).is_file():
            sources.append(LayoutSource(self._resolve(h.source_test), KIND, "auto", {}))
        return sources

    def _split_domains(self, records: list[MaskedImage]) -> tuple[list[MaskedImage], list[MaskedImage]]:
        h = self.hparams
        present = sorted({r.domain for r in records})
        src = set(h.source_domains) if h.source_domains is not None else None
        if h.target_root is not None:
            keep = src if src is not None else ({r.domain for r in records if r.split == "train"} or set(present))
            source = [r for r in records if r.domain in keep]
            target = self._read_other(self._resolve(h.target_root), h.target_layout, h.target_layout_options)
        else:
            if src is None:
                src = {r.domain for r in records if r.split == "train"}
            tgt = set(h.target_domains) if h.target_domains is not None else set(present) - src
            if not src or not tgt or src & tgt:
                raise DataError(self.root, f"cannot tell the source from the target: the data has domains {present}; "
                                           "set source_domains and target_domains (disjoint), or target_root")
            source = [r for r in records if r.domain in src]
            target = [r for r in records if r.domain in tgt]
        if not source:
            raise DataError(self.root, f"no source images (domains present: {present})")
        return source, target

    def _parts(self) -> dict[str, list[MaskedImage]]:
        h = self.hparams
        source, target = self._split_domains(self._read())
        parts: dict[str, list[MaskedImage]] = {}
        pool = [r for r in source if r.split in ("", "train")]
        val = [r for r in source if r.split == "val"]
        if not val and h.val_fraction > 0:
            pool, val = stratified_group_split(pool, [h.val_fraction], h.split_seed, label=lambda r: 0)
        if h.num_train:
            pool = subsample(pool, h.num_train, h.label_seed)
        parts["source_train"], parts["source_val"] = pool, val
        if h.source_test is not None:
            st = self._resolve(h.source_test)
            if st.is_file():
                from medlearn.data.segmentation2d import read_mask_table

                parts["source_test"] = read_mask_table(st)
            else:
                parts["source_test"] = self._read_other(st, "auto", None)
        else:
            parts["source_test"] = [r for r in source if r.split == "test"]
        t_test = [r for r in target if r.split == "test"]
        t_rest = [r for r in target if r.split != "test"]
        if not t_test and h.test_fraction > 0 and len(t_rest) > 1:
            t_rest, t_test = stratified_group_split(t_rest, [h.test_fraction], h.split_seed, label=lambda r: 0)
        parts["target_train"], parts["target_test"] = t_rest, t_test
        if not parts["source_train"]:
            raise DataError(self.root, "no source training images after splitting")
        return parts

    def setup(self, stage: str | None = None) -> None:
        """Read both domains, split them, build the datasets and (with ``check_masks``) check every mask, once."""
        h = self.hparams
        roi = self.roi
        if h.predict_root is not None and self.predict_images is None:
            self.predict_images = self.image_folder(h.predict_root)
        if self.source_train is not None or (stage == "predict" and h.predict_root is not None) or h.root is None:
            return
        if not self.root.exists():
            raise DataError(self.root, "dataset root does not exist")
        parts = self._parts()
        labelled = {k: self._dataset(v, k == "source_train") for k, v in parts.items()
                    if v and k != "target_train"}
        if h.check_masks or self._label_values is None:
            found: set[int] = set()
            problems: list[str] = []
            for ds in labelled.values():
                values, issues = ds.scan()
                found |= values
                problems += issues
            if problems:
                raise DataError(self.root, f"{len(problems)} unusable image / mask pairs", problems)
            if self._label_values is None:
                self._label_values = sorted(found)
                for ds in labelled.values():
                    ds.label_values = list(self._label_values)
        noisy = None
        if h.noise_table is not None:
            table = read_noise_table(self._resolve(h.noise_table))
            noisy = [table.get(r.path.stem, table.get(Path(r.name).stem, -1)) for r in parts["source_train"]]
        else:
            noisy = [-1] * len(parts["source_train"])
        self.splits = parts
        self.train_set = labelled["source_train"]
        self.source_train = _Tagged(self.train_set, "source", ("image", "seg", "name", "domain", "roi", "orig_hw"),
                                    noisy)
        targets: list[Dataset] = []
        if parts["target_train"]:
            recs = parts["target_train"]
            targets.append(ImageFolderDataset([r.path for r in recs], self.image_hw, h.channels, [r.name for r in recs],
                                              recs[0].domain, roi, None, h.cache))
        if h.target_images is not None:
            folder = self._resolve(h.target_images)
            files = list_image_files(folder)
            targets.append(ImageFolderDataset(files, self.image_hw, h.channels, [p.name for p in files],
                                              "target", roi, None, h.cache))
        if not targets:
            raise DataError(self.root, "no unlabelled target images: give target domains, target_root or target_images")
        keys = ("image", "name", "domain", "roi", "orig_hw")
        self.target_train = ConcatDataset([_Tagged(t, "target", keys) for t in targets])
        if "source_val" in labelled:
            self.val_set = labelled["source_val"]
            self.eval_val = _Tagged(self.val_set, "source", _EVAL_KEYS)
        tests = [_Tagged(labelled[k], role, _EVAL_KEYS) for k, role in (("source_test", "source"),
                                                                       ("target_test", "target")) if k in labelled]
        if tests:
            self.test_set = labelled.get("target_test") or labelled["source_test"]
            self.eval_test = ConcatDataset(tests)

    # --- loaders ---

    def train_dataloader(self) -> DataLoader:
        """Paired source / target batches (:class:`PairedEpochSampler` order from ``(loader seed, epoch)``)."""
        self.setup("fit")
        if self.source_train is None or self.target_train is None:
            raise DataError(self._where(), "no training data")
        h = self.hparams
        pairs = PairedDataset(self.source_train, self.target_train)
        if h.cache and h.num_workers > 0:
            pairs.fill_cache()
        sampler = PairedEpochSampler(len(self.source_train), len(self.target_train),  # type: ignore[arg-type]
                                     seed=self.loader_seed())
        return seeded_loader(pairs, h.batch_size, True, self.train_drop_last(), h.num_workers,
                             seed=self.loader_seed(), sampler=sampler)  # type: ignore[arg-type]

    def _eval_loader(self, ds: Dataset) -> DataLoader:
        h = self.hparams
        if h.cache and h.num_workers > 0:
            _fill(ds)
        return seeded_loader(ds, h.batch_size, False, False, h.num_workers, seed=self.loader_seed())

    def val_dataloader(self) -> DataLoader | list[Any]:
        """Source validation images (``role`` = ``"source"``), or ``[]`` when there are none."""
        self.setup("validate")
        return [] if self.eval_val is None else self._eval_loader(self.eval_val)

    def test_dataloader(self) -> DataLoader:
        """Source test then target test images, each with its ``role``.

        Raises:
            DataError: neither domain has test images.
        """
        self.setup("test")
        if self.eval_test is None:
            raise DataError(self._where(), f"no test split: {self.no_test_reason}")
        return self._eval_loader(self.eval_test)

    def predict_dataloader(self) -> DataLoader:
        """The images of ``predict_root`` (else the test images).

        Raises:
            DataError: no ``predict_root`` and no test images.
        """
        self.setup("predict")
        if self.predict_images is not None:
            return self._eval_loader(self.predict_images)
        return self.test_dataloader()
