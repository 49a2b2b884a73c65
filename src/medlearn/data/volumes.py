"""3D volumes: NIfTI folders, CSV manifests and the BraTS layout; MONAI preprocessing; a DataModule.

This is the 3D data path shared by Rubik's cube pretraining (Zhuang et al., MICCAI 2019), MR
modality synthesis (MGAN) and one-shot atlas segmentation (LT-Net). Sources:

- **folder**: any folder of NIfTI files (``.nii``/``.nii.gz``, recursively): unlabeled volumes;
  :func:`list_volumes`.
- **manifest**: a CSV table ``path[,label][,split][,seg][,case]``, paths relative to the CSV's
  folder; :func:`read_volume_manifest`. The head CT phantom of
  :func:`medlearn.synth.headct.write_headct` writes one (``labels.csv``); layout ``"headct"`` is a
  manifest whose default class order is :data:`HEADCT_CLASSES`. The lesion classes mirror the
  subtypes of the RSNA Intracranial Hemorrhage Detection challenge (Flanders et al., Radiology: AI
  2020) and CQ500 (Chilamkurthy et al., Lancet 2018).
- **brats**: the BraTS challenge layout (Menze et al., "The Multimodal Brain Tumor Image
  Segmentation Benchmark (BRATS)", IEEE TMI 2015; Bakas et al., Scientific Data 2017; Bakas et
  al., arXiv:1811.02629, 2018): ``root/<case>/<case>_{t1,t1ce,t2,flair,seg}.nii.gz``, four
  co-registered skull-stripped contrasts and labels 0 / 1 necrotic core / 2 oedema / 4 enhancing;
  :func:`read_brats`. :func:`medlearn.synth.brats.write_brats` writes phantoms in this layout.

Validation reports every bad row or case at once (a :class:`~medlearn.io.errors.DataError` whose
``problems`` lists each). Decoding goes through :func:`medlearn.io.read_image` (so errors name the
file and the affine, spacing and orientation come from our reader); :class:`LoadVolumed` wraps it
as a MONAI dictionary transform, and the rest of the preprocessing is MONAI's own
(:func:`volume_transforms`): ``Orientationd``, ``Spacingd``, ``ScaleIntensityRanged`` (CT
window) or ``ScaleIntensityRangePercentilesd`` (MR), ``CropForegroundd``,
``ResizeWithPadOrCropd`` / ``Resized``, ``EnsureTyped``. :class:`VolumeDataModule` splits by case,
caches the preprocessed volumes with :class:`monai.data.CacheDataset` and serves batches
``{"image": (B, C, D, H, W) float32, "label": (B,) long, "seg": (B, 1, D, H, W) long, "name": [...]}``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from lightning.pytorch import LightningDataModule
from monai.data import CacheDataset, MetaTensor
from monai.data import Dataset as MonaiDataset
from monai.transforms import (
    Compose,
    CropForegroundd,
    EnsureTyped,
    MapTransform,
    Orientationd,
    Resized,
    ResizeWithPadOrCropd,
    ScaleIntensityRanged,
    ScaleIntensityRangePercentilesd,
    Spacingd,
)
from monai.utils import MetaKeys, SpaceKeys
from torch.utils.data import DataLoader, Dataset

from medlearn.data.sampling import group_split, seeded_loader
from medlearn.io import nifti_geometry, read_image
from medlearn.io.errors import DataError

__all__ = [
    "BRATS_LABELS",
    "BRATS_LABEL_NAMES",
    "BRATS_MODALITIES",
    "BRATS_REGIONS",
    "HEADCT_CLASSES",
    "LoadVolumed",
    "VolumeDataModule",
    "VolumeDataset",
    "VolumeRecord",
    "brats_regions",
    "case_split",
    "list_volumes",
    "load_volume",
    "nifti_geometry",
    "read_brats",
    "read_volume_manifest",
    "volume_transforms",
]

#: Lesion classes of the head CT phantom (:mod:`medlearn.synth.headct`), in label-index order.
HEADCT_CLASSES: tuple[str, ...] = ("none", "intraparenchymal", "intraventricular", "subdural")
#: The four BraTS MR contrasts, in the usual channel order.
BRATS_MODALITIES: tuple[str, ...] = ("t1", "t1ce", "t2", "flair")
#: BraTS 2012-2021 label values.
BRATS_LABELS: tuple[int, ...] = (0, 1, 2, 4)
#: Names of :data:`BRATS_LABELS`.
BRATS_LABEL_NAMES: tuple[str, ...] = ("background", "necrotic_core", "oedema", "enhancing")
#: The evaluated BraTS regions, in the channel order of :func:`brats_regions`.
BRATS_REGIONS: tuple[str, ...] = ("WT", "TC", "ET")

_SPLITS = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val",
    "test": "test", "testing": "test",
}
_TASKS = ("unlabeled", "classification", "segmentation")
_LAYOUTS = ("auto", "folder", "manifest", "brats", "headct")
_NORMALISATIONS = ("ct", "mr", "none")


# ------------------------------------------------------------------------------------ records


@dataclass
class VolumeRecord:
    """One case: a volume (or co-registered multi-modal volumes), with optional label and mask.

    Attributes:
        path: the volume file (single-modal); ``None`` when ``paths`` is given.
        paths: ``{modality: file}`` in channel order (multi-modal, e.g. BraTS); ``None`` otherwise.
        label: class name (classification), or ``None``.
        case: case identifier; splits group by it (several records may share a case).
        seg: segmentation mask file, or ``None``.
        split: ``"train"``, ``"val"`` or ``"test"`` when the source says so, else ``None``.

    Raises:
        ValueError: neither or both of ``path`` and ``paths`` given, or ``paths`` empty.
    """

    path: Path | None = None
    paths: dict[str, Path] | None = None
    label: str | None = None
    case: str = ""
    seg: Path | None = None
    split: str | None = None

    def __post_init__(self) -> None:
        if (self.path is None) == (self.paths is None):
            raise ValueError("VolumeRecord needs exactly one of path and paths")
        if self.paths is not None and not self.paths:
            raise ValueError("VolumeRecord.paths is empty")
        if self.path is not None:
            self.path = Path(self.path)
        if self.paths is not None:
            self.paths = {str(k): Path(v) for k, v in self.paths.items()}
        if self.seg is not None:
            self.seg = Path(self.seg)
        if not self.case:
            first = self.path if self.path is not None else next(iter(self.paths.values()))  # type: ignore[union-attr]
            self.case = _strip_nifti(first.name)

    @property
    def files(self) -> list[Path]:
        """The image files in channel order."""
        return [self.path] if self.path is not None else list(self.paths.values())  # type: ignore[union-attr]

    @property
    def modalities(self) -> list[str]:
        """Modality names in channel order (``["image"]`` for a single-modal record)."""
        return ["image"] if self.paths is None else list(self.paths)


def _is_nifti(name: str) -> bool:
    low = name.lower()
    return not name.startswith(".") and low.endswith((".nii", ".nii.gz"))


def _strip_nifti(name: str) -> str:
    low = name.lower()
    for ext in (".nii.gz", ".nii"):
        if low.endswith(ext):
            return name[: -len(ext)]
    return name


def _natural_key(s: str) -> tuple[int, Any]:
    return (0, int(s)) if s.lstrip("-").isdigit() else (1, s)


def list_volumes(folder: str | Path) -> list[Path]:
    """List the NIfTI volumes of a folder, recursively.

    Hidden files and folders (names starting with ``.``) are skipped.

    Args:
        folder: the folder.

    Returns:
        Sorted paths of every ``.nii`` / ``.nii.gz`` file (any case).

    Raises:
        DataError: ``folder`` is not a folder or holds no NIfTI file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "volume folder not found")
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found.extend(Path(dirpath) / f for f in filenames if _is_nifti(f))
    if not found:
        raise DataError(folder, "no NIfTI volumes found (looked for .nii and .nii.gz, recursively)")
    return sorted(found)


