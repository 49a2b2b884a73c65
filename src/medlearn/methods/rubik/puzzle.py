"""Rubik's cube pretext samples: cut a volume into 2x2x2 cubes, shuffle, turn and mask them.

Zhuang, Li, Wu, Ma, Zheng: "Self-supervised Feature Learning for 3D Medical Images by Playing a
Rubik's Cube", MICCAI 2019, arXiv:1910.02241 (section 2.1: rearrangement + rotation), and Zhu, Li,
Hu, Ma, Zhou, Zheng: "Rubik's Cube+: A self-supervised feature learning framework for 3D medical
image analysis", Medical Image Analysis 64:101746, 2020 (cube masking). No official code exists;
the details follow the re-implementation of Zhang, Zheng, Gu (arXiv:2209.12157, repository
``EndoluminalSurgicalVision-IMR/Medical-SSL``, ``datasets_3D/Rubik_cube/base_rkb_pretask.py``).

Conventions (all arrays are channel-first, spatial axes ``(D, H, W)`` = ``(z, y, x)``):

- Cells of the 2x2x2 grid and the cubes cut from them are numbered z-major:
  ``index = iz * 4 + iy * 2 + ix``.
- Permutation semantics: with the label ``c`` and the permutation ``P_c``, **slot m of the network
  input holds original cube** ``P_c[m]`` (``slots = cubes[P_c]``), as in the re-implementation.
- "Horizontal" turn = 180 deg about the slice axis D (flip H and W); "vertical" turn = 180 deg
  about the in-plane axis W (flip D and H). Both keep an anisotropic cuboid's shape and are their
  own inverses. (The re-implementation swaps the names; only consistency matters.)
- The optional L/R flip of the whole volume flips ``flip_axis`` (default W), before cutting.

Every random operation has a deterministic twin (TorchIO's habit): :meth:`RubikPuzzle.sample_params`
draws a :class:`PuzzleParams` from an explicit ``np.random.Generator`` and :meth:`RubikPuzzle.apply`
is a pure function of the volume and those parameters.

Examples:
    >>> import numpy as np, torch
    >>> puzzle = RubikPuzzle(k=100, cube_size=(8, 8, 8))
    >>> out = puzzle(torch.rand(1, 20, 20, 20), np.random.default_rng(0))
    >>> out["cubes"].shape, out["hor"].shape
    (torch.Size([8, 1, 8, 8, 8]), torch.Size([8]))
    >>> batch = puzzle.batch(torch.rand(2, 1, 20, 20, 20), np.random.default_rng(0))
    >>> batch["cubes"].shape, batch["order"].shape
    (torch.Size([2, 8, 1, 8, 8, 8]), torch.Size([2]))
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "NUM_CUBES",
    "PuzzleParams",
    "RubikPuzzle",
    "cut_cubes",
    "extract_cubes",
    "hamming_permutations",
    "min_hamming_distance",
    "rotate_180",
    "sample_cube_corners",
]

NUM_CUBES = 8
"""Cubes per puzzle (2x2x2 grid)."""

ROT_NONE, ROT_HOR, ROT_VER = 0, 1, 2

RngLike = np.random.Generator | int | None


# --------------------------------------------------------------------------- permutations


def _all_permutations(n: int) -> np.ndarray:
    """All ``n!`` permutations of ``0..n-1`` in lexicographic order, ``(n!, n)`` uint8."""
    return np.array(list(itertools.permutations(range(n))), dtype=np.uint8)


@functools.lru_cache(maxsize=16)
def _hamming_permutations_cached(k: int, n: int, seed: int) -> np.ndarray:
    candidates = _all_permutations(n)
    total = len(candidates)
    if not 1 <= k <= total:
        raise ValueError(f"k must be in [1, {total}] for n={n}, got {k}")
    rng = np.random.default_rng(seed)
    chosen = np.empty(k, dtype=np.int64)
    chosen[0] = rng.integers(total)
    # min_dist[j] = minimum Hamming distance of candidate j to the chosen set (0 for chosen ones).
    min_dist = (candidates != candidates[chosen[0]]).sum(axis=1)
    for i in range(1, k):
        best = np.flatnonzero(min_dist == min_dist.max())
        chosen[i] = best[rng.integers(len(best))]  # seeded tie-break
        np.minimum(min_dist, (candidates != candidates[chosen[i]]).sum(axis=1), out=min_dist)
    out = candidates[chosen].astype(np.int64)
    out.flags.writeable = False
    return out


def hamming_permutations(k: int = 100, n: int = NUM_CUBES, seed: int = 0) -> np.ndarray:
    """K permutations of ``n`` elements with greedily maximised minimum Hamming distance.

    Greedy max-min selection (Noroozi & Favaro's jigsaw recipe, used by Zhuang et al. 2019 for the
    Rubik's cube): start from a random permutation, then repeatedly add the candidate whose minimum
    Hamming distance to the chosen set is largest; ties are broken by the seeded generator. All
    ``n!`` candidates are scored at once, so K=100 over 8! = 40,320 takes a few tens of ms. The
    result is cached per ``(k, n, seed)``.

    Args:
        k: number of permutations (the order head's class count).
        n: elements per permutation (8 cubes).
        seed: seed of the start and of the tie-breaks.

    Returns:
        ``(k, n)`` int64 array, row ``c`` = ``P_c``; read-only (shared cache), copy it to edit.

    Raises:
        ValueError: ``n`` outside ``[2, 10]`` or ``k`` outside ``[1, n!]``.
    """
    if not 2 <= n <= 10:
        raise ValueError(f"n must be in [2, 10] (all n! candidates are enumerated), got {n}")
    return _hamming_permutations_cached(int(k), int(n), int(seed))


def min_hamming_distance(perms: np.ndarray) -> int:
    """Minimum pairwise Hamming distance of a ``(K, n)`` permutation set (``n + 1`` if ``K < 2``)."""
    perms = np.asarray(perms)
    if len(perms) < 2:
        return perms.shape[1] + 1
    d = (perms[:, None, :] != perms[None, :, :]).sum(axis=-1)
    np.fill_diagonal(d, perms.shape[1] + 1)
    return int(d.min())


# --------------------------------------------------------------------------- cubes


def _cell_bounds(size: int, grid: int) -> list[tuple[int, int]]:
    edges = [(i * size) // grid for i in range(grid + 1)]
    return list(zip(edges[:-1], edges[1:]))


def _check_cube_fits(spatial: Sequence[int], cube_size: Sequence[int], grid: int) -> None:
    if len(spatial) != 3 or len(cube_size) != 3:
        raise ValueError(f"expected 3 spatial sizes and a 3-tuple cube_size, got {tuple(spatial)} and {cube_size}")
    for axis, (s, c) in enumerate(zip(spatial, cube_size)):
        cell = s // grid  # the smallest cell along this axis
        if c < 1 or c > cell:
            raise ValueError(
                f"cube_size {tuple(cube_size)} does not fit a {grid}x{grid}x{grid} grid of a volume of spatial size "
                f"{tuple(spatial)}: axis {axis} has cells of {cell} voxels (cube must be 1..{cell})"
            )


def sample_cube_corners(spatial: Sequence[int], cube_size: Sequence[int], rng: RngLike = None, grid: int = 2,
                        jitter: bool = True) -> np.ndarray:
    """Start corners of one cube per grid cell, each at a random offset inside its cell.

    Cells split every axis at ``floor(i * S / grid)``, so odd sizes give cells differing by one
    voxel. A cube never leaves its cell, hence neighbouring cubes are separated by random gaps
    ``>= 0`` (the re-implementation's jitter; the paper's "gap of ~10 voxels").

    Args:
        spatial: ``(D, H, W)`` of the volume.
        cube_size: ``(d, h, w)``; may be anisotropic.
        rng: generator (or seed) for the offsets.
        grid: cells per axis (2 for the Rubik's cube).
        jitter: if ``False`` centre each cube in its cell (deterministic; the re-implementation's
            validation crops), ``rng`` is then unused.

    Returns:
        ``(grid**3, 3)`` int64 array of ``(z, y, x)`` corners, z-major cell order.

    Raises:
        ValueError: ``cube_size`` larger than the smallest cell along some axis.
    """
    _check_cube_fits(spatial, cube_size, grid)
    rng = np.random.default_rng(rng)
    per_axis = []
    for s, c in zip(spatial, cube_size):
        starts = []
        for lo, hi in _cell_bounds(s, grid):
            slack = hi - lo - c
            starts.append(lo + (int(rng.integers(slack + 1)) if jitter else slack // 2))
        per_axis.append(starts)
    return np.array([[z, y, x] for z in per_axis[0] for y in per_axis[1] for x in per_axis[2]], dtype=np.int64)


def extract_cubes(volume: torch.Tensor, corners: np.ndarray, cube_size: Sequence[int]) -> torch.Tensor:
    """Deterministic twin of :func:`cut_cubes`: ``(C, D, H, W)`` -> ``(N, C, d, h, w)`` at ``corners (N, 3)``."""
    d, h, w = (int(c) for c in cube_size)
    return torch.stack([volume[:, z:z + d, y:y + h, x:x + w] for z, y, x in np.asarray(corners).tolist()])


def cut_cubes(volume: torch.Tensor, cube_size: Sequence[int], rng: RngLike = None, grid: int = 2) -> torch.Tensor:
    """Cut one cube of ``cube_size`` at a random offset inside every cell of a ``grid**3`` partition.

    Args:
        volume: ``(C, D, H, W)``.
        cube_size: ``(d, h, w)``, at most the smallest cell along each axis.
        rng: generator (or seed).
        grid: cells per axis.

    Returns:
        ``(grid**3, C, d, h, w)`` cubes in z-major cell order (``iz * grid**2 + iy * grid + ix``).

    Raises:
        ValueError: wrong rank or a cube larger than a cell.
    """
    if volume.ndim != 4:
        raise ValueError(f"volume must be (C, D, H, W), got shape {tuple(volume.shape)}")
    corners = sample_cube_corners(tuple(volume.shape[1:]), cube_size, rng, grid)
    return extract_cubes(volume, corners, cube_size)


def rotate_180(cube: torch.Tensor, kind: int) -> torch.Tensor:
    """Turn a cube by 180 deg; acts on the last three axes ``(..., d, h, w)``.

    Args:
        cube: ``(..., d, h, w)``, e.g. ``(C, d, h, w)``.
        kind: 0 none (returns ``cube`` itself), 1 horizontal (about the slice axis: flip h and w),
            2 vertical (about the in-plane w axis: flip d and h).

    Returns:
        The turned cube, same shape (also for anisotropic cuboids). Each turn is its own inverse.
    """
    if kind == ROT_NONE:
        return cube
    if kind == ROT_HOR:
        return torch.flip(cube, dims=(-2, -1))
    if kind == ROT_VER:
        return torch.flip(cube, dims=(-3, -2))
    raise ValueError(f"rotation kind must be 0 (none), 1 (horizontal) or 2 (vertical), got {kind}")


# --------------------------------------------------------------------------- puzzle


@dataclass(frozen=True)
class PuzzleParams:
    """Everything random about one puzzle; :meth:`RubikPuzzle.apply` is a pure function of it.

    Attributes:
        flip_lr: flip the volume's W axis before cutting.
        corners: ``(8, 3)`` cube corners (in the possibly flipped volume), cell order.
        order: permutation label ``c``.
        rot: ``(8,)`` per-slot turn, 0 none / 1 horizontal / 2 vertical.
        masked: ``(8,)`` bool, slots that are masked (Rubik's Cube+).
        voxel_mask: ``(8, d, h, w)`` bool keep-mask (all ``True`` in unmasked slots), or ``None``
            when masking is off. Shared over channels.
    """

    flip_lr: bool
    corners: np.ndarray
    order: int
    rot: np.ndarray
    masked: np.ndarray
    voxel_mask: np.ndarray | None = None


class RubikPuzzle:
    """Builds Rubik's cube (and Rubik's Cube+) pretext samples from ``(C, D, H, W)`` volumes.

    Pipeline of Zhuang et al. 2019, section 2.1 (order as in the re-implementation): optional L/R
    flip of the volume -> cut 8 cubes (random offsets in the 2x2x2 cells) -> rearrange with a
    random ``P_c`` (slot m holds cube ``P_c[m]``) -> independent 180 deg turn per slot (none /
    horizontal / vertical with ``p_rotate``) -> (RC+, ``mask=True``) each slot with prob ``p_mask``
    multiplied by a Bernoulli voxel mask that drops ``mask_ratio`` of its voxels.

    Deviations: the voxel mask is drawn per spatial voxel and shared over channels (the
    re-implementation has one channel); the L/R flip of the whole volume is the spec's prototype
    augmentation, applied before cutting so that labels stay consistent.

    Args:
        k: number of permutations (:func:`hamming_permutations`).
        cube_size: ``(d, h, w)`` of each cube, at most the smallest grid cell.
        p_rotate: probabilities of none / horizontal / vertical.
        mask: enable cube masking (Rubik's Cube+).
        p_mask: probability that a slot is masked.
        mask_ratio: fraction of voxels zeroed in a masked slot (Bernoulli per voxel).
        seed: seed of the permutation set (not of the samples: those use the ``rng`` of each call).
        flip_lr: random L/R flip of the whole volume before cutting, with prob 0.5.
        jitter: random cube offsets inside the cells; ``False`` centres them (validation).
        permutations: explicit ``(k, 8)`` permutation set (e.g. a saved file), overrides ``k``/``seed``.
        flip_axis: the spatial axis (0 D, 1 H, 2 W) that runs left-right. Flipping any other axis
            would make the up-down or front-back orientation ambiguous and the rotation labels
            unlearnable: for NIfTI volumes in RAS/LAS voxel order it is 0 (x).
    """

    def __init__(self, k: int = 100, cube_size: Sequence[int] = (16, 16, 16),
                 p_rotate: Sequence[float] = (1 / 3, 1 / 3, 1 / 3), mask: bool = False, p_mask: float = 0.5,
                 mask_ratio: float = 0.5, seed: int = 0, flip_lr: bool = True, jitter: bool = True,
                 permutations: np.ndarray | None = None, flip_axis: int = 2) -> None:
        if flip_axis not in (0, 1, 2):
            raise ValueError(f"flip_axis must be a spatial axis 0, 1 or 2 (D, H, W), got {flip_axis}")
        self.flip_axis = int(flip_axis)
        if permutations is None:
            permutations = hamming_permutations(k, NUM_CUBES, seed)
        permutations = np.array(permutations, dtype=np.int64)  # own, writable copy (the cached set is read-only)
        if permutations.ndim != 2 or permutations.shape[1] != NUM_CUBES or not all(
                sorted(p) == list(range(NUM_CUBES)) for p in permutations.tolist()):
            raise ValueError(f"permutations must be (K, {NUM_CUBES}) permutations of 0..{NUM_CUBES - 1}")
        p_rotate = tuple(float(p) for p in p_rotate)
        if len(p_rotate) != 3 or min(p_rotate) < 0 or not math.isclose(sum(p_rotate), 1.0, abs_tol=1e-6):
            raise ValueError(f"p_rotate must be 3 non-negative probabilities summing to 1, got {p_rotate}")
        if not 0.0 <= p_mask <= 1.0 or not 0.0 <= mask_ratio <= 1.0:
            raise ValueError(f"p_mask and mask_ratio must be in [0, 1], got {p_mask}, {mask_ratio}")
        if len(cube_size) != 3 or min(cube_size) < 1:
            raise ValueError(f"cube_size must be 3 positive ints, got {cube_size}")
        self.permutations = permutations
        self.k = len(permutations)
        self.cube_size = tuple(int(c) for c in cube_size)
        self.p_rotate = np.array(p_rotate) / sum(p_rotate)
        self.mask = bool(mask)
        self.p_mask = float(p_mask)
        self.mask_ratio = float(mask_ratio)
        self.flip_lr = bool(flip_lr)
        self.jitter = bool(jitter)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(k={self.k}, cube_size={self.cube_size}, p_rotate={self.p_rotate.tolist()}, "
                f"mask={self.mask}, p_mask={self.p_mask}, mask_ratio={self.mask_ratio}, flip_lr={self.flip_lr}, "
                f"jitter={self.jitter})")

    # ----------------------------------------------------------------- random -> params

    def sample_params(self, spatial: Sequence[int], rng: RngLike = None) -> PuzzleParams:
        """Draw the parameters of one puzzle for a volume of spatial size ``(D, H, W)``.

        Raises:
            ValueError: ``cube_size`` does not fit the volume's cells.
        """
        rng = np.random.default_rng(rng)
        flip = bool(rng.random() < 0.5) if self.flip_lr else False
        corners = sample_cube_corners(spatial, self.cube_size, rng, 2, self.jitter)
        order = int(rng.integers(self.k))
        rot = rng.choice(3, size=NUM_CUBES, p=self.p_rotate).astype(np.int64)
        masked = np.zeros(NUM_CUBES, dtype=bool)
        voxel_mask = None
        if self.mask:
            masked = rng.random(NUM_CUBES) < self.p_mask
            voxel_mask = np.ones((NUM_CUBES, *self.cube_size), dtype=bool)
            for m in np.flatnonzero(masked):
                voxel_mask[m] = rng.random(self.cube_size) >= self.mask_ratio
        return PuzzleParams(flip, corners, order, rot, masked, voxel_mask)

    def __call__(self, volume: torch.Tensor, rng: RngLike = None) -> dict[str, torch.Tensor | int]:
        """Random puzzle from ``volume (C, D, H, W)``; see :meth:`apply` for the output."""
        if volume.ndim != 4:
            raise ValueError(f"volume must be (C, D, H, W), got shape {tuple(volume.shape)}")
        return self.apply(volume, self.sample_params(tuple(volume.shape[1:]), rng))

    # ----------------------------------------------------------------- deterministic twin

    def apply(self, volume: torch.Tensor, params: PuzzleParams) -> dict[str, torch.Tensor | int]:
        """Build the puzzle of ``volume (C, D, H, W)`` described by ``params``.

        Returns:
            ``cubes`` ``(8, C, d, h, w)`` in slot order (slot m = original cube ``P_c[m]``, turned
            by ``rot[m]``, masked if ``masked[m]``); ``order`` the label ``c`` (int); ``hor``,
            ``ver``, ``mask`` float32 ``(8,)`` per-slot targets.
        """
        if volume.ndim != 4:
            raise ValueError(f"volume must be (C, D, H, W), got shape {tuple(volume.shape)}")
        if params.flip_lr:
            volume = torch.flip(volume, dims=(1 + self.flip_axis,))
        cubes = extract_cubes(volume, params.corners, self.cube_size)
        slots = cubes[torch.as_tensor(self.permutations[params.order])]
        slots = torch.stack([rotate_180(slots[m], int(params.rot[m])) for m in range(NUM_CUBES)])
        if params.voxel_mask is not None and params.masked.any():
            keep = torch.from_numpy(params.voxel_mask).to(device=slots.device, dtype=slots.dtype)
            slots = slots * keep[:, None]
        return {
            "cubes": slots,
            "order": int(params.order),
            "hor": torch.from_numpy(params.rot == ROT_HOR).float(),
            "ver": torch.from_numpy(params.rot == ROT_VER).float(),
            "mask": torch.from_numpy(np.asarray(params.masked)).float(),
        }

    def restore(self, cubes: torch.Tensor, order: int | torch.Tensor,
                hor: torch.Tensor | np.ndarray, ver: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Exact inverse of rearrangement + rotation: slots back to the original cell order.

        Masking is not invertible and is left as is. Use it for tests and figures.

        Args:
            cubes: ``(8, C, d, h, w)`` in slot order.
            order: the permutation label ``c``.
            hor: ``(8,)`` horizontal-turn flags.
            ver: ``(8,)`` vertical-turn flags.

        Returns:
            ``(8, C, d, h, w)`` in cell order (z-major).
        """
        hor = np.asarray(torch.as_tensor(hor).detach().cpu()).astype(bool)
        ver = np.asarray(torch.as_tensor(ver).detach().cpu()).astype(bool)
        if (hor & ver).any():
            raise ValueError("a slot cannot be turned both horizontally and vertically")
        kinds = np.where(hor, ROT_HOR, np.where(ver, ROT_VER, ROT_NONE))
        unturned = torch.stack([rotate_180(cubes[m], int(kinds[m])) for m in range(NUM_CUBES)])
        out = torch.empty_like(unturned)
        out[torch.as_tensor(self.permutations[int(order)])] = unturned  # slot m holds cube P_c[m]
        return out

    # ----------------------------------------------------------------- batches

    @staticmethod
    def collate(samples: Sequence[dict[str, torch.Tensor | int]]) -> dict[str, torch.Tensor]:
        """Stack per-volume puzzles: ``cubes (B, 8, C, d, h, w)``, ``order (B,)`` long, ``hor/ver/mask (B, 8)``."""
        def tensors(key: str) -> list[torch.Tensor]:
            return [torch.as_tensor(s[key]) for s in samples]

        return {
            "cubes": torch.stack(tensors("cubes")),
            "order": torch.tensor([int(s["order"]) for s in samples], dtype=torch.long),
            **{key: torch.stack(tensors(key)) for key in ("hor", "ver", "mask")},
        }

    def batch(self, volumes: torch.Tensor, rng: RngLike = None) -> dict[str, torch.Tensor]:
        """Independent puzzles for every volume of ``(B, C, D, H, W)``; see :meth:`collate` for the output."""
        if volumes.ndim != 5:
            raise ValueError(f"volumes must be (B, C, D, H, W), got shape {tuple(volumes.shape)}")
        rng = np.random.default_rng(rng)
        return self.collate([self(v, rng) for v in volumes])
