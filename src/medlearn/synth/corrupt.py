"""Corrupted optic disc / cup masks: the label noise of a noisy-label segmentation study, on any mask set.

Noisy-label segmentation papers simulate annotation errors by corrupting a fraction of the
training masks with morphological and geometric changes (Co-Seg, Zhu et al., MICCAI 2019;
Cross-denoising, Zhang et al., IJCAI 2020): a grown or shrunken outline, a shifted mask, a
warped one. This module applies them to disc / cup label maps (0 background, 1 rim, 2 cup; the
disc is {1, 2}) and to folders or tables of mask files, for the phantoms of ``medlearn synth
fundus`` and for a user's own masks (``medlearn corrupt-masks``).

Kinds (:data:`CORRUPTIONS`), each drawn per mask from a seeded generator:

* ``dilate`` / ``erode``: the disc by a disk of radius ``r`` drawn from ``radius`` (pixels), the
  cup by ``r - 1`` (the cross-denoising spec's recipe);
* ``shift``: the whole label map moved by ``dy, dx``, each with a magnitude drawn from ``shift``
  and a random sign (background enters at the border);
* ``elastic``: a smooth random displacement field (Gaussian-filtered noise, smoothness ``0.1 x``
  the shorter side, scaled so its largest displacement is drawn from ``radius``), nearest-neighbour
  resampling (Simard et al., ICDAR 2003, with an explicit largest displacement).

After every kind the cup is cut to the disc, so the corrupted map is still a disc containing its
cup. :func:`corrupt_labels` works on one map; :func:`corrupt_masks` writes a corrupted copy of a
whole mask folder or ``image,mask`` table and a ``corruption.csv`` naming which masks were
corrupted, how, and by how much (Dice of the corrupted disc and cup against the input). It never
modifies its input: the output folder must be a new (or, with ``overwrite``, another) folder.
Written by hand on SciPy's morphology and interpolation (no library ships label-noise simulation
for segmentation masks).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from medlearn.console import track
from medlearn.data.decode import load_mask
from medlearn.io.errors import DataError

__all__ = ["CORRUPTIONS", "ENCODINGS", "Corruption", "corrupt_labels", "corrupt_masks", "disk_footprint",
           "encode_labels", "decode_labels", "MASK_SUFFIXES"]

CORRUPTIONS = ("dilate", "erode", "shift", "elastic")
#: How mask files store the labels: REFUGE's 255 background / 128 rim / 0 cup, or the labels 0 / 1 / 2.
ENCODINGS = ("auto", "refuge", "labels")
MASK_SUFFIXES = (".bmp", ".png", ".tif", ".tiff")
_REFUGE = {255: 0, 128: 1, 0: 2}
_REFUGE_INV = {v: k for k, v in _REFUGE.items()}


@dataclass
class Corruption:
    """What was done to one mask.

    Attributes:
        kind: one of :data:`CORRUPTIONS`, or ``"none"``.
        params: the drawn parameters (``radius``; ``dy``, ``dx``; ``max_displacement``).
        changed: pixels whose label changed.
        dice_disc: Dice of the corrupted disc against the input disc.
        dice_cup: Dice of the corrupted cup against the input cup.
    """

    kind: str
    params: dict[str, float] = field(default_factory=dict)
    changed: int = 0
    dice_disc: float = 1.0
    dice_cup: float = 1.0


def disk_footprint(radius: int) -> np.ndarray:
    """Boolean disk of ``radius`` pixels (``x^2 + y^2 <= r^2``), side ``2r + 1``."""
    r = int(radius)
    y, x = np.mgrid[-r:r + 1, -r:r + 1]
    return (x * x + y * y) <= r * r


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int((a & b).sum()) / s


def _compose(disc: np.ndarray, cup: np.ndarray) -> np.ndarray:
    out = np.zeros(disc.shape, dtype=np.int64)
    out[disc] = 1
    out[disc & cup] = 2  # the cup is cut to the disc
    return out


def _shift(labels: np.ndarray, dy: int, dx: int) -> np.ndarray:
    out = np.zeros_like(labels)
    h, w = labels.shape
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[yd, xd] = labels[ys, xs]
    return out


def corrupt_labels(labels: np.ndarray, kind: str, rng: np.random.Generator,
                   radius: Sequence[int] = (3, 5), shift: Sequence[int] = (2, 5)) -> tuple[np.ndarray, Corruption]:
    """One corrupted copy of a disc / cup label map.

    Args:
        labels: ``(H, W)`` labels 0 background, 1 rim, 2 cup.
        kind: one of :data:`CORRUPTIONS`.
        rng: the generator the parameters are drawn from.
        radius: ``(min, max)`` disc radius of ``dilate`` / ``erode`` (the cup's is one less) and
            largest displacement of ``elastic``, in pixels, inclusive.
        shift: ``(min, max)`` magnitude of each of ``dy``, ``dx`` for ``shift``, inclusive.

    Returns:
        ``(corrupted labels, Corruption)``; the cup of the result lies inside its disc.

    Raises:
        ValueError: an unknown kind, labels outside {0, 1, 2}, or bad ranges.
    """
    from scipy.ndimage import binary_dilation, binary_erosion, gaussian_filter, map_coordinates

    lab = np.asarray(labels).astype(np.int64)
    if lab.ndim != 2:
        raise ValueError(f"labels must be (H, W), got shape {lab.shape}")
    if not set(np.unique(lab).tolist()) <= {0, 1, 2}:
        raise ValueError(f"labels must be 0 / 1 / 2, found {sorted(np.unique(lab).tolist())}")
    lo, hi = int(radius[0]), int(radius[1])
    slo, shi = int(shift[0]), int(shift[1])
    if not 0 <= lo <= hi or not 0 <= slo <= shi:
        raise ValueError(f"radius and shift must be (min, max) with 0 <= min <= max, got {radius}, {shift}")
    disc, cup = lab >= 1, lab == 2
    params: dict[str, float] = {}
    if kind in ("dilate", "erode"):
        r = int(rng.integers(lo, hi + 1))
        params["radius"] = float(r)
        op = binary_dilation if kind == "dilate" else binary_erosion
        new_disc = op(disc, structure=disk_footprint(r)) if r > 0 else disc.copy()
        new_cup = op(cup, structure=disk_footprint(r - 1)) if r > 1 else cup.copy()
        out = _compose(new_disc, new_cup)
    elif kind == "shift":
        dy = int(rng.integers(slo, shi + 1)) * int(rng.choice([-1, 1]))
        dx = int(rng.integers(slo, shi + 1)) * int(rng.choice([-1, 1]))
        params.update(dy=float(dy), dx=float(dx))
        out = _shift(lab, dy, dx)
    elif kind == "elastic":
        h, w = lab.shape
        magnitude = float(rng.uniform(lo, hi)) if hi > 0 else 0.0
        sigma = max(1.0, 0.1 * min(h, w))
        fields = [gaussian_filter(rng.uniform(-1.0, 1.0, size=(h, w)), sigma, mode="reflect") for _ in range(2)]
        peak = max(float(np.abs(f).max()) for f in fields) or 1.0
        dy, dx = (f / peak * magnitude for f in fields)
        yy, xx = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
        warped = map_coordinates(lab, [yy + dy, xx + dx], order=0, mode="constant", cval=0)
        params["max_displacement"] = round(magnitude, 3)
        out = _compose(warped >= 1, warped == 2)
    else:
        raise ValueError(f"kind must be one of {CORRUPTIONS}, got {kind!r}")
    info = Corruption(kind, params, int((out != lab).sum()), _dice(out >= 1, disc), _dice(out == 2, cup))
    return out, info


def decode_labels(stored: np.ndarray, encoding: str, path: str | Path) -> np.ndarray:
    """Stored mask values -> labels 0 / 1 / 2 (``encoding`` ``"refuge"`` or ``"labels"``).

    Raises:
        DataError: naming ``path`` and the values that the encoding does not have.
    """
    values = set(np.unique(stored).tolist())
    allowed = set(_REFUGE) if encoding == "refuge" else {0, 1, 2}
    if not values <= allowed:
        raise DataError(path, f"mask values {sorted(values - allowed)} are not in the {encoding!r} encoding "
                              f"({sorted(allowed)})")
    if encoding == "labels":
        return stored.astype(np.int64)
    lut = np.zeros(256, dtype=np.int64)
    for k, v in _REFUGE.items():
        lut[k] = v
    return lut[stored.astype(np.int64)]


def encode_labels(labels: np.ndarray, encoding: str) -> np.ndarray:
    """Labels 0 / 1 / 2 -> stored uint8 values of ``encoding`` (inverse of :func:`decode_labels`)."""
    if encoding == "labels":
        return labels.astype(np.uint8)
    lut = np.array([_REFUGE_INV[0], _REFUGE_INV[1], _REFUGE_INV[2]], dtype=np.uint8)
    return lut[labels.astype(np.int64)]


def _guess_encoding(values: set[int]) -> str | None:
    if values <= {0, 1, 2}:
        return "labels"
    if values <= set(_REFUGE):
        return "refuge"
    return None


def save_mask(path: Path, stored: np.ndarray) -> None:
    """Write a uint8 single-channel mask in the format of ``path``'s suffix (temp file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = {".bmp": "BMP", ".png": "PNG", ".tif": "TIFF", ".tiff": "TIFF"}[path.suffix.lower()]
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(stored.astype(np.uint8)), mode="L").save(buf, format=fmt)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, path)


