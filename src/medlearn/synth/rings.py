"""Ring and blob phantoms for Crossover-Net, written as an ``image,mask[,split]`` table (the ``mask-table`` layout).

The Crossover-Net spec's CPU-scale experiment (methods/crossover.md section 5) asks whether a pixel
classifier that sees a cross (a long vertical and a long horizontal strip) beats a single strip and a
square patch of the same pixel count when the label of a pixel depends on context 15-25 px away. Two
96 x 96 gray phantom families, each pixel labelled tumour (1) or not (0):

- ``"ring"``: an organ visible ONLY as a thin bright ring (an ellipse with radii ``U(16, 22)``, the
  pixels with ``|rho - 1| < 0.07`` of its normalised radius ``rho``, +0.30); inside and outside have the
  same intensity. One blob surely inside, two more each inside with probability 0.3 (else outside),
  radius ``U(4, 7)``, never touching the ring nor each other. A blob is tumour if it is inside the
  ring: deciding it needs to see the ring, up to ~20 px away, along some axis.
- ``"blob"``: a visible organ ellipse (radii ``U(26, 34)``, +0.25) and blobs of radius ``U(5, 10)``
  (+0.18): one surely inside, one more with probability 0.5, inside with probability 0.3; a blob is
  tumour only if it is fully inside the organ, identical blobs outside are distractors. Local context
  (the organ's brightness around the blob) suffices here.

A blob is the union of 4 Gaussians (centres within half its radius of its centre, sigma 0.6 x its
radius) thresholded at 0.6. Every image gets a base gray of 0.3, a smooth texture (0.06 x a 24 x 24
standard-normal field upsampled bilinearly) and pixel noise (0.05 x standard normal), is clipped to
[0, 1] and saved as 8-bit PNG; masks are 8-bit PNGs with values 0 / 1. The spec leaves the base gray,
the blob placement rule and the blob shape's details open: these are our choices [I].

Written files::

    out/images/<variant>_0000.png ...   gray 8-bit, size x size
    out/masks/<variant>_0000.png ...    0 = background, 1 = tumour
    out/masks.csv                       image,mask,split (split "test" for the last n_test images)
    out/README.txt                      says this is synthetic, with the arguments
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from medlearn.console import track
from medlearn.io import atomic_write_text, write_image
from medlearn.synth import held_out_count, prepare_out_dir, register_synth

__all__ = ["VARIANTS", "render_phantom", "write_rings"]

#: Phantom families.
VARIANTS = ("ring", "blob")


def _blob(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, r: float) -> np.ndarray:
    """Union of 4 Gaussians around ``(cy, cx)``, thresholded at 0.6 (a lumpy disc of radius about ``r``)."""
    sigma = 0.6 * r
    field = np.zeros(yy.shape)
    for _ in range(4):
        a = rng.uniform(0, 2 * np.pi)
        d = rng.uniform(0, r / 2)
        gy, gx = cy + d * np.sin(a), cx + d * np.cos(a)
        field = np.maximum(field, np.exp(-((yy - gy) ** 2 + (xx - gx) ** 2) / (2 * sigma**2)))
    return field > 0.6


def _place(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, size: int, r_range: tuple[float, float],
           allowed: np.ndarray, taken: np.ndarray, tries: int = 400) -> np.ndarray | None:
    """A blob that lies wholly in ``allowed`` and does not touch ``taken`` (dilated by 1 px), or None."""
    from scipy.ndimage import binary_dilation

    forbidden = binary_dilation(taken, iterations=2) | ~allowed
    for _ in range(tries):
        r = rng.uniform(*r_range)
        cy, cx = rng.uniform(r + 1, size - r - 2, size=2)
        m = _blob(rng, yy, xx, cy, cx, r)
        if m.any() and not (m & forbidden).any():
            return m
    return None


def render_phantom(rng: np.random.Generator, variant: str = "ring", size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """One phantom: ``(image (size, size) float in [0, 1], mask (size, size) uint8 0 / 1)`` (module docstring)."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    img = np.full((size, size), 0.3)
    blobs: list[tuple[np.ndarray, bool]] = []
    taken = np.zeros((size, size), dtype=bool)
    if variant == "ring":
        a, b = rng.uniform(16, 22, size=2) * size / 96
        cy, cx = rng.uniform(max(a, b) + 3, size - max(a, b) - 3, size=2)
        rho = np.sqrt(((yy - cy) / a) ** 2 + ((xx - cx) / b) ** 2)
        ring = np.abs(rho - 1) < 0.07
        img += 0.30 * ring
        inside, outside = rho < 0.93, rho > 1.07
        taken |= ring
        wants = [True] + [bool(rng.random() < 0.3) for _ in range(2)]
        r_range = (4 * size / 96, 7 * size / 96)
        gain = 0.18
    else:
        a, b = rng.uniform(26, 34, size=2) * size / 96
        cy, cx = rng.uniform(size / 2 - 8, size / 2 + 8, size=2)
        rho = np.sqrt(((yy - cy) / a) ** 2 + ((xx - cx) / b) ** 2)
        organ = rho < 1
        img += 0.25 * organ
        inside, outside = rho < 0.97, rho > 1.03
        wants = [True] + ([bool(rng.random() < 0.3)] if rng.random() < 0.5 else [])
        r_range = (5 * size / 96, 10 * size / 96)
        gain = 0.18
    for want_inside in wants:
        m = _place(rng, yy, xx, size, r_range, inside if want_inside else outside, taken)
        if m is None:
            continue
        taken |= m
        blobs.append((m, want_inside))
    mask = np.zeros((size, size), dtype=np.uint8)
    for m, is_tumour in blobs:
        img += gain * m
        if is_tumour:
            mask[m] = 1
    noise = torch.from_numpy(rng.standard_normal((1, 1, 24, 24)))
    texture = F.interpolate(noise, size=(size, size), mode="bilinear", align_corners=False)[0, 0].numpy()
    img += 0.06 * texture + 0.05 * rng.standard_normal((size, size))
    return np.clip(img, 0.0, 1.0), mask


