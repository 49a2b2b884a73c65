"""Real anisotropic MR volumes from dipy through the reader and the resampling transform."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medlearn.data.volume_preprocess import volume_transforms
from medlearn.io import read_image

pytestmark = pytest.mark.skipif(importlib.util.find_spec("dipy") is None,
                                reason="dipy is not installed (its sample volumes ship in the wheel; pip install dipy)")


def _dipy_file(name: str) -> Path:
    import dipy

    path = Path(dipy.__file__).parent / "data" / "files" / name
    if not path.is_file():
        pytest.skip(f"{name} is not in this dipy wheel")
    return path


def test_anisotropic_volume_spacing_and_orientation_match_nibabel():
    path = _dipy_file("aniso_vox.nii.gz")
    arr, meta = read_image(path)
    img = nib.load(path)
    assert arr.shape == (1, *img.shape)
    assert meta["spacing"] == pytest.approx(tuple(float(z) for z in img.header.get_zooms()[:3]))
    assert meta["spacing"][0] != meta["spacing"][2]  # really anisotropic (4 x 4 x 5 mm)
    assert meta["orientation"] == "".join(nib.aff2axcodes(img.affine))
    np.testing.assert_allclose(meta["affine"], img.affine, atol=1e-5)


def test_resampling_to_isotropic_spacing_scales_the_grid():
    """Foreground voxel counts scale with the voxel volume: (4 * 4 * 5) / 2**3 = 10 times more."""
    path = _dipy_file("aniso_vox.nii.gz")
    zooms = np.array(nib.load(path).header.get_zooms()[:3], dtype=float)
    big = (160, 160, 160)  # pad, never crop, so every foreground voxel is kept

    def foreground(target):
        # raw intensities (no normalisation: its percentiles would move with the interpolation)
        t = volume_transforms(normalisation="none", target_spacing=target, spatial_size=big, foreground_threshold=None)
        out = t({"image": str(path)})["image"]
        assert tuple(out.shape) == (1, *big)
        return int((out > 0.3 * float(out.max())).sum())

    native, iso = foreground(None), foreground((2.0, 2.0, 2.0))
    assert iso / native == pytest.approx(float(np.prod(zooms)) / 8.0, rel=0.15)
