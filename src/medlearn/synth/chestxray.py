"""Synthetic chest radiographs written in the NIH ChestX-ray14 layout.

The public dataset is NIH ChestX-ray14 (Wang et al., "ChestX-ray8: Hospital-scale Chest X-ray
Database and Benchmarks on Weakly-Supervised Classification and Localization of Common Thorax
Diseases", CVPR 2017): 112,120 frontal 8-bit gray PNGs named ``{patient:08d}_{followup:03d}.png``,
a table ``Data_Entry_2017.csv`` and a patient-wise split in ``train_val_list.txt`` /
``test_list.txt``. :func:`write_chestxray14` writes a small phantom set in exactly that layout so
the C2L demo (Zhou et al., "Comparing to Learn", MICCAI 2020) goes through the real reader
(:func:`medlearn.data.chestxray14.read_chestxray14`).

The phantom recipe follows ``methods/c2l.md`` section 5 (designed at 32 px), written here in
continuous normalised coordinates so the same random draws give the same picture at any size
(32 .. 1024 px): body ellipse, two dark lungs with a vertical gradient, rib bands inside the lungs,
a bright heart; random centre jitter, scale, gamma, gain and pixel noise. Four findings map onto
real ChestX-ray14 label names:

* ``Nodule``: a small bright Gaussian blob inside one lung (sigma 1.2-2.2 px at 32 px);
* ``Consolidation``: a textured diffuse opacity (sigma 5-8 px at 32 px) masked to one lung;
* ``Effusion``: the lung base filled (to 0.6) below a random level, with a lateral meniscus;
* ``Cardiomegaly``: the heart 1.45x wider.

The other ten ChestX-ray14 labels never occur in the phantom set.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image

from medlearn.console import track
from medlearn.io import atomic_write_text
from medlearn.synth import held_out_count, prepare_out_dir, register_synth

__all__ = ["FINDINGS", "image_rng", "render_chest_radiograph", "to_uint8", "write_chestxray14"]

#: The ChestX-ray14 label names the phantom can show, in the order the real table sorts them.
FINDINGS: tuple[str, ...] = ("Cardiomegaly", "Consolidation", "Effusion", "Nodule")

#: Header of the official ``Data_Entry_2017.csv``: the bracketed pairs are two columns each and the
#: rows end with a trailing comma, so pandas reads 12 columns, the last one ``Unnamed: 11``.
CSV_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],"
)

_NAME_RE = re.compile(r"^\d{8}_\d{3}\.png$")
_FOV_MM = 358.0  # physical field of view recorded in the pixel-spacing columns (0.143 mm x 2500 px)
_EDGE = 0.03  # soft edge width of the anatomy, in normalised units (image spans [-1, 1])
_TEXTURE_GRID = 8  # consolidation texture: coarse random grid, upsampled (same draws at any size)


def image_rng(seed: int, index: int) -> np.random.Generator:
    """The random generator :func:`write_chestxray14` uses to render one image.

    Args:
        seed: the ``seed`` given to :func:`write_chestxray14`.
        index: the image's 0-based row in ``Data_Entry_2017.csv``.

    Returns:
        A fresh generator; ``render_chest_radiograph(image_rng(seed, i), size, findings_i)``
        reproduces the image of row ``i``.
    """
    return np.random.default_rng([seed, 2, index])


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Quantise an image in [0, 1] to 8 bits (round to nearest), as written to the PNGs."""
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _soft(d: np.ndarray) -> np.ndarray:
    """Soft step: 0 outside (d < 0), 1 inside (d > 0), smooth over ~``_EDGE``."""
    return 0.5 * (1.0 + np.tanh(d / _EDGE))


