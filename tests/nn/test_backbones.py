"""Backbone factory: shapes for every name in 2D and 3D, any channel count, save/load."""

from __future__ import annotations

import io

import pytest
import torch

from medlearn.nn import build_backbone, list_backbones

FAST = ["resnet18", "resnet50", "densenet121", "efficientnet-b0", "plaincnn", "smallcnn"]


@pytest.mark.parametrize("name", FAST)
@pytest.mark.parametrize("spatial_dims,in_channels,size", [(2, 1, 32), (2, 3, 40), (3, 4, 32)])
def test_shapes(name, spatial_dims, in_channels, size):
    net = build_backbone(name, spatial_dims, in_channels).eval()
    with torch.no_grad():
        out = net(torch.randn(2, in_channels, *([size] * spatial_dims)))
    assert out.shape == (2, net.out_features)
    assert torch.isfinite(out).all()


def test_every_name_builds_in_2d():
    for name in list_backbones():
        if name.startswith(("efficientnet-b5", "efficientnet-b6", "efficientnet-b7", "resnet152", "resnet101")):
            continue  # large; same code path as their smaller siblings
        assert build_backbone(name, 2, 1).out_features > 0


def test_resnet18_matches_the_reference_architecture_size():
    n = sum(p.numel() for p in build_backbone("resnet18", 2, 3).parameters())
    assert n == 11_176_512 + 896  # torchvision resnet18 without fc (11,176,512) + MONAI's downsample biases


def test_wrong_input_is_a_clear_error():
    net = build_backbone("plaincnn", 2, 1)
    with pytest.raises(ValueError, match="expects input"):
        net(torch.zeros(2, 3, 32, 32))
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("vgg16")


def test_save_load_identical_outputs():
    a = build_backbone("resnet18", 2, 1).eval()
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    b = build_backbone("resnet18", 2, 1).eval()
    buf.seek(0)
    b.load_state_dict(torch.load(buf, weights_only=True))
    x = torch.randn(2, 1, 48, 48)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


def test_smallcnn_is_the_rubik_spec_encoder():
    net = build_backbone("smallcnn", 3, 1)
    assert net.out_features == 64
    n = sum(p.numel() for p in net.parameters())
    assert 70_000 < n < 76_000  # 4 x conv3-BN, widths 8/16/32/64 (spec: ~73 k)
    assert net(torch.zeros(2, 1, 16, 16, 8)).shape == (2, 64)  # anisotropic cube