def _list_masks(source: Path) -> tuple[list[Path], Path, list[dict[str, str]] | None, list[str]]:
    """Masks of a folder (recursive) or of a table's ``mask`` column: (mask paths, base folder, rows, columns)."""
    if source.is_dir():
        masks = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in MASK_SUFFIXES
                       and not p.name.startswith("."))
        if not masks:
            raise DataError(source, f"no mask files ({', '.join(MASK_SUFFIXES)}) in the folder")
        return masks, source, None, []
    if not source.is_file():
        raise DataError(source, "no such mask folder or table")
    with source.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = list(reader.fieldnames or [])
        rows = [dict(r) for r in reader]
    mask_col = next((c for c in columns if c.strip().lower() == "mask"), None)
    if mask_col is None:
        raise DataError(source, f"the table has no 'mask' column (found: {', '.join(columns)})")
    base = source.parent
    problems = [f"line {i + 2}: mask not found: {base / r[mask_col].strip()}" for i, r in enumerate(rows)
                if not r[mask_col].strip() or not (base / r[mask_col].strip()).is_file()]
    if problems:
        raise DataError(source, f"{len(problems)} rows name no existing mask", problems)
    return [(base / r[mask_col].strip()).resolve() for r in rows], base.resolve(), rows, columns


def _relative(path: Path, base: Path) -> Path:
    """``path`` under ``base`` (a mask outside it goes to ``external/<name>``)."""
    try:
        return path.relative_to(base)
    except ValueError:
        return Path("external") / path.name