@register_synth("rings", help="ring / blob phantoms (Crossover-Net demo and reproduction) as an image,mask table")
def write_rings(out: str | Path, variant: str = "ring", n_images: int = 50, n_test: int | None = None,
                size: int = 96, seed: int = 0, overwrite: bool = False) -> Path:
    """Write ring or blob phantoms as an ``image,mask,split`` table (the ``mask-table`` layout).

    Args:
        out: output folder.
        variant: ``"ring"`` (the organ is only a thin ring: long-range context decides) or ``"blob"``.
        n_images: images in all.
        n_test: how many of them (the last ones) are marked ``test`` (default: a quarter, at least 1).
        size: image side in pixels (the geometry scales with it; the spec's is 96).
        seed: random seed; output depends only on the arguments.
        overwrite: allow a non-empty ``out``.

    Returns:
        ``out``.

    Raises:
        FileExistsError: ``out`` is not empty and ``overwrite`` is False.
        ValueError: an unknown variant, fewer than 1 image, a size below 48 or a negative seed.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if n_images < 1 or size < 48 or seed < 0:
        raise ValueError(f"need n_images >= 1, size >= 48 and seed >= 0 (got {n_images}, {size}, {seed})")
    n_test = held_out_count(n_test, n_images, "n_images")
    out = prepare_out_dir(out, overwrite)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, VARIANTS.index(variant), 9619])
    rows = ["image,mask,split"]
    for i in track(range(n_images), description=f"{variant} phantom images + masks"):
        img, mask = render_phantom(rng, variant, size)
        name = f"{variant}_{i:04d}.png"
        write_image(out / "images" / name, np.round(img * 255).astype(np.uint8)[None], overwrite=True)
        write_image(out / "masks" / name, mask[None], overwrite=True)
        split = "test" if i >= n_images - n_test else ""
        rows.append(f"images/{name},masks/{name},{split}")
    atomic_write_text(out / "masks.csv", "\n".join(rows) + "\n")
    atomic_write_text(out / "README.txt",
                      "Synthetic phantoms generated by medlearn (medlearn.synth.rings.write_rings). NOT patient data.\n"
                      f"variant={variant} n_images={n_images} n_test={n_test} size={size} seed={seed}\n"
                      "Masks: 0 background, 1 tumour (a blob inside the organ).\n")
    return out
