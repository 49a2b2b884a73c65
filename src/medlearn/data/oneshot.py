"""One-shot atlas segmentation data: one labelled atlas, unlabelled images, optional evaluation labels.

The data of one-shot (single-atlas) segmentation as in LT-Net (Wang et al., "LT-Net: Label
Transfer by Learning Reversible Voxel-wise Correspondence for One-shot Medical Image
Segmentation", CVPR 2020) and DataAug (Zhao et al., CVPR 2019): **one** image with a label map
(the atlas), many images without labels to learn the atlas-to-image correspondence from, and
held-out images whose label maps are used only for evaluation.

Reading and validating (:func:`read_oneshot`)
---------------------------------------------
``read_oneshot(atlas, atlas_labels, images, eval_labels)``: ``images`` is a folder (every NIfTI /
MGH file in it, sorted) or a CSV table with a column ``image`` and an optional column ``label``
(evaluation label maps), paths relative to the table's folder. Everything is checked before
anything is decoded for training, and every problem is listed in one
:class:`~medlearn.io.errors.DataError`: missing, unreadable or truncated files; the atlas and its
label map on different grids (shape, or affine entries differing by more than ``atol`` = 1e-3);
label maps with non-integer values; an atlas label map with a single value; images listed twice or
two images with the same name; images whose dimensionality (2D / 3D) differs from the atlas's or
with several volumes; evaluation label maps on another grid than their image, with values the
atlas does not have, or matching no listed image. Label values are kept as they are (FreeSurfer's
2, 41, ... are not renumbered).

**The atlas among the images** (the same file, or a byte-identical copy) is *excluded with a
warning* (:class:`AtlasInImagesWarning`), not refused: the protocol never registers the atlas to
itself nor evaluates on it, and a folder that holds every scan including the atlas is a normal way
to store such data. The excluded paths are kept in :attr:`OneShotSet.excluded`.

The layout (``register_layout("oneshot", ...)``, kind ``"oneshot"``)
-------------------------------------------------------------------
What :func:`medlearn.synth.oneshot.write_oneshot` writes and :func:`read_oneshot_folder` reads::

    ROOT/atlas/image.nii.gz        the atlas image (also .nii, .mgz, .mgh)
    ROOT/atlas/labels.nii.gz       its label map (integer values, same grid)
    ROOT/images/<name>.nii.gz      unlabelled images (2D images: NIfTI (X, Y, 1) or (X, Y))
    ROOT/labels/<name>.nii.gz      optional: evaluation label maps, same file name as the image
    ROOT/labels.json               optional: {"0": "background", "1": "...", ...} value -> name

Grids and resampling
--------------------
Every image is brought onto the atlas grid through the two affines (:func:`to_atlas_grid`; the
atlas grid is the world, so images need not share the atlas's voxel grid, only its world space, as
after an affine pre-alignment), and label maps predicted on the atlas grid go back to an image's
own grid by nearest neighbour (:func:`to_image_grid`). With ``size``, the *working grid* is the
atlas grid resampled to fewer voxels over the same field of view (:func:`resized_grid`); every
image goes onto it in one interpolation from its own grid. Predictions at the original size: take
the labels predicted on the working grid and call :meth:`OneShotDataModule.labels_to_image`
(:func:`to_image_grid` from the working grid onto the image's own grid, nearest neighbour), so
labels are evaluated and written on the image's own voxels. For smoother boundaries, resample the
per-label probabilities (one-hot warped atlas labels) with :func:`to_atlas_grid`'s linear
interpolation onto the image grid and take the argmax there.

Training data (:class:`OneShotDataset`, :class:`OneShotDataModule`)
-------------------------------------------------------------------
Items: ``{"atlas": (1, *S) float32, "atlas_labels": (*S) int64, "image": (1, *S) float32, "name":
str}`` plus ``"labels": (*S) int64`` for images with an evaluation label map, all on the (working)
atlas grid ``S`` (``(X, Y)`` for 2D, ``(X, Y, Z)`` for 3D); intensities scaled to [0, 1] by
:func:`normalise_percentiles` on each image's own grid. Images without evaluation labels train;
those with one are split into validation and test.
"""

from __future__ import annotations

import filecmp
import json
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torch.utils.data import Dataset

from medlearn.data.datamodule import LayoutSource, SplitDataModule
from medlearn.data.info import DataInfo
from medlearn.data.layouts import RecordSet, register_layout
from medlearn.data.sampling import group_split, subsample
from medlearn.data.tables import read_columns, table_path
from medlearn.io import image_geometry, read_image
from medlearn.io.errors import DataError

__all__ = [
    "AtlasInImagesWarning",
    "Grid",
    "KIND",
    "LABELS_JSON",
    "OneShotDataModule",
    "OneShotDataset",
    "OneShotSet",
    "VOLUME_SUFFIXES",
    "find_volume",
    "is_volume_file",
    "normalise_percentiles",
    "read_label_names",
    "read_oneshot",
    "read_oneshot_folder",
    "resized_grid",
    "to_atlas_grid",
    "to_image_grid",
    "volume_stem",
]

#: The layout kind (and DataModule family) of one-shot atlas data.
KIND = "oneshot"
#: File endings of the volumes the one-shot readers accept (NIfTI, FreeSurfer MGH), lower case.
VOLUME_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".mgz", ".mgh")
#: The label-name file of the layout.
LABELS_JSON = "labels.json"


class AtlasInImagesWarning(UserWarning):
    """The atlas (or a byte-identical copy) is listed among the images; it is excluded from them."""


def is_volume_file(name: str) -> bool:
    """Whether a file name is a visible NIfTI or MGH/MGZ file (any case)."""
    return not name.startswith(".") and name.lower().endswith(VOLUME_SUFFIXES)


