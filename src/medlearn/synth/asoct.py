"""Synthetic two-sided AS-OCT B-scans written in the AGE challenge layout.

The public layout is that of AGE (Fu et al., "AGE Challenge: Angle Closure Glaucoma Evaluation in
Anterior Segment Optical Coherence Tomography", Medical Image Analysis 2020): 8-bit gray JPGs named
``T<patient>-<index>.jpg`` in ``ASOCT_Image/`` and one annotation table with the columns
``ASOCT_Name, Left_Label, X1, Y1, Right_Label, X2, Y2`` (:mod:`medlearn.data.age_asoct`).

Each half of a scan shows one anterior chamber angle, drawn with the recipe of ``methods/asoct.md``
section 5 (designed on a 96 x 96 canvas and written here in units of ``min(H, W / 2) / 96`` pixels, so
the same draws give the same picture at 96 px or at the AGE size of 2130 x 998):

* the scleral spur ``s``, uniform in the central 40% of the half;
* a bright (0.8) corneoscleral band, 14 units thick, whose inner boundary runs straight below ``s``
  (towards the bottom edge, leaning outwards by 5-20 degrees) and bends at ``s`` by 25-45 degrees into
  a gentle arc above it (the cornea), so that the spur is a visible corner;
* a bright (0.6) tapered iris wedge coming from the chamber side, with a blunt tip (3 units wide, so
  that it survives the blur) 4-10 units below ``s`` at a gap ``g ~ U(0, 12)`` units from the band;
  **closure = g < 3 units**;
* a dark (0.05) anterior chamber between them, and tissue (0.3) outside the band;
* multiplicative gamma speckle (shape 4), Gaussian blur (sigma 1 unit), a random affine transform
  (rotation +-15 degrees, scale 0.85-1.15, translation +-8 units) that moves ``s`` with it, a random
  gain 0.7-1.3 and additive noise (sigma 0.03).

The shapes are evaluated through the inverse of the affine transform, so the written spur is exactly
where the drawn corner is. The right half holds another angle, mirrored: its spur is written as
``X2 = (W - 1) - x``. A fraction ``p_missing`` of the spurs is written as ``-1, -1`` (not
determined), the closure label kept.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy.ndimage import gaussian_filter

from medlearn.console import track
from medlearn.synth import prepare_out_dir, register_synth

__all__ = ["AngleDraw", "image_rng", "render_angle", "write_age", "CLOSURE_GAP"]

#: A gap below this many canvas units (of 96 per side) is angle closure.
CLOSURE_GAP = 3.0
_EDGE = 0.6  # soft edge of the shapes, in image pixels
_NAME = "T{patient:04d}-{index:02d}.jpg"


@dataclass
class AngleDraw:
    """What :func:`render_angle` drew: the spur in image pixels (x, y), the gap in canvas units, the label."""

    spur: tuple[float, float]
    gap: float
    closed: bool


def image_rng(seed: int, index: int, side: int) -> np.random.Generator:
    """The generator :func:`write_age` renders angle ``side`` (0 left, 1 right) of scan ``index`` with."""
    return np.random.default_rng([seed, 7, index, side])


def _soft(d: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(d / _EDGE))


def _signed_distance(px: np.ndarray, py: np.ndarray, line: np.ndarray) -> np.ndarray:
    """Distance to a polyline, positive on the right of its direction (y grows downwards: the chamber side)."""
    best = np.full(px.shape, np.inf)
    sign = np.ones(px.shape)
    for (ax, ay), (bx, by) in zip(line[:-1], line[1:]):
        dx, dy = bx - ax, by - ay
        t = np.clip(((px - ax) * dx + (py - ay) * dy) / (dx * dx + dy * dy), 0.0, 1.0)
        d = np.hypot(px - ax - t * dx, py - ay - t * dy)
        closer = d < best
        best = np.where(closer, d, best)
        # cross > 0: the point is clockwise of the direction = to its right on screen (y down)
        cross = dx * (py - ay) - dy * (px - ax)
        sign = np.where(closer, np.where(cross > 0, 1.0, -1.0), sign)
    return best * sign


def render_angle(rng: np.random.Generator, height: int, width: int, noise: bool = True) -> tuple[np.ndarray, AngleDraw]:
    """Render one side-normalised anterior chamber angle (cornea and iris as in the left angle).

    All random numbers are drawn first, in a fixed order, so a generator state gives the same anatomy
    at any size (apart from the pixel noise).

    Args:
        rng: random generator; consumed.
        height: rows of the canvas.
        width: columns of the canvas.
        noise: apply speckle, gain and additive noise (``False``: the blurred shapes only, for tests;
            the same random numbers are drawn either way).

    Returns:
        ``(image, draw)``: a ``(height, width)`` float32 image in [0, 1] and what was drawn.

    Raises:
        ValueError: a canvas smaller than 16 px.
    """
    if min(height, width) < 16:
        raise ValueError(f"the canvas must be at least 16 x 16 px, got {height} x {width}")
    u = min(height, width) / 96.0
    sx, sy = rng.uniform(0.3, 0.7) * width, rng.uniform(0.3, 0.7) * height
    lean = math.radians(rng.uniform(5.0, 20.0))  # lower boundary: from vertical, leaning outwards
    bend = math.radians(rng.uniform(25.0, 45.0))  # direction change at the spur
    curve = math.radians(rng.uniform(0.0, 15.0))  # total turn of the arc above the spur
    gap = rng.uniform(0.0, 12.0)
    below = rng.uniform(4.0, 10.0)  # iris tip below the spur, along the boundary
    tilt = math.radians(rng.uniform(0.0, 20.0))  # iris axis below the chamber normal
    half_angle = math.radians(rng.uniform(6.0, 10.0))
    iris_half = rng.uniform(8.0, 11.0)  # half thickness of the iris body
    rot = math.radians(rng.uniform(-15.0, 15.0))
    scale = rng.uniform(0.85, 1.15)
    shift = rng.uniform(-8.0, 8.0, size=2) * u
    gain = rng.uniform(0.7, 1.3)
    speckle = rng.gamma(4.0, 0.25, size=(height, width))
    additive = rng.normal(0.0, 0.03, size=(height, width))
    if not noise:
        speckle, additive, gain = np.ones_like(speckle), np.zeros_like(additive), 1.0

    # boundary polyline in canvas units (y down): far below -> spur -> arc out of the canvas
    down = np.array([-math.sin(lean), math.cos(lean)])  # from the spur downwards, outwards
    far = 3.0 * max(height, width) / u
    line = [np.array([sx / u, sy / u]) + far * down, np.array([sx / u, sy / u])]
    heading = math.pi / 2 - lean - bend  # above the horizon, towards the chamber side (right)
    step, n_arc = 4.0, int(far / 4.0) + 1
    for k in range(n_arc):
        a = heading - curve * k / n_arc
        line.append(line[-1] + step * np.array([math.cos(a), -math.sin(a)]))
    line_arr = np.array(line)

    # iris: tip at distance `gap` into the chamber from a boundary point `below` units under the spur
    normal = np.array([math.cos(lean), math.sin(lean)])  # chamber-side normal of the lower boundary
    tip = line_arr[1] + below * down + gap * normal
    axis = np.array([math.cos(lean + tilt), math.sin(lean + tilt)])

    # pixel grid -> canvas units through the inverse affine (about the centre)
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    jj, ii = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    dx, dy = jj - cx - shift[0], ii - cy - shift[1]
    c, s = math.cos(rot), math.sin(rot)
    px = (cx + (c * dx + s * dy) / scale) / u
    py = (cy + (-s * dx + c * dy) / scale) / u

    edge = u * scale  # image pixels per canvas unit
    d = _signed_distance(px, py, line_arr) * edge  # image pixels, > 0 in the chamber
    band = _soft(-d) * _soft(d + 14.0 * edge)
    outside = _soft(-(d + 14.0 * edge))
    chamber = _soft(d)
    along = ((px - tip[0]) * axis[0] + (py - tip[1]) * axis[1]) * edge
    across = np.abs((px - tip[0]) * axis[1] - (py - tip[1]) * axis[0]) * edge
    width_at = np.minimum(1.5 * edge + along * math.tan(half_angle), iris_half * edge)  # blunt tip, 3 units wide
    iris = _soft(along) * _soft(width_at - across) * chamber
    img = 0.3 * outside + 0.8 * band + 0.05 * chamber
    img = img * (1.0 - iris) + 0.6 * iris

    img = gaussian_filter(img * speckle, sigma=u, mode="nearest")
    img = np.clip(gain * img + additive, 0.0, 1.0).astype(np.float32)
    # the spur through the forward affine, in image pixels
    rx, ry = sx - cx, sy - cy
    spur = (cx + shift[0] + scale * (c * rx - s * ry), cy + shift[1] + scale * (s * rx + c * ry))
    return img, AngleDraw((float(spur[0]), float(spur[1])), float(gap), bool(gap < CLOSURE_GAP))


def render_scan(seed: int, index: int, width: int, height: int) -> tuple[np.ndarray, AngleDraw, AngleDraw]:
    """One two-sided scan ``(height, width)``: the left angle as drawn, the right one mirrored.

    The returned right :class:`AngleDraw` has its spur already in scan pixels (``x = W - 1 - x_half``).
    """
    split = width // 2
    left, dl = render_angle(image_rng(seed, index, 0), height, split)
    right, dr = render_angle(image_rng(seed, index, 1), height, width - split)
    scan = np.concatenate([left, right[:, ::-1]], axis=1)
    dr = AngleDraw(((width - 1) - dr.spur[0], dr.spur[1]), dr.gap, dr.closed)
    return scan, dl, dr


@register_synth("asoct", help="synthetic two-sided AS-OCT scans in the AGE challenge layout (angle closure + "
                              "scleral spur; asoct demo)")
def write_age(
    out: str | Path,
    n_scans: int = 400,
    width: int = 192,
    height: int = 96,
    images_per_patient: int = 8,
    p_missing: float = 0.02,
    table_format: str = "xlsx",
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write synthetic AS-OCT scans in the AGE layout.

    Layout written (as the AGE training release)::

        out/ASOCT_Image/T0001-01.jpg ...     8-bit gray JPGs (quality 95), T<patient>-<index>
        out/<out name>_Location.xlsx         ASOCT_Name, Left_Label, X1, Y1, Right_Label, X2, Y2
        out/README.txt                       says this is a phantom set, with the arguments

    Coordinates are written with 2 decimals (as the AGE table). Images first, the table last, so an
    interrupted run leaves no table to trust. Output depends only on the arguments.

    Args:
        out: output folder; created if missing.
        n_scans: number of scans.
        width: scan width (AGE: 2130); each half is one angle.
        height: scan height (AGE: 998).
        images_per_patient: scans per patient (AGE: about 16); splits group by patient.
        p_missing: probability that a spur is written as undetermined (-1, -1).
        table_format: ``"xlsx"`` (as AGE) or ``"csv"``.
        seed: random seed (>= 0).
        overwrite: allow writing into a non-empty folder.

    Returns:
        The output folder.

    Raises:
        FileExistsError: ``out`` is a non-empty folder (or a file) and ``overwrite`` is false.
        ValueError: out-of-range arguments.
    """
    if n_scans < 1:
        raise ValueError(f"n_scans must be >= 1, got {n_scans}")
    if min(height, width // 2) < 16:
        raise ValueError(f"each half must be at least 16 x 16 px, got a {width} x {height} scan")
    if images_per_patient < 1:
        raise ValueError(f"images_per_patient must be >= 1, got {images_per_patient}")
    if not 0.0 <= p_missing <= 1.0:
        raise ValueError(f"p_missing must be in [0, 1], got {p_missing}")
    if table_format not in ("xlsx", "csv"):
        raise ValueError(f"table_format must be 'xlsx' or 'csv', got {table_format!r}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    out = prepare_out_dir(out, overwrite)
    images = out / "ASOCT_Image"
    images.mkdir(parents=True, exist_ok=True)
    missing = np.random.default_rng([seed, 8]).uniform(size=(n_scans, 2)) < p_missing
    rows = []
    for i in track(range(n_scans), description="AS-OCT scans"):
        name = _NAME.format(patient=i // images_per_patient + 1, index=i % images_per_patient + 1)
        scan, left, right = render_scan(seed, i, width, height)
        tmp = images / f".{name}.tmp"
        Image.fromarray((scan * 255.0 + 0.5).astype(np.uint8), mode="L").save(tmp, format="JPEG", quality=95)
        os.replace(tmp, images / name)
        row: list[object] = [name]
        for k, d in enumerate((left, right)):
            x, y = (-1.0, -1.0) if missing[i, k] else (round(d.spur[0], 2), round(d.spur[1], 2))
            row += [int(d.closed), x, y]
        rows.append(row)
    (out / "README.txt").write_text(
        "Synthetic phantom set generated by medlearn (medlearn.synth.asoct.write_age). NOT patient data.\n"
        "Layout of the AGE challenge (Fu et al., MedIA 2020): ASOCT_Image/*.jpg + *_Location table.\n"
        f"seed={seed} n_scans={n_scans} width={width} height={height} images_per_patient={images_per_patient} "
        f"p_missing={p_missing}\nclosure = iris-band gap < {CLOSURE_GAP:g} units of min(H, W/2)/96 px.\n",
        encoding="utf-8")
    df = pd.DataFrame(rows, columns=["ASOCT_Name", "Left_Label", "X1", "Y1", "Right_Label", "X2", "Y2"])
    table = out / f"{out.resolve().name}_Location.{table_format}"
    for stale in out.glob("*_Location.*"):
        if stale != table:
            stale.unlink()
    tmp = out / f".{table.name}.tmp"
    if table_format == "xlsx":
        df.to_excel(tmp, index=False, engine="openpyxl")
    else:
        df.to_csv(tmp, index=False)
    os.replace(tmp, table)
    return out
