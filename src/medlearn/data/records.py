"""The records every dataset layout reads into, and finding image files on disk.

This module owns the generic record types (:class:`ImageRecord` for radiographs, with optional
multi-hot labels; :class:`LabelledImage` for single-label 2D images), the image file suffixes
medlearn accepts, and the helpers that find image files: a recursive listing of an unlabeled
folder (:func:`list_image_files`) and the lookup of a table entry in an image folder
(:func:`index_images`, :func:`resolve_image`); :class:`MaskedImage` for 2D images with a label mask
(and :class:`DecodedMaskedImage` for a pair that its layout decodes itself: a slice of a volume, a
DICOM with contour annotations); and for 3D data :class:`VolumeRecord` (a volume or
co-registered modalities, with optional label and mask) and the NIfTI name helpers
(:func:`is_nifti`, :func:`nifti_stem`). It knows no dataset: the layout readers
(:mod:`medlearn.data.chestxray14`, :mod:`medlearn.data.isic2018` ...) build these records, and
the datasets and DataModules consume them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from medlearn.io.errors import DataError

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageRecord",
    "LabelledImage",
    "DecodedMaskedImage",
    "MaskSource",
    "MaskedImage",
    "VolumeRecord",
    "has_image_files",
    "index_images",
    "is_nifti",
    "list_image_files",
    "nifti_stem",
    "resolve_image",
]

#: File suffixes of 2D images medlearn reads (lower case); :func:`list_image_files` accepts these.
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm", ".bmp"})


@dataclass
class ImageRecord:
    """One radiograph of a dataset.

    Attributes:
        path: the image file.
        labels: ``(n_classes,)`` float32 multi-hot over the chosen classes, or None if unlabeled.
        patient: patient identifier (``"1"`` for ChestX-ray14 patient 00000001); splits group by it.
        name: the image's name in the dataset tables (``00000001_000.png``).
    """

    path: Path
    labels: np.ndarray | None
    patient: str
    name: str


@dataclass
class LabelledImage:
    """One labelled image.

    Attributes:
        path: the image file.
        label: 0-based class index.
        group: grouping key (lesion, patient); images of one group never straddle a split.
        name: the image's name in its table.
        split: ``"train"``, ``"val"``, ``"test"`` when the table fixes it, else ``""``.
    """

    path: Path
    label: int
    group: str
    name: str
    split: str = ""


@runtime_checkable
class MaskSource(Protocol):
    """A label mask that is not one file of label values, decoded by its layout.

    A layout whose masks need decoding of their own (REFUGE's 0 / 128 / 255 encoding mapped to
    0 / 1 / 2, Drishti-GS's two soft maps binarised and combined) gives its records an object
    with ``load() -> (H, W) int64 labels`` (raising :class:`~medlearn.io.errors.DataError` naming
    the file and the reason) and a ``__str__`` naming the file(s), instead of a path.
    """

    def load(self) -> np.ndarray:
        """The ``(H, W)`` int64 label map."""


@dataclass
class MaskedImage:
    """One 2D image with its segmentation mask.

    Attributes:
        path: the image file.
        mask: the label mask file (same size as the image), or a :class:`MaskSource` that decodes
            its layout's masks.
        group: grouping key (patient, eye, video); images of one group never straddle a split.
        name: the image's entry in its table.
        split: ``"train"``, ``"val"``, ``"test"`` when the table fixes it, else ``""``.
        domain: the acquisition domain (centre, device, dataset), ``""`` when unknown.
    """

    path: Path
    mask: Path | MaskSource
    group: str
    name: str
    split: str = ""
    domain: str = ""


@dataclass
class DecodedMaskedImage(MaskedImage):
    """A 2D image and its mask that are not two plain 2D files, decoded by their layout.

    A slice of a CT or MR volume (KiTS19, ACDC) or a mammogram whose mask is rasterised from contour
    annotations (INbreast) is one such pair: ``path`` and ``mask`` name the files it is read from,
    ``name`` the pair itself (``case_00000/slice_0123``). A layout module subclasses this record and
    implements :meth:`read_pair`; :class:`~medlearn.data.segmentation2d.ImageMaskDataset` calls it
    instead of decoding ``path`` and ``mask`` as 2D files, so these pairs go through the same 2D
    segmentation path (resizing, label checks, cache, splits by ``group``). (A layout whose image is
    a plain 2D file and only the mask needs decoding gives a :class:`MaskSource` as ``mask`` instead.)
    """

    mask: Path  # the file the mask is read from (never a MaskSource: read_pair decodes it)

    def read_pair(self) -> tuple[np.ndarray, np.ndarray]:
        """Decode the pair.

        Returns:
            ``(image (C, H, W) float32 in [0, 1], mask (H, W) int64 stored label values)``.

        Raises:
            DataError: naming the file and the pair when it cannot be decoded.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement read_pair")


def list_image_files(root: str | Path) -> list[Path]:
    """List the image files of an unlabeled folder, recursively.

    Hidden files and folders (names starting with ``.``, e.g. macOS ``._x.png`` forks) are skipped.

    Args:
        root: the folder.

    Returns:
        Sorted paths of every file whose suffix (any case) is in :data:`IMAGE_SUFFIXES`.

    Raises:
        DataError: if ``root`` is not a folder or holds no image file.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "image folder not found")
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found.extend(
            Path(dirpath) / f
            for f in filenames
            if not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_SUFFIXES
        )
    if not found:
        raise DataError(root, f"no image files found (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return sorted(found)


def has_image_files(root: str | Path) -> bool:
    """Whether ``root`` is a folder holding at least one image file (recursively; stops at the first)."""
    root = Path(root)
    if not root.is_dir():
        return False
    for _, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        if any(not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_SUFFIXES for f in filenames):
            return True
    return False


def index_images(folder: Path) -> dict[str, Path]:
    """Map file name and file stem -> path for the image files directly in ``folder`` (one scan)."""
    index: dict[str, Path] = {}
    try:
        it = os.scandir(folder)
    except OSError:
        return index
    with it:
        for e in it:
            if e.name.startswith(".") or os.path.splitext(e.name)[1].lower() not in IMAGE_SUFFIXES:
                continue
            if e.is_file():
                p = folder / e.name
                index.setdefault(e.name, p)
                index.setdefault(os.path.splitext(e.name)[0], p)
    return index


def resolve_image(value: str, folder: Path, index: dict[str, Path]) -> Path | None:
    """The file a table's ``image`` entry names: a name in ``folder`` (suffix optional) or a relative path."""
    if value in index:
        return index[value]
    p = Path(value)
    if not p.is_absolute():
        p = folder / p
    if p.is_file():
        return p
    if not p.suffix or p.suffix.lower() not in IMAGE_SUFFIXES:
        for s in sorted(IMAGE_SUFFIXES):
            for cand in (p.with_name(p.name + s), p.with_name(p.name + s.upper())):
                if cand.is_file():
                    return cand
    return None


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
            self.case = nifti_stem(self.files[0].name)

    @property
    def files(self) -> list[Path]:
        """The image files in channel order."""
        if self.path is not None:
            return [self.path]
        assert self.paths is not None  # __post_init__: exactly one of path and paths
        return list(self.paths.values())

    @property
    def modalities(self) -> list[str]:
        """Modality names in channel order (``["image"]`` for a single-modal record)."""
        return ["image"] if self.paths is None else list(self.paths)


def is_nifti(name: str) -> bool:
    """Whether a file name is a visible NIfTI file (``.nii`` or ``.nii.gz``, any case)."""
    low = name.lower()
    return not name.startswith(".") and low.endswith((".nii", ".nii.gz"))


def nifti_stem(name: str) -> str:
    """A file name without its ``.nii`` / ``.nii.gz`` suffix (any case)."""
    low = name.lower()
    for ext in (".nii.gz", ".nii"):
        if low.endswith(ext):
            return name[: -len(ext)]
    return name
