"""Two-scope colonoscopy phantom videos with polyp masks, in the CVC-ClinicDB and ETIS layouts.

The VideoGAN spec's synthetic clips (section 6): per video a lumen centre drifting linearly,
shading ``S = 1 - exp(-2.5 d)`` with ``d`` the distance to the lumen centre, haustral folds
``S *= 1 + 0.18 sin(f log(d z) - v t + phase)``, forward motion by zoom ``z = 1 + 0.04 t``, one
polyp (a bright bump of radius 0.12-0.25 moving with the scene; its disc is the mask) and 4 small
white specular spots. The bump: inside the disc ``S <- 0.55 S + 0.6 sqrt(1 - r^2)`` (``r``: distance to
its centre over its radius), outside a shadow ring ``S *= 1 - 0.45 exp(-((r - 1) / 0.25)^2)``, so
that its outline is visible at 32 px (a segmenter trained on real frames must be able to find it
for the downstream polyp test to measure anything). Each scope renders the same geometry in its own colour::

    colour = cast * S^gamma * vignette * gain + specular

- scope A ("Clinic"): cast (1.0, 0.62, 0.45), gamma 0.9, vignette 0.35;
- scope B ("ETIS"): cast (0.80, 0.50, 0.62), gamma 1.3, vignette 0.6;

with a per-video cast jitter of 6 %, a per-video gain ``U(0.8, 1.1)`` and a per-frame gain jitter
of 3 % (auto-exposure flicker). Both scopes show the black endoscope border: pixels outside a disc
of radius 0.97 of the half side are 0. :func:`render_clip` returns a clip and its masks in memory
(and, for evaluation only, the same geometry in the other scope's mean style, which only a phantom
can give); the two writers put clips in the public layouts, through the real readers:

- ``medlearn synth endoscopy-cvc``: scope A in the CVC-ClinicDB layout (``Original/N.tif``,
  ``Ground Truth/N.tif`` 0 / 255, ``metadata.csv`` with ``sequence_id``), plus ``Reference/N.tif``,
  each frame rendered in scope B's mean style (phantom-only ground truth of an A -> B translation);
- ``medlearn synth endoscopy-etis``: scope B in the ETIS layout (``ETIS-LaribPolypDB/N.tif``,
  ``GroundTruth/pN.tif``), no sequence table (the reader cuts pseudo-sequences by frame
  difference), plus ``Reference/N.tif`` in scope A's mean style.

Consecutive videos differ in lumen drift, polyp and colour jitter, so the ETIS reader's
frame-difference rule recovers the clips (checked in the tests).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medlearn.console import track
from medlearn.synth import prepare_out_dir, register_synth

__all__ = ["SCOPE_A", "SCOPE_B", "ScopeStyle", "render_clip", "write_cvc_phantom", "write_etis_phantom"]


@dataclass(frozen=True)
class ScopeStyle:
    """How one endoscope renders the scene."""

    cast: tuple[float, float, float]
    gamma: float
    vignette: float


SCOPE_A = ScopeStyle((1.0, 0.62, 0.45), 0.9, 0.35)
SCOPE_B = ScopeStyle((0.80, 0.50, 0.62), 1.3, 0.6)


def _style_image(shade: np.ndarray, spec: np.ndarray, style: ScopeStyle, vignette_r: np.ndarray,
                 cast_jitter: np.ndarray, gain: float) -> np.ndarray:
    cast = np.asarray(style.cast) * cast_jitter
    vig = 1.0 - style.vignette * vignette_r ** 2
    img = cast[:, None, None] * (np.clip(shade, 0, None) ** style.gamma * vig * gain)[None] + spec[None]
    return np.clip(img, 0.0, 1.0)


def render_clip(rng: np.random.Generator, style: ScopeStyle, other: ScopeStyle | None = None, n_frames: int = 12,
                size: int = 48) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Render one clip (see the module docstring).

    Args:
        rng: the random generator (geometry, then style jitter).
        style: the scope that films the clip.
        other: a second scope whose *mean* style (no jitter) renders the same geometry, or ``None``.
        n_frames: frames in the clip.
        size: frame side in pixels.

    Returns:
        ``(frames (T, 3, H, W) float in [0, 1], masks (T, H, W) uint8 0/1, other-style frames or None)``.
    """
    yy, xx = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij")
    r_img = np.sqrt(xx ** 2 + yy ** 2)
    border = r_img <= 0.97
    c0 = rng.uniform(-0.35, 0.35, 2)
    drift = rng.uniform(-0.025, 0.025, 2)
    freq, speed, phase = rng.uniform(5.0, 8.0), rng.uniform(0.2, 0.5), rng.uniform(0, 2 * np.pi)
    p_ang, p_dist = rng.uniform(0, 2 * np.pi), rng.uniform(0.35, 0.6)
    p_rad = rng.uniform(0.12, 0.25)
    spots = rng.uniform(-0.8, 0.8, (4, 2))
    cast_j = 1.0 + rng.uniform(-0.06, 0.06, 3)
    gain = rng.uniform(0.8, 1.1)
    frames = np.zeros((n_frames, 3, size, size))
    ref = np.zeros_like(frames) if other is not None else None
    masks = np.zeros((n_frames, size, size), dtype=np.uint8)
    for t in range(n_frames):
        z = 1.0 + 0.04 * t
        c = c0 + drift * t
        d = np.sqrt((xx - c[0]) ** 2 + (yy - c[1]) ** 2) + 1e-3
        shade = (1.0 - np.exp(-2.5 * d)) * (1.0 + 0.18 * np.sin(freq * np.log(d * z) - speed * t + phase))
        pc = c + z * p_dist * np.array([np.cos(p_ang), np.sin(p_ang)])
        pd = np.sqrt((xx - pc[0]) ** 2 + (yy - pc[1]) ** 2) / (p_rad * z)
        polyp = pd <= 1.0
        dome = np.sqrt(np.clip(1 - pd ** 2, 0, 1))
        shade = np.where(polyp, shade * 0.55 + 0.6 * dome, shade * (1.0 - 0.45 * np.exp(-((pd - 1.0) / 0.25) ** 2)))
        spec = np.zeros((size, size))
        for s in spots:
            q = c + z * (s - c0)
            spec += 0.9 * np.exp(-((xx - q[0]) ** 2 + (yy - q[1]) ** 2) / (2 * 0.03 ** 2))
        flick = 1.0 + rng.uniform(-0.03, 0.03)
        frames[t] = _style_image(shade, spec, style, r_img, cast_j, gain * flick) * border
        masks[t] = (polyp & border).astype(np.uint8)
        if ref is not None and other is not None:
            ref[t] = _style_image(shade, spec, other, r_img, np.ones(3), 0.95) * border
    return frames, masks, ref


