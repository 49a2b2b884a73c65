"""Pyramid pooling module, EfficientNet encoders cut into U-Net stages, the PPM U-Net."""

from __future__ import annotations

import pytest
import torch

from medlearn.nn import BackboneUNet, PyramidPooling, build_backbone, encoder_stages


@pytest.mark.parametrize("dims", [2, 3])
def test_ppm_shapes_and_context(dims):
    torch.manual_seed(0)
    ppm = PyramidPooling(dims, 16, bins=(1, 2, 3), reduction=4)
    x = torch.randn(2, 16, *([6] * dims))
    assert ppm(x).shape == x.shape
    assert PyramidPooling(dims, 16, bins=(1,), out_channels=8)(x).shape == (2, 8, *([6] * dims))
    # the 1-bin branch carries global context: changing one far-away input changes every output
    ppm.eval()
    y0 = ppm(x)
    x2 = x.clone()
    x2[(0, slice(None)) + (0,) * dims] += 5.0
    far = (0, slice(None)) + (-1,) * dims
    assert not torch.allclose(ppm(x2)[far], y0[far])
    with pytest.raises(ValueError, match="bins"):
        PyramidPooling(dims, 16, bins=())


def test_efficientnet_stages_match_monai_features():
    torch.manual_seed(0)
    bb = build_backbone("efficientnet-b0", 2, 1)
    stages = encoder_stages(bb)
    assert [(s.out_channels, s.stride) for s in stages] == [(16, 2), (24, 4), (40, 8), (112, 16), (320, 32)]
    # the stage outputs are MONAI's EfficientNetBNFeatures taps (stacks 1, 2, 3, 5, 7): same weights, same maps
    from monai.networks.nets import EfficientNetBNFeatures

    ref = EfficientNetBNFeatures("efficientnet-b0", pretrained=False, spatial_dims=2, in_channels=1)
    ref.load_state_dict(bb.body.state_dict(), strict=False)
    bb.eval()
    ref.eval()
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        feats, y = [], x
        for s in stages:
            y = s(y)
            feats.append(y)
        want = ref(x)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(feats, want))


@pytest.mark.parametrize("name,side", [("efficientnet-b0", 64), ("smallcnn-w16", 32)])
def test_ppm_unet_heatmap_shape_and_gradients(name, side):
    torch.manual_seed(0)
    net = BackboneUNet(name, 2, 1, 1, ppm_bins=(1, 2, 4))
    x = torch.randn(2, 1, side, side)
    y = net(x)
    assert y.shape == (2, 1, side, side)
    y.square().mean().backward()
    missing = [n for n, p in net.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing[:5]
    # the EfficientNet head conv only feeds the pooled features the U-Net does not use: frozen
    frozen = {n for n, p in net.named_parameters() if not p.requires_grad}
    assert frozen == ({n for n, _ in net.named_parameters() if n.startswith(("backbone.body._conv_head",
                                                                              "backbone.body._bn1"))})
    assert {k for k in net.state_dict() if k.startswith("backbone.")} == \
        {f"backbone.{k}" for k in net.backbone.state_dict()}
    assert any(k.startswith("ppm.") for k in net.state_dict())
