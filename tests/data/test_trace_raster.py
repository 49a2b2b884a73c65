"""Trace rasterisation by hand: cylinders along axes, blocks equal slices of the full raster, tube intensity."""

from __future__ import annotations

import numpy as np
import pytest

from medlearn.data.trace_raster import rasterise_tubes, tube_mean_intensity


def test_an_edge_along_x_is_a_cylinder_in_zyx() -> None:
    pts = np.array([[2.0, 5.0, 4.0], [10.0, 5.0, 4.0]])  # x from 2 to 10 at y=5, z=4
    m = rasterise_tubes(pts, [-1, 0], 1.0, (0, 0, 0), (8, 12, 14))
    assert m[4, 5, 1:12].all() and not m[4, 5, 0] and not m[4, 5, 12]  # rounded caps reach x = 1 and 11
    assert m[4, 4, 6] and m[3, 5, 6] and not m[4, 3, 6] and not m[2, 5, 6]  # radius 1 in y and z
    assert m.sum() == 9 * 5 + 2  # a plus-shaped cross-section over x = 2..10, plus the end caps' tips
    assert rasterise_tubes(pts, [-1, 0], 0.2, (0, 0, 0), (8, 12, 14)).sum() == m.sum()  # min_radius 1


def test_a_block_equals_the_slice_of_the_full_raster() -> None:
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 30, (25, 3))
    parent = np.array([-1] + [int(rng.integers(0, i)) for i in range(1, 25)])
    rad = rng.uniform(0.5, 2.5, 25)
    full = rasterise_tubes(pts, parent, rad, (-8, -8, -8), (48, 48, 48))  # every tube inside
    for origin in [(0, 0, 0), (5, 17, 9), (-4, 20, 28)]:
        block = rasterise_tubes(pts, parent, rad, origin, (8, 10, 12))
        o = np.asarray(origin) + 8
        assert block.any() or origin == (-4, 20, 28)
        assert np.array_equal(block, full[o[0]:o[0] + 8, o[1]:o[1] + 10, o[2]:o[2] + 12])
    centre = rasterise_tubes(pts, parent, rad, (0, 0, 0), (32, 32, 32), nodes=[3])
    full = full[8:40, 8:40, 8:40]
    assert centre.any() and (centre <= full).all() and centre.sum() < full.sum()
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        rasterise_tubes(pts[:, :2], parent, 1.0, (0, 0, 0), (4, 4, 4))


def test_tube_mean_intensity() -> None:
    vol = np.zeros((10, 20, 20), np.float32)
    vol[5, 8, :] = 1.0  # a bright line along x at z=5, y=8
    on = tube_mean_intensity(vol, (2, 8, 5), (15, 8, 5), radius=0.5)
    assert on == pytest.approx(1.0)
    wide = tube_mean_intensity(vol, (2, 8, 5), (15, 8, 5), radius=2.0)
    assert 0.0 < wide < 1.0
    assert tube_mean_intensity(vol, (2, 15, 5), (15, 15, 5), radius=1.0) == 0.0
    assert np.isnan(tube_mean_intensity(vol, (50, 50, 50), (60, 50, 50), radius=1.0))
