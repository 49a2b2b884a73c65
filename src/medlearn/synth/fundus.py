"""Two-camera fundus phantoms with optic disc / cup masks, written in the REFUGE and Drishti-GS layouts.

The public datasets are REFUGE (Orlando et al., MedIA 2020: Zeiss training photographs, Canon
validation and test photographs, ``Disc_Cup_Masks`` BMPs) and Drishti-GS1 (Sivaswamy et al., ISBI
2014: PNGs with expert soft maps); :mod:`medlearn.data.refuge` and :mod:`medlearn.data.drishti`
read them. :func:`write_refuge` writes the phantoms of the cross-denoising spec's CPU experiment
(Zhang et al., "Cross-denoising Network against Corrupted Labels in Medical Image Segmentation
with Domain Shift", IJCAI 2020; ``methods/cross_denoise.md`` section 5) in the REFUGE layout, so
the demo and the reproduction go through the real reader:

* image (48 x 48 by default; lengths below scale with ``size / 48``): background = bicubic
  upsampled 8 x 8 Gaussian noise x 0.15 on a level of 0.55, minus a radial vignette
  ``0.3 r^2`` (``r`` = distance from the centre / half the side); optic disc = rotated ellipse,
  radius U(7, 10) px, aspect U(0.85, 1.15), centre jitter +-6 px, +0.30 brightness; cup =
  concentric ellipse with cup-to-disc ratio U(0.35, 0.7), +0.25; 3-5 dark straight vessels
  (width U(0.8, 1.8) px, -0.25) through the disc; edges anti-aliased over one pixel, labels
  0 background / 1 rim / 2 cup from the hard outlines;
* camera style (:class:`CameraStyle`): per-channel gains, contrast about the mean, gamma,
  Gaussian noise; source (Zeiss-like) gains (1.0, 0.6, 0.35), gamma 1.0, contrast 1.0, noise
  0.04; target (Canon-like) gains (0.85, 0.75, 0.5), gamma 1.5, contrast 0.75, noise 0.07. The
  spec's per-image per-channel z-scoring is the model's input normalisation, not the data's;
* REFUGE layout: ``Training400/{Glaucoma,Non-Glaucoma}`` = the labelled source images (glaucoma
  when the cup-to-disc ratio > 0.6) with masks in ``Annotation-Training400/Disc_Cup_Masks`` of
  which ``noise_fraction`` are corrupted (:func:`medlearn.synth.corrupt.corrupt_masks`: dilation
  or erosion of the disc by 3-5 px and of the cup by one less, or a shift of 2-5 px in y and x; cup
  cut to the disc); ``REFUGE-Validation400`` = unlabelled target-camera training images (their
  masks, which REFUGE ships, are written clean and never used for training);
  ``Test400`` + ``REFUGE-Test-GT`` = the target test set.
* kept apart for evaluation under ``clean/``: the clean training masks
  (``clean/Annotation-Training400/Disc_Cup_Masks``), ``clean/corruption.csv`` (which masks were
  corrupted, how, and their Dice against the clean ones), and a clean source-camera test set as an
  ``image,mask,split,domain`` table (``clean/source_test.csv``, the ``mask-table`` layout; masks as
  PNG labels 0 / 1 / 2).

:func:`write_drishti` writes a small Drishti-GS1 phantom set (third camera style; PNG images;
four simulated experts whose outlines differ by a few per cent, averaged into soft maps) for the
Drishti reader.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from medlearn.console import track
from medlearn.synth import prepare_out_dir, register_synth
from medlearn.synth.corrupt import corrupt_masks, encode_labels, save_mask

__all__ = ["CameraStyle", "SOURCE_STYLE", "TARGET_STYLE", "DRISHTI_STYLE", "FundusShape", "render_fundus",
           "write_refuge", "write_drishti"]


@dataclass(frozen=True)
class CameraStyle:
    """How a camera renders the scene: per-channel gains, contrast, gamma, noise."""

    gains: tuple[float, float, float]
    gamma: float
    contrast: float
    noise: float


SOURCE_STYLE = CameraStyle((1.0, 0.6, 0.35), 1.0, 1.0, 0.04)
TARGET_STYLE = CameraStyle((0.85, 0.75, 0.5), 1.5, 0.75, 0.07)
DRISHTI_STYLE = CameraStyle((0.95, 0.55, 0.3), 1.2, 0.9, 0.05)


@dataclass(frozen=True)
class FundusShape:
    """The drawn geometry of one phantom (pixels)."""

    cy: float
    cx: float
    radius: float
    aspect: float
    angle: float
    cdr: float


def _ellipse_rho(shape: FundusShape, size: int, scale: float = 1.0) -> np.ndarray:
    """Normalised elliptic radius (1 on the outline) of the disc (``scale`` = 1) or the cup (``scale`` = CDR)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    dy, dx = yy - shape.cy, xx - shape.cx
    c, s = np.cos(shape.angle), np.sin(shape.angle)
    u, v = c * dx + s * dy, -s * dx + c * dy
    ry, rx = shape.radius * scale, shape.radius * shape.aspect * scale
    return np.sqrt((u / rx) ** 2 + (v / ry) ** 2)