def corrupt_masks(masks: str | Path, out: str | Path, fraction: float = 0.5, seed: int = 0,
                  kinds: Sequence[str] = ("dilate", "erode", "shift", "elastic"), radius: Sequence[int] = (3, 5),
                  shift: Sequence[int] = (2, 5), encoding: str = "auto", overwrite: bool = False) -> Path:
    """Write a copy of a mask set with ``fraction`` of its masks corrupted, and ``corruption.csv``.

    Args:
        masks: a folder of mask files (searched recursively; BMP, PNG, TIFF) or a CSV with a ``mask``
            column (paths relative to the table). The input is only read.
        out: the output folder: every mask at its relative path (corrupted or copied unchanged); a
            table input is written there too, with its ``mask`` (and a relative ``image``) column
            pointing at the new files; ``corruption.csv``: ``mask, corrupted, kind, params,
            changed_pixels, dice_disc, dice_cup``.
        fraction: share of the masks corrupted (exactly ``round(fraction * N)``, chosen at random).
        seed: seed of the choice and of every drawn parameter (same seed, same output).
        kinds: corruption kinds, one drawn uniformly per corrupted mask.
        radius: ``(min, max)`` pixels of ``dilate`` / ``erode`` (disc; the cup one less) and ``elastic``.
        shift: ``(min, max)`` pixels of each axis of ``shift``.
        encoding: ``"refuge"`` (255 / 128 / 0), ``"labels"`` (0 / 1 / 2) or ``"auto"`` (from the values).
        overwrite: write into a non-empty ``out``.

    Returns:
        ``out``.

    Raises:
        DataError: a missing input, unreadable masks or values outside the encoding (every bad
            mask listed; nothing is written).
        ValueError: ``out`` inside the input folder (or equal to it), a bad fraction, kind or encoding.
        FileExistsError: ``out`` is not empty and ``overwrite`` is false.
    """
    from medlearn.synth import prepare_out_dir

    source, out = Path(masks), Path(out)
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    bad = [k for k in kinds if k not in CORRUPTIONS]
    if bad or not kinds:
        raise ValueError(f"kinds must be among {CORRUPTIONS}, got {list(kinds)}")
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
    paths, base, rows, columns = _list_masks(source)
    o, b = out.resolve(), base.resolve()
    if rows is None and (o == b or b in o.parents):
        raise ValueError(f"{out} is inside the input folder {base}: write the corrupted copy elsewhere")
    inputs = {p.resolve() for p in paths} | {source.resolve()}
    if rows is not None and any((o / _relative(p, base)).resolve() in inputs for p in paths):
        raise ValueError(f"writing into {out} would replace input masks: write the corrupted copy elsewhere")
    decoded: list[np.ndarray] = []
    problems: list[str] = []
    encodings: set[str] = set()
    for p in track(paths, description="masks read"):
        try:
            stored = load_mask(p)
            enc = encoding if encoding != "auto" else _guess_encoding(set(np.unique(stored).tolist()))
            if enc is None:
                raise DataError(p, f"mask values {sorted(np.unique(stored).tolist())[:10]} are neither the REFUGE "
                                   "encoding (255 / 128 / 0) nor labels 0 / 1 / 2")
            decoded.append(decode_labels(stored, enc, p))
            encodings.add(enc)
        except DataError as exc:
            problems.append(f"{exc.path}: {exc.reason}")
    if problems:
        raise DataError(source, f"{len(problems)} unusable masks (nothing written)", problems)
    if len(encodings) > 1:
        raise DataError(source, "the masks mix the REFUGE encoding and labels 0 / 1 / 2; pass encoding=")
    enc = encodings.pop()
    out = prepare_out_dir(out, overwrite)
    rng = np.random.default_rng([int(seed), 90210])
    n = len(paths)
    chosen = set(rng.permutation(n)[:int(round(fraction * n))].tolist())
    report = [["mask", "corrupted", "kind", "params", "changed_pixels", "dice_disc", "dice_cup"]]
    rel = [_relative(p, base) for p in paths]
    for i, lab in enumerate(track(decoded, description="masks written")):
        if i in chosen:
            kind = str(kinds[int(rng.integers(len(kinds)))])
            lab, info = corrupt_labels(lab, kind, rng, radius, shift)
        else:
            info = Corruption("none")
        save_mask(out / rel[i], encode_labels(lab, enc))
        params = " ".join(f"{k}={v:g}" for k, v in info.params.items())
        report.append([rel[i].as_posix(), str(int(i in chosen)), info.kind, params, str(info.changed),
                       f"{info.dice_disc:.4f}", f"{info.dice_cup:.4f}"])
    _write_csv(out / "corruption.csv", report)
    if rows is not None:
        mask_col = next(c for c in columns if c.strip().lower() == "mask")
        image_col = next((c for c in columns if c.strip().lower() == "image"), None)
        table = [columns]
        for r, rp in zip(rows, rel):
            r = dict(r)
            r[mask_col] = rp.as_posix()
            if image_col and r[image_col].strip():
                r[image_col] = os.path.relpath(base / r[image_col].strip(), out)
            table.append([r[c] for c in columns])
        _write_csv(out / Path(masks).name, table)
    return out


def _write_csv(path: Path, rows: list[list[Any]]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    os.replace(tmp, path)