def read_volume_manifest(
    csv: str | Path,
    classes: Sequence[str] | None = None,
    check_files: bool = True,
) -> list[VolumeRecord]:
    """Read a CSV manifest of volumes: ``path[,label][,split][,seg][,case]``.

    Paths (``path``, ``seg``) are relative to the CSV's folder (absolute paths are kept). ``split``
    is ``train``, ``val`` or ``test`` (also ``training``, ``valid``, ``validation``, ``testing``;
    any case) or empty; ``case`` groups several rows of one patient for splitting (default: the
    file name without ``.nii``/``.nii.gz``). An empty ``label`` means unlabeled.

    Args:
        csv: the CSV file.
        classes: the allowed label names; a label outside them is an error. ``None``: any label.
        check_files: check that every ``path`` and ``seg`` file exists.

    Returns:
        One :class:`VolumeRecord` per row, in table order.

    Raises:
        DataError: the table is missing or unreadable, has no ``path`` column, or ``classes`` is
            empty or repeats a name; or any row has an empty path, a missing file, an unknown
            label, an unknown split or repeats an earlier path (one entry of ``problems`` per bad
            row, naming everything wrong with it).
    """
    csv = Path(csv)
    if not csv.is_file():
        raise DataError(csv, "manifest CSV not found")
    if classes is not None:
        classes = list(classes)
        dup = sorted({c for c in classes if classes.count(c) > 1})
        if not classes or dup:
            raise DataError(csv, "invalid classes", [f"class {c!r} given more than once" for c in dup] or
                            ["no classes given"])
    try:
        df = pd.read_csv(csv, dtype=str, keep_default_na=False, na_filter=False, skipinitialspace=True)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(csv, f"cannot parse the manifest: {exc}") from exc
    df.columns = [str(c).strip().lower() for c in df.columns]
    if "path" not in df.columns:
        raise DataError(csv, f"manifest needs a 'path' column (found: {', '.join(df.columns) or 'none'})")
    base = csv.parent
    known = set(classes) if classes is not None else None

    def column(name: str) -> list[str]:
        return [s.strip() for s in df[name].tolist()] if name in df.columns else [""] * len(df)

    records: list[VolumeRecord] = []
    problems: list[str] = []
    first_line: dict[Path, int] = {}
    for i, (p, label, split, seg, case) in enumerate(
        zip(column("path"), column("label"), column("split"), column("seg"), column("case"))
    ):
        line = i + 2  # header is line 1
        issues: list[str] = []
        path = (base / p) if p else None
        if path is None:
            issues.append("empty path")
        else:
            key = path.resolve() if path.exists() else path
            if key in first_line:
                issues.append(f"path listed again (first on line {first_line[key]})")
            else:
                first_line[key] = line
            if check_files and not path.is_file():
                issues.append(f"file not found: {path}")
        seg_path = (base / seg) if seg else None
        if seg_path is not None and check_files and not seg_path.is_file():
            issues.append(f"seg file not found: {seg_path}")
        if label and known is not None and label not in known:
            issues.append(f"unknown label {label!r} (classes: {', '.join(classes or [])})")
        split_name = _SPLITS.get(split.lower()) if split else None
        if split and split_name is None:
            issues.append(f"unknown split {split!r} (train, val or test)")
        if issues:
            problems.append(f"line {line} ({p or '<empty path>'}): {'; '.join(issues)}")
            continue
        assert path is not None
        records.append(VolumeRecord(path=path, label=label or None, case=case or _strip_nifti(Path(p).name),
                                    seg=seg_path, split=split_name))
    if problems:
        raise DataError(csv, f"{len(problems)} invalid rows", problems)
    if not records:
        raise DataError(csv, "the manifest lists no volumes")
    return records


