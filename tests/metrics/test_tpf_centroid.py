"""True-positive fraction and centroid distance against naive per-pixel references, hand-worked cases,
and the epoch accumulator's per-case values and means."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medlearn.metrics.segmentation import (
    RegionSet,
    SegmentationMetrics,
    TPFCentroidMetrics,
    centroid_distance,
    segmentation_per_case,
    true_positive_fraction,
)


def naive_tpf(p: np.ndarray, g: np.ndarray) -> float:
    hit = size = 0
    for idx in np.ndindex(g.shape):
        if g[idx]:
            size += 1
            hit += int(bool(p[idx]))
    return hit / size if size else math.nan


def naive_centroid(m: np.ndarray, spacing) -> np.ndarray | None:
    pts = [np.array(idx, dtype=float) * np.asarray(spacing) for idx in np.ndindex(m.shape) if m[idx]]
    return np.mean(pts, axis=0) if pts else None


def naive_cd(p: np.ndarray, g: np.ndarray, spacing) -> float:
    a, b = naive_centroid(p, spacing), naive_centroid(g, spacing)
    if a is None or b is None:
        return math.nan
    return float(np.sqrt(((a - b) ** 2).sum()))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("shape,spacing", [((9, 11), None), ((9, 11), (0.5, 2.0)), ((5, 6, 7), None),
                                           ((5, 6, 7), (1.0, 0.7, 3.0))])
def test_against_naive_references(seed, shape, spacing):
    rng = np.random.default_rng(seed)
    p = rng.random((3, 2, *shape)) < 0.3
    g = rng.random((3, 2, *shape)) < 0.2
    g[1, 0] = False  # empty truth: TPF and CD undefined
    p[2, 1] = False  # empty prediction: TPF 0, CD undefined
    tpf = true_positive_fraction(torch.from_numpy(p), torch.from_numpy(g))
    cd = centroid_distance(torch.from_numpy(p), torch.from_numpy(g), spacing)
    sp = spacing or (1.0,) * len(shape)
    for b in range(3):
        for r in range(2):
            want_t, want_c = naive_tpf(p[b, r], g[b, r]), naive_cd(p[b, r], g[b, r], sp)
            got_t, got_c = float(tpf[b, r]), float(cd[b, r])
            assert (math.isnan(want_t) and math.isnan(got_t)) or got_t == pytest.approx(want_t, abs=1e-6)
            assert (math.isnan(want_c) and math.isnan(got_c)) or got_c == pytest.approx(want_c, abs=1e-5)
    assert math.isnan(float(tpf[1, 0])) and float(tpf[2, 1]) == 0.0 and math.isnan(float(cd[2, 1]))


def test_hand_worked_case():
    g = torch.zeros(1, 1, 6, 6)
    g[0, 0, 1:3, 1:3] = 1  # 4 pixels, centroid (1.5, 1.5)
    p = torch.zeros(1, 1, 6, 6)
    p[0, 0, 2:4, 2:5] = 1  # 6 pixels, covers (2, 2) of the truth; centroid (2.5, 3.0)
    assert true_positive_fraction(p, g).item() == pytest.approx(0.25)
    assert centroid_distance(p, g).item() == pytest.approx(math.hypot(1.0, 1.5))
    assert centroid_distance(p, g, spacing=(2.0, 1.0)).item() == pytest.approx(math.hypot(2.0, 1.5))
    with pytest.raises(ValueError):
        centroid_distance(p, g, spacing=(1.0,))
    with pytest.raises(ValueError):
        true_positive_fraction(p, g[..., :5])


def test_epoch_accumulator_means_and_per_case_values():
    rs = RegionSet.per_label([0, 1, 2])
    rng = np.random.default_rng(3)
    true = torch.from_numpy(rng.integers(0, 3, (5, 1, 12, 12)))
    pred = torch.from_numpy(rng.integers(0, 3, (5, 1, 12, 12)))
    true[0] = 0  # no label 1 or 2 in case 0
    m = TPFCentroidMetrics(rs)
    seg = SegmentationMetrics(rs, distances=True)
    for part in (slice(0, 3), slice(3, 5)):  # two batches
        m.update(pred[part], true[part])
        seg.update(pred[part], true[part])
    per = m.per_case()
    assert per["tpf"].shape == (5, 2) and per["cd"].shape == (5, 2)
    pm, tm = rs.masks(pred), rs.masks(true)
    torch.testing.assert_close(per["tpf"], true_positive_fraction(pm, tm), equal_nan=True)
    out = m.compute()
    assert out["tpf_undefined"] == 2.0 and out["cd_undefined"] == 2.0
    for r, name in enumerate(rs.names):
        col = per["tpf"][:, r].numpy()
        assert out[f"tpf/{name}"] == pytest.approx(float(np.nanmean(col)))
    assert out["tpf_mean"] == pytest.approx(np.mean([out["tpf/label_1"], out["tpf/label_2"]]))
    seg_per = segmentation_per_case(seg)
    assert seg_per["dice"].shape == (5, 2) and seg_per["hd95"].shape == (5, 2)
    assert seg.compute()["dice/label_1"] == pytest.approx(float(seg_per["dice"][:, 0].mean()))
    m.reset()
    assert m.compute() == {} and m.count == 0