def _u8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def _write_clips(out: Path, style: ScopeStyle, other: ScopeStyle, n_videos: int, n_frames: int, size: int,
                 seed: int, image_dir: str, mask_dir: str, mask_prefix: str, what: str) -> list[tuple[int, str]]:
    from medlearn.io import write_image

    rng = np.random.default_rng(seed)
    rows = []
    index = 0
    for v in track(range(n_videos), description=what):
        frames, masks, ref = render_clip(rng, style, other, n_frames, size)
        assert ref is not None
        for t in range(n_frames):
            index += 1
            write_image(out / image_dir / f"{index}.tif", _u8(frames[t]))
            write_image(out / mask_dir / f"{mask_prefix}{index}.tif", (masks[t] * 255).astype(np.uint8)[None])
            write_image(out / "Reference" / f"{index}.tif", _u8(ref[t]))
            rows.append((index, f"video{v + 1:03d}"))
    return rows


@register_synth("endoscopy-cvc", "scope-A colonoscopy phantom videos with polyp masks in the CVC-ClinicDB layout "
                                 "(metadata.csv sequence table; Reference/ in scope B's style)")
def write_cvc_phantom(out: str | Path, n_videos: int = 12, n_frames: int = 12, size: int = 48, seed: int = 0,
                      overwrite: bool = False) -> Path:
    """Write scope-A phantom clips in the CVC-ClinicDB layout (see the module docstring).

    Args:
        out: output folder.
        n_videos: clips (sequences).
        n_frames: frames per clip.
        size: frame side in pixels.
        seed: seed of geometry and colour jitter.
        overwrite: write into a non-empty folder.

    Returns:
        The folder.
    """
    root = prepare_out_dir(out, overwrite)
    rows = _write_clips(root, SCOPE_A, SCOPE_B, n_videos, n_frames, size, seed, "Original", "Ground Truth", "",
                        "CVC-ClinicDB phantom videos")
    with (root / "metadata.csv").open("w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["frame", "sequence_id"])
        w.writerows(rows)
    return root


@register_synth("endoscopy-etis", "scope-B colonoscopy phantom videos with polyp masks in the ETIS-LaribPolypDB "
                                  "layout (no sequence ids; Reference/ in scope A's style)")
def write_etis_phantom(out: str | Path, n_videos: int = 12, n_frames: int = 12, size: int = 48, seed: int = 1,
                       overwrite: bool = False) -> Path:
    """Write scope-B phantom clips in the ETIS-LaribPolypDB layout (see the module docstring).

    Args:
        out: output folder.
        n_videos: clips (the reader recovers them as pseudo-sequences).
        n_frames: frames per clip.
        size: frame side in pixels.
        seed: seed of geometry and colour jitter.
        overwrite: write into a non-empty folder.

    Returns:
        The folder.
    """
    root = prepare_out_dir(out, overwrite)
    _write_clips(root, SCOPE_B, SCOPE_A, n_videos, n_frames, size, seed, "ETIS-LaribPolypDB", "GroundTruth", "p",
                  "ETIS-LaribPolypDB phantom videos")
    return root