def _soft(rho: np.ndarray, radius: float) -> np.ndarray:
    """Anti-aliased inside-ness: 1 inside, 0 outside, linear over one pixel at the outline."""
    return np.clip((1.0 - rho) * radius + 0.5, 0.0, 1.0)


def draw_shape(rng: np.random.Generator, size: int) -> FundusShape:
    """Draw a disc / cup geometry (the module docstring's distributions, scaled by ``size / 48``)."""
    k = size / 48.0
    return FundusShape(cy=size / 2 + rng.uniform(-6, 6) * k, cx=size / 2 + rng.uniform(-6, 6) * k,
                       radius=rng.uniform(7, 10) * k, aspect=rng.uniform(0.85, 1.15), angle=rng.uniform(0, np.pi),
                       cdr=rng.uniform(0.35, 0.7))


def shape_labels(shape: FundusShape, size: int, disc_scale: float = 1.0, cup_scale: float = 1.0) -> np.ndarray:
    """``(size, size)`` labels 0 / 1 rim / 2 cup of a geometry (scales: an expert's outline jitter)."""
    disc = _ellipse_rho(shape, size, disc_scale) <= 1.0
    cup = (_ellipse_rho(shape, size, shape.cdr * cup_scale) <= 1.0) & disc
    labels = disc.astype(np.int64)
    labels[cup] = 2
    return labels


