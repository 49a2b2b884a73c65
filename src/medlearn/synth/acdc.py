"""Cardiac short-axis MR phantoms written in the ACDC layout (small test fixtures and smoke runs).

``patientXXX/Info.cfg``, ``patientXXX_frameYY.nii.gz`` (the ED and ES frames, ``(X, Y, slices)``) and
``patientXXX_frameYY_gt.nii.gz`` (0 background, 1 right ventricle, 2 myocardium, 3 LV cavity), read back
by :func:`medlearn.data.acdc.read_acdc`. Anatomy per slice: a bright LV cavity disc inside a dark
myocardial ring, a bright right-ventricle crescent beside it, shrinking towards the apex and smaller at
ES; Rician-like noise. Not realistic MR: a fixture for readers and pipelines.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medlearn.console import track
from medlearn.io import atomic_write_text, write_image
from medlearn.synth import prepare_out_dir, register_synth

__all__ = ["write_acdc"]

GROUPS = ("NOR", "MINF", "DCM", "HCM", "RV")


def _frame(rng: np.random.Generator, n_slices: int, size: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.mgrid[0:size, 0:size].astype(np.float64)
    cx, cy = size * rng.uniform(0.45, 0.55), size * rng.uniform(0.45, 0.55)
    img = np.zeros((size, size, n_slices))
    gt = np.zeros((size, size, n_slices), dtype=np.uint8)
    for k in range(n_slices):
        s = scale * (1.0 - 0.6 * k / max(n_slices - 1, 1))  # base to apex
        r_lv, r_myo = 0.13 * size * s, 0.19 * size * s
        d = np.hypot(x - cx, y - cy)
        rv = (np.hypot(x - cx, y - (cy - 0.22 * size * s)) < 0.16 * size * s) & (d >= r_myo)
        lab = np.zeros((size, size), dtype=np.uint8)
        lab[rv] = 1
        lab[(d >= r_lv) & (d < r_myo)] = 2
        lab[d < r_lv] = 3
        gt[:, :, k] = lab
        img[:, :, k] = np.choose(lab, [60.0, 280.0, 90.0, 300.0])
    noisy = np.hypot(img + rng.normal(0, 15, img.shape), rng.normal(0, 15, img.shape))
    return np.rint(noisy).astype(np.int16), gt


@register_synth("acdc", help="cardiac short-axis MR phantoms in the ACDC layout (patientXXX/*_frameYY[_gt].nii.gz)")
def write_acdc(out: str | Path, n_patients: int = 4, n_slices: int = 6, size: int = 64, seed: int = 0,
               overwrite: bool = False) -> Path:
    """Write cardiac MR phantoms in the ACDC layout (ED = frame 01, ES = frame 08 of 16).

    Args:
        out: output folder (ACDC's ``training`` folder).
        n_patients: patients.
        n_slices: short-axis slices per frame.
        size: in-plane size.
        seed: random seed; output depends only on the arguments.
        overwrite: allow a non-empty ``out``.

    Returns:
        ``out``.
    """
    if n_patients < 1 or n_slices < 2 or size < 32:
        raise ValueError("need n_patients >= 1, n_slices >= 2 and size >= 32")
    out = prepare_out_dir(out, overwrite)
    rng = np.random.default_rng([seed, 2017])
    affine = np.diag([1.5, 1.5, 10.0, 1.0])
    for i in track(range(1, n_patients + 1), description="ACDC cardiac MR patients"):
        pid = f"patient{i:03d}"
        folder = out / pid
        folder.mkdir(parents=True, exist_ok=True)
        group = GROUPS[(i - 1) % len(GROUPS)]
        atomic_write_text(folder / "Info.cfg", f"ED: 1\nES: 8\nGroup: {group}\nHeight: 175.0\nNbFrame: 16\n"
                                               "Weight: 70.0\n")
        for frame, scale in (("01", 1.0), ("08", 0.8)):
            img, gt = _frame(rng, n_slices, size, scale)
            write_image(folder / f"{pid}_frame{frame}.nii.gz", img[None], {"affine": affine}, overwrite=True)
            write_image(folder / f"{pid}_frame{frame}_gt.nii.gz", gt[None], {"affine": affine}, overwrite=True)
    atomic_write_text(out / "README.txt", "Synthetic cardiac MR phantoms (medlearn.synth.acdc). NOT patient data. "
                      f"ACDC layout. n_patients={n_patients} n_slices={n_slices} size={size} seed={seed}\n")
    return out
