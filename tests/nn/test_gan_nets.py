"""GAN networks: shapes, the pix2pix U-Net layout, the PatchGAN receptive field, save / load."""

from __future__ import annotations

import io

import pytest
import torch

from medlearn.nn.gan import PatchGAN, ResNetGenerator, UNetGenerator, tile_code


def test_unet_128_matches_pix2pix_parameter_count_and_shapes():
    # pix2pix define_G(4, 1, 64, 'unet_128', norm='instance') has 41,822,593 parameters (the official
    # TC-MGAN generator: T2 + 3-channel code in, 1 channel out)
    g = UNetGenerator(2, 1, 1, num_downs=7, ngf=64, norm="instance", code_dim=3)
    assert sum(p.numel() for p in g.parameters()) == 41_822_593
    y = g(torch.rand(2, 1, 128, 128), torch.eye(3)[:2])
    assert y.shape == (2, 1, 128, 128) and y.abs().max() <= 1


def test_unet_dropout_levels_and_3d():
    g = UNetGenerator(2, 1, 1, num_downs=8, ngf=8, norm="batch", dropout=True)
    assert sum(isinstance(m, torch.nn.Dropout) for m in g.modules()) == 3  # unet_256: num_downs - 5
    g3 = UNetGenerator(3, 2, 1, num_downs=3, ngf=4)
    assert g3(torch.rand(1, 2, 16, 16, 16)).shape == (1, 1, 16, 16, 16)
    with pytest.raises(ValueError, match="conditional"):
        UNetGenerator(2, 1, 1, num_downs=2, ngf=4, code_dim=2)(torch.rand(1, 1, 8, 8))


def test_patchgan_70_layout_and_receptive_field():
    d = PatchGAN(2, in_channels=2, channels=64, num_layers=3)
    assert d(torch.rand(1, 2, 256, 256)).shape == (1, 1, 30, 30)  # pix2pix 70x70 PatchGAN on 256 px
    # receptive field: an impulse at the centre changes outputs only within 70 px
    d.eval()
    x = torch.zeros(1, 2, 256, 256)
    base = d(x)
    x[0, :, 128, 128] = 10.0
    changed = (d(x) - base).abs()[0, 0] > 0
    ys, xs = torch.nonzero(changed, as_tuple=True)
    assert changed.any() and (ys.max() - ys.min() + 1) <= 70 // 8 + 1
    assert PatchGAN(3, 1, 4, 2, norm="instance")(torch.rand(2, 1, 32, 32, 32)).ndim == 5
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in PatchGAN(2, 1, 4, 2, norm="none").modules())


def test_resnet_generator_and_tile_code():
    g = ResNetGenerator(2, 3, 3, ngf=8, n_blocks=2, code_dim=2)
    y = g(torch.rand(2, 3, 32, 32), torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    assert y.shape == (2, 3, 32, 32)
    t = tile_code(torch.zeros(2, 1, 3, 3), torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    assert torch.equal(t[1, 2], torch.full((3, 3), 4.0)) and torch.equal(t[0, 0], torch.zeros(3, 3))


@pytest.mark.parametrize("net,args", [(UNetGenerator, (2, 1, 1, 3, 4)), (PatchGAN, (2, 2, 4, 2)),
                                      (ResNetGenerator, (2, 1, 1, 4, 1))])
def test_save_load_identical_outputs(net, args):
    torch.manual_seed(0)
    a, b = net(*args).eval(), net(*args).eval()
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b.load_state_dict(torch.load(buf, weights_only=True))
    x = torch.rand(1, args[1], 16, 16)
    assert torch.equal(a(x), b(x))