def render_fundus(rng: np.random.Generator, size: int, style: CameraStyle,
                  shape: FundusShape | None = None) -> tuple[np.ndarray, np.ndarray, FundusShape]:
    """One phantom: ``(RGB uint8 (S, S, 3), labels int64 (S, S), geometry)``."""
    from scipy.ndimage import zoom

    k = size / 48.0
    shape = shape or draw_shape(rng, size)
    noise8 = rng.normal(size=(8, 8))
    bg = zoom(noise8, size / 8.0, order=3, mode="nearest")[:size, :size]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    r2 = ((yy - (size - 1) / 2) ** 2 + (xx - (size - 1) / 2) ** 2) / (size / 2) ** 2
    img = 0.55 + 0.15 * bg - 0.3 * r2
    img += 0.30 * _soft(_ellipse_rho(shape, size), shape.radius)
    img += 0.25 * _soft(_ellipse_rho(shape, size, shape.cdr), shape.radius * shape.cdr)
    for _ in range(int(rng.integers(3, 6))):
        phi = rng.uniform(0, np.pi)
        py = shape.cy + rng.uniform(-0.5, 0.5) * shape.radius
        px = shape.cx + rng.uniform(-0.5, 0.5) * shape.radius
        dist = np.abs(-np.sin(phi) * (xx - px) + np.cos(phi) * (yy - py))
        width = rng.uniform(0.8, 1.8) * k
        img -= 0.25 * np.clip(width / 2 - dist + 0.5, 0.0, 1.0)
    rgb = np.stack([g * img for g in style.gains], axis=-1)
    mean = rgb.mean(axis=(0, 1), keepdims=True)
    rgb = mean + style.contrast * (rgb - mean)
    rgb = np.clip(rgb, 0.0, 1.0) ** style.gamma
    rgb = rgb + rng.normal(scale=style.noise, size=rgb.shape)
    out = (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return out, shape_labels(shape, size), shape


def _save_image(path: Path, rgb: np.ndarray, fmt: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    if fmt == "JPEG":
        Image.fromarray(rgb, mode="RGB").save(buf, format="JPEG", quality=95, subsampling=0)
    else:
        Image.fromarray(rgb, mode="RGB").save(buf, format=fmt)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, path)


def _write_table(path: Path, rows: list[list[str]]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    os.replace(tmp, path)


def _range(text: str, what: str) -> tuple[int, int]:
    parts = [int(v) for v in str(text).replace(" ", "").split(",") if v]
    if len(parts) != 2 or not 0 <= parts[0] <= parts[1]:
        raise ValueError(f"{what} must be 'min,max' with 0 <= min <= max, got {text!r}")
    return parts[0], parts[1]


@register_synth("fundus", "two-camera optic disc / cup phantoms in the REFUGE layout, a fraction of the "
                          "training masks corrupted (clean copies and a clean source test set under clean/)")
def write_refuge(out: str | Path, n_train: int = 80, n_target: int = 60, n_test: int = 60, n_source_test: int = 60,
                 size: int = 48, noise_fraction: float = 0.5, kinds: str = "dilate,erode,shift", radius: str = "3,5",
                 shift: str = "2,5", seed: int = 0, overwrite: bool = False) -> Path:
    """Write two-camera fundus phantoms in the REFUGE layout (see the module docstring).

    Args:
        out: output folder.
        n_train: labelled source-camera training images (``Training400``).
        n_target: unlabelled target-camera training images (``REFUGE-Validation400``).
        n_test: target-camera test images (``Test400``).
        n_source_test: clean source-camera test images (``clean/source_test.csv``).
        size: image side in pixels (the recipe's lengths scale with ``size / 48``).
        noise_fraction: share of the training masks corrupted.
        kinds: corruption kinds, comma-separated (:data:`medlearn.synth.corrupt.CORRUPTIONS`).
        radius: ``min,max`` dilation / erosion radius of the disc at 48 px (the cup: one less).
        shift: ``min,max`` shift per axis at 48 px.
        seed: seed of the geometry, the styles' noise and the corruption.
        overwrite: write into a non-empty folder.

    Returns:
        The folder.
    """
    for name, n in (("n_train", n_train), ("n_target", n_target), ("n_test", n_test),
                    ("n_source_test", n_source_test)):
        if n < 0:
            raise ValueError(f"{name} must be >= 0, got {n}")
    if n_train < 1:
        raise ValueError("n_train must be >= 1")
    if size < 16:
        raise ValueError(f"size must be >= 16, got {size}")
    k = size / 48.0
    rad = tuple(int(round(v * k)) for v in _range(radius, "radius"))
    shf = tuple(int(round(v * k)) for v in _range(shift, "shift"))
    out = prepare_out_dir(out, overwrite)
    rng = np.random.default_rng([int(seed), 4813])
    clean_masks = out / "clean" / "Annotation-Training400" / "Disc_Cup_Masks"
    counters = {"g": 0, "n": 0}
    for _ in track(range(n_train), description="REFUGE training images (source camera)"):
        rgb, lab, shape = render_fundus(rng, size, SOURCE_STYLE)
        cls = "g" if shape.cdr > 0.6 else "n"
        counters[cls] += 1
        folder = "Glaucoma" if cls == "g" else "Non-Glaucoma"
        stem = f"{cls}{counters[cls]:04d}"
        _save_image(out / "Training400" / folder / f"{stem}.jpg", rgb, "JPEG")
        save_mask(clean_masks / folder / f"{stem}.bmp", encode_labels(lab, "refuge"))
    for i in track(range(n_target), description="REFUGE validation images (target camera)"):
        rgb, lab, _ = render_fundus(rng, size, TARGET_STYLE)
        _save_image(out / "REFUGE-Validation400" / f"V{i + 1:04d}.jpg", rgb, "JPEG")
        gt = out / "REFUGE-Validation400-GT" / "Disc_Cup_Masks"
        save_mask(gt / f"V{i + 1:04d}.bmp", encode_labels(lab, "refuge"))
    for i in track(range(n_test), description="REFUGE test images (target camera)"):
        rgb, lab, shape = render_fundus(rng, size, TARGET_STYLE)
        _save_image(out / "Test400" / f"T{i + 1:04d}.jpg", rgb, "JPEG")
        sub = "G" if shape.cdr > 0.6 else "N"
        save_mask(out / "REFUGE-Test-GT" / "Disc_Cup_Masks" / sub / f"T{i + 1:04d}.bmp", encode_labels(lab, "refuge"))
    rows = [["image", "mask", "split", "domain"]]
    for i in track(range(n_source_test), description="source-camera test images"):
        rgb, lab, _ = render_fundus(rng, size, SOURCE_STYLE)
        img = Path("source-test") / "images" / f"S{i + 1:04d}.jpg"
        msk = Path("source-test") / "masks" / f"S{i + 1:04d}.png"
        _save_image(out / "clean" / img, rgb, "JPEG")
        save_mask(out / "clean" / msk, encode_labels(lab, "labels"))
        rows.append([img.as_posix(), msk.as_posix(), "test", "zeiss"])
    if n_source_test:
        _write_table(out / "clean" / "source_test.csv", rows)
    noisy = out / "Annotation-Training400" / "Disc_Cup_Masks"
    corrupt_masks(clean_masks, noisy, fraction=noise_fraction, seed=seed, kinds=[k_ for k_ in kinds.split(",") if k_],
                  radius=rad, shift=shf, encoding="refuge")
    shutil.move(str(noisy / "corruption.csv"), str(out / "clean" / "corruption.csv"))
    (out / "README.txt").write_text(
        "Synthetic phantom set generated by medlearn (medlearn.synth.fundus.write_refuge). NOT patient data.\n"
        "REFUGE layout: Training400 (source camera, masks with label noise), REFUGE-Validation400 (target camera, "
        "unlabelled for training), Test400 + REFUGE-Test-GT (target test).\n"
        "clean/: clean training masks, corruption.csv, a clean source-camera test set (source_test.csv).\n"
        f"seed={seed} size={size} n_train={n_train} n_target={n_target} n_test={n_test} "
        f"n_source_test={n_source_test} noise_fraction={noise_fraction} kinds={kinds} radius={rad} shift={shf}\n",
        encoding="utf-8")
    return out


@register_synth("drishti", "optic disc / cup phantoms in the Drishti-GS1 layout (PNG images, soft maps of four "
                           "simulated experts)")
def write_drishti(out: str | Path, n_train: int = 8, n_test: int = 8, size: int = 64, seed: int = 0,
                  overwrite: bool = False) -> Path:
    """Write fundus phantoms in the Drishti-GS1 layout (see the module docstring).

    Args:
        out: output folder (``Drishti-GS1_files`` is created in it).
        n_train: training images.
        n_test: test images (ground truth in ``Test/Test_GT``).
        size: image height; odd-numbered images are 8 px wider (Drishti's sizes vary).
        seed: seed.
        overwrite: write into a non-empty folder.

    Returns:
        The folder.
    """
    if n_train < 0 or n_test < 0 or n_train + n_test < 1:
        raise ValueError("n_train and n_test must be >= 0, with at least one image")
    out = prepare_out_dir(out, overwrite)
    rng = np.random.default_rng([int(seed), 5551])
    base = out / "Drishti-GS1_files"
    for i in track(range(n_train + n_test), description="Drishti-GS1 images"):
        part, gt = ("Training", "GT") if i < n_train else ("Test", "Test_GT")
        stem = f"drishtiGS_{i + 1:03d}"
        rgb, _, shape = render_fundus(rng, size, DRISHTI_STYLE)
        extra = 8 if i % 2 else 0
        if extra:
            rgb = np.concatenate([rgb, np.repeat(rgb[:, -1:], extra, axis=1)], axis=1)
        _save_image(base / part / "Images" / f"{stem}.png", rgb, "PNG")
        experts = [shape_labels(shape, size, rng.uniform(0.95, 1.05), rng.uniform(0.92, 1.08)) for _ in range(4)]
        for region, values in (("OD", (1, 2)), ("cup", (2,))):
            frac = np.mean([np.isin(e, values) for e in experts], axis=0)
            soft = (frac * 255.0 + 0.5).astype(np.uint8)
            if extra:
                soft = np.concatenate([soft, np.zeros((size, extra), dtype=np.uint8)], axis=1)
            path = base / part / gt / stem / "SoftMap" / f"{stem}_{region}segSoftmap.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            save_mask(path, soft)
    (out / "README.txt").write_text(
        "Synthetic phantom set generated by medlearn (medlearn.synth.fundus.write_drishti). NOT patient data.\n"
        f"Drishti-GS1 layout; seed={seed} size={size} n_train={n_train} n_test={n_test}\n", encoding="utf-8")
    return out
