r"""Reader for the Drishti-GS1 layout (optic disc and cup, soft maps of four experts).

Drishti-GS1 (Sivaswamy et al., "Drishti-GS: Retinal image dataset for optic nerve head (ONH)
segmentation", ISBI 2014; Aravind Eye Hospital) ships 101 colour fundus PNGs, 50 for training and
51 for testing, of varying size (about 1750-1850 x 2045-2470, height x width)::

    root/Drishti-GS1_files/Training/Images/drishtiGS_002.png ...
    root/Drishti-GS1_files/Training/GT/drishtiGS_002/SoftMap/drishtiGS_002_ODsegSoftmap.png
    root/Drishti-GS1_files/Training/GT/drishtiGS_002/SoftMap/drishtiGS_002_cupsegSoftmap.png
    root/Drishti-GS1_files/Test/Images/drishtiGS_001.png ...
    root/Drishti-GS1_files/Test/Test_GT/drishtiGS_001/SoftMap/...      (or Test/GT/, as Training)

(``root`` may also be the ``Drishti-GS1_files`` folder itself.) Each soft map's grey level is the
fraction of the four experts who marked the pixel (0 = none, 255 = all). A binary mask needs a
rule (:data:`BINARIZE_RULES`): ``"majority"`` (at least half of the experts, the default: the
common middle ground), ``"all"`` (value > 254, as ``bob.ip.binseg``'s ``-all`` protocols),
``"any"`` (value > 0), or a number in (0, 1] (fraction of the full scale). Records carry a
:class:`DrishtiMask` that binarises both maps and combines them into the labels medlearn scores:
0 background, 1 rim (disc outside the cup), 2 cup (a cup pixel outside the disc counts as cup, so
the disc region {1, 2} always contains the cup).

Records: ``split`` train / test, ``domain`` ``"drishti"``, ``group`` the image stem, ``name`` its
path relative to the root. A part without its GT folder is skipped; an image without both soft
maps, or soft maps of another size than each other, are :class:`~medlearn.io.errors.DataError`\\ s
(the reader lists every image missing a map; sizes are checked when masks are decoded, against
the image too). Registered as layout ``"drishti"`` (kind ``segmentation2d``); ``medlearn synth
drishti`` writes phantoms in this layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medlearn.data.decode import load_image
from medlearn.data.layouts import RecordSet, register_layout
from medlearn.data.records import MaskedImage
from medlearn.io.errors import DataError

__all__ = ["BINARIZE_RULES", "DRISHTI_DOMAIN", "DrishtiMask", "binarize_softmap", "read_drishti",
           "drishti_softmap_paths"]

#: Named binarisation rules -> minimum fraction of the full scale (``"any"``: anything above 0).
BINARIZE_RULES: dict[str, float] = {"majority": 0.5, "all": 1.0, "any": 0.0}
DRISHTI_DOMAIN = "drishti"
_FILES = "Drishti-GS1_files"
_GT = {"train": ("Training", ("GT",)), "test": ("Test", ("Test_GT", "GT"))}


def _threshold(rule: str | float) -> float:
    if isinstance(rule, str):
        if rule not in BINARIZE_RULES:
            try:
                rule = float(rule)
            except ValueError:
                raise ValueError(f"binarize must be one of {sorted(BINARIZE_RULES)} or a number in (0, 1], "
                                 f"got {rule!r}") from None
        else:
            return BINARIZE_RULES[rule]
    if not 0.0 < float(rule) <= 1.0:
        raise ValueError(f"a numeric binarize threshold must be in (0, 1], got {rule}")
    return float(rule)


def binarize_softmap(fraction: np.ndarray, rule: str | float = "majority") -> np.ndarray:
    """Binary mask of a soft map given as fractions of the full scale in [0, 1].

    Half a grey level of tolerance (``0.5 / 255``) absorbs the rounding of ``k / 4`` to 8 bits, so
    two experts of four (stored 127 or 128) are a majority.

    Examples:
        >>> v = np.array([0, 1, 63, 64, 127, 128, 191, 254, 255]) / 255
        >>> [binarize_softmap(v, r).astype(int).tolist() for r in ("any", "majority", "all")]
        [[0, 1, 1, 1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0, 0, 0, 1]]
    """
    t = _threshold(rule)
    tol = 0.5 / 255.0
    f = np.asarray(fraction, dtype=np.float64)
    return f > tol if t == 0.0 else f >= t - tol


@dataclass(frozen=True)
class DrishtiMask:
    """The two soft maps of a Drishti-GS image, decoded to labels 0 background / 1 rim / 2 cup.

    Attributes:
        disc: the ``_ODsegSoftmap.png``.
        cup: the ``_cupsegSoftmap.png``.
        rule: the binarisation rule (see :func:`binarize_softmap`).
    """

    disc: Path
    cup: Path
    rule: str | float = "majority"

    def load(self) -> np.ndarray:
        """``(H, W)`` int64 labels.

        Raises:
            DataError: a map is unreadable, or the two maps differ in size.
        """
        od = load_image(self.disc, 1)[0].numpy()
        cup = load_image(self.cup, 1)[0].numpy()
        if od.shape != cup.shape:
            raise DataError(self.cup, f"the cup soft map is {cup.shape[1]} x {cup.shape[0]} but the disc soft map "
                                      f"{self.disc} is {od.shape[1]} x {od.shape[0]} (width x height)")
        labels = np.zeros(od.shape, dtype=np.int64)
        labels[binarize_softmap(od, self.rule)] = 1
        labels[binarize_softmap(cup, self.rule)] = 2
        return labels

    def __str__(self) -> str:
        return f"{self.disc} + {self.cup.name}"


def _files_root(root: Path) -> Path:
    return root if root.name == _FILES or not (root / _FILES).is_dir() else root / _FILES


def drishti_softmap_paths(gt: Path, stem: str) -> tuple[Path, Path]:
    """``(disc, cup)`` soft-map paths of image ``stem`` under a GT folder."""
    folder = gt / stem / "SoftMap"
    return folder / f"{stem}_ODsegSoftmap.png", folder / f"{stem}_cupsegSoftmap.png"


def read_drishti(root: str | Path, binarize: str | float = "majority", check_files: bool = True) -> list[MaskedImage]:
    """Read a Drishti-GS1 folder (see the module docstring).

    Args:
        root: the folder holding ``Drishti-GS1_files`` (or that folder).
        binarize: the soft-map rule: ``"majority"``, ``"all"``, ``"any"`` or a fraction in (0, 1].
        check_files: check that both soft maps of every image exist.

    Returns:
        Training then test records, each sorted by name.

    Raises:
        DataError: no Training or Test part with images and GT; images without soft maps (every one listed).
        ValueError: an unknown rule.
    """
    _threshold(binarize)
    root = Path(root)
    base = _files_root(root)
    records: list[MaskedImage] = []
    problems: list[str] = []
    for split, (part, gt_names) in _GT.items():
        images = base / part / "Images"
        gt = next((base / part / g for g in gt_names if (base / part / g).is_dir()), None)
        if not images.is_dir() or gt is None:
            continue
        for img in sorted(p for p in images.iterdir() if p.suffix.lower() == ".png" and not p.name.startswith(".")):
            disc, cup = drishti_softmap_paths(gt, img.stem)
            missing = [str(p) for p in (disc, cup) if check_files and not p.is_file()]
            if missing:
                problems.append(f"{img}: missing soft map(s) {', '.join(missing)}")
                continue
            name = img.relative_to(root).as_posix()
            records.append(MaskedImage(img, DrishtiMask(disc, cup, binarize), img.stem, name, split, DRISHTI_DOMAIN))
    if problems:
        raise DataError(root, f"{len(problems)} images without their soft maps", problems)
    if not records:
        raise DataError(root, f"not a Drishti-GS1 folder: no {_FILES}/Training or Test with Images/ and GT/")
    return records


def _detect(root: Path, **_: Any) -> bool:
    base = _files_root(Path(root))
    return any((base / part / "Images").is_dir() and any((base / part / g).is_dir() for g in gts)
               for part, gts in _GT.values())


def _read(root: Path, binarize: str | float = "majority", check_files: bool = True, **_: Any) -> RecordSet[MaskedImage]:
    return RecordSet(read_drishti(root, binarize=binarize, check_files=check_files))


register_layout(
    "drishti", _detect, _read, kind="segmentation2d", priority=20, synth="drishti",
    description="Drishti-GS1: Drishti-GS1_files/{Training,Test}/Images + GT soft maps of the disc and cup "
                "(binarised by binarize=majority|all|any|fraction -> labels 0 / 1 / 2)",
    tasks=("segmentation",), label_values=(0, 1, 2), label_names=("background", "rim", "cup"),
)
