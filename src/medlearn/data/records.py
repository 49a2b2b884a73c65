"""The records every dataset layout reads into, and finding image files on disk.

This module owns the generic record types (:class:`ImageRecord` for radiographs, with optional
multi-hot labels; :class:`LabelledImage` for single-label 2D images), the image file suffixes
medlearn accepts, and the helpers that find image files: a recursive listing of an unlabeled
folder (:func:`list_image_files`) and the lookup of a table entry in an image folder
(:func:`index_images`, :func:`resolve_image`). It knows no dataset: the layout readers
(:mod:`medlearn.data.chestxray14`, :mod:`medlearn.data.isic2018` ...) build these records, and
the datasets and DataModules consume them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medlearn.io.errors import DataError

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageRecord",
    "LabelledImage",
    "has_image_files",
    "index_images",
    "list_image_files",
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
