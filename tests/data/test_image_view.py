"""ImageView and the AGE angle views: exact point maps both ways, and maps that agree with the pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from medlearn.data.age_asoct import angle_view
from medlearn.data.augment import affine_points
from medlearn.data.image_view import ImageView, views_to_source

sizes = st.integers(min_value=2, max_value=4000)


@st.composite
def views(draw):
    w, h = draw(sizes), draw(sizes)
    width, height = draw(st.integers(1, w)), draw(st.integers(1, h))
    return ImageView(w, h, draw(st.booleans()), draw(st.integers(-50, w)), draw(st.integers(-50, h)), width, height,
                     draw(st.integers(1, 1024)), draw(st.integers(1, 1024)))


@settings(max_examples=300, deadline=None)
@given(views(), st.floats(-10, 4010), st.floats(-10, 4010))
def test_round_trip_is_exact_both_ways(view, x, y):
    p = np.array([x, y])
    assert np.abs(view.to_source(view.to_view(p)) - p).max() < 1e-6
    assert np.abs(view.to_view(view.to_source(p)) - p).max() < 1e-6


@settings(max_examples=200, deadline=None)
@given(st.integers(32, 4000), st.integers(16, 2000), st.sampled_from(["left", "right"]), st.integers(8, 768),
       st.floats(0, 1), st.floats(0, 1))
def test_age_angle_round_trip_crop_mirror_resize(width, height, side, out, fx, fy):
    """Full-image point -> side-normalised resized view -> back, exact to 1e-6 px (also batched, float64)."""
    view = angle_view(side, width, height, out)
    split = width // 2
    x = fx * (split - 1) if side == "left" else split + fx * (width - split - 1)
    p = np.array([x, fy * (height - 1)])
    q = view.to_view(p)
    assert np.abs(view.to_source(q) - p).max() < 1e-6
    back = views_to_source(torch.from_numpy(q)[None], view.as_tensor()[None])[0].numpy()
    assert np.abs(back - p).max() < 1e-6
    # a point of its own half lands inside the view (pixel edges at -0.5 and out - 0.5)
    assert (-0.5 <= q).all() and (q <= out - 0.5 + 1e-9).all()


def test_flip_uses_w_minus_one():
    v = angle_view("right", 2130, 998, (998, 1065))  # no resize: the half at its own size
    assert v.to_view([2129, 5]).tolist() == [0.0, 5.0]
    assert v.to_view([1065, 5]).tolist() == [1064.0, 5.0]
    assert v.to_source([0, 5]).tolist() == [2129.0, 5.0]
    left = angle_view("left", 2130, 998, (998, 1065))
    assert left.to_view([228.83, 466.96]).tolist() == pytest.approx([228.83, 466.96], abs=1e-12)


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("width", [40, 41])
def test_single_pixel_lands_where_the_map_says(side, width):
    """Without resizing, a lone bright pixel of the scan is at the integer position to_view gives."""
    h = 12
    v = angle_view(side, width, h, (h, width // 2 if side == "left" else width - width // 2))
    cols = range(0, width // 2) if side == "left" else range(width // 2, width)
    for x in list(cols)[::3]:
        img = torch.zeros(1, h, width)
        img[0, 7, x] = 1.0
        out = v.apply(img)
        r, c = divmod(int(out.flatten().argmax()), out.shape[-1])
        assert [c, r] == v.to_view([x, 7]).tolist()


@pytest.mark.parametrize("side", ["left", "right"])
def test_blob_centroid_after_resize_matches_the_map(side):
    """A smooth blob keeps its centroid under the antialiased bilinear resize: the map and the pixels agree."""
    w, h = 300, 140
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                            indexing="ij")
    x0 = 101.37 if side == "left" else 201.6
    y0 = 63.21
    img = torch.exp(-((xs - x0) ** 2 + (ys - y0) ** 2) / (2 * 9.0**2))[None].float()
    v = angle_view(side, w, h, 48)
    out = v.apply(img)[0].double()
    vy, vx = torch.meshgrid(torch.arange(48.0, dtype=torch.float64), torch.arange(48.0, dtype=torch.float64),
                            indexing="ij")
    centroid = [float((out * vx).sum() / out.sum()), float((out * vy).sum() / out.sum())]
    assert centroid == pytest.approx(v.to_view([x0, y0]).tolist(), abs=0.05)


def test_window_outside_the_image_is_zero_padded():
    img = torch.ones(1, 10, 10)
    v = ImageView(10, 10, False, -2, -3, 6, 6, 6, 6)
    out = v.apply(img)
    assert out.shape == (1, 6, 6)
    assert out[0, :3].sum() == 0 and out[0, :, :2].sum() == 0 and out[0, 3:, 2:].min() == 1
    with pytest.raises(ValueError, match="expected an image"):
        v.apply(torch.ones(1, 9, 10))
    with pytest.raises(ValueError, match=">= 1"):
        ImageView(10, 10, False, 0, 0, 0, 6, 6, 6)


def test_affine_points_follow_grid_sample():
    """A blob warped by a random augmentation matrix ends where affine_points puts its centre."""
    torch.manual_seed(0)
    from medlearn.data.augment import ViewAugment

    s = 64
    ys, xs = torch.meshgrid(torch.arange(s, dtype=torch.float32), torch.arange(s, dtype=torch.float32),
                            indexing="ij")
    centres = torch.tensor([[30.3, 25.7], [20.0, 40.5], [35.5, 33.2], [28.0, 30.0]])
    img = torch.stack([torch.exp(-((xs - c[0]) ** 2 + (ys - c[1]) ** 2) / (2 * 2.5**2)) for c in centres])[:, None]
    aug = ViewAugment(out_size=s, crop_scale=(0.6, 1.0), rotation=20, hflip=0.0, brightness=0, contrast=0,
                      cutout_holes=0, mean=0.0, std=1.0)
    theta = aug.affine(4, torch.device("cpu"))
    out = aug(img, theta)[:, 0]
    moved = affine_points(theta, centres, (s, s), (s, s))
    for o, m in zip(out, moved):
        c = [float((o * xs).sum() / o.sum()), float((o * ys).sum() / o.sum())]
        assert c == pytest.approx(m.tolist(), abs=0.1)