def _ellipse(u: np.ndarray, v: np.ndarray, cu: float, cv: float, ru: float, rv: float) -> np.ndarray:
    """Soft mask of an axis-aligned ellipse in normalised coordinates."""
    r = np.sqrt(((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2)
    return _soft((1.0 - r) * min(ru, rv))


def _upsample_grid(grid: np.ndarray, size: int) -> np.ndarray:
    """Bilinear upsampling of a small square grid to ``(size, size)`` (separable, no SciPy)."""
    g = grid.shape[0]
    pos = (np.arange(size) + 0.5) / size * (g - 1)
    i0 = np.clip(np.floor(pos).astype(int), 0, g - 2)
    frac = pos - i0
    w = np.zeros((size, g))
    w[np.arange(size), i0] = 1.0 - frac
    w[np.arange(size), i0 + 1] = frac
    return w @ grid @ w.T


def render_chest_radiograph(rng: np.random.Generator, size: int, findings: Mapping[str, bool]) -> np.ndarray:
    """Render one synthetic frontal chest radiograph.

    All random parameters, including those of the findings, are drawn in a fixed order whatever
    ``findings`` says, so the same generator state renders the same anatomy with or without a
    finding, and (apart from the pixel noise, drawn last) the same picture at any ``size``.

    Args:
        rng: random generator; consumed.
        size: output side in pixels (the recipe is resolution independent; 32 .. 1024 typical).
        findings: ``{label: present}`` over :data:`FINDINGS`; missing labels count as absent.

    Returns:
        ``(size, size)`` float32 image in [0, 1]; bright = attenuating (bone, heart, fluid).

    Raises:
        ValueError: if ``size`` < 8 or ``findings`` names a label outside :data:`FINDINGS`.
    """
    if size < 8:
        raise ValueError(f"size must be >= 8, got {size}")
    unknown = sorted(set(findings) - set(FINDINGS))
    if unknown:
        raise ValueError(f"unknown findings {unknown}; the phantom knows {list(FINDINGS)}")
    has = {name: bool(findings.get(name, False)) for name in FINDINGS}

    # --- every draw, in a fixed order (sd 0.03 of the image side = 0.06 normalised units) ---
    cx, cy = rng.normal(0.0, 0.06, size=2)
    scale = rng.uniform(0.9, 1.1)
    gamma = rng.uniform(0.8, 1.25)
    gain = rng.uniform(0.85, 1.15)
    rib_freq = rng.uniform(4.2, 5.0)  # rib cycles per normalised unit
    rib_phase = rng.uniform(0.0, 2.0 * np.pi)
    nod_side = int(rng.integers(2))
    nod_r, nod_t = np.sqrt(rng.uniform()) * 0.6, rng.uniform(0.0, 2.0 * np.pi)
    nod_sigma = rng.uniform(1.2, 2.2) / 16.0  # px at 32 px -> normalised units
    nod_amp = rng.uniform(0.25, 0.4)
    con_side = int(rng.integers(2))
    con_r, con_t = np.sqrt(rng.uniform()) * 0.5, rng.uniform(0.0, 2.0 * np.pi)
    con_sigma = rng.uniform(5.0, 8.0) / 16.0
    con_amp = rng.uniform(0.25, 0.4)
    con_texture = rng.uniform(size=(_TEXTURE_GRID, _TEXTURE_GRID))
    eff_sides = int(rng.integers(3))  # 0: image-left lung, 1: image-right lung, 2: both
    eff_frac = rng.uniform(0.2, 0.45)  # filled fraction of the lung height
    noise = rng.normal(0.0, 0.03, size=(size, size))

    # --- body coordinates: image spans [-1, 1]; y grows downwards ---
    c = (np.arange(size) + 0.5) / size * 2.0 - 1.0
    u = (c[None, :] - cx) / scale
    v = (c[:, None] - cy) / scale
    u, v = np.broadcast_arrays(u, v)

    body = _ellipse(u, v, 0.0, 0.05, 0.82, 0.98)
    img = 0.04 + 0.51 * body  # air around a 0.55 body
    img = img + 0.10 * _soft(0.09 - np.abs(u)) * body  # spine / mediastinum

    lung_c = ((-0.36, -0.05), (0.36, -0.05))
    lung_r = (0.25, 0.55)
    lungs = [_ellipse(u, v, cu, cv, *lung_r) for cu, cv in lung_c]
    top, bottom = lung_c[0][1] - lung_r[1], lung_c[0][1] + lung_r[1]
    t = np.clip((v - top) / (bottom - top), 0.0, 1.0)
    lung_val = 0.32 - 0.17 * t  # darker (more air) towards the bases
    ribs = np.clip((np.sin(2.0 * np.pi * rib_freq * (v + 0.3 * u**2) + rib_phase) - 0.55) / 0.3, 0.0, 1.0)
    lung_val = lung_val + 0.09 * ribs
    lung_any = np.maximum(lungs[0], lungs[1])
    img = img * (1.0 - lung_any) + lung_val * lung_any

    if has["Effusion"]:
        for side in ((0,), (1,), (0, 1))[eff_sides]:
            cu = lung_c[side][0]
            level = bottom - 2.0 * lung_r[1] * eff_frac
            level = level - 0.1 * np.clip((np.abs(u) - abs(cu)) / lung_r[0], -1.0, 1.0)  # lateral meniscus
            fill = _soft(v - level) * lungs[side]
            img = img * (1.0 - fill) + 0.6 * fill

    if has["Consolidation"]:
        cu = lung_c[con_side][0] + con_r * lung_r[0] * np.cos(con_t)
        cv = lung_c[con_side][1] + con_r * lung_r[1] * np.sin(con_t)
        blob = np.exp(-((u - cu) ** 2 + (v - cv) ** 2) / (2.0 * con_sigma**2))
        texture = _upsample_grid(con_texture, size)
        img = img + con_amp * blob * (0.5 + 0.5 * texture) * lungs[con_side]

    heart_w = 0.26 * (1.45 if has["Cardiomegaly"] else 1.0)
    heart = _ellipse(u, v, 0.10, 0.30, heart_w, 0.22)
    img = img * (1.0 - heart) + 0.78 * heart

    if has["Nodule"]:
        cu = lung_c[nod_side][0] + nod_r * lung_r[0] * np.cos(nod_t)
        cv = lung_c[nod_side][1] + nod_r * lung_r[1] * np.sin(nod_t)
        img = img + nod_amp * np.exp(-((u - cu) ** 2 + (v - cv) ** 2) / (2.0 * nod_sigma**2))

    img = gain * np.clip(img, 0.0, 1.0) ** gamma + noise
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def _fill(rng: np.random.Generator, n: int) -> list[int]:
    """Images per patient (1 follow-up mostly, some 2-3), summing exactly to ``n``."""
    sizes: list[int] = []
    while sum(sizes) < n:
        sizes.append(int(rng.choice([1, 2, 3], p=[0.65, 0.25, 0.10])))
    if sizes:
        sizes[-1] -= sum(sizes) - n
    return sizes



@register_synth("chestxray", help="synthetic chest radiographs in the NIH ChestX-ray14 layout (C2L demo)")
def write_chestxray14(
    out: str | Path,
    n_images: int = 600,
    size: int = 64,
    n_test: int | None = None,
    prevalence: float = 0.35,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write synthetic chest radiographs in the NIH ChestX-ray14 layout.

    Layout written (as in the public release; Wang et al., CVPR 2017)::

        out/images/00000001_000.png ...   8-bit gray PNGs, {patient:08d}_{followup:03d}.png
        out/Data_Entry_2017.csv           the official 11 columns (+ the trailing empty one)
        out/train_val_list.txt            image names, one per line (patient-wise split)
        out/test_list.txt
        out/README.txt                    says this is a synthetic phantom set, with the seed

    Each of the four findings in :data:`FINDINGS` is present independently with probability
    ``prevalence``; ``Finding Labels`` joins the present ones with ``|`` in alphabetical order (as the
    real table does) or says ``No Finding``. About a third of the patients have 2-3 follow-ups. The
    split is by patient, ``n_test`` images in the test list exactly, and patient numbers are shuffled
    across the two lists. ``OriginalImage[Width,Height]`` records ``size``; the pixel spacing
    records a 358 mm field of view. Row ``i`` of the table is rendered with
    ``render_chest_radiograph(image_rng(seed, i), size, findings)``.

    Images are written first (each to a temporary name, then renamed), the lists next and the
    table last, so an interrupted run leaves no ``Data_Entry_2017.csv`` for a reader to trust.
    Output is byte-identical for the same arguments.

    Args:
        out: output folder; created if missing.
        n_images: number of images.
        size: image side in pixels.
        n_test: images in ``test_list.txt``; default a quarter of ``n_images`` (the official split
            holds 23 %).
        prevalence: probability of each finding.
        seed: random seed (>= 0); everything written depends only on the arguments.
        overwrite: allow writing into a non-empty folder (stale ``images/*.png`` of this layout that
            the new set does not contain are removed; other files are left alone).

    Returns:
        The output folder.

    Raises:
        FileExistsError: if ``out`` is a non-empty folder (or a file) and ``overwrite`` is False.
        ValueError: on out-of-range arguments.
    """
    if n_images < 1:
        raise ValueError(f"n_images must be >= 1, got {n_images}")
    if size < 8:
        raise ValueError(f"size must be >= 8, got {size}")
    if not 0.0 <= prevalence <= 1.0:
        raise ValueError(f"prevalence must be in [0, 1], got {prevalence}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    n_test = held_out_count(n_test, n_images, "n_images")

    out = prepare_out_dir(out, overwrite)
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)

    # --- plan: patients, their split, their images and labels (one generator, fixed order) ---
    plan = np.random.default_rng([seed, 1])
    test_sizes = _fill(plan, n_test)
    train_sizes = _fill(plan, n_images - n_test)
    sizes = test_sizes + train_sizes
    is_test = [True] * len(test_sizes) + [False] * len(train_sizes)
    order = plan.permutation(len(sizes))  # patient id k+1 gets planned patient order[k]

    rows: list[str] = []
    findings_rows: list[dict[str, bool]] = []
    train_names: list[str] = []
    test_names: list[str] = []
    spacing = _FOV_MM / size
    for k, planned in enumerate(order):
        patient = k + 1
        age = int(plan.integers(18, 86))
        gender = "M" if plan.uniform() < 0.56 else "F"  # the real table is 56 % male
        for followup in range(sizes[planned]):
            name = f"{patient:08d}_{followup:03d}.png"
            present = plan.uniform(size=len(FINDINGS)) < prevalence
            view = "PA" if plan.uniform() < 0.6 else "AP"
            age += int(plan.integers(0, 2)) if followup else 0
            found = {f: bool(p) for f, p in zip(FINDINGS, present)}
            labels = "|".join(f for f in FINDINGS if found[f]) or "No Finding"
            rows.append(
                f"{name},{labels},{followup},{patient},{age},{gender},{view},"
                f"{size},{size},{spacing:.3f},{spacing:.3f},"
            )
            findings_rows.append(found)
            (test_names if is_test[planned] else train_names).append(name)

    # --- images, then lists, then the table ---
    written = set()
    for i, (row, found) in enumerate(track(zip(rows, findings_rows), total=len(rows), description="chest radiographs")):
        name = row.split(",", 1)[0]
        pixels = to_uint8(render_chest_radiograph(image_rng(seed, i), size, found))
        tmp = images / f".{name}.tmp"
        Image.fromarray(pixels).save(tmp, format="PNG")
        os.replace(tmp, images / name)
        written.add(name)
    if overwrite:
        for entry in os.scandir(images):
            if _NAME_RE.match(entry.name) and entry.name not in written:
                os.remove(entry.path)

    atomic_write_text(out / "train_val_list.txt", "".join(f"{n}\n" for n in train_names))
    atomic_write_text(out / "test_list.txt", "".join(f"{n}\n" for n in test_names))
    atomic_write_text(
        out / "README.txt",
        "Synthetic phantom set generated by medlearn (medlearn.synth.chestxray.write_chestxray14).\n"
        "NOT patient data. Layout of NIH ChestX-ray14 (Wang et al., 'ChestX-ray8', CVPR 2017).\n"
        f"seed={seed} n_images={n_images} size={size} n_test={n_test} prevalence={prevalence}\n"
        f"Simulated findings: {', '.join(FINDINGS)}; the other ChestX-ray14 labels never occur.\n",
    )
    atomic_write_text(out / "Data_Entry_2017.csv", CSV_HEADER + "\n" + "".join(f"{r}\n" for r in rows))
    return out
