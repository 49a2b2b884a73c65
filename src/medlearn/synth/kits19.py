"""Kidney-tumour CT phantoms written in the KiTS19 layout (small test fixtures and smoke runs).

``case_XXXXX/imaging.nii.gz`` (int16 HU, stored ``(slices, size, size)``, axial axis first, as KiTS19)
and ``segmentation.nii.gz`` (uint8: 0 background, 1 kidney, 2 tumour), read back by
:func:`medlearn.data.kits19.read_kits19`. Anatomy per case: air (-1000 HU) around a body ellipse of soft
tissue (40 HU), two kidney ellipsoids (contrast-enhanced, 180 HU) and a hypodense tumour sphere (70 HU)
in one of them, plus Gaussian noise (20 HU). Not realistic CT: a fixture for readers and pipelines.
The last ``n_unlabelled`` cases have no segmentation, as the challenge's test cases.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medlearn.console import track
from medlearn.io import atomic_write_text, write_image
from medlearn.synth import prepare_out_dir, register_synth

__all__ = ["write_kits19"]


def _case(rng: np.random.Generator, n_slices: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    z, y, x = np.mgrid[0:n_slices, 0:size, 0:size].astype(np.float64)
    body = ((y - size / 2) / (0.42 * size)) ** 2 + ((x - size / 2) / (0.46 * size)) ** 2 < 1
    img = np.where(body, 40.0, -1000.0)
    seg = np.zeros((n_slices, size, size), dtype=np.uint8)
    zc = n_slices / 2
    tumour_side = int(rng.integers(0, 2))
    for side, cx in enumerate((0.3 * size, 0.7 * size)):
        cy = size * rng.uniform(0.55, 0.65)
        rz, ry, rx = n_slices * 0.4, size * 0.1, size * 0.07
        kidney = ((z - zc) / rz) ** 2 + ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 < 1
        img[kidney] = 180.0
        seg[kidney] = 1
        if side == tumour_side:
            r = size * rng.uniform(0.04, 0.06)
            tz, ty, tx = zc + rng.uniform(-1, 1), cy + rng.uniform(-2, 2), cx + rng.uniform(-2, 2)
            tumour = ((z - tz) / max(r * n_slices / size * 3, 1.5)) ** 2 + ((y - ty) / r) ** 2 + ((x - tx) / r) ** 2 < 1
            img[tumour] = 70.0
            seg[tumour] = 2
    img += rng.normal(0, 20, img.shape)
    return np.clip(np.rint(img), -1024, 3071).astype(np.int16), seg


@register_synth("kits19", help="kidney-tumour CT phantoms in the KiTS19 layout (case_XXXXX/*.nii.gz)")
def write_kits19(out: str | Path, n_cases: int = 4, n_unlabelled: int = 1, n_slices: int = 12, size: int = 64,
                 seed: int = 0, overwrite: bool = False) -> Path:
    """Write kidney-tumour CT phantoms in the KiTS19 layout.

    Args:
        out: output folder (the KiTS19 ``data`` folder).
        n_cases: labelled cases.
        n_unlabelled: further cases without a segmentation (the challenge's test cases).
        n_slices: axial slices per case.
        size: in-plane size.
        seed: random seed; output depends only on the arguments.
        overwrite: allow a non-empty ``out``.

    Returns:
        ``out``.
    """
    if n_cases < 1 or n_unlabelled < 0 or n_slices < 4 or size < 32:
        raise ValueError("need n_cases >= 1, n_unlabelled >= 0, n_slices >= 4 and size >= 32")
    out = prepare_out_dir(out, overwrite)
    rng = np.random.default_rng([seed, 1919])
    affine = np.diag([-3.0, -0.8, -0.8, 1.0])[[2, 1, 0, 3]][:, [2, 1, 0, 3]]  # slices along the first axis
    for i in track(range(n_cases + n_unlabelled), description="KiTS19 CT cases"):
        img, seg = _case(rng, n_slices, size)
        case = out / f"case_{i:05d}"
        case.mkdir(parents=True, exist_ok=True)
        write_image(case / "imaging.nii.gz", img[None], {"affine": affine}, overwrite=True)
        if i < n_cases:
            write_image(case / "segmentation.nii.gz", seg[None], {"affine": affine}, overwrite=True)
    atomic_write_text(out / "README.txt", "Synthetic kidney-tumour CT phantoms (medlearn.synth.kits19). NOT patient "
                      f"data. KiTS19 layout. n_cases={n_cases} n_unlabelled={n_unlabelled} n_slices={n_slices} "
                      f"size={size} seed={seed}\n")
    return out
