"""Compact sliding-window label maps against MONAI's plain blend, arg-max and label mapping."""

from __future__ import annotations

import pytest
import torch
from monai.inferers import sliding_window_inference

from medlearn.metrics.segmentation import classes_to_labels
from medlearn.nn.inference import argmax_labels, label_dtype, sliding_window_labels, sliding_window_memory
from medlearn.tasks.segmentation import Segmenter


def _net(dims: int, c_in: int, c_out: int) -> torch.nn.Module:
    """A 3x3 convolution and a 1x1 one: window borders change its output, so blending matters."""
    conv = torch.nn.Conv2d if dims == 2 else torch.nn.Conv3d
    torch.manual_seed(0)
    return torch.nn.Sequential(conv(c_in, 6, 3, padding=1), torch.nn.Tanh(), conv(6, c_out, 1)).eval()


def _reference(x, net, roi, values, overlap, mode):
    """MONAI's function in float32 on softmax probabilities, a full arg-max, the label lookup."""
    probs = sliding_window_inference(x, roi, 3, lambda w: torch.softmax(net(w), 1), overlap=overlap, mode=mode)
    top2 = probs.topk(2, dim=1).values
    return classes_to_labels(probs.argmax(1, keepdim=True), values), (top2[:, 0] - top2[:, 1])[:, None]


@pytest.mark.parametrize(("shape", "roi", "mode"), [((2, 2, 20, 23, 17), (8, 8, 8), "constant"),
                                                    ((1, 1, 41, 30), (16, 12), "gaussian")])
def test_float32_blend_is_monais_and_float16_differs_only_between_near_equal_classes(shape, roi, mode):
    torch.manual_seed(1)
    values = [0, 1, 2, 4]
    net = _net(len(roi), shape[1], len(values))
    x = torch.randn(shape)
    with torch.inference_mode():
        ref, margin = _reference(x, net, roi, values, 0.25, mode)
        exact = sliding_window_labels(x, net, roi, values, sw_batch_size=3, mode=mode, accumulate="float32")
        half = sliding_window_labels(x, net, roi, values, sw_batch_size=3, mode=mode, accumulate="float16")
    assert exact.dtype == half.dtype == torch.uint8 and exact.shape == (shape[0], 1, *shape[2:])
    assert torch.equal(exact.long(), ref)
    clear = margin > 0.01  # float16 blends are within ~0.004 of float32 ones
    assert clear.float().mean() > 0.5
    assert torch.equal(half.long()[clear], ref[clear])
    assert (half.long() != ref).float().mean() < 0.01


def test_argmax_labels_in_slabs_matches_a_full_argmax():
    torch.manual_seed(2)
    scores = torch.randn(2, 3, 7, 5, 6)
    for values, dtype in (([0, 1, 2], torch.uint8), ([0, 7, 300], torch.int16), ([0, 1, 70000], torch.int32)):
        full = classes_to_labels(scores.argmax(1, keepdim=True), values)
        for slab in (1, 30, 31, 10**6):  # one slice per slab, uneven slabs, one slab
            out = argmax_labels(scores, values, slab_voxels=slab)
            assert out.dtype == dtype and torch.equal(out.long(), full)
    with pytest.raises(ValueError, match="3 score channels for 2"):
        argmax_labels(scores, [0, 1])
    with pytest.raises(ValueError, match=">= 0"):
        label_dtype([-1, 2])


def test_bad_arguments_and_the_bound_formula():
    net = _net(3, 1, 2)
    with pytest.raises(ValueError, match="accumulate"):
        sliding_window_labels(torch.zeros(1, 1, 8, 8, 8), net, (8, 8, 8), [0, 1], accumulate="bfloat16")
    with pytest.raises(ValueError, match="roi_size"):
        sliding_window_labels(torch.zeros(1, 1, 8, 8, 8), net, (8, 8), [0, 1])
    # by hand: 1 x 1 x 400 x 512 x 512 in float16, 4 classes: 2 (input copy) + 8 (scores) + 1 (labels)
    # + 2 (count map) bytes per voxel, a slab of 2**20 + 512 * 512 voxels at 16 bytes, two sets of 4 windows
    v, roi = 400 * 512 * 512, 64**3
    expected = 13 * v + (2**20 + 512 * 512) * 16 + 2 * (4 * roi * (6 * 1 + 10 * 4) + 2 * roi)
    assert sliding_window_memory((1, 1, 400, 512, 512), 4, (64, 64, 64), 4) == expected
    # an input already in float16 is not copied; float32 accumulation: no copy of a float32 input
    assert sliding_window_memory((1, 1, 400, 512, 512), 4, (64, 64, 64), 4, input_dtype=torch.float16) \
        == expected - 2 * v
    assert sliding_window_memory((1, 1, 40, 40, 40), 4, (8, 8, 8), 1, accumulate="float32") == \
        40**3 * (16 + 1 + 4) + 40**3 * 16 + 2 * (8**3 * (8 + 12 * 4) + 4 * 8**3)


def test_segmenter_predicts_compact_labels_with_and_without_windows():
    torch.manual_seed(3)
    seg = Segmenter("smallcnn", spatial_dims=2, in_channels=1, num_classes=3, label_values=[0, 1, 5],
                    regions="labels").eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.inference_mode():
        whole = seg.predict_step({"image": x, "name": ["a", "b"]}, 0)["seg"]
        ref = classes_to_labels(seg(x).argmax(1, keepdim=True), [0, 1, 5])
    assert whole.dtype == torch.uint8 and torch.equal(whole.long(), ref)
    seg.hparams.roi_size, seg.hparams.sw_accumulate = (16, 16), "float32"
    with torch.inference_mode():
        windowed = seg.predict_labels(x)
        ref_w = classes_to_labels(sliding_window_inference(
            x, (16, 16), 4, lambda w: torch.softmax(seg(w), 1), overlap=0.25, cval=-1.0).argmax(1, keepdim=True),
            [0, 1, 5])
    assert torch.equal(windowed.long(), ref_w)
    with pytest.raises(ValueError, match="sw_accumulate"):
        Segmenter("smallcnn", spatial_dims=2, in_channels=1, num_classes=2, label_values=[0, 1], regions="labels",
                  sw_accumulate="int8")
