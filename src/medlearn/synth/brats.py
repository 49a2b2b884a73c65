"""Synthetic multi-contrast brain MR with a glioma, written in the BraTS layout.

The public data are the BraTS challenge sets (Menze et al., "The Multimodal Brain Tumor Image
Segmentation Benchmark (BRATS)", IEEE TMI 34(10), 2015; Bakas et al., "Advancing The Cancer
Genome Atlas glioma MRI collections with expert segmentation labels and radiomic features",
Scientific Data 2017; Bakas et al., "Identifying the Best Machine Learning Algorithms for Brain
Tumor Segmentation...", arXiv:1811.02629, 2018). Each case is a folder of five co-registered,
skull-stripped, 1 mm isotropic NIfTI volumes::

    BraTS_0000/BraTS_0000_t1.nii.gz     native T1
    BraTS_0000/BraTS_0000_t1ce.nii.gz   post-contrast T1 (gadolinium)
    BraTS_0000/BraTS_0000_t2.nii.gz     T2
    BraTS_0000/BraTS_0000_flair.nii.gz  T2-FLAIR
    BraTS_0000/BraTS_0000_seg.nii.gz    labels 0 background, 1 necrotic / non-enhancing core,
                                        2 peritumoral oedema, 4 enhancing tumour

:func:`write_brats` writes a small phantom set in exactly that layout (float32 images, uint8
labels, one LPS affine ``diag(-1, -1, 1)`` as in the released BraTS 2018 files) so that the MR
synthesis, segmentation and Rubik's cube demos go through the real reader
(:func:`medlearn.data.brats.read_brats`).

The phantom (continuous normalised coordinates, so the same draws give the same brain at any size):
a brain ellipsoid with a gyrated cortical grey-matter ribbon, white matter, deep grey nuclei,
butterfly lateral ventricles and an interhemispheric fissure (CSF); one tumour per case in a random
hemisphere, made of a necrotic core inside an enhancing rim inside irregular oedema. Relative
intensities per contrast (:data:`CONTRASTS`) follow the textbook appearance:

=============  =====  =====  =====  =====
tissue          T1    T1ce    T2    FLAIR
=============  =====  =====  =====  =====
CSF            0.25   0.25   1.00   0.12   (dark in FLAIR: fluid-suppressed)
grey matter    0.55   0.57   0.65   0.62
white matter   0.80   0.80   0.45   0.48
oedema         0.45   0.47   0.90   0.95   (bright in T2 and FLAIR)
necrosis       0.30   0.20   0.95   0.55   (dark in T1ce)
enhancing      0.60   1.25   0.70   0.75   (bright in T1ce only)
=============  =====  =====  =====  =====

Per case: scale, centre jitter, yaw, per-contrast gain and a smooth linear bias field, Rician noise;
the background outside the brain is exactly 0 (skull-stripped). Images are multiplied by a
per-contrast scanner scale (:data:`INTENSITY_SCALE`), since real BraTS intensities are arbitrary
units of different ranges per contrast.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np

from medlearn.console import track
from medlearn.io import atomic_write_text, write_image
from medlearn.synth import prepare_out_dir, register_synth

__all__ = ["BRATS_LABELS", "CONTRASTS", "INTENSITY_SCALE", "MODALITIES", "brats_affine", "brats_rng",
           "render_brats_case", "write_brats"]

#: The four MR contrasts, in the usual channel order.
MODALITIES: tuple[str, ...] = ("t1", "t1ce", "t2", "flair")

#: BraTS label values: 0 background, 1 necrotic / non-enhancing core, 2 oedema, 4 enhancing tumour.
BRATS_LABELS: tuple[int, ...] = (0, 1, 2, 4)

_TISSUES = ("csf", "grey", "white", "oedema", "necrosis", "enhancing")
#: Relative tissue intensity per contrast (before gain, bias, noise and :data:`INTENSITY_SCALE`).
CONTRASTS: dict[str, dict[str, float]] = {
    "t1": {"csf": 0.25, "grey": 0.55, "white": 0.80, "oedema": 0.45, "necrosis": 0.30, "enhancing": 0.60},
    "t1ce": {"csf": 0.25, "grey": 0.57, "white": 0.80, "oedema": 0.47, "necrosis": 0.20, "enhancing": 1.25},
    "t2": {"csf": 1.00, "grey": 0.65, "white": 0.45, "oedema": 0.90, "necrosis": 0.95, "enhancing": 0.70},
    "flair": {"csf": 0.12, "grey": 0.62, "white": 0.48, "oedema": 0.95, "necrosis": 0.55, "enhancing": 0.75},
}
#: Scanner-unit scale per contrast (BraTS intensities are arbitrary and differ per contrast).
INTENSITY_SCALE: dict[str, float] = {"t1": 800.0, "t1ce": 1000.0, "t2": 1500.0, "flair": 600.0}

_CASE_RE = re.compile(r"^BraTS_\d{4,}$")
_EDGE = 0.025


def brats_rng(seed: int, index: int) -> np.random.Generator:
    """The random generator :func:`write_brats` uses to render case ``index``.

    Args:
        seed: the ``seed`` given to :func:`write_brats`.
        index: the 0-based case number (``BraTS_0007`` -> 7).

    Returns:
        A fresh generator; ``render_brats_case(brats_rng(seed, i), size)`` reproduces case ``i``.
    """
    return np.random.default_rng([seed, 4, index])


def brats_affine(size: int) -> np.ndarray:
    """The affine of every phantom file: 1 mm, LPS, as in the released BraTS 2018 volumes.

    Args:
        size: the cube side in voxels.

    Returns:
        ``diag(-1, -1, 1, 1)`` with the y origin at ``size - 1`` (BraTS: 239).
    """
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    affine[1, 3] = float(size - 1)
    return affine


def _soft(d: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(d / _EDGE))


def _lobes(dirs: np.ndarray, rng: np.random.Generator, n: int, amp: float) -> np.ndarray:
    """An irregular radius factor over directions: 1 + sum of ``n`` random directional cosines."""
    axes = rng.normal(size=(n, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    freq = rng.uniform(1.5, 3.5, size=n)
    phase = rng.uniform(0.0, 2.0 * np.pi, size=n)
    a = rng.uniform(0.5, 1.0, size=n) * amp / n
    out = np.ones(dirs.shape[1:])
    for k in range(n):
        proj = np.tensordot(axes[k], dirs, axes=1)
        out = out + a[k] * np.cos(freq[k] * proj + phase[k])
    return out


def render_brats_case(rng: np.random.Generator, size: int = 48) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Render one synthetic BraTS case: four MR contrasts and the tumour labels.

    All draws except the noise (drawn last) are independent of ``size``.

    Args:
        rng: random generator; consumed.
        size: cube side in voxels (>= 16).

    Returns:
        ``(images, seg)``: ``{modality: (size, size, size) float32}`` over :data:`MODALITIES`,
        >= 0 with exactly 0 outside the brain, and the ``uint8`` label volume with values in
        :data:`BRATS_LABELS` (all four present). Voxel axes follow the LPS affine of
        :func:`brats_affine`: index ``i`` runs to the left, ``j`` to posterior, ``k`` to superior.

    Raises:
        ValueError: if ``size`` < 16.
    """
    if size < 16:
        raise ValueError(f"size must be >= 16, got {size}")
    # --- draws, in a fixed order ---
    scale = rng.uniform(0.92, 1.05)
    centre = rng.normal(0.0, 0.02, size=3)
    yaw = np.deg2rad(rng.normal(0.0, 5.0))
    gyri_f = rng.uniform(8.0, 12.0, size=3)
    gyri_p = rng.uniform(0.0, 2.0 * np.pi, size=3)
    side = 1.0 if rng.uniform() < 0.5 else -1.0
    t_centre = np.array([side * rng.uniform(0.18, 0.36), rng.uniform(-0.35, 0.35), rng.uniform(-0.05, 0.3)])
    r_core = rng.uniform(0.16, 0.24)
    necro_frac = rng.uniform(0.5, 0.65)
    r_oedema = r_core * rng.uniform(1.6, 2.1)
    core_lobes = np.random.default_rng(int(rng.integers(2**62)))
    oed_lobes = np.random.default_rng(int(rng.integers(2**62)))
    gains = {m: rng.uniform(0.88, 1.12) for m in MODALITIES}
    bias = {m: rng.normal(0.0, 0.08, size=3) for m in MODALITIES}
    noise_sd = rng.uniform(0.015, 0.035)

    # anatomical coordinates: lr (+ = left, index i), ap (+ = anterior = -j), si (+ = superior, k)
    c = (np.arange(size) + 0.5) / size * 2.0 - 1.0
    i, j, k = np.meshgrid(c, c, c, indexing="ij")
    x, y, z = (i - centre[0]) / scale, (-j - centre[1]) / scale, (k - centre[2]) / scale
    co, si = np.cos(yaw), np.sin(yaw)
    lr, ap, cs = co * x + si * y, -si * x + co * y, z

    radii = np.array([0.66, 0.84, 0.7])
    r = np.sqrt((lr / radii[0]) ** 2 + (ap / radii[1]) ** 2 + ((cs - 0.04) / radii[2]) ** 2)
    gyri = np.sin(gyri_f[0] * lr + gyri_p[0]) * np.sin(gyri_f[1] * ap + gyri_p[1]) * np.sin(gyri_f[2] * cs + gyri_p[2])
    brain = _soft((1.0 - r) * 0.6) * _soft(cs + 0.55)
    white = _soft((0.8 + 0.06 * gyri - r) * 0.6)  # gyrated grey/white boundary
    sulci = _soft(r - 0.93) * _soft(gyri - 0.45)  # CSF in the outer sulci
    fissure = _soft(0.025 - np.abs(lr)) * _soft(cs - 0.1)
    deep = np.zeros_like(r)
    for s in (1.0, -1.0):  # thalamus / basal ganglia
        rd = np.sqrt(((lr - s * 0.17) / 0.09) ** 2 + (ap / 0.16) ** 2 + ((cs + 0.02) / 0.1) ** 2)
        deep = np.maximum(deep, _soft((1.0 - rd) * 0.09))
    vent = np.zeros_like(r)
    for s in (1.0, -1.0):  # butterfly lateral ventricles, diverging anteriorly
        ang = s * np.deg2rad(18.0)
        du, dv = lr - s * 0.11, ap - 0.02
        pu, pv = np.cos(ang) * du - np.sin(ang) * dv, np.sin(ang) * du + np.cos(ang) * dv
        rv = np.sqrt((pu / 0.06) ** 2 + (pv / 0.3) ** 2 + ((cs - 0.14) / 0.1) ** 2)
        vent = np.maximum(vent, _soft((1.0 - rv) * 0.06))
    csf = np.clip(np.maximum(np.maximum(sulci, fissure), vent), 0.0, 1.0)

    # tumour: irregular core (enhancing rim around necrosis) inside irregular oedema
    d = np.stack([lr - t_centre[0], ap - t_centre[1], cs - t_centre[2]])
    dist = np.sqrt((d**2).sum(0)) + 1e-9
    dirs = d / dist
    core_r = r_core * _lobes(dirs, core_lobes, 3, 0.35)
    oed_r = r_oedema * _lobes(dirs, oed_lobes, 5, 0.8)
    inside = brain > 0.5
    core = (dist < core_r) & inside
    necrosis = (dist < necro_frac * core_r) & inside
    oedema = (dist < np.maximum(oed_r, core_r * 1.25)) & inside & ~core
    seg = np.zeros((size, size, size), dtype=np.uint8)
    seg[oedema] = 2
    seg[core] = 4
    seg[necrosis] = 1

    fractions = {  # soft tissue fractions of normal brain; tumour labels replace them (hard)
        "white": white * (1.0 - deep) * (1.0 - csf),
        "grey": (1.0 - white * (1.0 - deep)) * (1.0 - csf),
        "csf": csf,
    }
    lesion = {"oedema": seg == 2, "necrosis": seg == 1, "enhancing": seg == 4}
    tumour = seg > 0
    images: dict[str, np.ndarray] = {}
    for m in MODALITIES:
        table = CONTRASTS[m]
        img = sum(table[t] * f for t, f in fractions.items())
        for t, mask in lesion.items():
            img = np.where(mask, table[t], img)
        field = np.exp(bias[m][0] * lr + bias[m][1] * ap + bias[m][2] * cs)
        images[m] = gains[m] * field * img * np.where(tumour, 1.0, brain)
    # Rician noise (magnitude of complex Gaussian noise), drawn last; background stays exactly 0
    for m in MODALITIES:
        n1 = rng.normal(0.0, noise_sd, size=seg.shape)
        n2 = rng.normal(0.0, noise_sd, size=seg.shape)
        noisy = np.sqrt((images[m] + n1) ** 2 + n2**2)
        images[m] = (np.where(inside, noisy, 0.0) * INTENSITY_SCALE[m]).astype(np.float32)
    return images, seg