# --------------------------------------------------------------------------------- BraTS reader


def _find_case_file(index: Mapping[str, Path], case: str, key: str) -> list[Path]:
    """Files named ``<case>_<key>.nii[.gz]`` (or with ``-``; any case) in a case folder's index."""
    stems = {f"{case}_{key}".lower(), f"{case}-{key}".lower()}
    return sorted(p for name, p in index.items() if _strip_nifti(name).lower() in stems and _is_nifti(name))


def _brats_case_dirs(root: Path) -> list[Path]:
    dirs = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        try:
            if any(_is_nifti(n) for n in os.listdir(entry.path)):
                dirs.append(Path(entry.path))
        except OSError:
            dirs.append(Path(entry.path))
    return dirs


def read_brats(
    root: str | Path,
    modalities: Sequence[str] = BRATS_MODALITIES,
    require_seg: bool = True,
    check_labels: bool = True,
    check_images: bool = False,
    seg_labels: Sequence[int] = BRATS_LABELS,
    atol: float = 1e-3,
) -> list[VolumeRecord]:
    """Read and validate a BraTS folder: ``root/<case>/<case>_<modality>.nii.gz`` per case.

    A case is every non-hidden sub-folder that holds NIfTI files; ``-`` is accepted instead of
    ``_`` before the modality (BraTS 2023 writes ``<case>-t1n.nii.gz``: pass
    ``modalities=("t1n", "t1c", "t2w", "t2f")`` and ``seg_labels=(0, 1, 2, 3)`` for it).

    Checks, per case, each reported (one entry of ``problems`` per bad case listing everything
    wrong with it): a modality (or, with ``require_seg``, the ``seg``) file is missing or present
    twice; a file is not readable NIfTI or is truncated (from the header and the file-size or gzip
    length footer: cheap, no voxels decoded); a volume is not 3D; a modality or the seg has a
    shape or an affine (tolerance ``atol``) different from the case's first modality. Label values
    need the voxels, so they are checked only with ``check_labels`` (default on: decodes each seg
    once, about 0.1 s per real BraTS case); ``check_images`` also decodes every image (NaN / Inf
    voxels, corrupt data inside an intact-looking file).

    Args:
        root: the folder holding the case folders.
        modalities: the image files per case, in channel order.
        require_seg: a missing ``<case>_seg`` file is an error (else such cases get ``seg=None``).
        check_labels: decode each seg and check its values are in ``seg_labels``.
        check_images: decode each image too.
        seg_labels: the allowed label values.
        atol: tolerance on affine entries between the files of a case.

    Returns:
        One :class:`VolumeRecord` per case (``paths`` in ``modalities`` order, ``seg``, ``case`` =
        folder name), sorted by case.

    Raises:
        DataError: ``root`` is not a folder or holds no case; or any case is invalid (all listed).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "BraTS root folder not found")
    modalities = [str(m) for m in modalities]
    if not modalities:
        raise ValueError("modalities must name at least one modality")
    allowed = {int(v) for v in seg_labels}
    case_dirs = _brats_case_dirs(root)
    if not case_dirs:
        raise DataError(root, f"no BraTS case folders found (expected <case>/<case>_{modalities[0]}.nii.gz ...)")
    records: list[VolumeRecord] = []
    problems: list[str] = []
    for case_dir in case_dirs:
        case = case_dir.name
        try:
            index = {n: case_dir / n for n in os.listdir(case_dir)}
        except OSError as exc:
            problems.append(f"{case}: cannot list the folder ({exc})")
            continue
        issues: list[str] = []
        files: dict[str, Path] = {}
        for key in [*modalities, "seg"]:
            found = _find_case_file(index, case, key)
            if len(found) > 1:
                issues.append(f"{key} given twice ({', '.join(p.name for p in found)})")
            elif found:
                files[key] = found[0]
            elif key != "seg" or require_seg:
                issues.append(f"missing {key} ({case}_{key}.nii.gz)")
        geometry: dict[str, tuple[tuple[int, ...], np.ndarray]] = {}
        for key, path in files.items():
            try:
                geometry[key] = nifti_geometry(path)
            except DataError as exc:
                issues.append(f"{path.name}: {exc.reason}")
        ref = next((k for k in [*modalities, "seg"] if k in geometry), None)
        for key, (shape, affine) in geometry.items():
            if len(shape) != 3:
                issues.append(f"{files[key].name}: a 3D volume is expected, the header says shape {shape}")
                continue
            if ref is None or key == ref or len(geometry[ref][0]) != 3:
                continue
            ref_shape, ref_affine = geometry[ref]
            if shape != ref_shape:
                issues.append(f"{files[key].name}: shape {shape} differs from {ref} {ref_shape}")
            elif not np.allclose(affine, ref_affine, rtol=0.0, atol=atol):
                diff = float(np.abs(affine - ref_affine).max())
                issues.append(f"{files[key].name}: affine differs from {ref} (max difference {diff:.4g} > {atol:g})")
        if check_images:
            for key in modalities:
                if key in geometry:
                    try:
                        read_image(files[key])
                    except DataError as exc:
                        issues.append(f"{files[key].name}: {exc.reason}")
        if check_labels and "seg" in geometry:
            issue = _check_seg_labels(files["seg"], allowed)
            if issue:
                issues.append(issue)
        if issues:
            problems.append(f"{case}: {'; '.join(issues)}")
            continue
        records.append(VolumeRecord(paths={m: files[m] for m in modalities}, seg=files.get("seg"), case=case))
    if problems:
        raise DataError(root, f"{len(problems)} of {len(case_dirs)} BraTS cases are invalid", problems)
    return records


def _check_seg_labels(path: Path, allowed: set[int]) -> str | None:
    """A problem string if the seg at ``path`` is unreadable or holds values outside ``allowed``."""
    try:
        arr, _ = read_image(path)
    except DataError as exc:
        return f"{path.name}: {exc.reason}"
    flat = arr.ravel()
    as_int = flat.astype(np.int64)
    if (as_int != flat).any():
        bad = np.unique(flat[as_int != flat])[:5]
        return f"{path.name}: non-integer label values {[float(b) for b in bad]}"
    lo, hi = int(as_int.min()), int(as_int.max())
    if lo >= 0 and hi < 4096:
        counts = np.bincount(as_int, minlength=hi + 1)
        values = {int(v): int(counts[v]) for v in np.flatnonzero(counts)}
    else:
        vals, cnt = np.unique(as_int, return_counts=True)
        values = {int(v): int(c) for v, c in zip(vals, cnt)}
    bad_values = {v: c for v, c in values.items() if v not in allowed}
    if bad_values:
        shown = ", ".join(f"{v} ({c} voxels)" for v, c in sorted(bad_values.items()))
        return f"{path.name}: labels outside {sorted(allowed)}: {shown}"
    return None


# ---------------------------------------------------------------------------------- transforms


def load_volume(source: str | Path | Sequence[str | Path] | Mapping[str, str | Path], atol: float = 1e-3) -> MetaTensor:
    """Read one volume, or co-registered volumes stacked as channels, into a MONAI ``MetaTensor``.

    Decoding is :func:`medlearn.io.read_image` (float32, channel-first, stored voxel order, header
    scaling applied); a 4D NIfTI keeps its volumes as channels. The tensor's affine is the
    reader's (nibabel's best affine, RAS world), so MONAI's spatial transforms (``Spacingd``,
    ``Orientationd``) work on it.

    Args:
        source: one file, a sequence of files, or ``{name: file}`` (channels in that order).
        atol: tolerance on affine entries between the stacked files.

    Returns:
        ``(C, X, Y, Z)`` float32 ``MetaTensor`` with ``affine`` and meta ``filename_or_obj`` (the
        first file), ``filenames``, ``spacing``, ``orientation``.

    Raises:
        DataError: naming the file: unreadable (any :func:`~medlearn.io.read_image` reason: missing,
            truncated, NaN/Inf...), not a 3D volume, or a shape / affine that differs from the
            first file's.
    """
    if isinstance(source, (str, os.PathLike)):
        paths = [Path(source)]
    elif isinstance(source, Mapping):
        paths = [Path(p) for p in source.values()]
    else:
        paths = [Path(p) for p in source]
    if not paths:
        raise ValueError("load_volume needs at least one file")
    arrays: list[np.ndarray] = []
    first: tuple[Path, tuple[int, ...], np.ndarray, dict[str, Any]] | None = None
    for path in paths:
        array, meta = read_image(path)
        if array.ndim != 4:
            raise DataError(path, f"a 3D volume is needed (channel, x, y, z); the image has shape {array.shape}")
        affine = meta.get("affine")
        if affine is None:
            spacing = [float(s) for s in (meta.get("spacing") or ())][:3]
            affine = np.diag([*spacing, *([1.0] * (3 - len(spacing))), 1.0])
        affine = np.asarray(affine, dtype=np.float64)
        if first is None:
            first = (path, tuple(array.shape[1:]), affine, meta)
        else:
            p0, shape0, affine0, _ = first
            if tuple(array.shape[1:]) != shape0:
                raise DataError(path, f"spatial shape {tuple(array.shape[1:])} differs from {p0.name} {shape0}")
            if not np.allclose(affine, affine0, rtol=0.0, atol=atol):
                diff = float(np.abs(affine - affine0).max())
                raise DataError(path, f"affine differs from {p0.name} (max difference {diff:.4g} > {atol:g})")
        arrays.append(array)
    assert first is not None
    data = arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=0)
    meta0 = first[3]
    meta_out = {
        "filename_or_obj": str(paths[0]),
        "filenames": [str(p) for p in paths],
        "spacing": meta0.get("spacing"),
        "orientation": meta0.get("orientation"),
        MetaKeys.SPACE: SpaceKeys.RAS,
    }
    return MetaTensor(torch.from_numpy(np.ascontiguousarray(data)), affine=torch.as_tensor(first[2]), meta=meta_out)


class LoadVolumed(MapTransform):
    """MONAI dictionary transform: load the files under ``keys`` with :func:`load_volume`.

    The value of each key is a file, a sequence of files or a ``{name: file}`` mapping (stacked as
    channels). Reading goes through :func:`medlearn.io.read_image`, so bad files raise a
    :class:`~medlearn.io.errors.DataError` naming the file. (MONAI's ``Compose`` wraps exceptions
    in a ``RuntimeError``; :class:`VolumeDataset` unwraps them again.)

    Args:
        keys: the keys to load (e.g. ``("image", "seg")``).
        allow_missing_keys: skip keys absent from the dict.
        atol: tolerance on affine entries between stacked files.
    """

    def __init__(self, keys: Any, allow_missing_keys: bool = False, atol: float = 1e-3) -> None:
        super().__init__(keys, allow_missing_keys)
        self.atol = float(atol)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = load_volume(d[key], atol=self.atol)
        return d


class _Above:
    """Foreground selector for ``CropForegroundd``: ``x > threshold``, or everything if none is.

    (A class, not a lambda, so that datasets pickle into worker processes.)
    """

    def __init__(self, threshold: float) -> None:
        self.threshold = float(threshold)

    def __call__(self, x: Any) -> Any:
        mask = x > self.threshold
        if not bool(mask.any()):  # nothing above: keep the whole volume rather than crop to nothing
            return torch.ones_like(mask) if isinstance(mask, torch.Tensor) else np.ones_like(mask)
        return mask


def volume_transforms(
    image_key: str = "image",
    seg_key: str | None = None,
    normalisation: str = "ct",
    window: Sequence[float] = (-100.0, 200.0),
    percentiles: Sequence[float] = (0.5, 99.5),
    target_spacing: Sequence[float] | float | None = None,
    orientation: str | None = None,
    spatial_size: Sequence[int] | int = (32, 32, 32),
    foreground_threshold: float | None = -0.9,
    fit: str = "pad_crop",
    pad_value: float | None = None,
) -> Compose:
    """The deterministic preprocessing of a volume (and its mask), as MONAI dictionary transforms.

    In order: :class:`LoadVolumed`; ``Orientationd`` (if ``orientation``); ``Spacingd`` (if
    ``target_spacing``; bilinear for the image, nearest for the mask); intensity normalisation of
    the image to [-1, 1]; ``CropForegroundd`` to the box where any image channel exceeds
    ``foreground_threshold`` (in normalised units; the whole volume is kept if nothing does);
    ``ResizeWithPadOrCropd`` (centred pad/crop, ``fit="pad_crop"``) or ``Resized`` (trilinear with
    anti-aliasing / nearest, ``fit="resize"``) to ``spatial_size``; ``EnsureTyped`` to plain
    tensors (image float32, mask int64).

    Normalisation: ``"ct"``: ``ScaleIntensityRanged`` maps the HU window ``[lo, hi]`` to [-1, 1]
    and clips; ``"mr"``: ``ScaleIntensityRangePercentilesd`` maps the ``percentiles`` (0.5 / 99.5)
    of each channel to [-1, 1] and clips; ``"none"``: values kept.

    Args:
        image_key: the image key.
        seg_key: the mask key, or ``None``.
        normalisation: ``"ct"``, ``"mr"`` or ``"none"``.
        window: CT window ``(lo, hi)`` in HU (``"ct"`` only); the default is a brain window.
        percentiles: lower and upper percentile (``"mr"`` only).
        target_spacing: resample to this voxel size (mm; one number = isotropic); ``None`` keeps it.
        orientation: reorient to these axis codes first (e.g. ``"RAS"``); ``None`` keeps the stored
            voxel order.
        spatial_size: the output ``(D, H, W)``.
        foreground_threshold: crop threshold in normalised units; ``None`` disables the crop.
        fit: ``"pad_crop"`` or ``"resize"``.
        pad_value: image padding value; default -1 (the normalised minimum), 0 for ``"none"``.

    Returns:
        A ``monai.transforms.Compose`` mapping ``{image_key: file(s)[, seg_key: file]}`` (other keys
        pass through) to ``{image_key: (C, D, H, W) float32[, seg_key: (1, D, H, W) int64]}``.

    Raises:
        ValueError: an unknown ``normalisation`` or ``fit``, a bad window, percentiles, spacing or
            size.
    """
    if normalisation not in _NORMALISATIONS:
        raise ValueError(f"normalisation must be one of {_NORMALISATIONS}, got {normalisation!r}")
    if fit not in ("pad_crop", "resize"):
        raise ValueError(f"fit must be 'pad_crop' or 'resize', got {fit!r}")
    size = _triple(spatial_size, "spatial_size", int)
    if min(size) < 1:
        raise ValueError(f"spatial_size must be positive, got {spatial_size!r}")
    lo, hi = (float(v) for v in window)
    if not hi > lo:
        raise ValueError(f"window must be (lo, hi) with hi > lo, got {window!r}")
    p_lo, p_hi = (float(v) for v in percentiles)
    if not 0.0 <= p_lo < p_hi <= 100.0:
        raise ValueError(f"percentiles must satisfy 0 <= lower < upper <= 100, got {percentiles!r}")
    keys = [image_key] + ([seg_key] if seg_key else [])
    interp = ["bilinear"] + (["nearest"] if seg_key else [])
    steps: list[Callable[..., Any]] = [LoadVolumed(keys)]
    if orientation:
        steps.append(Orientationd(keys, axcodes=orientation))
    if target_spacing is not None:
        spacing = _triple(target_spacing, "target_spacing", float)
        if min(spacing) <= 0:
            raise ValueError(f"target_spacing must be positive, got {target_spacing!r}")
        steps.append(Spacingd(keys, pixdim=spacing, mode=interp, padding_mode="border"))
    if normalisation == "ct":
        steps.append(ScaleIntensityRanged(image_key, a_min=lo, a_max=hi, b_min=-1.0, b_max=1.0, clip=True))
    elif normalisation == "mr":
        steps.append(ScaleIntensityRangePercentilesd(image_key, lower=p_lo, upper=p_hi, b_min=-1.0, b_max=1.0,
                                                     clip=True, channel_wise=True))
    if foreground_threshold is not None:
        steps.append(CropForegroundd(keys, source_key=image_key, select_fn=_Above(foreground_threshold),
                                     allow_smaller=True, start_coord_key=None, end_coord_key=None))
    fill = float(pad_value) if pad_value is not None else (0.0 if normalisation == "none" else -1.0)
    if fit == "pad_crop":
        steps.append(ResizeWithPadOrCropd(image_key, spatial_size=size, mode="constant", value=fill))
        if seg_key:
            steps.append(ResizeWithPadOrCropd(seg_key, spatial_size=size, mode="constant", value=0))
    else:
        steps.append(Resized(image_key, spatial_size=size, mode="trilinear", anti_aliasing=True))
        if seg_key:
            steps.append(Resized(seg_key, spatial_size=size, mode="nearest"))
    steps.append(EnsureTyped(image_key, dtype=torch.float32, track_meta=False))
    if seg_key:
        steps.append(EnsureTyped(seg_key, dtype=torch.long, track_meta=False))
    return Compose(steps, log_stats=False)


def _triple(value: Sequence[Any] | Any, name: str, kind: type) -> tuple[Any, Any, Any]:
    if isinstance(value, (int, float)):
        values = [kind(value)] * 3
    else:
        values = [kind(v) for v in value]
    if len(values) != 3:
        raise ValueError(f"{name} needs 3 values (or one), got {value!r}")
    return values[0], values[1], values[2]


# ------------------------------------------------------------------------------------ datasets


def _find_data_error(exc: BaseException) -> DataError | None:
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        if isinstance(e, DataError):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


class VolumeDataset(Dataset):
    """Preprocessed volumes, cached in memory (:class:`monai.data.CacheDataset`) or not.

    With ``cache=True`` every item is decoded and preprocessed once, when the dataset is built
    (all transforms of :func:`volume_transforms` are deterministic, so the whole chain is cached);
    ``cache=False`` uses :class:`monai.data.Dataset` and decodes on every access. ``train_transform``
    (random augmentation) runs on every access, after the cache. A :class:`DataError` raised while
    loading reaches the caller as itself (MONAI wraps it in a ``RuntimeError``; it is unwrapped).

    Args:
        items: dicts such as ``{"image": file(s), "seg": file, "label": int, "name": str}``.
        transform: the deterministic chain, e.g. :func:`volume_transforms`.
        cache: keep preprocessed items in memory.
        train_transform: an optional callable applied to each item dict after loading.

    Raises:
        DataError: a file cannot be used (with ``cache=True`` already when building).
    """

    def __init__(
        self,
        items: Sequence[Mapping[str, Any]],
        transform: Callable[..., Any],
        cache: bool = True,
        train_transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self.items = [dict(i) for i in items]
        self.train_transform = train_transform
        self.cache = bool(cache)
        try:
            if self.cache:
                self.inner: Dataset = CacheDataset(self.items, transform, progress=False, num_workers=1)
            else:
                self.inner = MonaiDataset(self.items, transform)
        except Exception as exc:
            err = _find_data_error(exc)
            if err is not None:
                raise err.with_traceback(err.__traceback__) from None
            raise

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        try:
            item = self.inner[index]
        except Exception as exc:
            err = _find_data_error(exc)
            if err is not None:
                raise err.with_traceback(err.__traceback__) from None
            raise
        if self.train_transform is not None:
            item = self.train_transform(item)
        return item


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


def brats_regions(seg: torch.Tensor) -> torch.Tensor:
    """BraTS label map (0/1/2/4) -> the three evaluated regions as channels (WT, TC, ET).

    WT (whole tumour) = {1, 2, 4}, TC (tumour core) = {1, 4}, ET (enhancing tumour) = {4}.
    (MONAI's per-sample ``ConvertToMultiChannelBasedOnBratsClasses`` gives the same masks in the
    order TC, WT, ET.)

    Args:
        seg: ``(B, 1, ...)`` integer labels.

    Returns:
        ``(B, 3, ...)`` float32 masks, channels in :data:`BRATS_REGIONS` order.

    Raises:
        ValueError: ``seg`` has no singleton channel axis.
    """
    if seg.ndim < 3 or seg.shape[1] != 1:
        raise ValueError(f"brats_regions needs (B, 1, ...) labels, got shape {tuple(seg.shape)}")
    s = seg[:, 0]
    et = s == 4
    tc = et | (s == 1)
    wt = tc | (s == 2)
    return torch.stack([wt, tc, et], dim=1).to(torch.float32)


# ---------------------------------------------------------------------------------- DataModule


class VolumeDataModule(LightningDataModule):
    """3D volumes for pretraining (``unlabeled``), ``classification`` or ``segmentation``.

    Sources (``layout``): ``"folder"`` (NIfTI files, recursively; unlabeled), ``"manifest"`` (a
    CSV: ``root`` itself or ``root/labels.csv``), ``"headct"`` (a manifest with the class order
    :data:`HEADCT_CLASSES`, as :func:`medlearn.synth.headct.write_headct` writes), ``"brats"``
    (:func:`read_brats`); ``"auto"`` picks manifest when ``root`` is a CSV or holds
    ``labels.csv``, brats when a sub-folder holds ``<case>_<modalities[0]>.nii[.gz]``, else folder.

    Splits are by case and deterministic: ``test`` is the rows with ``split == "test"`` when the
    source has a split column, else ``test_fraction`` of the cases (seed ``split_seed + 1``);
    ``val`` is the rows with ``split == "val"`` if any, else ``val_fraction`` of the remaining
    cases (seed ``split_seed``); ``num_train`` then draws a fixed-size training subset with
    ``label_seed``. The same root and seeds give the same test cases for every task, so
    pretraining (which never sees ``test``) and fine-tuning do not leak.

    Batches: ``{"image": (B, C, D, H, W) float32, "name": [...]}`` plus ``"label": (B,) int64``
    (classification, the index into :attr:`class_names`) or ``"seg": (B, 1, D, H, W) int64``
    (segmentation; BraTS values stay 0/1/2/4, see :func:`brats_regions`). Preprocessing is
    :func:`volume_transforms`; with ``cache`` each volume is decoded and preprocessed once.

    Args:
        root: dataset folder (or a manifest CSV).
        layout: ``"auto"``, ``"folder"``, ``"manifest"``, ``"brats"`` or ``"headct"``.
        task: ``"unlabeled"``, ``"classification"`` or ``"segmentation"``.
        classes: label names in index order (classification); default: :data:`HEADCT_CLASSES` for
            ``headct``, else the labels found, sorted (numbers numerically).
        spatial_size: output ``(D, H, W)``.
        target_spacing: resample to this voxel size in mm (``None``: keep).
        normalisation: ``"ct"``, ``"mr"`` or ``"none"``.
        window: CT window in HU for ``"ct"``.
        batch_size: per-process batch size.
        num_workers: data-loader worker processes.
        num_train: size of the training subset (``None``: all).
        val_fraction: fraction of cases for validation when the source has no ``val`` rows.
        split_seed: seed of the case splits.
        label_seed: seed of the ``num_train`` subset.
        cache: decode and preprocess each volume once (``monai.data.CacheDataset``).
        modalities: BraTS modalities (channels, in order).
        test_fraction: fraction of cases held out as test when the source has no split column.
        foreground_threshold: crop threshold in normalised units (``None``: no crop).
        orientation: reorient to these axis codes (``None``: stored voxel order).
        fit: ``"pad_crop"`` or ``"resize"`` to ``spatial_size``.
        drop_last: drop the last incomplete training batch (default: for unlabeled pretraining).
        train_transform: optional callable on each training item dict (random augmentation),
            applied after the cache.

    Raises:
        ValueError: an unknown ``task``, ``layout`` or ``normalisation``.
    """

    def __init__(
        self,
        root: str,
        layout: str = "auto",
        task: str = "unlabeled",
        classes: list[str] | None = None,
        spatial_size: tuple[int, int, int] = (32, 32, 32),
        target_spacing: tuple[float, float, float] | None = None,
        normalisation: str = "ct",
        window: tuple[float, float] = (-100.0, 200.0),
        batch_size: int = 8,
        num_workers: int = 0,
        num_train: int | None = None,
        val_fraction: float = 0.15,
        split_seed: int = 0,
        label_seed: int = 0,
        cache: bool = True,
        modalities: tuple[str, ...] = BRATS_MODALITIES,
        test_fraction: float = 0.2,
        foreground_threshold: float | None = -0.9,
        orientation: str | None = None,
        fit: str = "pad_crop",
        drop_last: bool | None = None,
        train_transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        if task not in _TASKS:
            raise ValueError(f"task must be one of {_TASKS}, got {task!r}")
        if layout not in _LAYOUTS:
            raise ValueError(f"layout must be one of {_LAYOUTS}, got {layout!r}")
        if normalisation not in _NORMALISATIONS:
            raise ValueError(f"normalisation must be one of {_NORMALISATIONS}, got {normalisation!r}")
        if not 0.0 <= test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
        self.save_hyperparameters(ignore=["train_transform"])
        self.root = Path(root)
        self.train_transform = train_transform
        self._splits: dict[str, list[VolumeRecord]] | None = None
        self._class_names: list[str] | None = None
        self.train_set: VolumeDataset | None = None
        self.val_set: VolumeDataset | None = None
        self.test_set: VolumeDataset | None = None

    # --- indexing ---

    @property
    def resolved_layout(self) -> str:
        """The layout ``"auto"`` resolves to (or the one given)."""
        layout = self.hparams.layout
        if layout != "auto":
            return layout
        if self.root.is_file() and self.root.suffix.lower() == ".csv":
            return "manifest"
        if (self.root / "labels.csv").is_file():
            return "manifest"
        if self.root.is_dir() and _looks_like_brats(self.root, self.hparams.modalities[0]):
            return "brats"
        return "folder"

    def _read_records(self) -> list[VolumeRecord]:
        h = self.hparams
        if not self.root.exists():
            raise DataError(self.root, "dataset root does not exist")
        layout = self.resolved_layout
        if layout in ("manifest", "headct"):
            csv = self.root if self.root.is_file() else self.root / "labels.csv"
            classes = h.classes or (list(HEADCT_CLASSES) if layout == "headct" else None)
            return read_volume_manifest(csv, classes=classes)
        if layout == "brats":
            seg = h.task == "segmentation"
            return read_brats(self.root, h.modalities, require_seg=seg, check_labels=seg)
        return [
            VolumeRecord(path=p, case=_strip_nifti(p.relative_to(self.root).as_posix()))
            for p in list_volumes(self.root)
        ]

    def _index(self) -> dict[str, list[VolumeRecord]]:
        if self._splits is not None:
            return self._splits
        h = self.hparams
        records = self._read_records()
        if h.task == "classification":
            missing = [f"{r.case}: no label" for r in records if r.label is None]
            if missing:
                raise DataError(self.root, f"classification needs a label for every volume; {len(missing)} have none",
                                missing)
            found = sorted({r.label for r in records if r.label is not None}, key=_natural_key)
            names = list(h.classes) if h.classes else (
                list(HEADCT_CLASSES) if self.resolved_layout == "headct" else found)
            unknown = sorted(set(found) - set(names))
            if unknown:
                raise DataError(self.root, f"labels outside classes {names}", [f"unknown label {u!r}" for u in unknown])
            self._class_names = names
        elif h.task == "segmentation":
            missing = [f"{r.case}: no segmentation mask" for r in records if r.seg is None]
            if missing:
                raise DataError(self.root, f"segmentation needs a mask for every volume; {len(missing)} have none",
                                missing)
        has_split = any(r.split for r in records)
        test = [r for r in records if r.split == "test"]
        fixed_val = [r for r in records if r.split == "val"]
        pool = [r for r in records if r.split not in ("test", "val")]
        if not has_split and h.test_fraction > 0:
            pool, test = case_split(pool, h.test_fraction, h.split_seed + 1)
        if fixed_val:
            train, val = pool, fixed_val
        else:
            train, val = case_split(pool, h.val_fraction, h.split_seed)
        if h.num_train:
            train = _subsample(train, h.num_train, h.label_seed, self.root)
        if not train:
            raise DataError(self.root, "no training volumes after the split")
        self._splits = {"train": train, "val": val, "test": test}
        return self._splits

    @property
    def splits(self) -> dict[str, list[VolumeRecord]]:
        """``{"train", "val", "test"}`` -> records (indexes the data if needed; decodes nothing)."""
        return self._index()

    @property
    def class_names(self) -> list[str]:
        """Class names in label-index order (classification), the BraTS label names
        (segmentation on BraTS), else empty."""
        h = self.hparams
        if h.task == "classification":
            self._index()
            return list(self._class_names or [])
        if h.task == "segmentation" and self.resolved_layout == "brats":
            return list(BRATS_LABEL_NAMES)
        return []

    @property
    def n_train(self) -> int:
        """Training volumes (after subsetting); indexes the data if needed (decodes nothing)."""
        return len(self._index()["train"])

    @property
    def n_channels(self) -> int:
        """Image channels: the BraTS modalities, else read from the first training volume's header."""
        if self.resolved_layout == "brats":
            return len(self.hparams.modalities)
        shape, _ = nifti_geometry(self._index()["train"][0].files[0])
        return shape[3] if len(shape) == 4 else 1

    # --- datasets ---

    def _transform(self) -> Compose:
        h = self.hparams
        return volume_transforms(
            seg_key="seg" if h.task == "segmentation" else None,
            normalisation=h.normalisation,
            window=h.window,
            target_spacing=h.target_spacing,
            orientation=h.orientation,
            spatial_size=h.spatial_size,
            foreground_threshold=h.foreground_threshold,
            fit=h.fit,
        )

    def _items(self, records: Sequence[VolumeRecord]) -> list[dict[str, Any]]:
        h = self.hparams
        index = {c: i for i, c in enumerate(self._class_names or [])}
        items = []
        for r in records:
            files = [str(p) for p in r.files]
            item: dict[str, Any] = {"image": files[0] if r.path is not None else files, "name": r.case}
            if h.task == "classification":
                item["label"] = index[str(r.label)]
            elif h.task == "segmentation":
                item["seg"] = str(r.seg)
            items.append(item)
        return items

    def _dataset(self, records: Sequence[VolumeRecord], train: bool) -> VolumeDataset:
        return VolumeDataset(self._items(records), self._transform(), cache=self.hparams.cache,
                             train_transform=self.train_transform if train else None)

    def setup(self, stage: str | None = None) -> None:
        """Index the data once; build (and cache) the train/val sets for fitting, the test set for
        testing / predicting; later calls reuse them."""
        splits = self._index()
        if stage in (None, "fit", "validate") and self.train_set is None:
            self.train_set = self._dataset(splits["train"], train=True)
            self.val_set = self._dataset(splits["val"], train=False) if splits["val"] else None
        if stage in (None, "test", "predict") and self.test_set is None and splits["test"]:
            self.test_set = self._dataset(splits["test"], train=False)

    def _loader(self, ds: VolumeDataset, train: bool) -> DataLoader:
        h = self.hparams
        drop = h.drop_last if h.drop_last is not None else (h.task == "unlabeled")
        return seeded_loader(ds, h.batch_size, train, drop, h.num_workers, seed=h.split_seed + 7919 * h.label_seed)

    def train_dataloader(self) -> DataLoader:
        if self.train_set is None:
            self.setup("fit")
        assert self.train_set is not None
        return self._loader(self.train_set, True)

    def val_dataloader(self) -> Any:
        if self.train_set is None:
            self.setup("fit")
        return [] if self.val_set is None else self._loader(self.val_set, False)

    def test_dataloader(self) -> DataLoader:
        if self.test_set is None:
            self.setup("test")
        if self.test_set is None:
            raise DataError(self.root, "no test split: no 'test' rows and test_fraction is 0")
        return self._loader(self.test_set, False)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()


def _looks_like_brats(root: Path, first_modality: str) -> bool:
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError:
        return False
    for entry in entries:
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        try:
            names = os.listdir(entry.path)
        except OSError:
            continue
        index = {n: Path(entry.path) / n for n in names}
        if _find_case_file(index, entry.name, first_modality):
            return True
    return False


def _subsample(records: Sequence[VolumeRecord], n: int, seed: int, root: Path) -> list[VolumeRecord]:
    if n < 0:
        raise ValueError(f"num_train must be >= 0, got {n}")
    if n > len(records):
        raise DataError(root, f"asked for {n} training volumes but only {len(records)} are available")
    keep = np.sort(np.random.default_rng(seed).choice(len(records), size=n, replace=False))
    return [records[int(i)] for i in keep]
