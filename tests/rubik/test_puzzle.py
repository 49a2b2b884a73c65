"""Rubik's cube pretext samples: permutation set, cube cutting, turns, labels, exact inverse."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from medlearn.methods.rubik.puzzle import (
    PuzzleParams,
    RubikPuzzle,
    cut_cubes,
    extract_cubes,
    hamming_permutations,
    min_hamming_distance,
    rotate_180,
    sample_cube_corners,
)

FAST = settings(max_examples=40, deadline=None)


# --------------------------------------------------------------------------- permutations


def brute_min_distance(perms: np.ndarray) -> int:
    return min(int((a != b).sum()) for a, b in itertools.combinations(perms, 2))


def test_hamming_permutations_k100():
    perms = hamming_permutations(100)
    assert perms.shape == (100, 8)
    assert all(sorted(p) == list(range(8)) for p in perms.tolist())
    assert len({tuple(p) for p in perms.tolist()}) == 100
    d = min_hamming_distance(perms)
    assert d == brute_min_distance(perms)
    assert d >= 5  # the spec measured 5 for greedy max-min with K = 100


def test_hamming_permutations_deterministic_fast_and_cached():
    t0 = time.perf_counter()
    a = hamming_permutations(100, seed=987)
    assert time.perf_counter() - t0 < 2.0  # ~0.1 s; generous for a loaded machine
    b = hamming_permutations(100, seed=987)
    assert b is a  # cached
    assert not np.array_equal(a, hamming_permutations(100, seed=988))
    with pytest.raises(ValueError):
        a[0, 0] = 3  # read-only: the cached set cannot be corrupted by a caller


def test_hamming_permutations_small_n_is_exhaustive():
    perms = hamming_permutations(24, n=4, seed=3)
    assert len({tuple(p) for p in perms.tolist()}) == 24
    assert min_hamming_distance(perms) == 2 == brute_min_distance(perms)
    assert min_hamming_distance(hamming_permutations(2, n=4)) == 4  # the second pick is a derangement
    with pytest.raises(ValueError):
        hamming_permutations(25, n=4)


# --------------------------------------------------------------------------- cubes


@st.composite
def volume_and_cube(draw, min_cube: int = 1):
    spatial = tuple(draw(st.integers(9, 21)) for _ in range(3))
    cube = tuple(draw(st.integers(min_cube, s // 2)) for s in spatial)
    channels = draw(st.integers(1, 2))
    seed = draw(st.integers(0, 2**31 - 1))
    return channels, spatial, cube, seed


@FAST
@given(volume_and_cube(), st.booleans())
def test_cubes_lie_inside_their_cells_with_nonnegative_gaps(case, jitter):
    _, spatial, cube, seed = case
    corners = sample_cube_corners(spatial, cube, np.random.default_rng(seed), jitter=jitter)
    assert corners.shape == (8, 3)
    grid = corners.reshape(2, 2, 2, 3)
    for axis in range(3):
        s, c = spatial[axis], cube[axis]
        start = np.moveaxis(grid[..., axis], axis, 0)  # (2, 2, 2), first index = cell along this axis
        assert (start[0] >= 0).all() and (start[0] + c <= s // 2).all()
        assert (start[1] >= s // 2).all() and (start[1] + c <= s).all()
        assert (start[1] - (start[0] + c) >= 0).all()  # gap between neighbours


def test_cut_cubes_odd_and_anisotropic():
    vol = torch.arange(2 * 9 * 11 * 13, dtype=torch.float32).view(2, 9, 11, 13)
    rng = np.random.default_rng(0)
    cubes = cut_cubes(vol, (4, 5, 6), rng)
    assert cubes.shape == (8, 2, 4, 5, 6)
    corners = sample_cube_corners((9, 11, 13), (4, 5, 6), np.random.default_rng(0))
    for m, (z, y, x) in enumerate(corners.tolist()):
        assert torch.equal(cubes[m], vol[:, z:z + 4, y:y + 5, x:x + 6])
        iz, iy, ix = m // 4, (m // 2) % 2, m % 2  # z-major cell order
        assert (z >= 9 // 2) == bool(iz) and (y >= 11 // 2) == bool(iy) and (x >= 13 // 2) == bool(ix)


@pytest.mark.parametrize("cube", [(5, 5, 6), (4, 6, 6), (4, 5, 7), (0, 2, 2)])
def test_too_large_cube_raises(cube):
    vol = torch.zeros(1, 9, 11, 13)
    with pytest.raises(ValueError, match="does not fit"):
        cut_cubes(vol, cube, np.random.default_rng(0))
    with pytest.raises(ValueError, match="does not fit"):
        RubikPuzzle(k=10, cube_size=(5, 5, 6), flip_lr=False)(vol, 0)


@FAST
@given(st.lists(st.integers(1, 6), min_size=4, max_size=4), st.sampled_from([0, 1, 2]), st.integers(0, 1000))
def test_rotations_are_self_inverse_and_keep_shape(shape, kind, seed):
    cube = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    turned = rotate_180(cube, kind)
    assert turned.shape == cube.shape
    assert torch.equal(rotate_180(turned, kind), cube)


def test_rotation_axes():
    cube = torch.arange(2 * 3 * 4).view(1, 2, 3, 4)
    assert torch.equal(rotate_180(cube, 1)[0, 0], cube[0, 0].flip(0, 1))  # in-plane 180 deg, slices kept
    assert torch.equal(rotate_180(cube, 2)[0, :, :, 1], cube[0, :, :, 1].flip(0, 1))  # about the W axis
    with pytest.raises(ValueError):
        rotate_180(cube, 3)


# --------------------------------------------------------------------------- puzzle


@FAST
@given(volume_and_cube(), st.integers(0, 99), st.lists(st.sampled_from([0, 1, 2]), min_size=8, max_size=8),
       st.booleans())
def test_restore_inverts_apply_exactly(case, order, rot, flip):
    channels, spatial, cube, seed = case
    puzzle = RubikPuzzle(k=100, cube_size=cube)
    vol = torch.randn(channels, *spatial, generator=torch.Generator().manual_seed(seed))
    corners = sample_cube_corners(spatial, cube, np.random.default_rng(seed))
    params = PuzzleParams(flip, corners, order, np.array(rot), np.zeros(8, dtype=bool))
    out = puzzle.apply(vol, params)
    cut = extract_cubes(vol.flip(-1) if flip else vol, corners, cube)
    perm = puzzle.permutations[order]
    assert out["cubes"].shape == (8, channels, *cube)
    for m in range(8):  # slot m holds original cube P_c[m], turned by rot[m]
        assert torch.equal(out["cubes"][m], rotate_180(cut[perm[m]], rot[m]))
    assert out["order"] == order
    assert out["hor"].tolist() == [float(r == 1) for r in rot]
    assert out["ver"].tolist() == [float(r == 2) for r in rot]
    assert torch.equal(puzzle.restore(out["cubes"], out["order"], out["hor"], out["ver"]), cut)


def decode(cube: torch.Tensor, spatial: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxel coordinates of a cube cut from the index-coded volume (channel 0)."""
    _, h, w = spatial
    v = cube[0].to(torch.int64).numpy()
    return v // (h * w), (v // w) % h, v % w


