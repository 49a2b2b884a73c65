"""Synthetic head CT volumes with a 4-class intracranial lesion label.

Stand-in for the head CT hemorrhage data of Rubik's cube pretraining (Zhuang et al., "Self-supervised
Feature Learning for 3D Medical Images by Playing a Rubik's Cube", MICCAI 2019; Zhu et al.,
"Rubik's Cube+", Medical Image Analysis 2020), whose private hospital set is not available; the
public substitutes are the RSNA Intracranial Hemorrhage Detection challenge (Flanders et al.,
Radiology: AI 2020) and CQ500 (Chilamkurthy et al., Lancet 2018), whose subtypes
``intraparenchymal``, ``intraventricular`` and ``subdural`` are the lesion classes drawn here.

The recipe follows ``methods/rubik.md`` section 5 (designed at 40^3) in continuous normalised
coordinates, so the same random draws give the same head at any size or voxel spacing. The voxel
axes are stored RAS: ``x`` right, ``y`` posterior -> anterior, ``z`` inferior -> superior; the
anatomy differs between octants on purpose (that is what makes the Rubik's cube puzzle
learnable):

* scalp (soft tissue), a skull shell that is thicker towards the base, and a solid skull base
  below the brain;
* an air sinus, anterior and inferior;
* brain parenchyma with grey/white contrast and a weak gyri-like texture;
* two butterfly-shaped lateral ventricles (CSF), diverging anteriorly;
* a dense midline falx in the upper half only.

Per volume: scale 0.9-1.05, centre jitter (sd 0.02 of the half field of view), yaw (sd 5 deg),
tissue gain 0.9-1.1 (air stays -1000 HU) and Gaussian noise with sd 3-6 HU. Values are
Hounsfield-like (air -1000, CSF ~5, brain ~25-40, falx ~90, acute blood 60-85, bone ~700-1000),
written as ``int16`` NIfTI, so CT windows such as the brain window [-100, 200] mean what they mean
on real scans. The lesion classes (:data:`LESION_CLASSES`):

* ``none``;
* ``intraparenchymal``: an ellipsoidal blob of blood in one hemisphere's parenchyma;
* ``intraventricular``: blood layering in the dependent (posterior) part of one or both
  ventricles;
* ``subdural``: a crescent between the inner table of the skull and the brain on one side.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medlearn.console import track
from medlearn.io import atomic_write_text, write_image
from medlearn.synth import held_out_count, prepare_out_dir, register_synth

__all__ = ["LESION_CLASSES", "head_rng", "headct_geometry", "parse_spacing", "render_head_ct", "write_headct"]

#: The lesion classes, in label-index order (``labels.csv`` holds the names).
LESION_CLASSES: tuple[str, ...] = ("none", "intraparenchymal", "intraventricular", "subdural")

_NAME_RE = re.compile(r"^case_\d{4,}\.nii\.gz$")
_EDGE = 0.025  # soft edge width of the anatomy, normalised units (the field of view spans [-1, 1])

AIR_HU = -1000.0
SCALP_HU = 40.0
BONE_HU = 1000.0
BASE_HU = 800.0
CSF_HU = 5.0
WHITE_HU = 27.0
GREY_HU = 38.0
FALX_HU = 90.0


def head_rng(seed: int, index: int) -> np.random.Generator:
    """The random generator :func:`write_headct` uses to render volume ``index``.

    Args:
        seed: the ``seed`` given to :func:`write_headct`.
        index: the 0-based case number (``case_0007`` -> 7).

    Returns:
        A fresh generator; ``render_head_ct(head_rng(seed, i), ...)`` reproduces case ``i``.
    """
    return np.random.default_rng([seed, 3, index])


def parse_spacing(spacing: Sequence[float] | float | str) -> tuple[float, float, float]:
    """Voxel spacing as three positive floats.

    Args:
        spacing: three numbers, one number (isotropic), or a string such as ``"1,1,2.5"`` or
            ``"1 1 2.5"`` (what the ``medlearn synth`` command line passes).

    Returns:
        ``(sx, sy, sz)`` in mm.

    Raises:
        ValueError: anything else, or a value that is not a positive finite number.
    """
    if isinstance(spacing, str):
        parts = [p for p in re.split(r"[,\s]+", spacing.strip().strip("()[]")) if p]
        try:
            values = [float(p) for p in parts]
        except ValueError:
            raise ValueError(f"spacing must be numbers such as '1,1,2.5', got {spacing!r}") from None
    elif isinstance(spacing, (int, float)):
        values = [float(spacing)]
    else:
        values = [float(s) for s in spacing]
    if len(values) == 1:
        values = values * 3
    if len(values) != 3 or not all(np.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"spacing must be three positive numbers, got {spacing!r}")
    return values[0], values[1], values[2]


def headct_geometry(
    size: int, spacing: Sequence[float] | float | str = (1.0, 1.0, 1.0)
) -> tuple[tuple[int, int, int], np.ndarray]:
    """Grid shape and affine of a phantom volume.

    The field of view is a cube of side ``size * min(spacing)`` mm, centred on the world origin;
    each axis gets ``round(side / spacing)`` voxels, so ``size`` is the number of voxels along the
    finest axis and an anisotropic spacing gives fewer voxels along the coarse axes.

    Args:
        size: voxels along the finest axis (>= 8).
        spacing: voxel size in mm along x, y, z (see :func:`parse_spacing`).

    Returns:
        ``(shape, affine)``: the ``(X, Y, Z)`` shape and the 4x4 RAS voxel-to-world affine.

    Raises:
        ValueError: ``size`` < 8 or a spacing that is not three positive numbers.
    """
    if size < 8:
        raise ValueError(f"size must be >= 8, got {size}")
    sp = parse_spacing(spacing)
    side = size * min(sp)
    shape = tuple(max(1, int(round(side / s))) for s in sp)
    affine = np.eye(4)
    affine[:3, :3] = np.diag(sp)
    affine[:3, 3] = [-(n - 1) * s / 2.0 for n, s in zip(shape, sp)]
    return (shape[0], shape[1], shape[2]), affine


def _soft(d: np.ndarray) -> np.ndarray:
    """Soft step: 0 for d < 0, 1 for d > 0, smooth over ~``_EDGE``."""
    return 0.5 * (1.0 + np.tanh(d / _EDGE))


def _radius(u: np.ndarray, v: np.ndarray, w: np.ndarray, centre: Sequence[float] | np.ndarray,
            radii: Sequence[float] | np.ndarray) -> np.ndarray:
    """Ellipsoidal radius (1 on the surface) of an axis-aligned ellipsoid."""
    return np.sqrt(
        ((u - centre[0]) / radii[0]) ** 2 + ((v - centre[1]) / radii[1]) ** 2 + ((w - centre[2]) / radii[2]) ** 2
    )


def _inside(r: np.ndarray, scale: float) -> np.ndarray:
    """Soft mask of ``r < 1`` for an ellipsoid whose smallest radius is ``scale``."""
    return _soft((1.0 - r) * scale)


def _put(img: np.ndarray, mask: np.ndarray, value: float | np.ndarray) -> np.ndarray:
    """Layer ``value`` over ``img`` where ``mask`` (soft, in [0, 1]) is on."""
    return img * (1.0 - mask) + value * mask


def render_head_ct(
    rng: np.random.Generator,
    size: int = 40,
    lesion: str = "none",
    spacing: Sequence[float] | float | str = (1.0, 1.0, 1.0),
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Render one synthetic head CT volume in Hounsfield-like units.

    Every random parameter, including those of all lesion types, is drawn in a fixed order whatever
    ``lesion`` says, so the same generator state renders the same head with or without a lesion,
    and (apart from the noise, drawn last) the same anatomy at any size or spacing.

    Args:
        rng: random generator; consumed.
        size: voxels along the finest axis (see :func:`headct_geometry`).
        lesion: one of :data:`LESION_CLASSES`.
        spacing: voxel size in mm along x, y, z.

    Returns:
        ``(volume, masks)``: the ``(X, Y, Z)`` float32 volume in HU (rounded to integers, as
        written), and boolean ``(X, Y, Z)`` masks ``brain`` (parenchyma incl. ventricles and
        lesion), ``skull``, ``ventricles``, ``sinus``, ``falx`` and ``lesion`` (empty for
        ``none``).

    Raises:
        ValueError: an unknown ``lesion`` or a bad ``size`` / ``spacing``.
    """
    if lesion not in LESION_CLASSES:
        raise ValueError(f"unknown lesion {lesion!r}; known: {list(LESION_CLASSES)}")
    shape, _ = headct_geometry(size, spacing)
    sp = np.array(parse_spacing(spacing))
    half = size * sp.min() / 2.0

    # --- every draw, in a fixed order ---
    scale = rng.uniform(0.9, 1.05)
    centre = rng.normal(0.0, 0.02, size=3)
    yaw = np.deg2rad(rng.normal(0.0, 5.0))
    gain = rng.uniform(0.9, 1.1)
    noise_sd = rng.uniform(3.0, 6.0)
    tex_freq = rng.uniform(9.0, 13.0, size=3)
    tex_phase = rng.uniform(0.0, 2.0 * np.pi, size=3)
    vent_size = rng.uniform(0.85, 1.2)
    blood_hu = rng.uniform(60.0, 85.0)
    iph_side = 1.0 if rng.uniform() < 0.5 else -1.0
    iph_centre = np.array([iph_side * rng.uniform(0.22, 0.4), rng.uniform(-0.45, 0.45), rng.uniform(-0.1, 0.4)])
    iph_radii = rng.uniform(0.09, 0.17, size=3)
    ivh_which = int(rng.integers(3))  # 0: right ventricle, 1: left, 2: both
    ivh_fill = rng.uniform(0.45, 0.9)  # filled fraction of the ventricle length, from the back
    sdh_side = 1.0 if rng.uniform() < 0.5 else -1.0
    sdh_thick = rng.uniform(0.14, 0.24)  # in units of the inner-skull radius
    sdh_centre_w = rng.uniform(0.0, 0.4)

    # --- head coordinates: undo centre, scale and yaw ---
    axes = [((np.arange(n) + 0.5) * s - n * s / 2.0) / half for n, s in zip(shape, sp)]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    x, y, z = (x - centre[0]) / scale, (y - centre[1]) / scale, (z - centre[2]) / scale
    c, s_ = np.cos(yaw), np.sin(yaw)
    u, v, w = c * x + s_ * y, -s_ * x + c * y, z

    outer = np.array([0.74, 0.9, 0.84])
    r = _radius(u, v, w, (0.0, 0.0, 0.0), outer)
    head = _inside(r, outer.min())
    skull_outer = _inside(r / 0.95, outer.min())
    # inner table: the shell is ~0.08 of the radius at the vertex and ~0.18 near the base
    thick = 0.08 + 0.10 * np.clip((0.3 - w) / 1.1, 0.0, 1.0)
    r_in = r / (0.95 - thick)
    intracranial = _inside(r_in, outer.min() * 0.8)
    w_floor = -0.5 + 0.12 * np.clip(v, 0.0, 1.0)  # skull base, rising a little anteriorly
    floor = _soft(w - w_floor)
    brain = intracranial * floor
    # bone: the vault plus a base plate under the brain; soft tissue (face, neck) below the plate
    skull = np.clip(skull_outer * _soft(w - (w_floor - 0.16)) - brain, 0.0, 1.0)
    base = skull * _soft(w_floor + 0.05 - w)  # the base plate: somewhat less dense than the vault

    img = np.full(shape, AIR_HU)
    img = _put(img, head, gain * SCALP_HU)
    img = _put(img, skull, gain * (BONE_HU * (1.0 - base) + BASE_HU * base))

    # brain: grey rim, white core, weak gyri-like texture
    grey = _soft(r_in - 0.82)
    texture = np.sin(tex_freq[0] * u + tex_phase[0]) * np.sin(tex_freq[1] * v + tex_phase[1]) * np.sin(
        tex_freq[2] * w + tex_phase[2]
    )
    parenchyma = WHITE_HU + (GREY_HU - WHITE_HU) * grey + 4.0 * texture
    img = _put(img, brain, gain * parenchyma)

    # falx: dense midline sheet, upper half only (not through the ventricles)
    falx = _soft(0.045 - np.abs(u)) * _soft(w - 0.05) * _soft(r_in - 0.15) * brain
    # lateral ventricles: two ellipsoids diverging anteriorly (the "butterfly")
    vent_masks = []
    vent_coords = []
    for side in (1.0, -1.0):
        ang = side * np.deg2rad(18.0)
        cu, cv, cw = side * 0.13, 0.02, 0.12
        du, dv = u - cu, v - cv
        pu, pv = np.cos(ang) * du - np.sin(ang) * dv, np.sin(ang) * du + np.cos(ang) * dv
        radii = np.array([0.075, 0.3, 0.12]) * vent_size
        rv = _radius(pu, pv, w, (0.0, 0.0, cw), radii)
        vent_masks.append(_inside(rv, radii.min()) * brain)
        vent_coords.append((pv, radii[1]))
    ventricles = np.maximum(vent_masks[0], vent_masks[1])
    falx = falx * (1.0 - ventricles)
    img = _put(img, ventricles, gain * CSF_HU)
    img = _put(img, falx, gain * FALX_HU)

    # air sinus, anterior-inferior (drawn over bone and anything else)
    sinus = _inside(_radius(u, v, w, (0.0, 0.58, -0.5), (0.28, 0.18, 0.16)), 0.16) * head
    img = _put(img, sinus, AIR_HU)

    lesion_mask = np.zeros(shape)
    if lesion == "intraparenchymal":
        lesion_mask = _inside(_radius(u, v, w, iph_centre, iph_radii), iph_radii.min()) * brain * (1.0 - ventricles)
    elif lesion == "intraventricular":
        for k in ((0,), (1,), (0, 1))[ivh_which]:
            pv, ry = vent_coords[k]
            level = -ry + 2.0 * ry * ivh_fill  # blood layers posteriorly (supine patient)
            lesion_mask = np.maximum(lesion_mask, vent_masks[k] * _soft(level - pv))
    elif lesion == "subdural":
        lateral = np.clip((sdh_side * u / outer[0] - 0.15) / 0.55, 0.0, 1.0)
        vertical = np.clip(1.0 - np.abs(w - sdh_centre_w) / 0.6, 0.0, 1.0)
        depth = sdh_thick * lateral * vertical  # crescent: thickest laterally, tapering
        lesion_mask = intracranial * floor * _soft(r_in - (1.0 - depth)) * _soft(depth - 0.03)
    img = _put(img, lesion_mask, gain * blood_hu)

    img = img + rng.normal(0.0, noise_sd, size=shape)
    img = np.clip(np.rint(img), -1024.0, 3071.0).astype(np.float32)
    masks = {
        "brain": brain > 0.5,
        "skull": skull > 0.5,
        "ventricles": ventricles > 0.5,
        "sinus": sinus > 0.5,
        "falx": falx > 0.5,
        "lesion": lesion_mask > 0.5,
    }
    return img, masks