def volume_stem(name: str) -> str:
    """A file name without its volume suffix (``a.nii.gz`` -> ``a``)."""
    low = name.lower()
    for ext in VOLUME_SUFFIXES:
        if low.endswith(ext):
            return name[: -len(ext)]
    return name


def find_volume(folder: Path, stem: str) -> list[Path]:
    """The volume files ``folder/<stem>.{nii.gz,nii,mgz,mgh}`` that exist (stem compared exactly)."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    return sorted(folder / n for n in names if is_volume_file(n) and volume_stem(n) == stem)


# ------------------------------------------------------------------------------------ the set


@dataclass
class OneShotSet:
    """A validated one-shot data set (what :func:`read_oneshot` returns).

    Attributes:
        atlas: the atlas image file.
        atlas_labels: the atlas's label map file.
        images: the images (atlas excluded), in reading order.
        eval_labels: ``{image: evaluation label map}`` for the images that have one.
        label_values: the atlas's label values, sorted (background included).
        label_names: names of :attr:`label_values` when known (``labels.json``), else ``None``.
        excluded: images dropped because they are the atlas (see :class:`AtlasInImagesWarning`).
    """

    atlas: Path
    atlas_labels: Path
    images: list[Path]
    eval_labels: dict[Path, Path] = field(default_factory=dict)
    label_values: list[int] = field(default_factory=list)
    label_names: list[str] | None = None
    excluded: list[Path] = field(default_factory=list)

    @staticmethod
    def name_of(image: Path) -> str:
        """An image's name: its file name without the volume suffix."""
        return volume_stem(Path(image).name)

    @property
    def names(self) -> list[str]:
        """The images' names, in :attr:`images` order (unique)."""
        return [self.name_of(p) for p in self.images]

    @property
    def unlabelled(self) -> list[Path]:
        """Images without an evaluation label map (the training images)."""
        return [p for p in self.images if p not in self.eval_labels]

    @property
    def labelled(self) -> list[Path]:
        """Images with an evaluation label map (validation and test)."""
        return [p for p in self.images if p in self.eval_labels]


def _spatial(shape: Sequence[int]) -> tuple[int, ...]:
    """The spatial shape of a stored shape: ``(X, Y, 1)`` -> ``(X, Y)``; ``(X, Y, Z, 1)`` -> ``(X, Y, Z)``."""
    s = tuple(int(v) for v in shape)
    while len(s) > 3 and s[-1] == 1:
        s = s[:-1]
    if len(s) == 3 and s[2] == 1:
        s = s[:2]
    return s


def _label_problem(arr: np.ndarray) -> str | None:
    """A problem string when ``arr`` holds non-integer values."""
    flat = arr.ravel()
    frac = flat != np.round(flat)
    if frac.any():
        bad = np.unique(flat[frac])[:5]
        return f"non-integer label values {[round(float(b), 4) for b in bad]} ({int(frac.sum())} voxels)"
    return None


class _Checker:
    """Collects the problems of one read, naming files relative to a base folder."""

    def __init__(self, base: Path, atol: float) -> None:
        self.base = base
        self.atol = atol
        self.problems: list[str] = []

    def show(self, path: Path) -> str:
        if Path(path).is_absolute() != self.base.is_absolute():
            return str(path)
        try:
            return os.path.relpath(path, self.base)
        except ValueError:  # another drive
            return str(path)

    def add(self, path: Path | None, reason: str) -> None:
        self.problems.append(f"{self.show(path)}: {reason}" if path is not None else reason)

    def geometry(self, path: Path) -> tuple[tuple[int, ...], np.ndarray] | None:
        if not path.is_file():
            self.add(path, "file not found" if not path.exists() else "not a file")
            return None
        try:
            shape, affine = image_geometry(path)
        except DataError as exc:
            self.add(path, exc.reason)
            return None
        if len(shape) == 4 and shape[3] > 1:
            self.add(path, f"has {shape[3]} volumes {shape}; a single 2D or 3D image is expected")
            return None
        return _spatial(shape), affine

    def same_grid(self, path: Path, geo: tuple[tuple[int, ...], np.ndarray], ref_path: Path,
                  ref: tuple[tuple[int, ...], np.ndarray]) -> None:
        (shape, affine), (ref_shape, ref_affine) = geo, ref
        if shape != ref_shape:
            self.add(path, f"shape {shape} differs from {self.show(ref_path)} {ref_shape}")
        elif not np.allclose(affine, ref_affine, rtol=0.0, atol=self.atol):
            diff = float(np.abs(affine - ref_affine).max())
            self.add(path, f"affine differs from {self.show(ref_path)} (max difference {diff:.4g} > {self.atol:g})")

    def labels(self, path: Path) -> np.ndarray | None:
        """The decoded label map (int64), or ``None`` with the problem recorded."""
        try:
            arr, _ = read_image(path)
        except DataError as exc:
            self.add(path, exc.reason)
            return None
        problem = _label_problem(arr)
        if problem:
            self.add(path, problem)
            return None
        return arr.astype(np.int64)