@FAST
@given(volume_and_cube(min_cube=2), st.integers(0, 2**31 - 1))
def test_labels_match_cube_content(case, draw_seed):
    """Read off from the output alone which cell sits in each slot and how it was turned."""
    channels, spatial, cube, _ = case
    d, h, w = spatial
    n = d * h * w
    vol = torch.arange(channels * n, dtype=torch.float32).view(channels, *spatial)  # voxel index, + n per channel
    puzzle = RubikPuzzle(k=100, cube_size=cube, flip_lr=True)
    out = puzzle(vol, np.random.default_rng(draw_seed))
    perm = puzzle.permutations[out["order"]]
    flips = set()
    for m in range(8):
        slot = out["cubes"][m]
        if channels == 2:
            assert torch.equal(slot[1] - slot[0], torch.full_like(slot[0], n))  # channels travel together
        z, y, x = decode(slot, spatial)
        z_inc, y_inc, x_inc = z[-1, 0, 0] > z[0, 0, 0], y[0, -1, 0] > y[0, 0, 0], x[0, 0, -1] > x[0, 0, 0]
        hor, ver = bool(out["hor"][m]), bool(out["ver"][m])
        kind = {(True, True): 0, (True, False): 1, (False, False): 2}[(z_inc, y_inc)]
        assert (hor, ver) == (kind == 1, kind == 2)
        flip = bool(x_inc == hor)  # x runs backwards iff exactly one of (L/R flip, horizontal turn) happened
        flips.add(flip)
        xf = w - 1 - x if flip else x  # coordinates in the frame the cubes were cut from
        assert (z.max() - z.min() + 1, y.max() - y.min() + 1, xf.max() - xf.min() + 1) == cube
        cells = [int(a.min() >= s // 2) for a, s in zip((z, y, xf), spatial)]
        for a, s, c in zip((z, y, xf), spatial, cells):
            assert (a.max() < s // 2) if c == 0 else (a.min() >= s // 2)  # the cube stays in its cell
        assert cells[0] * 4 + cells[1] * 2 + cells[2] == perm[m]
    assert len(flips) == 1  # one L/R flip per volume, consistent over the slots
    assert out["mask"].sum() == 0


def test_random_call_equals_deterministic_twin_and_replays():
    puzzle = RubikPuzzle(k=100, cube_size=(5, 6, 4), mask=True)
    vol = torch.randn(2, 12, 14, 10)
    a = puzzle(vol, np.random.default_rng(7))
    b = puzzle.apply(vol, puzzle.sample_params(vol.shape[1:], np.random.default_rng(7)))
    c = puzzle(vol, 7)
    for other in (b, c):
        assert torch.equal(a["cubes"], other["cubes"]) and a["order"] == other["order"]
        assert all(torch.equal(a[key], other[key]) for key in ("hor", "ver", "mask"))
    d = puzzle(vol, np.random.default_rng(8))
    assert not torch.equal(a["cubes"], d["cubes"])


def test_sampling_frequencies():
    puzzle = RubikPuzzle(k=100, cube_size=(4, 4, 4), p_rotate=(0.5, 0.25, 0.25), mask=True, p_mask=0.5)
    rng = np.random.default_rng(0)
    params = [puzzle.sample_params((10, 10, 10), rng) for _ in range(400)]
    rot = np.concatenate([p.rot for p in params])
    assert abs((rot == 0).mean() - 0.5) < 0.05 and abs((rot == 1).mean() - 0.25) < 0.05
    assert abs(np.mean([p.flip_lr for p in params]) - 0.5) < 0.1
    assert abs(np.concatenate([p.masked for p in params]).mean() - 0.5) < 0.05
    assert len({p.order for p in params}) > 90


def test_masking():
    vol = torch.ones(2, 20, 20, 20)
    out = RubikPuzzle(k=10, cube_size=(8, 8, 8), mask=True, p_mask=1.0, mask_ratio=0.5)(vol, 0)
    assert out["mask"].tolist() == [1.0] * 8
    zeros = out["cubes"] == 0
    assert abs(zeros.float().mean().item() - 0.5) < 0.05
    assert torch.equal(zeros[:, 0], zeros[:, 1])  # one spatial mask shared over channels
    out = RubikPuzzle(k=10, cube_size=(8, 8, 8), mask=True, p_mask=0.5, mask_ratio=0.5)(vol, 3)
    masked = (out["cubes"] == 0).flatten(1).any(dim=1).float()
    assert torch.equal(masked, out["mask"]) and 0 < out["mask"].sum() < 8
    out = RubikPuzzle(k=10, cube_size=(8, 8, 8), mask=False)(vol, 0)
    assert (out["cubes"] == 1).all() and out["mask"].sum() == 0


def test_batch_and_collate():
    puzzle = RubikPuzzle(k=100, cube_size=(4, 5, 6), mask=True)
    vols = torch.randn(3, 2, 10, 12, 14)
    batch = puzzle.batch(vols, np.random.default_rng(0))
    assert batch["cubes"].shape == (3, 8, 2, 4, 5, 6)
    assert batch["order"].shape == (3,) and batch["order"].dtype == torch.long
    for key in ("hor", "ver", "mask"):
        assert batch[key].shape == (3, 8) and batch[key].dtype == torch.float32
    rng = np.random.default_rng(0)
    singles = [puzzle(v, rng) for v in vols]  # batch = the per-volume calls with one shared generator
    assert torch.equal(RubikPuzzle.collate(singles)["cubes"], batch["cubes"])
    with pytest.raises(ValueError):
        puzzle.batch(vols[0], 0)


def test_centred_cubes_and_validation():
    corners = sample_cube_corners((10, 11, 9), (3, 3, 2), jitter=False)
    assert corners[0].tolist() == [1, 1, 1] and corners[7].tolist() == [6, 6, 5]
    with pytest.raises(ValueError):
        RubikPuzzle(p_rotate=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError):
        RubikPuzzle(permutations=np.array([[0, 0, 1, 2, 3, 4, 5, 6]]))
    custom = RubikPuzzle(permutations=np.array([[7, 6, 5, 4, 3, 2, 1, 0]]), cube_size=(2, 2, 2))
    assert custom.k == 1
    with pytest.raises(ValueError):
        custom.restore(torch.zeros(8, 1, 2, 2, 2), 0, torch.ones(8), torch.ones(8))
