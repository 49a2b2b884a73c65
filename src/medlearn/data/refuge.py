"""Reader for the REFUGE layout (optic disc and cup segmentation of colour fundus photographs).

REFUGE (Orlando et al., "REFUGE Challenge: A unified framework for evaluating automated methods
for glaucoma assessment from fundus photographs", MedIA 2020; MICCAI 2018) ships 1200 photographs
from two cameras with disc / cup masks::

    root/Training400/Glaucoma/g0001.jpg ... g0040.jpg                 Zeiss Visucam 500, 2124 x 2056
    root/Training400/Non-Glaucoma/n0001.jpg ... n0360.jpg
    root/Annotation-Training400/Disc_Cup_Masks/Glaucoma/g0001.bmp ...  (and Non-Glaucoma/)
    root/REFUGE-Validation400/V0001.jpg ... V0400.jpg                  Canon CR-2, 1634 x 1634
    root/REFUGE-Validation400-GT/Disc_Cup_Masks/V0001.bmp ...
    root/Test400/T0001.jpg ... T0400.jpg                               Canon CR-2
    root/REFUGE-Test-GT/Disc_Cup_Masks/G/T0001.bmp ... (and N/)

(Copies that unpack a part into a folder of the same name, e.g.
``REFUGE-Validation400/REFUGE-Validation400/V0001.jpg``, are read too.)

Masks are single-channel 8-bit BMPs: 255 = background, 128 = optic disc rim, 0 = optic cup (the
disc includes the cup). Records carry a :class:`RefugeMask` that decodes them to the labels
medlearn scores (:data:`~medlearn.metrics.segmentation.OPTIC_DISC_CUP`): 0 background, 1 rim,
2 cup (:data:`REFUGE_VALUE_MAP`). A mask holding any other value is a
:class:`~medlearn.io.errors.DataError` naming the file and the values (``mask_rule="exact"``,
the default); ``mask_rule="threshold"`` instead reads disc = value <= 150 and cup = value <= 100
(the rule of ``bob.ip.binseg``'s REFUGE loader), for re-encoded masks with soft edges.
``train_masks`` reads the training masks from another folder of the same structure (a
corrupted copy written by ``medlearn corrupt-masks``, for a label-noise study on the real data).

Records: ``split`` train / val / test for Training400 / Validation400 / Test400 (the challenge's
parts), ``domain`` the camera (:data:`REFUGE_DOMAINS`: ``"zeiss"`` for Training400, ``"canon"``
for the others; the usual domain-shift protocol trains on Zeiss and adapts to Canon), ``group``
the image stem, ``name`` the image's path relative to the root. A part whose image folder or
mask folder is absent is not read (REFUGE's validation and test masks came out after the
challenge); an image without its mask, or a mask without its image, is a ``DataError`` listing
every one. Registered as layout ``"refuge"`` (kind ``segmentation2d``): ``ImageMaskDataModule(root,
layout="refuge")`` reads it; ``medlearn synth fundus`` writes two-camera phantoms in this layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medlearn.data.decode import load_mask, relabel_mask
from medlearn.data.layouts import RecordSet, register_layout
from medlearn.data.records import MaskedImage
from medlearn.io.errors import DataError

__all__ = ["REFUGE_VALUE_MAP", "REFUGE_DOMAINS", "REFUGE_PARTS", "RefugeMask", "read_refuge", "refuge_mask_path",
           "MASK_RULES"]

#: Stored mask value -> label (0 background, 1 rim, 2 cup).
REFUGE_VALUE_MAP: dict[int, int] = {255: 0, 128: 1, 0: 2}
#: Camera of each part.
REFUGE_DOMAINS: dict[str, str] = {"train": "zeiss", "val": "canon", "test": "canon"}
#: ``split -> (image folder, mask folder)`` relative to the root.
REFUGE_PARTS: dict[str, tuple[str, str]] = {
    "train": ("Training400", "Annotation-Training400/Disc_Cup_Masks"),
    "val": ("REFUGE-Validation400", "REFUGE-Validation400-GT/Disc_Cup_Masks"),
    "test": ("Test400", "REFUGE-Test-GT/Disc_Cup_Masks"),
}
MASK_RULES = ("exact", "threshold")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class RefugeMask:
    """A REFUGE mask file, decoded to labels 0 background / 1 rim / 2 cup.

    Attributes:
        path: the BMP.
        rule: ``"exact"`` (values 0 / 128 / 255 only) or ``"threshold"`` (disc <= 150, cup <= 100).
    """

    path: Path
    rule: str = "exact"

    def load(self) -> np.ndarray:
        """``(H, W)`` int64 labels.

        Raises:
            DataError: naming the file: unreadable, not one channel, or (``"exact"``) values other
                than 0, 128 and 255 (with their pixel counts).
        """
        stored = load_mask(self.path)
        if self.rule == "exact":
            return relabel_mask(stored, self.path, REFUGE_VALUE_MAP)
        labels = np.zeros(stored.shape, dtype=np.int64)
        labels[stored <= 150] = 1
        labels[stored <= 100] = 2
        return labels

    def __str__(self) -> str:
        return str(self.path)


def _part_root(root: Path, folder: str) -> Path:
    nested = root / folder / Path(folder).name
    return nested if nested.is_dir() else root / folder


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")
                  and p.suffix.lower() in _IMAGE_SUFFIXES)


def refuge_mask_path(root: str | Path, split: str, image: str | Path, masks: str | Path | None = None) -> Path:
    """Where REFUGE keeps the mask of ``image`` (a path under the part's image folder, or its name).

    Training: ``Annotation-Training400/Disc_Cup_Masks/<Glaucoma|Non-Glaucoma>/<stem>.bmp``;
    validation: ``REFUGE-Validation400-GT/Disc_Cup_Masks/<stem>.bmp``; test:
    ``REFUGE-Test-GT/Disc_Cup_Masks/<G|N>/<stem>.bmp`` (the sub-folder that holds it; ``G`` when none does).
    ``masks`` replaces the part's mask folder (e.g. a corrupted copy of the training masks).
    """
    root, image = Path(root), Path(image)
    masks = Path(masks) if masks is not None else root / REFUGE_PARTS[split][1]
    stem = image.stem
    if split == "train":
        sub = "Glaucoma" if image.parent.name == "Glaucoma" or stem.startswith("g") else "Non-Glaucoma"
        return masks / sub / f"{stem}.bmp"
    if split == "test":
        for sub in ("G", "N"):
            if (masks / sub / f"{stem}.bmp").is_file():
                return masks / sub / f"{stem}.bmp"
        return masks / "G" / f"{stem}.bmp"
    return masks / f"{stem}.bmp"


def read_refuge(root: str | Path, splits: tuple[str, ...] = ("train", "val", "test"), mask_rule: str = "exact",
                check_files: bool = True, train_masks: str | Path | None = None) -> list[MaskedImage]:
    """Read a REFUGE folder (see the module docstring).

    Args:
        root: the dataset folder.
        splits: parts to read (``"train"``, ``"val"``, ``"test"``); a part whose image or mask
            folder is absent is skipped.
        mask_rule: ``"exact"`` or ``"threshold"`` (see :class:`RefugeMask`).
        check_files: pair every image with its mask and every mask with its image.
        train_masks: a folder used instead of ``Annotation-Training400/Disc_Cup_Masks`` (same
            ``Glaucoma`` / ``Non-Glaucoma`` structure), e.g. the output of ``medlearn
            corrupt-masks`` (relative paths are relative to ``root``).

    Returns:
        Records in part order (train, val, test), each part sorted by path.

    Raises:
        DataError: no part found; images without masks or masks without images (every one listed).
        ValueError: an unknown split or mask rule.
    """
    if mask_rule not in MASK_RULES:
        raise ValueError(f"mask_rule must be one of {MASK_RULES}, got {mask_rule!r}")
    root = Path(root)
    records: list[MaskedImage] = []
    problems: list[str] = []
    found_any = False
    for split in splits:
        if split not in REFUGE_PARTS:
            raise ValueError(f"unknown REFUGE split {split!r} (train, val, test)")
        img_dir = _part_root(root, REFUGE_PARTS[split][0])
        mask_dir = root / REFUGE_PARTS[split][1] if split != "train" or train_masks is None else root / train_masks
        if not img_dir.is_dir() or not mask_dir.is_dir():
            continue
        found_any = True
        images = _images(img_dir)
        paired: set[Path] = set()
        for img in images:
            mask = refuge_mask_path(root, split, img, mask_dir)
            if check_files and not mask.is_file():
                problems.append(f"{img}: no mask (expected {mask})")
                continue
            paired.add(mask.resolve())
            name = img.relative_to(root).as_posix()
            records.append(MaskedImage(img, RefugeMask(mask, mask_rule), img.stem, name, split, REFUGE_DOMAINS[split]))
        if check_files:
            for mask in sorted(mask_dir.rglob("*.bmp")):
                if mask.resolve() not in paired:
                    problems.append(f"{mask}: mask without an image in {img_dir}")
    if not found_any:
        raise DataError(root, "not a REFUGE folder: none of Training400 + Annotation-Training400, "
                              "REFUGE-Validation400 + REFUGE-Validation400-GT, Test400 + REFUGE-Test-GT found")
    if problems:
        raise DataError(root, f"{len(problems)} unpaired images or masks", problems)
    if not records:
        raise DataError(root, "the REFUGE folders hold no images")
    return records


def _detect(root: Path, **_: Any) -> bool:
    root = Path(root)
    return any(_part_root(root, img).is_dir() and (root / masks).is_dir() for img, masks in REFUGE_PARTS.values())


def _read(root: Path, mask_rule: str = "exact", check_files: bool = True, train_masks: str | None = None,
          **_: Any) -> RecordSet[MaskedImage]:
    return RecordSet(read_refuge(root, mask_rule=mask_rule, check_files=check_files, train_masks=train_masks))


register_layout(
    "refuge", _detect, _read, kind="segmentation2d", priority=20, synth="fundus",
    description="REFUGE: Training400 (Zeiss), REFUGE-Validation400 and Test400 (Canon) with Disc_Cup_Masks BMPs "
                "(255 background, 128 rim, 0 cup -> labels 0 / 1 / 2); domain = camera",
    tasks=("segmentation",), label_values=(0, 1, 2), label_names=("background", "rim", "cup"),
)