@register_synth("headct", help="synthetic head CT volumes with a 4-class lesion label (Rubik's cube demo)")
def write_headct(
    out: str | Path,
    n_volumes: int = 200,
    size: int = 40,
    n_test: int | None = None,
    seed: int = 0,
    spacing: Sequence[float] | float | str = (1.0, 1.0, 1.0),
    overwrite: bool = False,
) -> Path:
    """Write synthetic head CT volumes with a 4-class lesion label.

    Layout::

        out/volumes/case_0000.nii.gz ...   int16 NIfTI in HU, RAS affine with ``spacing``
        out/labels.csv                     path,label,split (path relative to ``out``)
        out/README.txt                     says this is a synthetic phantom set, with the seed

    Labels are balanced (each class ``n_volumes / 4`` times, +-1) in random order; ``split`` is
    ``test`` for exactly ``n_test`` cases drawn at random and ``train`` for the rest. Case ``i``
    is ``render_head_ct(head_rng(seed, i), size, label_i, spacing)``. Volumes are written first
    (each atomically), the README next and ``labels.csv`` last, so an interrupted run leaves no
    table for a reader to trust. Output is byte-identical for the same arguments.

    Args:
        out: output folder; created if missing.
        n_volumes: number of volumes.
        size: voxels along the finest axis (the field of view is ``size * min(spacing)`` mm).
        n_test: cases with ``split == "test"``; default a quarter of ``n_volumes``.
        seed: random seed (>= 0); everything written depends only on the arguments.
        spacing: voxel size in mm along x, y, z (e.g. ``(1, 1, 2.5)`` for thick axial slices;
            also ``"1,1,2.5"`` or one number, see :func:`parse_spacing`).
        overwrite: allow writing into a non-empty folder (stale ``volumes/case_*.nii.gz`` that the
            new set does not contain are removed; other files are left alone).

    Returns:
        The output folder.

    Raises:
        FileExistsError: ``out`` is a non-empty folder (or a file) and ``overwrite`` is False.
        ValueError: on out-of-range arguments.
    """
    if n_volumes < 1:
        raise ValueError(f"n_volumes must be >= 1, got {n_volumes}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    spacing = parse_spacing(spacing)
    shape, affine = headct_geometry(size, spacing)  # validates size
    n_test = held_out_count(n_test, n_volumes, "n_volumes")

    out = prepare_out_dir(out, overwrite)
    volumes = out / "volumes"
    volumes.mkdir(parents=True, exist_ok=True)

    plan = np.random.default_rng([seed, 1])
    labels = plan.permutation(np.arange(n_volumes) % len(LESION_CLASSES))
    is_test = np.zeros(n_volumes, dtype=bool)
    is_test[plan.permutation(n_volumes)[:n_test]] = True

    width = max(4, len(str(n_volumes - 1)))
    rows: list[str] = []
    written: set[str] = set()
    for i in track(range(n_volumes), description="head CT volumes"):
        name = f"case_{i:0{width}d}.nii.gz"
        label = LESION_CLASSES[int(labels[i])]
        volume, _ = render_head_ct(head_rng(seed, i), size, label, spacing)
        write_image(volumes / name, volume[None], {"affine": affine}, dtype="int16", overwrite=True)
        written.add(name)
        rows.append(f"volumes/{name},{label},{'test' if is_test[i] else 'train'}")
    if overwrite:
        for entry in os.scandir(volumes):
            if _NAME_RE.match(entry.name) and entry.name not in written:
                os.remove(entry.path)

    sp = ", ".join(f"{s:g}" for s in spacing)
    atomic_write_text(
        out / "README.txt",
        "Synthetic phantom set generated by medlearn (medlearn.synth.headct.write_headct).\n"
        "NOT patient data. Head CT in Hounsfield-like units (int16 NIfTI, RAS), one 4-class lesion label.\n"
        f"seed={seed} n_volumes={n_volumes} size={size} n_test={n_test} spacing=({sp}) shape={shape}\n"
        f"Classes: {', '.join(LESION_CLASSES)}.\n",
    )
    atomic_write_text(out / "labels.csv", "path,label,split\n" + "".join(f"{r}\n" for r in rows))
    return out
