"""Ring / blob phantoms: the table reads back through the mask-table reader, output depends only on the seed,
every image has tumour, and the variants hold the property the experiment relies on."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from medlearn.data.segmentation2d import read_mask_table
from medlearn.synth import get_synth
from medlearn.synth.rings import render_phantom, write_rings


def test_table_reads_back_and_is_deterministic(tmp_path):
    a = write_rings(tmp_path / "a", n_images=6, n_test=2, seed=5)
    b = get_synth("rings")(out=tmp_path / "b", n_images=6, n_test=2, seed=5)
    recs = read_mask_table(a / "masks.csv")
    assert [r.split for r in recs] == ["", "", "", "", "test", "test"]
    for r in recs:
        img, mask = np.array(Image.open(r.path)), np.array(Image.open(r.mask))
        assert img.shape == mask.shape == (96, 96) and img.dtype == np.uint8 and set(np.unique(mask)) == {0, 1}
        assert (np.array(Image.open(b / r.name)) == img).all()
    c = write_rings(tmp_path / "c", n_images=6, n_test=2, seed=6)
    assert not (np.array(Image.open(c / recs[0].name)) == np.array(Image.open(recs[0].path))).all()
    with pytest.raises(FileExistsError):
        write_rings(a, n_images=2)
    with pytest.raises(ValueError):
        write_rings(tmp_path / "d", variant="square")


def test_ring_interior_looks_like_the_exterior_and_blob_tumours_sit_in_the_organ():
    from scipy import ndimage

    rng = np.random.default_rng(0)
    for _ in range(10):
        img, mask = render_phantom(rng, "ring")
        assert mask.any()
        bright = ndimage.binary_closing(img > 0.45, iterations=2)  # the ring (and the blobs)
        filled = ndimage.binary_fill_holes(bright)
        interior, exterior = filled & ~bright, ~filled
        assert filled[mask > 0].mean() > 0.95  # the tumour blobs lie inside the ring
        assert abs(img[interior].mean() - img[exterior].mean()) < 0.04  # only the ring tells inside from outside
    for _ in range(10):
        img, mask = render_phantom(rng, "blob")
        around = np.zeros_like(mask, dtype=bool)
        yy, xx = np.nonzero(mask)
        around[max(yy.min() - 4, 0):yy.max() + 5, max(xx.min() - 4, 0):xx.max() + 5] = True
        ring_around = around & (mask == 0)
        assert img[ring_around].mean() > 0.45  # a tumour's surroundings are the bright organ (0.3 + 0.25)