def read_label_names(path: str | Path) -> dict[int, str]:
    """Read a ``labels.json``: a JSON object mapping label values (as strings) to names.

    Example file: ``{"0": "background", "1": "grey matter", "41": "right white matter"}``.

    Raises:
        DataError: unreadable JSON, not an object, keys that are no integers, names that are no
            non-empty strings, or one name for two values (every bad entry listed).
    """
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(path, "label-name file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(path, f"cannot parse the label names: {exc}") from exc
    if not isinstance(raw, dict) or not raw:
        raise DataError(path, 'label names must be a non-empty JSON object {"0": "background", ...}')
    names: dict[int, str] = {}
    problems: list[str] = []
    for key, name in raw.items():
        try:
            value = int(str(key).strip())
        except ValueError:
            problems.append(f"key {key!r} is not an integer label value")
            continue
        if not isinstance(name, str) or not name.strip():
            problems.append(f"label {key}: the name must be a non-empty string, got {name!r}")
            continue
        if value in names:
            problems.append(f"label {value} given twice")
            continue
        names[value] = name.strip()
    dup = sorted({n for n in names.values() if list(names.values()).count(n) > 1})
    problems += [f"name {n!r} used for several values" for n in dup]
    if problems:
        raise DataError(path, f"{len(problems)} bad label name entries", problems)
    return dict(sorted(names.items()))


def _natural(name: str) -> list[tuple[int, int | str]]:
    """Natural sort key: digit runs compare as numbers (``s9`` before ``s10``)."""
    return [(0, int(part)) if part.isdecimal() else (1, part) for part in re.split(r"(\d+)", name) if part]


def _images_from_folder(folder: Path, check: _Checker) -> list[tuple[Path, Path | None, str]]:
    try:
        names = sorted((n for n in os.listdir(folder) if is_volume_file(n) and (folder / n).is_file()),
                       key=_natural)
    except OSError as exc:
        check.add(folder, f"cannot list the image folder ({exc.strerror or exc})")
        return []
    if not names:
        check.add(folder, f"no image files ({', '.join(VOLUME_SUFFIXES)}) in the image folder")
    return [(folder / n, None, n) for n in names]


def _images_from_table(table: Path, check: _Checker) -> list[tuple[Path, Path | None, str]]:
    try:
        cols = read_columns(table, {"image": "image"}, group_col=None, optional={"label": "label"})
    except DataError as exc:
        check.problems += [f"{check.show(table)}: {exc.reason}", *exc.problems]
        return []
    out: list[tuple[Path, Path | None, str]] = []
    for line, image, label in zip(cols.lines, cols["image"], cols["label"]):
        if not image:
            check.add(table, f"line {line}: empty image path")
            continue
        escapes = [f"{what} {problem}" for what, value in (("image", image), ("label", label)) if value
                   for problem in [table_path(table.parent, value)[1]] if problem]
        if escapes:
            check.add(table, f"line {line}: {'; '.join(escapes)}")
            continue
        out.append((table.parent / image, table.parent / label if label else None, f"line {line}"))
    if not out and not cols["image"]:
        check.add(table, "the table lists no image")
    return out


def _same_file(a: Path, b: Path) -> bool:
    try:
        if os.path.samefile(a, b):
            return True
        return a.stat().st_size == b.stat().st_size and filecmp.cmp(a, b, shallow=False)
    except OSError:
        return False


def read_oneshot(
    atlas: str | Path,
    atlas_labels: str | Path,
    images: str | Path,
    eval_labels: str | Path | Mapping[str | Path, str | Path] | None = None,
    *,
    label_names: Mapping[int, str] | None = None,
    check_images: bool = False,
    atol: float = 1e-3,
) -> OneShotSet:
    """Read and validate one-shot data: an atlas with labels, images, optional evaluation labels.

    Args:
        atlas: the atlas image (NIfTI or MGH/MGZ, 2D or 3D).
        atlas_labels: its label map, on the same grid (integer values, at least two).
        images: a folder (every ``.nii .nii.gz .mgz .mgh`` file directly in it, in natural order
            of the names: ``s9`` before ``s10``) or a CSV table with a column ``image`` and an optional column ``label``
            (evaluation label maps); relative paths are relative to the table's folder.
        eval_labels: evaluation label maps: a folder holding ``<image file name>`` (or the same
            name with another volume suffix) for some images, or ``{image path: label path}``.
        label_names: ``{value: name}`` of the atlas's labels (e.g. from :func:`read_label_names`);
            its values must be exactly the atlas's.
        check_images: also decode every image (finds corrupt voxel data in an intact-looking
            file, NaN / Inf voxels); by default images are checked from their headers and file
            sizes only, label maps are always decoded.
        atol: tolerance on affine entries (atlas vs its labels, an image vs its labels).

    Returns:
        The :class:`OneShotSet`.

    Raises:
        DataError: every problem listed (see the module docstring), naming the files.

    Warns:
        AtlasInImagesWarning: the atlas is among the images (excluded).
    """
    atlas, atlas_labels, images = Path(atlas), Path(atlas_labels), Path(images)
    try:
        base = Path(os.path.commonpath([atlas.absolute(), images.absolute()]))
    except ValueError:
        base = Path.cwd()
    if base.is_file():
        base = base.parent
    check = _Checker(base, atol)

    # --- the atlas ---
    atlas_geo = check.geometry(atlas)
    labels_geo = check.geometry(atlas_labels)
    values: list[int] = []
    if atlas_geo is not None:
        try:
            read_image(atlas)  # one file: decode it to catch corrupt voxels
        except DataError as exc:
            check.add(atlas, exc.reason)
    if labels_geo is not None:
        if atlas_geo is not None:
            check.same_grid(atlas_labels, labels_geo, atlas, atlas_geo)
        arr = check.labels(atlas_labels)
        if arr is not None:
            values = sorted(int(v) for v in np.unique(arr))
            if len(values) < 2:
                check.add(atlas_labels, f"the atlas label map holds the single value {values[0]}; "
                                        "it needs background and at least one structure")
                values = []  # nothing to compare the evaluation labels with
    names: list[str] | None = None
    if label_names is not None and values:
        listed = {int(k): str(v) for k, v in label_names.items()}
        missing = sorted(set(values) - set(listed))
        extra = sorted(set(listed) - set(values))
        if missing:
            check.add(atlas_labels, f"label values {missing} have no name in the label names")
        if extra:
            check.add(atlas_labels, f"named label values {extra} are not in the atlas label map")
        if not missing:
            names = [listed[v] for v in values]
    atlas_dims = len(atlas_geo[0]) if atlas_geo is not None else None

    # --- the image list ---
    if images.is_dir():
        listed_images = _images_from_folder(images, check)
    elif images.is_file():
        listed_images = _images_from_table(images, check)
    else:
        check.add(images, "image folder or table not found")
        listed_images = []

    kept: list[Path] = []
    excluded: list[Path] = []
    labels_of: dict[Path, Path] = {}
    geometry: dict[Path, tuple[tuple[int, ...], np.ndarray]] = {}
    first_seen: dict[str, str] = {}
    by_name: dict[str, Path] = {}
    for path, label, where in listed_images:
        key = os.path.normcase(os.path.abspath(path))
        shown = check.show(path) if where.startswith("line") else where
        if key in first_seen:
            check.add(images if images.is_file() else path,
                      f"{where}: {shown} is listed twice (first: {first_seen[key]})")
            continue
        first_seen[key] = where
        if path.is_file() and atlas.is_file() and _same_file(path, atlas):
            warnings.warn(f"{check.show(path)} is the atlas {check.show(atlas)}; excluded from the images",
                          AtlasInImagesWarning, stacklevel=2)
            excluded.append(path)
            continue
        name = OneShotSet.name_of(path)
        if name in by_name:
            check.add(path, f"has the same name {name!r} as {check.show(by_name[name])}; image names must be unique")
            continue
        by_name[name] = path
        if where.startswith("line") and not path.exists():
            check.add(images, f"{where}: {shown}: file not found")
            continue
        geo = check.geometry(path)
        if geo is None:
            continue
        if atlas_dims is not None and len(geo[0]) != atlas_dims:
            atlas_shape = atlas_geo[0] if atlas_geo is not None else ""
            check.add(path, f"is {len(geo[0])}D {geo[0]} but the atlas is {atlas_dims}D {atlas_shape}")
            continue
        if check_images:
            try:
                read_image(path)
            except DataError as exc:
                check.add(path, exc.reason)
                continue
        geometry[path] = geo
        kept.append(path)
        if label is not None:
            labels_of[path] = label
    if listed_images and not kept and not check.problems:
        check.add(images, "no image left once the atlas is excluded")

    # --- evaluation labels ---
    if eval_labels is not None:
        _match_eval_labels(eval_labels, listed_images, kept, labels_of, check)
    for image, label in labels_of.items():
        geo = check.geometry(label)
        if geo is None:
            continue
        if image in geometry:
            check.same_grid(label, geo, image, geometry[image])
        arr = check.labels(label)
        if arr is not None and values:
            extra = sorted(set(np.unique(arr).tolist()) - set(values))
            if extra:
                check.add(label, f"label values {extra} are not in the atlas label map {values}")
    if check.problems:
        source = images if images.exists() else atlas.parent
        raise DataError(source, f"{len(check.problems)} problem(s) in the one-shot data", check.problems)
    return OneShotSet(atlas=atlas, atlas_labels=atlas_labels, images=kept,
                      eval_labels={p: labels_of[p] for p in kept if p in labels_of},
                      label_values=values, label_names=names, excluded=excluded)


def _match_eval_labels(
    eval_labels: str | Path | Mapping[str | Path, str | Path],
    listed: Sequence[tuple[Path, Path | None, str]],
    kept: Sequence[Path],
    labels_of: dict[Path, Path],
    check: _Checker,
) -> None:
    """Add the evaluation label maps of ``eval_labels`` (a folder or a mapping) to ``labels_of``."""
    by_key = {os.path.normcase(os.path.abspath(p)): p for p in kept}
    listed_keys = {os.path.normcase(os.path.abspath(p)) for p, _, _ in listed}
    if isinstance(eval_labels, Mapping):
        for image, label in eval_labels.items():
            key = os.path.normcase(os.path.abspath(image))
            if key not in listed_keys:
                check.add(Path(label), f"evaluation label map for {image}, which is not a listed image")
                continue
            _add_label(by_key.get(key), Path(label), labels_of, check)
        return
    folder = Path(eval_labels)
    if not folder.is_dir():
        check.add(folder, "evaluation label folder not found")
        return
    used: set[Path] = set()
    kept_set = set(kept)
    for image, _, _ in listed:  # every listed image claims its label map, kept or not
        exact = folder / image.name
        found = [exact] if exact.is_file() else find_volume(folder, OneShotSet.name_of(image))
        used.update(found)
        if image not in kept_set:  # refused (its problem is reported) or the atlas (excluded)
            continue
        if len(found) > 1:
            check.add(image, f"several evaluation label maps: {', '.join(check.show(p) for p in found)}")
        elif found:
            _add_label(image, found[0], labels_of, check)
    for name in sorted(os.listdir(folder)):
        path = folder / name
        if is_volume_file(name) and path not in used:
            check.add(path, "evaluation label map that matches no image")


def _add_label(image: Path | None, label: Path, labels_of: dict[Path, Path], check: _Checker) -> None:
    if image is None:  # a listed image that was refused (its own problem is reported) or excluded
        return
    if image in labels_of and os.path.abspath(labels_of[image]) != os.path.abspath(label):
        check.add(image, f"two evaluation label maps: {check.show(labels_of[image])} and {check.show(label)}")
        return
    labels_of[image] = label


# ---------------------------------------------------------------------------------- the layout


def _atlas_files(root: Path) -> tuple[list[Path], list[Path]]:
    return find_volume(root / "atlas", "image"), find_volume(root / "atlas", "labels")


def read_oneshot_folder(root: str | Path, check_images: bool = False, **_: Any) -> OneShotSet:
    """Read the one-shot layout folder (see the module docstring) with :func:`read_oneshot`.

    Args:
        root: the layout's root (``atlas/``, ``images/``, optional ``labels/`` and ``labels.json``).
        check_images: decode every image too.

    Returns:
        The :class:`OneShotSet` (label names from ``labels.json`` when present).

    Raises:
        DataError: a missing part of the layout (all listed), or any problem :func:`read_oneshot`
            finds.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "one-shot data folder not found")
    image, labels = _atlas_files(root)
    problems = []
    for what, found in (("image", image), ("labels", labels)):
        if not found:
            problems.append(f"atlas/{what}.nii.gz (or .nii, .mgz, .mgh): missing")
        elif len(found) > 1:
            problems.append(f"atlas/{what}: given twice ({', '.join(p.name for p in found)})")
    if not (root / "images").is_dir():
        problems.append("images/: missing (the folder of unlabelled images)")
    names: dict[int, str] | None = None
    if (root / LABELS_JSON).is_file():
        try:
            names = read_label_names(root / LABELS_JSON)
        except DataError as exc:
            problems += [f"{LABELS_JSON}: {exc.reason}", *exc.problems]
    if problems:
        raise DataError(root, "not a complete one-shot data folder", problems)
    eval_folder = root / "labels"
    try:
        return read_oneshot(image[0], labels[0], root / "images", eval_folder if eval_folder.is_dir() else None,
                            label_names=names, check_images=check_images)
    except DataError as exc:
        raise DataError(root, exc.reason, exc.problems) from None


def _detect(root: Path, **_: Any) -> bool:
    root = Path(root)
    if not (root / "images").is_dir():
        return False
    image, labels = _atlas_files(root)
    return bool(image) and bool(labels)


def _read(root: Path, check_images: bool = False, **_: Any) -> RecordSet[OneShotSet]:
    found = read_oneshot_folder(root, check_images=check_images)
    names = found.label_names if found.label_names is not None else [str(v) for v in found.label_values]
    return RecordSet([found], class_names=names)


register_layout(
    "oneshot", _detect, _read, kind=KIND, synth="oneshot", priority=10,
    description="one-shot atlas: atlas/{image,labels}.nii.gz, images/*.nii.gz, optional labels/<image name>, "
                "labels.json",
    tasks=("segmentation",),
)


# ---------------------------------------------------------------------------------- resampling


@dataclass(frozen=True)
class Grid:
    """A voxel grid in world space: spatial shape (2 or 3 axes) and 4x4 voxel-to-world affine."""

    shape: tuple[int, ...]
    affine: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        object.__setattr__(self, "affine", np.asarray(self.affine, dtype=np.float64))
        if len(self.shape) not in (2, 3) or self.affine.shape != (4, 4):
            raise ValueError(f"a grid needs 2 or 3 axes and a 4x4 affine, got {self.shape} and {self.affine.shape}")


def resized_grid(shape: Sequence[int], affine: np.ndarray, size: Sequence[int]) -> Grid:
    """The grid covering the same field of view as ``(shape, affine)`` with ``size`` voxels per axis.

    Voxel ``i`` of the new grid is centred on the old voxel coordinate ``(i + 0.5) * f - 0.5``
    with ``f = shape / size`` (the outer voxel faces coincide). A 2D grid keeps its slice axis.

    Args:
        shape: the spatial shape, ``(X, Y)`` or ``(X, Y, Z)``.
        affine: its 4x4 affine.
        size: the new spatial shape (as many axes as ``shape``).

    Returns:
        The new :class:`Grid`.
    """
    shape = tuple(int(s) for s in shape)
    size = tuple(int(s) for s in size)
    if len(size) != len(shape) or min(size) < 1:
        raise ValueError(f"size must give {len(shape)} positive sizes, got {size}")
    scale = np.eye(4)
    for axis, (old, new) in enumerate(zip(shape, size)):
        f = old / new
        scale[axis, axis] = f
        scale[axis, 3] = 0.5 * (f - 1.0)
    return Grid(size, np.asarray(affine, dtype=np.float64) @ scale)


def _voxel_map(src_affine: np.ndarray, dst_affine: np.ndarray, nd: int) -> np.ndarray:
    """``(nd + 1, nd + 1)`` matrix mapping destination voxel indices to source voxel indices."""
    full = np.linalg.solve(np.asarray(src_affine, dtype=np.float64), np.asarray(dst_affine, dtype=np.float64))
    keep = [0, 1, 3] if nd == 2 else [0, 1, 2, 3]  # 2D: the in-plane part; the slice axis is ignored
    return full[np.ix_(keep, keep)]


def _resample(array: np.ndarray, src_affine: np.ndarray, dst_shape: Sequence[int], dst_affine: np.ndarray,
              order: int, smooth: bool = False) -> np.ndarray | None:
    """``array`` sampled at the destination voxels (float64), or ``None`` for an identity (no-op)."""
    src_shape = _spatial(array.shape)
    out_shape = _spatial(dst_shape)
    if len(src_shape) != len(out_shape):
        raise ValueError(f"cannot resample a {len(src_shape)}D array {array.shape} onto a "
                         f"{len(out_shape)}D grid {tuple(dst_shape)}")
    nd = len(src_shape)
    data = np.asarray(array).reshape(src_shape)
    m = _voxel_map(src_affine, dst_affine, nd)
    if src_shape == out_shape and np.allclose(m, np.eye(nd + 1), rtol=0.0, atol=1e-6):
        return None
    data = data.astype(np.float64)
    if smooth:  # anti-aliasing: sigma (step - 1) / 2 along each source axis sampled more coarsely
        steps = np.linalg.norm(m[:nd, :nd], axis=1)
        sigma = np.maximum(0.0, (steps - 1.0) / 2.0)
        if sigma.max() > 0:
            data = ndimage.gaussian_filter(data, sigma, mode="nearest")
    return ndimage.affine_transform(data, m[:nd, :nd], offset=m[:nd, nd], output_shape=out_shape, order=order,
                                    mode="constant", cval=0.0, prefilter=order > 1)


def to_atlas_grid(image: np.ndarray, image_affine: np.ndarray, atlas_shape: Sequence[int], atlas_affine: np.ndarray,
                  order: int = 1, *, smooth: bool = False) -> np.ndarray:
    """Resample an image onto the atlas grid through the two voxel-to-world affines.

    Output voxel ``v`` takes the image's value at voxel ``inv(image_affine) @ atlas_affine @ v``
    (:func:`scipy.ndimage.affine_transform`, the interpolation nibabel's ``resample_from_to``
    uses); outside the image the value is 0. 2D images (``(X, Y)`` or ``(X, Y, 1)``) use the
    in-plane part of the mapping. When both grids are the same (shape equal, voxel mapping the
    identity within 1e-6) the image is returned unchanged (a float32 copy): no interpolation.

    Args:
        image: the image's spatial array, ``(X, Y)``, ``(X, Y, 1)`` or ``(X, Y, Z)``.
        image_affine: its 4x4 affine.
        atlas_shape: the atlas grid's shape (2D or 3D like the image).
        atlas_affine: the atlas grid's 4x4 affine.
        order: spline order (0 nearest, 1 linear, 3 cubic).
        smooth: Gaussian anti-aliasing before sampling onto a coarser grid (sigma ``(s - 1) / 2``
            image voxels per axis, ``s`` the atlas voxel step in image voxels).

    Returns:
        float32 array of shape ``atlas_shape``.
    """
    out = _resample(image, image_affine, atlas_shape, atlas_affine, order, smooth)
    result = np.asarray(image, dtype=np.float32).reshape(_spatial(np.shape(image))) if out is None else out
    return np.array(result, dtype=np.float32).reshape(tuple(int(s) for s in atlas_shape))


def to_image_grid(labels: np.ndarray, atlas_affine: np.ndarray, image_shape: Sequence[int],
                  image_affine: np.ndarray) -> np.ndarray:
    """Bring a label map from the atlas grid back onto an image's own grid, nearest neighbour.

    The label values are kept exactly (no interpolation between labels); outside the atlas grid
    the label is 0. Same grids: the labels are returned unchanged (a copy). Works between any two
    grids (the image's labels onto the atlas grid: swap the roles).

    Args:
        labels: integer label map on the atlas grid, ``(X, Y)``, ``(X, Y, 1)`` or ``(X, Y, Z)``.
        atlas_affine: the atlas grid's 4x4 affine.
        image_shape: the image's shape.
        image_affine: the image's 4x4 affine.

    Returns:
        Array of shape ``image_shape`` with ``labels``'s dtype.
    """
    labels = np.asarray(labels)
    out = _resample(labels, atlas_affine, image_shape, image_affine, order=0)
    result = labels.reshape(_spatial(labels.shape)) if out is None else np.rint(out)
    return np.array(result, dtype=labels.dtype).reshape(tuple(int(s) for s in image_shape))


def normalise_percentiles(x: np.ndarray, low: float = 1.0, high: float = 99.0) -> np.ndarray:
    """Scale intensities to [0, 1]: the ``low`` and ``high`` percentiles map to 0 and 1, then clip.

    When the two percentiles are equal (mostly-constant images, e.g. 99 % background), the
    minimum and maximum are used instead; a constant image gives zeros (never NaN).

    Args:
        x: any array.
        low: lower percentile in [0, 100).
        high: upper percentile in (low, 100].

    Returns:
        float32 array of ``x``'s shape in [0, 1].
    """
    if not 0.0 <= low < high <= 100.0:
        raise ValueError(f"need 0 <= low < high <= 100, got low={low}, high={high}")
    x = np.asarray(x, dtype=np.float32)
    if x.size == 0:
        return x.copy()
    lo, hi = (float(v) for v in np.percentile(x, [low, high]))
    if not hi > lo:
        lo, hi = float(x.min()), float(x.max())
    if not hi > lo:
        return np.zeros_like(x)
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


# ------------------------------------------------------------------------------------ datasets


def _read_spatial(path: Path, dims: int) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """A single-volume file as ``(spatial array, affine, stored spatial shape)``; 2D squeezed to (X, Y)."""
    arr, meta = read_image(path)
    if arr.shape[0] != 1:
        raise DataError(path, f"has {arr.shape[0]} volumes; a single image is expected")
    data = arr[0]
    stored = tuple(int(s) for s in data.shape)
    if dims == 2:
        if data.shape[2] != 1:
            raise DataError(path, f"a 2D image is expected, got shape {stored}")
        data = data[:, :, 0]
    affine = meta.get("affine")
    return data, (np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64)), stored


@dataclass
class _Atlas:
    image: torch.Tensor  # (1, *S) float32
    labels: torch.Tensor  # (*S) int64


class OneShotDataset(Dataset):
    """Images of a one-shot set on the (working) atlas grid, each paired with the atlas.

    Items: ``{"atlas": (1, *S) float32, "atlas_labels": (*S) int64, "image": (1, *S) float32,
    "name": str}`` plus ``"labels": (*S) int64`` when the image has an evaluation label map (so
    build a dataset from images that all have one, or none, for batching). Each image is decoded,
    scaled to [0, 1] (:func:`normalise_percentiles` on its own grid) and resampled onto ``grid``
    (:func:`to_atlas_grid`, linear, anti-aliased when the grid is coarser; labels nearest) on first
    access and then kept in memory (``cache``; :meth:`fill_cache` does all of them up front).

    Args:
        oneshot: the validated set.
        images: the images to serve (a subset of ``oneshot.images``).
        grid: the working grid (:meth:`OneShotDataModule.grid`).
        atlas_image: ``(1, *S)`` float32 atlas on ``grid``.
        atlas_labels: ``(*S)`` int64 atlas labels on ``grid``.
        percentiles: ``(low, high)`` for :func:`normalise_percentiles`, or ``None``: no scaling.
        cache: keep resampled items in memory.
        eval_labels: serve the images' evaluation labels (``False``: never read them).
    """

    def __init__(self, oneshot: OneShotSet, images: Sequence[Path], grid: Grid, atlas_image: torch.Tensor,
                 atlas_labels: torch.Tensor, percentiles: tuple[float, float] | None = (1.0, 99.0),
                 cache: bool = True, eval_labels: bool = True) -> None:
        self.oneshot = oneshot
        self.images = [Path(p) for p in images]
        self.grid = grid
        self.atlas = _Atlas(atlas_image, atlas_labels)
        self.percentiles = percentiles
        self.cache = bool(cache)
        self.eval_labels = bool(eval_labels)
        self._items: dict[int, dict[str, Any]] = {}

    def __len__(self) -> int:
        return len(self.images)

    @property
    def names(self) -> list[str]:
        """The images' names, in item order."""
        return [OneShotSet.name_of(p) for p in self.images]

    def _load(self, index: int) -> dict[str, Any]:
        path = self.images[index]
        dims = len(self.grid.shape)
        data, affine, _ = _read_spatial(path, dims)
        if self.percentiles is not None:
            data = normalise_percentiles(data, *self.percentiles)
        image = to_atlas_grid(data, affine, self.grid.shape, self.grid.affine, order=1, smooth=True)
        item: dict[str, Any] = {"image": torch.from_numpy(image)[None], "name": OneShotSet.name_of(path)}
        label_path = self.oneshot.eval_labels.get(path) if self.eval_labels else None
        if label_path is not None:
            lab, lab_affine, _ = _read_spatial(label_path, dims)
            on_grid = to_image_grid(lab.astype(np.int64), lab_affine, self.grid.shape, self.grid.affine)
            item["labels"] = torch.from_numpy(on_grid)
        return item

    def fill_cache(self) -> None:
        """Decode and resample every image not cached yet."""
        for i in range(len(self)):
            if i not in self._items:
                self._items[i] = self._load(i)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        item = self._items.get(index)
        if item is None:
            item = self._load(index)
            if self.cache:
                self._items[index] = item
        return {"atlas": self.atlas.image, "atlas_labels": self.atlas.labels, **item}


# ---------------------------------------------------------------------------------- DataModule


def _size_tuple(size: int | Sequence[int] | None, shape: tuple[int, ...]) -> tuple[int, ...] | None:
    if size is None:
        return None
    if isinstance(size, int):
        longest = max(shape)
        return tuple(max(1, round(s * size / longest)) for s in shape)
    out = tuple(int(s) for s in size)
    if len(out) != len(shape):
        raise ValueError(f"size {out} has {len(out)} axes; the atlas is {len(shape)}D {shape}")
    return out


class OneShotDataModule(SplitDataModule[OneShotDataset]):
    """One-shot atlas data as a DataModule: atlas + unlabelled images for training, labelled ones to evaluate.

    Source: ``root``, a folder in the one-shot layout (:func:`read_oneshot_folder`), or the
    explicit ``atlas``, ``atlas_labels``, ``images`` (a folder or a CSV table) and optional
    ``eval_labels`` of :func:`read_oneshot` (then ``root`` may be omitted).

    Splits (deterministic): **train** is every image without an evaluation label map
    (``num_train`` of them drawn with ``label_seed`` when given); the images with one are split
    into **val** (``val_fraction`` of them, seed ``split_seed``; at least one when there are two
    or more) and **test** (the rest). Batches: see :class:`OneShotDataset` (``"labels"`` in val
    and test batches only).

    The working grid is the atlas grid, or with ``size`` the atlas grid resampled to ``size``
    voxels (an int: the longest axis, keeping the aspect ratio; a tuple: every axis) over the same
    field of view (:func:`resized_grid`). Predictions made on it go back to an image's own grid
    with :meth:`labels_to_image` (nearest neighbour); evaluate and write them there.

    Args:
        root: the layout folder (``None`` with the explicit arguments).
        atlas: the atlas image (instead of ``root``).
        atlas_labels: its label map.
        images: folder or CSV table of images.
        eval_labels: folder of evaluation label maps (same file names as the images).
        size: working grid size (``None``: the atlas grid).
        percentiles: intensity scaling percentiles (``None``: none).
        batch_size: per-process batch size.
        num_workers: data-loader worker processes.
        val_fraction: fraction of the evaluation-labelled images used for validation, in [0, 1).
        num_train: number of unlabelled training images (``None``: all).
        split_seed: seed of the validation split and of the training order.
        label_seed: seed of the ``num_train`` subset.
        cache: keep decoded, resampled images in memory.
        drop_last: drop the last incomplete training batch (default: no).
        check_images: decode every image when reading (else headers only).

    Raises:
        ValueError: neither ``root`` nor ``atlas``/``atlas_labels``/``images``, or bad arguments.
    """

    layout_kind = "oneshot"

    no_test_reason = ("no image has an evaluation label map (root/labels/<image file name>, or a 'label' "
                      "column in the image table)")

    def __init__(
        self,
        root: str | None = None,
        atlas: str | None = None,
        atlas_labels: str | None = None,
        images: str | None = None,
        eval_labels: str | None = None,
        size: int | tuple[int, ...] | None = None,
        percentiles: tuple[float, float] | None = (1.0, 99.0),
        batch_size: int = 4,
        num_workers: int = 0,
        val_fraction: float = 0.2,
        num_train: int | None = None,
        split_seed: int = 0,
        label_seed: int = 0,
        cache: bool = True,
        drop_last: bool | None = None,
        check_images: bool = False,
    ) -> None:
        explicit = (atlas, atlas_labels, images)
        if root is None and any(a is None for a in explicit):
            raise ValueError("give root (a one-shot layout folder) or atlas, atlas_labels and images")
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if percentiles is not None:
            normalise_percentiles(np.zeros(1), *percentiles)  # checks the pair
        super().__init__(root if root is not None else images)
        self.save_hyperparameters()
        self._set: OneShotSet | None = None
        self._splits: dict[str, list[Path]] | None = None
        self._grid: Grid | None = None
        self._atlas: _Atlas | None = None
        self._grids: dict[str, Grid] = {}

    # --- reading ---

    def layout_sources(self) -> list[LayoutSource]:
        """``root`` in the ``oneshot`` layout; none for the explicit ``atlas`` / ``images`` form.

        The explicit files are read by :func:`read_oneshot`, not through the layout registry (their
        folder is no ``oneshot`` layout); that reader checks them when the data is first read.
        """
        return super().layout_sources() if self.hparams.root is not None else []

    @property
    def oneshot(self) -> OneShotSet:
        """The validated :class:`OneShotSet` (read once)."""
        if self._set is None:
            h = self.hparams
            if h.atlas is not None:
                self._set = read_oneshot(h.atlas, h.atlas_labels, h.images, h.eval_labels,
                                         check_images=h.check_images)
            else:
                self._set = read_oneshot_folder(h.root, check_images=h.check_images)
        return self._set

    @property
    def splits(self) -> dict[str, list[Path]]:
        """``{"train", "val", "test"}`` -> image paths (reads headers only)."""
        if self._splits is None:
            h = self.hparams
            s = self.oneshot
            train = s.unlabelled
            if h.num_train is not None:
                train = subsample(train, h.num_train, h.label_seed)
            if not train:
                raise DataError(self._where(), "no unlabelled training images (every image has an evaluation "
                                               "label map)")
            test, val = group_split(s.labelled, h.val_fraction, h.split_seed, key=str, name="val_fraction")
            self._splits = {"train": train, "val": val, "test": test}
        return self._splits

    def _prepare_atlas(self) -> tuple[Grid, _Atlas]:
        if self._grid is None or self._atlas is None:
            s = self.oneshot
            probe, _ = image_geometry(s.atlas)
            dims = len(_spatial(probe))
            image, affine, stored = _read_spatial(s.atlas, dims)
            labels, _, _ = _read_spatial(s.atlas_labels, dims)
            own = Grid(stored[:dims], affine)
            size = _size_tuple(self.hparams.size, own.shape)
            grid = own if size is None or size == own.shape else resized_grid(own.shape, own.affine, size)
            if self.hparams.percentiles is not None:
                image = normalise_percentiles(image, *self.hparams.percentiles)
            on_grid = to_atlas_grid(image, own.affine, grid.shape, grid.affine, order=1, smooth=True)
            label_grid = to_image_grid(labels.astype(np.int64), own.affine, grid.shape, grid.affine)
            self._grid = grid
            self._atlas = _Atlas(torch.from_numpy(on_grid)[None], torch.from_numpy(label_grid))
        return self._grid, self._atlas

    @property
    def grid(self) -> Grid:
        """The working grid (the atlas grid, or its resized version with ``size``); decodes the atlas."""
        return self._prepare_atlas()[0]

    @property
    def atlas(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(image (1, *S) float32, labels (*S) int64)`` of the atlas on the working grid."""
        atlas = self._prepare_atlas()[1]
        return atlas.image, atlas.labels

    @property
    def label_values(self) -> list[int]:
        """The atlas's label values, sorted."""
        return list(self.oneshot.label_values)

    @property
    def class_names(self) -> list[str]:
        """Names of :attr:`label_values` (``labels.json``), else the values as strings."""
        s = self.oneshot
        return list(s.label_names) if s.label_names is not None else [str(v) for v in s.label_values]

    def data_info(self) -> DataInfo:
        """Training images, label values and names, the working grid's size, one channel."""
        values = self.label_values
        return DataInfo(n_train=len(self.splits["train"]), num_classes=len(values), class_names=self.class_names,
                        input_size=self.grid.shape, in_channels=1, label_values=values)

    # --- back to the images' own grids ---

    def image_grid(self, name: str) -> Grid:
        """The own grid (spatial shape as stored, 2D: ``(X, Y)``; affine) of the image called ``name``."""
        if name not in self._grids:
            matches = [p for p in self.oneshot.images if OneShotSet.name_of(p) == name]
            if not matches:
                raise KeyError(f"no image called {name!r}")
            shape, affine = image_geometry(matches[0])
            self._grids[name] = Grid(_spatial(shape)[: len(self.grid.shape)], affine)
        return self._grids[name]

    def labels_to_image(self, name: str, labels: np.ndarray | torch.Tensor) -> np.ndarray:
        """Labels predicted on the working grid, brought onto image ``name``'s own grid (nearest neighbour).

        Args:
            name: the image's name (the ``"name"`` of its item).
            labels: ``(*S)`` integer labels on :attr:`grid`.

        Returns:
            The labels on the image's voxels (shape :meth:`image_grid`'s), values unchanged. Write
            them with ``write_image(path, out[None] (2D: out[None, ..., None]), {"affine": affine})``.
        """
        arr = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
        target = self.image_grid(name)
        return to_image_grid(arr, self.grid.affine, target.shape, target.affine)

    # --- datasets ---

    def _dataset(self, images: Sequence[Path], eval_labels: bool = True) -> OneShotDataset:
        grid, atlas = self._prepare_atlas()
        return OneShotDataset(self.oneshot, images, grid, atlas.image, atlas.labels,
                              percentiles=self.hparams.percentiles, cache=self.hparams.cache,
                              eval_labels=eval_labels)

    def setup(self, stage: str | None = None) -> None:
        """Read the data once and build the sets a stage needs (idempotent).

        ``predict`` serves every image of the set (labelled or not; evaluation labels are not read),
        so a checkpoint labels any folder of images without training on it.
        """
        if stage == "predict":
            if self.predict_set is None:
                self.predict_set = self._dataset(self.oneshot.images, eval_labels=False)
            return
        splits = self.splits
        if stage in (None, "fit", "validate") and self.train_set is None:
            self.train_set = self._dataset(splits["train"])
            self.val_set = self._dataset(splits["val"]) if splits["val"] else None
        if stage in (None, "test", "predict") and self.test_set is None and splits["test"]:
            self.test_set = self._dataset(splits["test"])
