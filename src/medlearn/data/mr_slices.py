"""Axial 2D slices of multi-contrast MR volumes for contrast synthesis (MGAN / TC-MGAN), and cases to predict on.

This module owns the slice view of a multi-contrast volume layout (BraTS by default, read
through the layout registry, :mod:`medlearn.data.layouts`, with its reader's checks):
:class:`MRSliceDataModule` splits *by case* (sorted case names, seeded), cuts every case into
axial slices, keeps the slices where every contrast shows brain, resizes them, scales
intensities and serves

``{"source": (B, 1, S, S), "targets": (B, T, S, S), "mask": (B, 1, S, S), "brain": (B, 1, S, S)}``

in [-1, 1] (images) and {0, 1} (masks), with ``targets`` in the order of ``targets`` (MGAN's
one-hot code order: FLAIR, T1ce, T1 by default; the code index of a target is its position).
Slice selection and scaling follow the official TC-MGAN data script (Xin et al., ISBI 2020,
arXiv:2005.00925; ``generate_data.py``): a slice is kept when each contrast has more than 2000
non-zero voxels of the 240 x 240 BraTS slice (``min_brain_fraction`` = 2000 / 57600, so that
phantoms of any size select alike); slices without tumour are kept; every slice and contrast is
resized with area interpolation and divided by its own maximum (``scaling="slice_max"``), then
mapped to [-1, 1]; ``scaling="volume_percentile"`` instead clips each volume to its brain's 0.5 /
99.5 percentiles (robust to one bright voxel; the spec's pitfall). The tumour mask is
``seg != 0`` (whole tumour), area-resized and re-binarised at 0.5; the brain mask is "any
contrast > 0", resized likewise.

For ``medlearn predict`` (``predict_root``): each case folder of that root with the source
contrast (other contrasts and the segmentation may be missing) becomes one item holding all its
axial slices, their original size, the affine and which contrasts exist, so that the method can
write the missing contrasts as NIfTI volumes on the input's grid (:class:`MRCaseDataset`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from medlearn.data.datamodule import LayoutSource, SplitDataModule
from medlearn.data.info import DataInfo
from medlearn.data.layouts import get_layout
from medlearn.data.records import VolumeRecord
from medlearn.data.sampling import case_split
from medlearn.io import read_image
from medlearn.io.errors import DataError

__all__ = ["MRCaseDataset", "MRSliceDataModule", "MRSliceDataset", "SCALINGS", "scale_slices", "slice_volume"]

#: Intensity scalings: the official per-slice maximum, or per-volume brain percentiles.
SCALINGS = ("slice_max", "volume_percentile")
#: TC-MGAN's slice filter: > 2000 non-zero voxels of a 240 x 240 slice in every contrast.
BRATS_MIN_BRAIN_FRACTION = 2000 / (240 * 240)


def _area(x: torch.Tensor, size: int) -> torch.Tensor:
    """``(N, C, H, W)`` -> ``(N, C, size, size)`` by area interpolation (cv2 ``INTER_AREA`` when shrinking)."""
    if x.shape[-2:] == (size, size):
        return x
    if x.shape[-1] >= size and x.shape[-2] >= size:
        return F.interpolate(x, size=(size, size), mode="area")
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def scale_slices(vol: np.ndarray, scaling: str, percentiles: tuple[float, float] = (0.5, 99.5)) -> np.ndarray:
    """Intensities of ``(Z, H, W)`` slices scaled to [0, 1] (see the module docstring).

    Args:
        vol: slices, >= 0 with 0 outside the brain.
        scaling: ``"slice_max"`` (each slice by its maximum; empty slices stay 0) or
            ``"volume_percentile"`` (the whole stack clipped to its non-zero voxels' percentiles).
        percentiles: the low / high percentiles of ``"volume_percentile"``.

    Returns:
        float32 array of the same shape, in [0, 1]; background stays 0.
    """
    vol = vol.astype(np.float32)
    if scaling == "slice_max":
        mx = vol.reshape(vol.shape[0], -1).max(1).reshape(-1, 1, 1)
        return np.where(mx > 0, vol / np.maximum(mx, 1e-12), 0.0).astype(np.float32)
    if scaling == "volume_percentile":
        fg = vol[vol > 0]
        if fg.size == 0:
            return np.zeros_like(vol)
        lo, hi = np.percentile(fg, percentiles)
        out = np.clip((vol - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
        return np.where(vol > 0, out, 0.0).astype(np.float32)
    raise ValueError(f"scaling must be one of {SCALINGS}, got {scaling!r}")


def slice_volume(vol: np.ndarray, size: int) -> torch.Tensor:
    """A ``(X, Y, Z)`` volume -> ``(Z, 1, size, size)`` axial slices (area-resized), float32."""
    t = torch.from_numpy(np.ascontiguousarray(np.moveaxis(vol, -1, 0))).float()[:, None]
    return _area(t, size)


def _read_volume(path: Path) -> tuple[np.ndarray, dict[str, Any]]:
    arr, meta = read_image(path)
    if arr.ndim != 4 or arr.shape[0] != 1:
        raise DataError(path, f"expected one 3D volume, got array shape {arr.shape}")
    return arr[0], meta


class MRSliceDataset(Dataset):
    """In-memory slices (see :class:`MRSliceDataModule`): a dict of tensors per item."""

    def __init__(self, tensors: dict[str, torch.Tensor], cases: list[str], slices: list[int]) -> None:
        self.tensors, self.cases, self.slices = tensors, cases, slices

    def __len__(self) -> int:
        return int(self.tensors["source"].shape[0])

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {**{k: v[i] for k, v in self.tensors.items()}, "case": self.cases[i], "slice": self.slices[i]}


class MRCaseDataset(Dataset):
    """Whole cases for prediction: one item per case with all its axial slices.

    Item: ``{"source": (Z, 1, S, S) in [-1, 1], "brain": (X, Y, Z) bool (source > 0), "case": str,
    "case_dir": str, "shape": (X, Y, Z),
    "affine": (4, 4) float64 array, "present": [contrasts found], "files": {contrast: path}}``.
    """

    def __init__(self, records: Sequence[VolumeRecord], source: str, size: int, scaling: str,
                 contrasts: Sequence[str]) -> None:
        self.records, self.source, self.size, self.scaling = list(records), source, size, scaling
        self.contrasts = list(contrasts)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict[str, Any]:
        r = self.records[i]
        assert r.paths is not None
        path = r.paths[self.source]
        vol, meta = _read_volume(path)
        case_dir = path.parent
        files = {}
        for name in sorted(case_dir.iterdir()):
            for c in [*self.contrasts, "seg"]:
                if name.name.lower() in (f"{r.case}_{c}.nii.gz".lower(), f"{r.case}_{c}.nii".lower()):
                    files[c] = str(name)
        slices = scale_slices(np.moveaxis(vol, -1, 0), self.scaling)
        src = _area(torch.from_numpy(slices)[:, None], self.size) * 2 - 1
        return {"source": src, "brain": torch.from_numpy(vol > 0), "case": r.case, "case_dir": str(case_dir),
                "shape": tuple(int(s) for s in vol.shape),
                "affine": np.asarray(meta["affine"], dtype=np.float64), "present": sorted(files), "files": files}


class MRSliceDataModule(SplitDataModule[MRSliceDataset]):
    """Case-split axial slices of a multi-contrast MR layout for contrast synthesis.

    Args:
        root: the dataset root (BraTS: ``<case>/<case>_{t1,t1ce,t2,flair,seg}.nii.gz``).
        layout: the registered volume layout to read (``"brats"``).
        source: the input contrast (T2 in MGAN).
        targets: the contrasts to synthesise, in code order (MGAN: FLAIR, T1ce, T1).
        image_size: slice side after resizing (128 in the paper).
        scaling: ``"slice_max"`` (official) or ``"volume_percentile"``.
        min_brain_fraction: keep a slice when every contrast has more non-zero voxels than this
            fraction of the slice (official: 2000 of 240 x 240).
        batch_size: slices per batch.
        num_workers: loader workers.
        num_train: keep this many training slices (a seeded subset), ``None``: all.
        val_fraction: fraction of cases for validation.
        test_fraction: fraction of cases for testing.
        split_seed: seed of the case split (cases are sorted by name first).
        label_seed: seed component of the training order (as the other DataModules).
        cache: unused (slices are always in memory); kept for the common interface.
        predict_root: a folder of cases to synthesise missing contrasts for (``medlearn predict``).

    Raises:
        ValueError: bad options.
        DataError: the data cannot be read (every bad case listed by the layout's reader), or no
            slice passes the filter.
    """

    no_test_reason = "test_fraction is 0"

    def __init__(self, root: str | None = None, layout: str = "brats", source: str = "t2",
                 targets: Sequence[str] = ("flair", "t1ce", "t1"), image_size: int = 128,
                 scaling: str = "slice_max", min_brain_fraction: float = BRATS_MIN_BRAIN_FRACTION,
                 batch_size: int = 64, num_workers: int = 0, num_train: int | None = None,
                 val_fraction: float = 0.1, test_fraction: float = 0.2, split_seed: int = 0,
                 label_seed: int = 0, cache: bool = True, predict_root: str | None = None) -> None:
        super().__init__(root)
        if scaling not in SCALINGS:
            raise ValueError(f"scaling must be one of {SCALINGS}, got {scaling!r}")
        targets = [str(t) for t in targets]
        if not targets or source in targets or len(set(targets)) != len(targets):
            raise ValueError(f"targets must be distinct contrasts other than the source {source!r}, got {targets}")
        if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
            raise ValueError("val_fraction and test_fraction must be in [0, 1) with a sum below 1")
        self.save_hyperparameters()
        self.splits: dict[str, list[VolumeRecord]] = {}

    # --- reading -------------------------------------------------------------------------------
    def _read_options(self) -> dict[str, Any]:
        h = self.hparams
        return {"modalities": [h.source, *h.targets], "require_seg": True, "check_labels": False}

    def _records(self) -> list[VolumeRecord]:
        if self.root is None:
            raise DataError("<none>", "no dataset root given")
        rs = get_layout(self.hparams.layout, "volume").read(self.root, **self._read_options())
        return sorted(rs.records, key=lambda r: r.case)

    def layout_sources(self) -> list[LayoutSource]:
        """``root`` in its volume layout, with the options the reader gets (every contrast and the
        segmentation required), so that ``medlearn fit`` checks it before training.
        """
        if self.root is None:
            return []
        return [LayoutSource(self.root, "volume", str(self.hparams.layout), self._read_options())]

    def _split(self) -> dict[str, list[VolumeRecord]]:
        if self.splits:
            return self.splits
        h = self.hparams
        records = self._records()
        rest, test = case_split(records, h.test_fraction, h.split_seed) if h.test_fraction > 0 else (records, [])
        frac = h.val_fraction / (1 - h.test_fraction)
        train, val = case_split(rest, frac, h.split_seed + 1) if h.val_fraction > 0 else (rest, [])
        self.splits = {"train": train, "val": val, "test": test}
        return self.splits

    def _slices(self, records: Sequence[VolumeRecord]) -> MRSliceDataset:
        h = self.hparams
        names = [h.source, *h.targets]
        parts: dict[str, list[torch.Tensor]] = {"source": [], "targets": [], "mask": [], "brain": []}
        cases: list[str] = []
        idx: list[int] = []
        for r in records:
            assert r.paths is not None and r.seg is not None
            vols = {m: _read_volume(r.paths[m])[0] for m in names}
            seg, _ = _read_volume(r.seg)
            shapes = {m: v.shape for m, v in vols.items()} | {"seg": seg.shape}
            if len(set(shapes.values())) != 1:
                raise DataError(r.paths[h.source].parent, f"contrasts of different shapes {shapes}")
            nz = np.stack([(vols[m] > 0).reshape(-1, vols[m].shape[-1]).sum(0) for m in names])  # (M, Z)
            need = h.min_brain_fraction * vols[h.source].shape[0] * vols[h.source].shape[1]
            keep = np.flatnonzero((nz > need).all(0))
            if keep.size == 0:
                continue
            scaled = {m: scale_slices(np.moveaxis(vols[m], -1, 0), h.scaling)[keep] for m in names}
            size = h.image_size
            img = {m: _area(torch.from_numpy(scaled[m])[:, None], size) for m in names}
            brain_any = np.moveaxis(np.any(np.stack([vols[m] > 0 for m in names]), 0), -1, 0)[keep]
            seg_k = np.moveaxis(seg != 0, -1, 0)[keep]
            parts["source"].append(img[h.source] * 2 - 1)
            parts["targets"].append(torch.cat([img[m] for m in h.targets], 1) * 2 - 1)
            parts["mask"].append((_area(torch.from_numpy(seg_k.astype(np.float32))[:, None], size) > 0.5).float())
            parts["brain"].append((_area(torch.from_numpy(brain_any.astype(np.float32))[:, None], size) > 0.5).float())
            cases += [r.case] * keep.size
            idx += [int(k) for k in keep]
        if not cases:
            raise DataError(self.root or "<none>", f"no slice of {len(records)} case(s) has brain in every contrast "
                                                   f"(min_brain_fraction {h.min_brain_fraction:.4f})")
        tensors = {k: torch.cat(v).contiguous() for k, v in parts.items()}
        return MRSliceDataset(tensors, cases, idx)

    # --- DataModule ------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        """Read, split by case and slice once; later calls reuse the parts."""
        h = self.hparams
        if stage == "predict" and h.predict_root is not None:
            if self.predict_set is None:
                rs = get_layout(h.layout, "volume").read(Path(h.predict_root), modalities=[h.source],
                                                         require_seg=False, check_labels=False)
                self.predict_set = MRCaseDataset(sorted(rs.records, key=lambda r: r.case), h.source, h.image_size,
                                                 h.scaling, [h.source, *h.targets])
            return
        splits = self._split()
        if stage in (None, "fit", "validate") and self.train_set is None:
            train = self._slices(splits["train"])
            if h.num_train is not None:
                if not 0 < h.num_train <= len(train):
                    raise DataError(self.root or "<none>", f"num_train={h.num_train} but {len(train)} training slices")
                keep = np.sort(np.random.default_rng(h.split_seed).choice(len(train), h.num_train, replace=False))
                train = MRSliceDataset({k: v[keep] for k, v in train.tensors.items()},
                                       [train.cases[i] for i in keep], [train.slices[i] for i in keep])
            self.train_set = train
            self.val_set = self._slices(splits["val"]) if splits["val"] else None
        if stage in (None, "test", "predict") and self.test_set is None and splits["test"]:
            self.test_set = self._slices(splits["test"])

    def predict_dataloader(self) -> DataLoader:
        """Whole cases of ``predict_root`` one at a time (no collation), else the test slices."""
        self.setup("predict")
        if self.predict_set is not None:
            return DataLoader(self.predict_set, batch_size=None, shuffle=False, num_workers=self.hparams.num_workers)
        return super().predict_dataloader()

    def data_info(self) -> DataInfo:
        """Training slices, slice size and one input channel."""
        self.setup("fit")
        s = self.hparams.image_size
        return DataInfo(n_train=len(self.train_set) if self.train_set is not None else None, input_size=(s, s),
                        in_channels=1)