@register_synth("brats", help="synthetic multi-contrast brain MR with tumour labels in the BraTS layout (MGAN, rubik)")
def write_brats(
    out: str | Path,
    n_cases: int = 20,
    size: int = 48,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write synthetic multi-contrast brain MR with tumour labels in the BraTS layout.

    Layout (BraTS 2018-2021 naming; Menze et al., IEEE TMI 2015; Bakas et al. 2017, 2018)::

        out/BraTS_0000/BraTS_0000_t1.nii.gz, _t1ce, _t2, _flair   float32, skull-stripped
        out/BraTS_0000/BraTS_0000_seg.nii.gz                      uint8, labels 0/1/2/4
        ...
        out/README.txt

    All five files of every case share one 1 mm LPS affine (:func:`brats_affine`). Case ``i`` is
    ``render_brats_case(brats_rng(seed, i), size)``. Each case is written into a hidden temporary
    folder and renamed into place when complete, so an interrupted run never leaves a half case.
    Output is byte-identical for the same arguments.

    Args:
        out: output folder; created if missing.
        n_cases: number of cases.
        size: cube side in voxels (real BraTS: 240 x 240 x 155).
        seed: random seed (>= 0).
        overwrite: allow writing into a non-empty folder (case folders ``BraTS_NNNN`` are replaced;
            stale ones that the new set does not contain are removed; other files are left alone).

    Returns:
        The output folder.

    Raises:
        FileExistsError: ``out`` is a non-empty folder (or a file) and ``overwrite`` is False.
        ValueError: on out-of-range arguments.
    """
    if n_cases < 1:
        raise ValueError(f"n_cases must be >= 1, got {n_cases}")
    if size < 16:
        raise ValueError(f"size must be >= 16, got {size}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    out = prepare_out_dir(out, overwrite)
    out.mkdir(parents=True, exist_ok=True)

    affine = brats_affine(size)
    width = max(4, len(str(n_cases - 1)))
    written: set[str] = set()
    for idx in track(range(n_cases), description="BraTS cases (4 contrasts + labels)"):
        case = f"BraTS_{idx:0{width}d}"
        images, seg = render_brats_case(brats_rng(seed, idx), size)
        tmp = out / f".{case}.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        for m in MODALITIES:
            write_image(tmp / f"{case}_{m}.nii.gz", images[m][None], {"affine": affine})
        write_image(tmp / f"{case}_seg.nii.gz", seg[None], {"affine": affine}, dtype="uint8")
        final = out / case
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        written.add(case)
    if overwrite:
        for entry in os.scandir(out):
            if entry.is_dir() and _CASE_RE.match(entry.name) and entry.name not in written:
                shutil.rmtree(entry.path)
    atomic_write_text(
        out / "README.txt",
        "Synthetic phantom set generated by medlearn (medlearn.synth.brats.write_brats).\n"
        "NOT patient data. Layout of the BraTS challenge (Menze et al., IEEE TMI 2015; Bakas et al. 2017, 2018).\n"
        f"seed={seed} n_cases={n_cases} size={size}; contrasts {', '.join(MODALITIES)}; labels 0/1/2/4.\n",
    )
    return out
