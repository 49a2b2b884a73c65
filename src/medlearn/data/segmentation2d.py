"""2D images with label masks: the ``image,mask`` table layout, a cached dataset, a DataModule.

The 2D segmentation path (optic disc / cup on fundus photographs, polyps in colonoscopy frames,
any image + mask collection): :class:`ImageMaskDataModule` serves batches with the same ``image``
/ ``seg`` keys as :class:`~medlearn.data.volumes.VolumeDataModule` with ``task="segmentation"``,
so one N-D segmenter trains on both. Sources (``layout``) are the layouts of kind
``segmentation2d`` in :mod:`medlearn.data.layouts`, reached through the registry. Built in:

- ``"mask-table"`` (registered here): a CSV ``image,mask[,group][,split][,domain]`` with paths
  relative to the table's folder (or absolute); :func:`read_mask_table`. ``group`` (or
  ``patient_id``, ``case`` ... as in :data:`~medlearn.data.tables.GROUP_COLUMNS`) keeps the
  images of one patient / eye / video on one side of every split; ``split`` (``train`` / ``val``
  / ``test``) fixes the split; ``domain`` names the centre or device, for domain-shift studies.
- ``"auto"``: the first layout that recognises the root, else ``mask-table``.

Masks are label images (PNG, BMP, TIFF; 8- or 16-bit, single channel; an RGB mask whose three
channels are equal is accepted) or 2D NIfTI files (:func:`~medlearn.data.decode.load_mask`).
They keep their stored label values, optionally mapped on read (``value_map``, e.g. REFUGE's
0 / 128 / 255) and checked against ``label_values`` (:func:`~medlearn.data.decode.relabel_mask`).
Images are decoded to [0, 1] as for classification (``channels`` 1 or 3) and resized bilinearly
with antialiasing, masks by nearest neighbour, to ``image_size``; an image and its mask must have
the same size. Splits are grouped (:func:`~medlearn.data.sampling.stratified_group_split` with a
single class), deterministic from ``split_seed``; the decoded, resized pairs are cached once in
memory.

Fundus photographs are usually cropped to a disc-centred square before resizing (``roi``, a
:class:`~medlearn.data.roi.DiscROI`): the box comes from the training mask, a table of disc
centres or a coarse detector, and every item keeps it (``roi``, with the original ``orig_hw``) so
predictions map back to the full image.

Validation reports every bad row, and with ``check_masks`` every unusable image / mask pair, at
once (a :class:`~medlearn.io.errors.DataError` whose ``problems`` lists each).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from medlearn.data.datamodule import SplitDataModule
from medlearn.data.decode import ImageCache, load_image, load_mask, relabel_mask, resize_image, resize_mask
from medlearn.data.decode import image_size as header_size
from medlearn.data.info import DataInfo
from medlearn.data.layouts import RecordSet, check_layout_name, detect_layout, get_layout, register_layout
from medlearn.data.records import DecodedMaskedImage, MaskedImage, MaskSource, list_image_files
from medlearn.data.roi import DiscROI, crop_pad, detect_disc_centre, mask_disc_centre
from medlearn.data.sampling import stratified_group_split, subsample
from medlearn.data.tables import SPLIT_NAMES, read_columns, table_path
from medlearn.io.errors import DataError, name_issues

__all__ = ["ImageFolderDataset", "ImageMaskDataModule", "ImageMaskDataset", "read_mask_table"]

KIND = "segmentation2d"
#: The layout "auto" falls back to when none recognises the root (its reader says what is missing).
FALLBACK_LAYOUT = "mask-table"
_SPLITS = {**SPLIT_NAMES, "": ""}


# --- the "mask-table" layout -----------------------------------------------------------------------
def read_mask_table(
    csv: str | Path,
    image_col: str = "image",
    mask_col: str = "mask",
    group_col: str | None = "auto",
    split_col: str | None = "split",
    domain_col: str | None = "domain",
    check_files: bool = True,
) -> list[MaskedImage]:
    """Read a table of image / mask pairs: ``image,mask[,group][,split][,domain]``.

    Args:
        csv: the table; ``image`` and ``mask`` entries are paths relative to its folder (or absolute).
        image_col: column of images (case-insensitive).
        mask_col: column of masks.
        group_col: grouping column; ``"auto"`` takes the first of
            :data:`~medlearn.data.tables.GROUP_COLUMNS` present; ``None``: every image is its own group.
        split_col: optional column of fixed splits (``train``, ``val``, ``test``; empty = unassigned).
        domain_col: optional column of domains (centre, device).
        check_files: check that every image and mask exists.

    Returns:
        One :class:`~medlearn.data.records.MaskedImage` per row, in table order.

    Raises:
        DataError: missing table or columns; or any row with an empty or repeated image, an empty
            mask, an unknown split, or an image or mask that does not exist (every bad row listed,
            with everything wrong with it); or a table with no rows.
    """
    csv = Path(csv)
    base = csv.parent
    cols = read_columns(csv, {"image": image_col, "mask": mask_col}, group_col,
                        {"split": split_col, "domain": domain_col})
    records: list[MaskedImage] = []
    problems: list[str] = []
    first: dict[str, int] = {}
    rows = zip(cols.lines, cols["image"], cols["mask"], cols["group"], [s.lower() for s in cols["split"]],
               cols["domain"])
    for line, name, mask, group, split, domain in rows:
        issues = name_issues(name, line, first, duplicate="duplicate image")
        if not mask:
            issues.append("empty mask")
        if split not in _SPLITS:
            issues.append(f"unknown split {split!r} (train, val, test or empty)")
        (image_path, image_escape), (mask_path, mask_escape) = table_path(base, name), table_path(base, mask)
        if name and image_escape:
            issues.append(f"image {image_escape}")
        elif check_files and name and not image_path.is_file():
            issues.append(f"image not found: {image_path}")
        if mask and mask_escape:
            issues.append(f"mask {mask_escape}")
        elif check_files and mask and not mask_path.is_file():
            issues.append(f"mask not found: {mask_path}")
        if issues:
            problems.append(f"line {line} ({name or '<empty name>'}): {'; '.join(issues)}")
            continue
        records.append(MaskedImage(image_path, mask_path, group or name, name, _SPLITS[split], domain))
    if problems:
        raise DataError(csv, f"{len(problems)} invalid rows", problems, partial=records)
    if not records:
        raise DataError(csv, "the table has no rows")
    return records


def _table_of(root: Path, table: str | Path) -> Path:
    """The table of a root: the root itself when it is a file, else ``table`` under it (or absolute)."""
    if root.is_file():
        return root
    return Path(table) if Path(table).is_absolute() else root / table


def _detect(root: Path, table: str | Path = "masks.csv", **_: Any) -> bool:
    return _table_of(Path(root), table).is_file()


def _read(root: Path, table: str | Path = "masks.csv", image_col: str = "image", mask_col: str = "mask",
          group_col: str | None = "auto", split_col: str | None = "split", domain_col: str | None = "domain",
          check_files: bool = True, **_: Any) -> RecordSet[MaskedImage]:
    csv = _table_of(Path(root), table)
    return RecordSet(read_mask_table(csv, image_col, mask_col, group_col, split_col, domain_col, check_files))


register_layout(
    "mask-table", _detect, _read, kind=KIND, priority=0,
    description="a CSV image,mask[,group][,split][,domain] (the root itself, or table=, default masks.csv)",
    tasks=("segmentation",),
)


# --- dataset ---------------------------------------------------------------------------------------
def _size_pair(image_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(image_size, (int, np.integer)):
        size = (int(image_size), int(image_size))
    else:
        values = [int(v) for v in image_size]
        if len(values) != 2:
            raise ValueError(f"image_size must be one side or [H, W], got {image_size!r}")
        size = (values[0], values[1])
    if min(size) < 1:
        raise ValueError(f"image_size must be positive, got {image_size!r}")
    return size


class ImageMaskDataset(Dataset):
    """2D images and their label masks, resized to one size, decoded once into an in-memory cache.

    Items: ``{"image": (C, H, W) float32 in [0, 1], "seg": (1, H, W) int64, "name": str,
    "domain": str, "orig_hw": (2,) int64}`` (``orig_hw``: the pair's stored ``(H, W)`` before cropping and
    resizing, e.g. to write a predicted mask back at the input's size), with ``roi`` also ``"roi": (4,)
    int64`` (the crop box ``y0, x0, y1, x1`` in original pixels). A
    :class:`~medlearn.data.records.DecodedMaskedImage` record (a slice of a volume, a mammogram with
    contour annotations) is decoded by its own ``read_pair`` instead of as two 2D files; a
    :class:`~medlearn.data.records.MaskSource` mask (REFUGE, Drishti-GS) decodes itself.
    The image is resized bilinearly with antialiasing
    (:func:`~medlearn.data.decode.resize_image`), the mask by nearest neighbour
    (:func:`~medlearn.data.decode.resize_mask`): mask values stay label values. With ``cache``
    images are kept as uint8 (quantised to 1/255, as for classification) and masks exactly (uint8
    when every label value fits, else int32), each in one preallocated block filled on first access.

    Args:
        records: :class:`~medlearn.data.records.MaskedImage` records.
        image_size: output size, one side or ``(H, W)``.
        channels: 3 (RGB) or 1 (gray).
        value_map: ``{stored: label}`` applied to every mask on read; ``None``: values kept.
        label_values: allowed label values (after ``value_map``); ``None``: any.
        cache: keep decoded pairs in memory.
        roi: crop a disc-centred box of every pair before resizing (``None``: whole images).
        roi_centre: the box-centre rule of this dataset (``"mask"``, ``"table"``, ``"detector"``;
            default: ``roi.train_centre``). With ``"mask"``, a mask without disc pixels falls back
            to the detector.

    Raises:
        ValueError: no records, a bad size or channel count, an unknown centre rule.
    """

    def __init__(self, records: Sequence[MaskedImage], image_size: int | Sequence[int], channels: int = 3,
                 value_map: Mapping[int, int] | None = None, label_values: Sequence[int] | None = None,
                 cache: bool = True, roi: DiscROI | None = None, roi_centre: str | None = None) -> None:
        if not records:
            raise ValueError("ImageMaskDataset needs at least one record")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        self.records = list(records)
        self.size = _size_pair(image_size)
        self.channels = int(channels)
        self.value_map = None if value_map is None else {int(k): int(v) for k, v in value_map.items()}
        self.label_values = None if label_values is None else sorted({int(v) for v in label_values})
        n, (h, w) = len(self.records), self.size
        self._images = ImageCache(n, (self.channels, h, w)) if cache else None
        small = self.label_values is not None and min(self.label_values) >= 0 and max(self.label_values) <= 255
        self._masks = torch.empty((n, 1, h, w), dtype=torch.uint8 if small else torch.int32) if cache else None
        self._mask_filled = torch.zeros(n, dtype=torch.bool)
        self._mask_hw = torch.zeros((n, 2), dtype=torch.int64)  # stored (H, W) of each decoded mask
        self.roi = roi
        self.roi_centre = roi_centre or (roi.train_centre if roi is not None else None)
        if roi is not None and self.roi_centre not in ("mask", "table", "detector"):
            raise ValueError(f"roi_centre must be 'mask', 'table' or 'detector', got {self.roi_centre!r}")
        self._boxes = torch.zeros((n, 4), dtype=torch.int64)
        self._has_box = torch.zeros(n, dtype=torch.bool)
        # full-size images decoded early (with their masks by a DecodedMaskedImage, or for the disc
        # detector), taken by _image
        self._pending: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.records)

    def _decode_mask(self, i: int) -> np.ndarray:
        rec = self.records[i]
        if isinstance(rec, DecodedMaskedImage):  # decoded by its layout; the image is kept for _image
            image, raw = rec.read_pair()
            self._pending[i] = self._channels(torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)))
            where: str | Path = f"{rec.mask} ({rec.name})"
        else:
            raw = rec.mask.load() if isinstance(rec.mask, MaskSource) else load_mask(rec.mask)
            where = str(rec.mask)
        mask = relabel_mask(raw, where, self.value_map, self.label_values)
        self._mask_hw[i] = torch.tensor(mask.shape)
        return mask

    @property
    def _background(self) -> int:
        return int(self.label_values[0]) if self.label_values else 0

    def _box(self, i: int, mask: np.ndarray) -> torch.Tensor:
        """The ROI box of pair ``i`` (``mask``: its decoded full-size mask), computed once."""
        if bool(self._has_box[i]):
            return self._boxes[i]
        assert self.roi is not None
        rec = self.records[i]
        hw = mask.shape
        centre = None
        if self.roi_centre == "mask":
            centre = mask_disc_centre(mask, self.roi.disc_values)
        elif self.roi_centre == "table":
            centre = self.roi.table_centre(rec.name, rec.path)
        if centre is None:  # "detector", or a mask without disc pixels
            x = self._pending.get(i)
            if x is None:
                x = self._pending[i] = self._full_image(i)
            centre = detect_disc_centre(x, self.roi.detector_sigma)
        self._boxes[i] = torch.tensor(self.roi.box(centre, hw))
        self._has_box[i] = True
        return self._boxes[i]

    def _mask(self, i: int) -> torch.Tensor:
        if self._masks is not None and bool(self._mask_filled[i]):
            return self._masks[i].to(torch.int64)
        mask = self._decode_mask(i)
        if self.roi is not None:
            mask = np.asarray(crop_pad(mask, self._box(i, mask).tolist(), fill=self._background))
        seg = resize_mask(mask, self.size)
        if self._masks is not None:
            self._masks[i] = seg.to(self._masks.dtype)
            self._mask_filled[i] = True
        return seg

    def _channels(self, x: torch.Tensor) -> torch.Tensor:
        """A layout-decoded ``(C, H, W)`` image with this dataset's channel count (mean to grey, grey to RGB)."""
        if x.shape[0] == self.channels:
            return x
        return x.mean(dim=0, keepdim=True) if self.channels == 1 else x.expand(3, -1, -1).contiguous()

    def _full_image(self, i: int) -> torch.Tensor:
        """Image ``i`` at its stored size (decoded by its layout for a :class:`DecodedMaskedImage`)."""
        rec = self.records[i]
        if isinstance(rec, DecodedMaskedImage):
            return self._channels(torch.from_numpy(np.ascontiguousarray(rec.read_pair()[0], dtype=np.float32)))
        return load_image(rec.path, self.channels)

    def _image(self, i: int) -> torch.Tensor:
        """The resized image; call after :meth:`_mask` (whose stored size it is checked against)."""
        if self._images is not None and self._images.has(i):
            self._pending.pop(i, None)
            return self._images.get(i)
        rec = self.records[i]
        x = self._pending.pop(i, None)
        if x is None:
            x = self._full_image(i)
        hw = tuple(int(v) for v in self._mask_hw[i])
        if tuple(x.shape[1:]) != hw:
            raise DataError(rec.path, f"image is {x.shape[2]} x {x.shape[1]} but its mask {rec.mask} is "
                                      f"{hw[1]} x {hw[0]} (width x height)")
        if self.roi is not None:
            x = torch.as_tensor(crop_pad(x, self._boxes[i].tolist(), fill=0.0))
        x = resize_image(x, self.size)
        if self._images is not None:
            self._images.put(i, x)
            return self._images.get(i)
        return x

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = range(len(self))[index]  # bounds check, negative indices
        seg = self._mask(index)
        rec = self.records[index]
        item = {"image": self._image(index), "seg": seg, "name": rec.name, "domain": rec.domain,
                "orig_hw": self._mask_hw[index].clone()}
        if self.roi is not None:
            item["roi"] = self._boxes[index].clone()
        return item

    def fill_cache(self) -> None:
        """Decode every pair not cached yet (no-op without cache)."""
        if self._images is not None:
            for i in range(len(self)):
                if not self._images.has(i):
                    self[i]

    def scan(self) -> tuple[set[int], list[str]]:
        """Decode every mask (into the cache, with ``cache``) and check it against its image's size.

        The image size comes from its header (:func:`~medlearn.data.decode.image_size`); images
        are not decoded.

        Returns:
            ``(label values found, problems)``: the union of the masks' values (after
            ``value_map``), and one line per unusable pair naming the file and what is wrong.
        """
        found: set[int] = set()
        problems: list[str] = []
        for i, rec in enumerate(self.records):
            try:
                mask = self._decode_mask(i)
                # fill the mask cache on the way (not when the box needs the image: the detector)
                if self._masks is not None and not bool(self._mask_filled[i]) and (
                        self.roi is None or self.roi_centre != "detector"):
                    crop = mask if self.roi is None else np.asarray(
                        crop_pad(mask, self._box(i, mask).tolist(), fill=self._background))
                    self._masks[i] = resize_mask(crop, self.size).to(self._masks.dtype)
                    self._mask_filled[i] = True
                found.update(int(v) for v in np.unique(mask))
                if isinstance(rec, DecodedMaskedImage):  # decoded together: cache the image now, not twice
                    image = self._pending.get(i)
                    if image is None:  # the mask came from the cache: decode the pair again for the size
                        self._decode_mask(i)
                        image = self._pending[i]
                    h, w = int(image.shape[1]), int(image.shape[2])
                    if self._images is not None and not self._images.has(i) and (h, w) == mask.shape and (
                            self.roi is None or bool(self._has_box[i])):
                        self._image(i)
                    self._pending.pop(i, None)
                else:
                    w, h = header_size(rec.path)
                mh, mw = mask.shape
                if (h, w) != (mh, mw):
                    problems.append(f"{rec.path}: image is {w} x {h} but its mask {rec.mask} is {mw} x {mh} "
                                    "(width x height)")
            except DataError as exc:
                problems.append(f"{exc.path}: {exc.reason}")
        return found, problems


class ImageFolderDataset(Dataset):
    """Images without masks (unlabelled training images, images to predict), decoded once, with their box.

    Items: ``{"image": (C, H, W) float32 in [0, 1], "name": str, "domain": str, "path": str,
    "roi": (4,) int64, "orig_hw": (2,) int64}``; without ``roi`` the box is the whole image.

    Args:
        paths: the image files.
        image_size: output ``(H, W)``.
        channels: 3 or 1.
        names: each image's name (default: the file name).
        domain: the domain of every image.
        roi: a disc-centred crop (its centre by ``roi_centre``: ``"detector"`` or ``"table"``).
        roi_centre: the centre rule (default ``roi.eval_centre``; ``"mask"`` is not possible here).
        cache: keep decoded images in memory.
    """

    def __init__(self, paths: Sequence[Path], image_size: tuple[int, int], channels: int = 3,
                 names: Sequence[str] | None = None, domain: str = "", roi: DiscROI | None = None,
                 roi_centre: str | None = None, cache: bool = True) -> None:
        if not paths:
            raise ValueError("ImageFolderDataset needs at least one image")
        self.paths = [Path(p) for p in paths]
        self.names = list(names) if names is not None else [p.name for p in self.paths]
        self.size = (int(image_size[0]), int(image_size[1]))
        self.channels = int(channels)
        self.domain = domain
        self.roi = roi
        self.roi_centre = roi_centre or (roi.eval_centre if roi is not None else None)
        if roi is not None and self.roi_centre not in ("detector", "table"):
            raise ValueError("images without masks need the 'detector' or 'table' centre rule, "
                             f"got {self.roi_centre!r}")
        n = len(self.paths)
        self._cache = ImageCache(n, (self.channels, *self.size)) if cache else None
        self._boxes = torch.zeros((n, 4), dtype=torch.int64)
        self._hw = torch.zeros((n, 2), dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.paths)

    def _decode(self, i: int) -> torch.Tensor:
        x = load_image(self.paths[i], self.channels)
        h, w = int(x.shape[1]), int(x.shape[2])
        self._hw[i] = torch.tensor([h, w])
        if self.roi is None:
            self._boxes[i] = torch.tensor([0, 0, h, w])
        else:
            centre = (self.roi.table_centre(self.names[i], self.paths[i]) if self.roi_centre == "table"
                      else detect_disc_centre(x, self.roi.detector_sigma))
            self._boxes[i] = torch.tensor(self.roi.box(centre, (h, w)))
            x = torch.as_tensor(crop_pad(x, self._boxes[i].tolist(), fill=0.0))
        return resize_image(x, self.size)

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = range(len(self))[index]
        if self._cache is not None and self._cache.has(index):
            x = self._cache.get(index)
        else:
            x = self._decode(index)
            if self._cache is not None:
                self._cache.put(index, x)
                x = self._cache.get(index)
        return {"image": x, "name": self.names[index], "domain": self.domain, "path": str(self.paths[index]),
                "roi": self._boxes[index].clone(), "orig_hw": self._hw[index].clone()}

    def fill_cache(self) -> None:
        """Decode every image not cached yet (no-op without cache)."""
        if self._cache is not None:
            for i in range(len(self)):
                if not self._cache.has(i):
                    self[i]


# --- DataModule ------------------------------------------------------------------------------------
def _no_class(record: MaskedImage) -> int:
    return 0


class ImageMaskDataModule(SplitDataModule[ImageMaskDataset]):
    """2D segmentation data: images with label masks, split by group, cached, in fixed-size batches.

    Batches: ``{"image": (B, C, H, W) float32 in [0, 1], "seg": (B, 1, H, W) int64 (label values),
    "name": list[str], "domain": list[str], "orig_hw": (B, 2) int64[, "roi": (B, 4) int64]}`` (stored
    sizes before cropping and resizing; the crop boxes with ``roi``).

    Label values: ``value_map`` (``{stored: label}``) maps every mask on read, and every stored
    value must be one of its keys; ``label_values`` lists the allowed labels (after mapping; a mask
    with another value, e.g. anti-aliased edges, is a :class:`~medlearn.io.errors.DataError`
    naming the file and the values). Without either, the labels are the values found in the masks
    (read once in ``setup``). :attr:`label_values` and :attr:`num_classes` give the result.

    Splits: rows with ``split`` ``val`` / ``test`` form those parts; otherwise ``val_fraction`` /
    ``test_fraction`` of the groups are held out (deterministic from ``split_seed``);
    ``num_train`` then draws a fixed-size training subset with ``label_seed``. A layout that
    groups its frames by frame difference (ETIS, CVC-ClinicDB without its table) writes that
    grouping into the run folder (``pseudo_sequences-<root folder>.csv``) during a training
    run, unless ``layout_options`` names another ``grouping_out``.

    Args:
        root: dataset folder (or the table itself).
        layout: ``"auto"`` or a ``segmentation2d`` layout (``"mask-table"``, ``"kits19"``, ``"acdc"``,
            ``"inbreast"`` ...).
        layout_options: options of the layout's reader (e.g. KiTS19's ``hu_window``, ``roi_size``;
            REFUGE's ``mask_rule``; Drishti-GS's ``binarize``); see each layout module.
        table: ``mask-table``: the table, relative to ``root`` (or absolute).
        image_col: ``mask-table``: image column.
        mask_col: ``mask-table``: mask column.
        group_col: ``mask-table``: grouping column, ``"auto"`` (first of
            :data:`~medlearn.data.tables.GROUP_COLUMNS`) or ``None`` (each image its own group).
        split_col: ``mask-table``: fixed-split column (``None``: none).
        domain_col: ``mask-table``: domain column (``None``: none).
        domains: keep only rows whose domain is in this list (``None``: all).
        image_size: output size, one side (square) or ``[H, W]``.
        channels: 3 (RGB) or 1 (gray).
        label_values: allowed label values (``None``: from ``value_map``, else found in the masks).
        value_map: ``{stored: label}`` applied on read.
        class_names: names of the label values, in :attr:`label_values` order (optional).
        batch_size: per-process batch size.
        num_workers: data-loader workers (with ``cache``, the cache is filled before they start).
        val_fraction: fraction of groups held out for validation when no ``val`` rows.
        test_fraction: fraction of groups held out for testing when no ``test`` rows.
        split_seed: seed of the grouped split.
        num_train: size of a random training subset (``None``: all).
        label_seed: seed of that subset.
        cache: decode once, keep in memory.
        check_masks: read every mask in ``setup`` and report every unusable pair at once (values,
            sizes); without it a bad pair fails when first loaded.
        drop_last: drop the last incomplete training batch.
        roi: a disc-centred crop before resizing (:class:`~medlearn.data.roi.DiscROI`): training
            images by ``roi.train_centre``, validation and test images by ``roi.eval_centre``;
            ``None``: whole images.
        predict_root: a folder of images without masks (any depth; PNG, JPEG, BMP, TIFF, DICOM,
            NIfTI) that ``medlearn predict`` runs on instead of the test split; items are named by
            their path relative to the folder and carry their stored size (``orig_hw``), so
            predictions are written back at each image's size. Prediction then needs no masks.

    Loaders: :class:`~medlearn.data.datamodule.SplitDataModule`'s, seeded with
    ``split_seed + 7919 * label_seed``.

    Raises:
        ValueError: an unknown layout, a bad ``image_size`` or ``channels``, repeated
            ``label_values``, a ``value_map`` producing values outside ``label_values``, or
            ``class_names`` of another length than ``label_values``.
    """

    layout_kind = "segmentation2d"

    no_test_reason = "set test_fraction > 0 or mark test rows"

    def __init__(
        self,
        root: str,
        layout: str = "auto",
        layout_options: dict[str, Any] | None = None,
        table: str = "masks.csv",
        image_col: str = "image",
        mask_col: str = "mask",
        group_col: str | None = "auto",
        split_col: str | None = "split",
        domain_col: str | None = "domain",
        domains: list[str] | None = None,
        image_size: int | list[int] = 256,
        channels: int = 3,
        label_values: list[int] | None = None,
        value_map: dict[int, int] | None = None,
        class_names: list[str] | None = None,
        batch_size: int = 8,
        num_workers: int = 0,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        split_seed: int = 0,
        num_train: int | None = None,
        label_seed: int = 0,
        cache: bool = True,
        check_masks: bool = True,
        drop_last: bool = False,
        roi: DiscROI | None = None,
        predict_root: str | None = None,
    ) -> None:
        super().__init__(root)
        check_layout_name(layout, KIND)
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        self.image_hw = _size_pair(image_size)
        values = self._initial_label_values(label_values, value_map)
        if class_names is not None and values is not None and len(class_names) != len(values):
            raise ValueError(f"{len(class_names)} class_names for {len(values)} label values {values}")
        self.save_hyperparameters()
        self.root: Path = Path(root)
        self.roi = roi  # the object (LightningCLI may keep its config form in hparams)
        self._label_values = values
        self.splits: dict[str, list[MaskedImage]] = {}

    @staticmethod
    def _initial_label_values(label_values: Sequence[int] | None,
                              value_map: Mapping[int, int] | None) -> list[int] | None:
        if label_values is not None:
            values = [int(v) for v in label_values]
            if not values or len(set(values)) != len(values):
                raise ValueError(f"label_values must be distinct and not empty, got {list(label_values)}")
            if value_map is not None:
                outside = sorted({int(v) for v in value_map.values()} - set(values))
                if outside:
                    raise ValueError(f"value_map maps to {outside}, outside label_values {sorted(values)}")
            return sorted(values)
        if value_map is not None:
            if not value_map:
                raise ValueError("value_map is empty")
            return sorted({int(v) for v in value_map.values()})
        return None

    @property
    def resolved_layout(self) -> str:
        """The layout ``"auto"`` resolves to (or the one given)."""
        if self.hparams.layout != "auto":
            return self.hparams.layout
        return detect_layout(self.root, KIND, default=FALLBACK_LAYOUT, table=self.hparams.table,
                             **(self.hparams.layout_options or {})).name

    @property
    def label_values(self) -> list[int]:
        """The label values of the masks, sorted (reads the data if they come from the masks)."""
        if self._label_values is None:
            self.setup("fit")
        return list(self._label_values or [])

    @property
    def stored_label_values(self) -> dict[int, int] | None:
        """The value the masks store for each label: ``value_map`` inverted (``None``: values kept).

        ``None`` too when ``value_map`` maps several stored values to one label (then no single
        stored value stands for it). A predicted label map written with these values reads back
        through this DataModule as the labels it holds.
        """
        vm = self.hparams.value_map
        if vm is None:
            return None
        inverse: dict[int, int] = {}
        for stored, label in vm.items():
            if int(label) in inverse:
                return None
            inverse[int(label)] = int(stored)
        return inverse

    @property
    def num_classes(self) -> int:
        """Number of label values, background included."""
        return len(self.label_values)

    @property
    def class_names(self) -> list[str]:
        """Names of the label values (``class_names`` option), else the values as strings."""
        names = self.hparams.class_names
        return list(names) if names is not None else [str(v) for v in self.label_values]

    def _read(self) -> list[MaskedImage]:
        h = self.hparams
        found = get_layout(self.resolved_layout, KIND).read(
            self.root, table=h.table, image_col=h.image_col, mask_col=h.mask_col, group_col=h.group_col,
            split_col=h.split_col, domain_col=h.domain_col,
            **{**self.grouping_options(self.root.name), **(h.layout_options or {})})
        records = found.records
        if h.domains is not None:
            keep = {str(d) for d in h.domains}
            records = [r for r in records if r.domain in keep]
            if not records:
                present = sorted({r.domain for r in found.records})
                raise DataError(self.root, f"no images of the domains {sorted(keep)} (the data has {present})")
        return records

    def image_folder(self, folder: str | Path, domain: str = "predict") -> ImageFolderDataset:
        """The images of ``folder`` (recursively) with this module's size, channels, ROI and cache.

        Raises:
            DataError: the folder does not exist or holds no image.
        """
        root = Path(folder)
        if not root.is_dir():
            raise DataError(root, "folder of images to predict does not exist")
        files = list_image_files(root)
        if not files:
            raise DataError(root, "no image files (PNG, JPEG, BMP, TIFF, DICOM, NIfTI) in this folder")
        h = self.hparams
        return ImageFolderDataset(files, self.image_hw, h.channels, [f.relative_to(root).as_posix() for f in files],
                                  domain, self.roi, None, h.cache)

    def setup(self, stage: str | None = None) -> None:
        """Read, split, build the datasets and (with ``check_masks``) check every mask, once.

        With ``predict_root``, the ``"predict"`` stage builds only the folder's images (no masks read).
        """
        h = self.hparams
        if h.get("predict_root") is not None and self.predict_set is None:
            self.predict_set = self.image_folder(h.predict_root)
        if self.train_set is not None or (stage == "predict" and self.predict_set is not None):
            return
        if not self.root.exists():
            raise DataError(self.root, "dataset root does not exist")
        records = self._read()
        fixed = {p: [r for r in records if r.split == p] for p in ("val", "test") if any(r.split == p for r in records)}
        pool = [r for r in records if r.split in ("", "train")]
        wanted = [p for p in ("val", "test") if p not in fixed]
        fracs = {"val": h.val_fraction, "test": h.test_fraction}
        parts = stratified_group_split(pool, [fracs[p] for p in wanted], h.split_seed, label=_no_class)
        splits = {"train": parts[0], **dict(zip(wanted, parts[1:])), **fixed}
        if h.num_train:
            splits["train"] = subsample(splits["train"], h.num_train, h.label_seed)
        if not splits["train"]:
            raise DataError(self.root, "no training images after splitting")
        datasets = {part: self._dataset(recs, part == "train") for part, recs in splits.items() if recs}
        if h.check_masks or self._label_values is None:
            found: set[int] = set()
            problems: list[str] = []
            for ds in datasets.values():
                values, issues = ds.scan()
                found |= values
                problems += issues
            if problems:
                plural = "s" if len(problems) != 1 else ""
                raise DataError(self.root, f"{len(problems)} unusable image / mask pair{plural}", problems)
            if self._label_values is None:
                self._label_values = sorted(found)
                if h.class_names is not None and len(h.class_names) != len(found):
                    raise DataError(self.root, f"{len(h.class_names)} class_names for the {len(found)} label "
                                               f"values found in the masks {sorted(found)}")
                for ds in datasets.values():
                    ds.label_values = list(self._label_values)
        self.splits = splits
        self.train_set = datasets["train"]
        self.val_set = datasets.get("val")
        self.test_set = datasets.get("test")

    def _dataset(self, records: Sequence[MaskedImage], train: bool) -> ImageMaskDataset:
        """A dataset of ``records`` with this module's decoding options (and ROI rule: training or evaluation)."""
        h = self.hparams
        roi = self.roi
        centre = None if roi is None else (roi.train_centre if train else roi.eval_centre)
        return ImageMaskDataset(records, self.image_hw, h.channels, h.value_map, self._label_values, h.cache,
                                roi=roi, roi_centre=centre)

    def data_info(self) -> DataInfo:
        """What a model needs to know about this data (reads, splits and checks it if needed).

        Returns:
            ``n_train``, ``label_values`` and their number as ``num_classes``, ``class_names``
            when given, ``input_size = (H, W)``, ``in_channels``; no class counts.
        """
        if self.train_set is None:
            self.setup("fit")
        assert self.train_set is not None
        values = self.label_values
        names = self.hparams.class_names
        return DataInfo(n_train=len(self.train_set), num_classes=len(values),
                        class_names=list(names) if names is not None else None, input_size=self.image_hw,
                        in_channels=self.hparams.channels, label_values=values)
