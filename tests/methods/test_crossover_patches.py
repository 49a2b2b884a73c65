"""Crossover patches against plain numpy slicing of a padded image (borders and pads wider than the image
included), the overlap square, the packed layout, and the seeded inside / outside / band sampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medlearn.methods.crossover.patches import (
    boundary_band,
    cross_patches,
    equal_area_side,
    overlap_rows,
    pack_cross,
    sample_centres,
    square_patches,
    strip_patches,
    unpack_cross,
)

NP_MODE = {"reflect": "reflect", "edge": "edge", "zeros": "constant"}


def numpy_patch(img: np.ndarray, y: int, x: int, rows: int, cols: int, mode: str) -> np.ndarray:
    """(C, H, W) image -> (C, rows, cols) patch centred at (y, x) (centre at index size // 2), by np.pad + slicing."""
    pad = max(rows, cols)
    padded = np.pad(img, ((0, 0), (pad, pad), (pad, pad)), mode=NP_MODE[mode])
    top, left = y - rows // 2 + pad, x - cols // 2 + pad
    return padded[:, top:top + rows, left:left + cols]


@pytest.mark.parametrize("mode", ["reflect", "edge", "zeros"])
@pytest.mark.parametrize("long,short,h,w", [(12, 4, 9, 11), (10, 3, 16, 7), (30, 6, 8, 8), (7, 3, 1, 5)])
def test_cross_patches_equal_numpy_slicing_everywhere(mode, long, short, h, w):
    rng = np.random.default_rng(long * 100 + h)
    imgs = rng.random((2, 2, h, w)).astype(np.float32)
    centres = torch.tensor([[b, y, x] for b in range(2) for y in range(h) for x in range(w)])  # every pixel
    v, ht = cross_patches(torch.from_numpy(imgs), centres, long, short, mode)
    assert v.shape == ht.shape == (len(centres), 2, long, short)
    for n, (b, y, x) in enumerate(centres.tolist()):
        np.testing.assert_array_equal(v[n].numpy(), numpy_patch(imgs[b], y, x, long, short, mode))
        horizontal = numpy_patch(imgs[b], y, x, short, long, mode)  # (C, short, long)
        np.testing.assert_array_equal(ht[n].numpy(), horizontal.transpose(0, 2, 1))


@pytest.mark.parametrize("mode", ["reflect", "zeros"])
def test_square_and_strip_patches_equal_numpy_slicing(mode):
    rng = np.random.default_rng(0)
    img = rng.random((1, 3, 13, 10)).astype(np.float32)
    centres = torch.tensor([[0, 0, 0], [0, 12, 9], [0, 6, 5], [0, 0, 9], [0, 12, 0]])
    q = square_patches(torch.from_numpy(img), centres, 8, mode)
    s = strip_patches(torch.from_numpy(img), centres, 11, 3, mode)
    for n, (_, y, x) in enumerate(centres.tolist()):
        np.testing.assert_array_equal(q[n].numpy(), numpy_patch(img[0], y, x, 8, 8, mode))
        np.testing.assert_array_equal(s[n].numpy(), numpy_patch(img[0], y, x, 11, 3, mode))


def test_overlap_square_is_shared_and_transposed():
    img = torch.rand(3, 1, 40, 50)
    centres = torch.tensor([[0, 20, 25], [1, 0, 0], [2, 39, 49], [1, 5, 44]])
    for long, short in ((20, 4), (21, 5), (100, 20)):
        v, ht = cross_patches(img, centres, long, short)
        rows = overlap_rows(long, short)
        assert torch.equal(v[:, :, rows], ht[:, :, rows].transpose(-1, -2))
        assert torch.equal(v[:, :, long // 2, short // 2], img[centres[:, 0], :, centres[:, 1], centres[:, 2]])
        assert torch.equal(ht[:, :, long // 2, short // 2], v[:, :, long // 2, short // 2])
    packed = pack_cross(v, ht)
    assert packed.shape[-1] == 40
    back = unpack_cross(packed)
    assert torch.equal(back[0], v) and torch.equal(back[1], ht)
    with pytest.raises(ValueError):
        unpack_cross(packed[..., :-1])


def test_equal_area_side():
    assert equal_area_side(48, 8) == 26 and equal_area_side(40, 8) == 24 and equal_area_side(100, 20) == 60
    for long, short in ((48, 8), (100, 20), (340, 68)):
        q = equal_area_side(long, short)
        assert q * q <= 2 * long * short - short * short < (q + 1) ** 2


def test_bad_inputs():
    with pytest.raises(ValueError, match="pad_mode"):
        cross_patches(torch.zeros(1, 1, 4, 4), torch.zeros(1, 3, dtype=torch.long), 4, 2, "wrap")
    with pytest.raises(ValueError, match="centres"):
        cross_patches(torch.zeros(1, 1, 4, 4), torch.zeros(1, 2, dtype=torch.long), 4, 2)
    with pytest.raises(ValueError, match="images"):
        cross_patches(torch.zeros(1, 4, 4), torch.zeros(1, 3, dtype=torch.long), 4, 2)


def _disc(h: int, w: int, cy: int, cx: int, r: float) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return (((yy - cy) ** 2 + (xx - cx) ** 2) <= r * r).long()


def test_boundary_band_against_a_naive_window_check():
    rng = np.random.default_rng(1)
    lab = torch.from_numpy(rng.integers(0, 3, (2, 1, 9, 8)))
    for band in (3, 5):
        got = boundary_band(lab, band)
        r = band // 2
        for b in range(2):
            for y in range(9):
                for x in range(8):
                    win = lab[b, 0, max(0, y - r):y + r + 1, max(0, x - r):x + r + 1]
                    assert bool(got[b, 0, y, x]) == (win.unique().numel() > 1)
    assert not boundary_band(lab, 1).any()


def test_sampler_shares_pools_and_seeding():
    cls = torch.stack([_disc(40, 40, 20, 20, 9), torch.zeros(40, 40, dtype=torch.long)])[:, None]
    g = torch.Generator().manual_seed(3)
    centres, targets = sample_centres(cls, 30, band=5, generator=g)
    assert centres.shape == (60, 3) and targets.shape == (60,)
    first, second = centres[centres[:, 0] == 0], centres[centres[:, 0] == 1]
    band = boundary_band(cls, 5)
    on_band = band[0, 0, first[:, 1], first[:, 2]]
    inside = cls[0, 0, first[:, 1], first[:, 2]] == 1
    assert int(on_band.sum()) == 10 and int((inside & ~on_band).sum()) == 10 and int((~inside & ~on_band).sum()) == 10
    assert len(second) == 30 and (cls[1, 0, second[:, 1], second[:, 2]] == 0).all()  # no object: all outside
    torch.testing.assert_close(targets, cls[centres[:, 0], 0, centres[:, 1], centres[:, 2]])
    assert len({tuple(c) for c in first.tolist()}) == 30  # without replacement when pools are large enough
    again, _ = sample_centres(cls, 30, band=5, generator=torch.Generator().manual_seed(3))
    other, _ = sample_centres(cls, 30, band=5, generator=torch.Generator().manual_seed(4))
    assert torch.equal(centres, again) and not torch.equal(centres, other)
    # uneven shares and tiny pools: counts still add up, with replacement
    tiny = torch.zeros(1, 1, 6, 6, dtype=torch.long)
    tiny[0, 0, 0, 0] = 1
    c, t = sample_centres(tiny, 7, fractions=(2, 1, 0), band=1)
    assert len(c) == 7 and int((t == 1).sum()) == 5
    with pytest.raises(ValueError):
        sample_centres(tiny, 0)
