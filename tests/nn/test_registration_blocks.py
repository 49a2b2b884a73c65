"""Registration blocks against hand-computed oracles: warping (np.roll, clipped indexing, linear interpolation),
composition of known shifts and affine maps, scaling and squaring of affine velocities, the VoxelMorph U-Net."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medlearn.nn.registration import (
    RegistrationUNet,
    SpatialTransformer,
    compose,
    default_decoder_channels,
    integrate_velocity,
    warp,
)


def _grid(shape) -> np.ndarray:
    """(D, *shape) voxel coordinates, ij order."""
    return np.stack(np.meshgrid(*(np.arange(s, dtype=np.float64) for s in shape), indexing="ij"))


def _affine_field(a: np.ndarray, t: np.ndarray, shape) -> torch.Tensor:
    """(1, D, *shape) field f(p) = A p + t."""
    p = _grid(shape)
    return torch.from_numpy(np.einsum("ij,j...->i...", a, p) + t.reshape(-1, *([1] * len(shape))))[None]


def _const_field(shift, shape) -> torch.Tensor:
    return torch.tensor(shift, dtype=torch.float64).view(1, -1, *([1] * len(shape))).expand(1, len(shift), *shape) \
        .contiguous()


def _interior(shape, margin):
    return tuple(slice(margin, s - margin) for s in shape)


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
@pytest.mark.parametrize("shape,shift", [((12, 17), (2, -3)), ((12, 17), (-1, 0)), ((7, 9, 11), (1, -2, 3)),
                                         ((7, 9, 11), (0, 0, -4))])
def test_integer_shift_is_np_roll_away_from_the_borders(shape, shift, mode):
    rng = np.random.default_rng(0)
    x = rng.random((2, 3, *shape))
    out = warp(torch.from_numpy(x), _const_field(shift, shape).expand(2, -1, *shape), mode=mode).numpy()
    # warp(x, s)(p) = x(p + s): np.roll by -s, valid where p + s stays inside
    rolled = np.roll(x, [-s for s in shift], axis=tuple(range(2, 2 + len(shape))))
    inside = (slice(None), slice(None), *(slice(max(0, -s), n - max(0, s)) for s, n in zip(shift, shape)))
    np.testing.assert_allclose(out[inside], rolled[inside], atol=1e-12)
    # border padding: everywhere, the value at the clipped index
    idx = np.ix_(*(np.clip(np.arange(n) + s, 0, n - 1) for s, n in zip(shift, shape)))
    np.testing.assert_allclose(out, x[(slice(None), slice(None), *idx)], atol=1e-12)


def test_fractional_shift_interpolates_linearly_and_zero_field_is_identity():
    rng = np.random.default_rng(1)
    x = rng.random((1, 1, 6, 7, 8))
    s = (0.25, -0.5, 0.75)
    out = warp(torch.from_numpy(x), _const_field(s, x.shape[2:])).numpy()[0, 0]
    v = x[0, 0]
    p = (3, 4, 5)
    want = 0.0  # trilinear interpolation at p + s, written out
    lo = [int(np.floor(pi + si)) for pi, si in zip(p, s)]
    fr = [pi + si - li for pi, si, li in zip(p, s, lo)]
    for corner in itertools.product((0, 1), repeat=3):
        w = np.prod([f if c else 1 - f for c, f in zip(corner, fr)])
        want += w * v[tuple(li + c for li, c in zip(lo, corner))]
    assert out[p] == pytest.approx(want, abs=1e-12)
    zero = warp(torch.from_numpy(x), torch.zeros(1, 3, *x.shape[2:], dtype=torch.float64)).numpy()
    np.testing.assert_allclose(zero, x, atol=1e-12)


def test_labels_keep_their_dtype_and_values_with_nearest():
    lab = torch.randint(0, 5, (1, 1, 9, 10))
    field = torch.rand(1, 2, 9, 10) * 4 - 2
    out = SpatialTransformer("nearest")(lab, field)
    assert out.dtype == lab.dtype and set(out.unique().tolist()) <= set(lab.unique().tolist())
    # nearest: the label of the rounded sampling position
    p = torch.from_numpy(_grid((9, 10))).float() + field[0]
    r = p.round().long()
    r[0].clamp_(0, 8)
    r[1].clamp_(0, 9)
    assert torch.equal(out[0, 0], lab[0, 0][r[0], r[1]])


def test_reference_grid_follows_the_field_dtype_and_shape_errors_are_clear():
    st = SpatialTransformer()
    x = torch.rand(1, 1, 5, 6)
    st(x, torch.zeros(1, 2, 5, 6))
    st(x.double(), torch.zeros(1, 2, 5, 6, dtype=torch.float64))
    assert st.warp.ref_grid.dtype == torch.float64
    with pytest.raises(ValueError, match="displacement field"):
        st(x, torch.zeros(1, 3, 5, 6))
    with pytest.raises(ValueError, match="mode"):
        SpatialTransformer("bicubic")


@pytest.mark.parametrize("shape", [(10, 11), (6, 7, 8)])
def test_composition_of_two_shifts_is_their_sum(shape):
    d = len(shape)
    a, b = _const_field([1.5, -2.0, 0.5][:d], shape), _const_field([-0.25, 3.0, 1.0][:d], shape)
    np.testing.assert_allclose(compose(a, b).numpy(), (a + b).numpy(), atol=1e-12)
    np.testing.assert_allclose(compose(a, -a).numpy(), 0.0, atol=1e-12)


@pytest.mark.parametrize("shape", [(24, 26), (14, 15, 16)])
def test_composition_of_affine_fields_and_its_order(shape):
    d = len(shape)
    rng = np.random.default_rng(d)
    a_out, a_in = rng.uniform(-0.08, 0.08, (d, d)), rng.uniform(-0.08, 0.08, (d, d))
    t_out, t_in = rng.uniform(-1, 1, d), rng.uniform(-1, 1, d)
    outer, inner = _affine_field(a_out, t_out, shape), _affine_field(a_in, t_in, shape)
    c = compose(outer, inner).numpy()[0]
    p = _grid(shape)
    q = p + np.einsum("ij,j...->i...", a_in, p) + t_in.reshape(-1, *([1] * d))  # p + inner(p)
    want = q - p + np.einsum("ij,j...->i...", a_out, q) + t_out.reshape(-1, *([1] * d))
    sl = (slice(None), *_interior(shape, 4))  # q stays inside the grid there
    np.testing.assert_allclose(c[sl], want[sl], atol=1e-9)
    swapped = compose(inner, outer).numpy()[0]
    assert np.abs(swapped[sl] - want[sl]).max() > 1e-3  # A_out A_in != A_in A_out: the order matters
    # the composed field is "warp by outer, then by inner" (exact for an affine image)
    img = torch.from_numpy(np.einsum("i,i...->...", rng.uniform(-1, 1, d), p))[None, None]
    twice = warp(warp(img, outer), inner)
    once = warp(img, torch.from_numpy(c)[None])
    np.testing.assert_allclose(twice.numpy()[(0, 0, *_interior(shape, 5))],
                               once.numpy()[(0, 0, *_interior(shape, 5))], atol=1e-9)


@pytest.mark.parametrize("shape", [(32, 30), (18, 19, 20)])
def test_scaling_and_squaring_of_affine_and_constant_velocities(shape):
    d = len(shape)
    rng = np.random.default_rng(5)
    a = rng.uniform(-0.04, 0.04, (d, d))
    centre = (np.array(shape) - 1) / 2
    vel = _affine_field(a, -a @ centre, shape)  # v(p) = A (p - c)
    steps = 5
    ddf = integrate_velocity(vel, steps).numpy()[0]
    # affine squaring is exact: (I + A / 2^N)^(2^N) - I, close to expm(A) - I
    m = np.linalg.matrix_power(np.eye(d) + a / 2**steps, 2**steps) - np.eye(d)
    want = np.einsum("ij,j...->i...", m, _grid(shape) - centre.reshape(-1, *([1] * d)))
    # zero padding outside the grid bends the field near the edges, over about |v| voxels per squaring
    sl = (slice(None), *_interior(shape, 5))
    np.testing.assert_allclose(ddf[sl], want[sl], atol=1e-9)
    from scipy.linalg import expm

    assert np.abs(m - (expm(a) - np.eye(d))).max() < 1e-3
    # a constant velocity integrates to itself (border padding: everywhere)
    v = _const_field([1.5, -0.75, 2.0][:d], shape)
    np.testing.assert_allclose(integrate_velocity(v, 7, padding_mode="border").numpy(), v.numpy(), atol=1e-9)
    assert integrate_velocity(v, 0) is v
    with pytest.raises(ValueError):
        integrate_velocity(v, -1)


def _conv_params(k: int, pairs) -> int:
    return sum(k * cin * cout + cout for cin, cout in pairs)


def test_default_widths_are_voxelmorphs():
    assert default_decoder_channels((16, 32, 32, 32)) == (32, 32, 32, 32, 32, 16, 16)
    assert default_decoder_channels((8, 16, 16, 16)) == (16, 16, 16, 16, 16, 8, 8)
    net = RegistrationUNet(3)
    assert net.decoder_channels == (32, 32, 32, 32, 32, 16, 16)
    # VoxelMorph's layers: encoder 2-16-32-32-32, decoder convs on the bottleneck then on concatenated skips,
    # three full-resolution convs, a 3-channel flow head
    pairs = [(2, 16), (16, 32), (32, 32), (32, 32), (32, 32), (64, 32), (64, 32), (64, 32), (48, 32), (32, 16),
             (16, 16), (16, 3)]
    assert sum(p.numel() for p in net.parameters()) == _conv_params(27, pairs)
    assert all(isinstance(m, torch.nn.LeakyReLU) and m.negative_slope == 0.2
               for m in net.modules() if isinstance(m, torch.nn.LeakyReLU))
    with pytest.raises(ValueError, match="decoder_channels"):
        RegistrationUNet(2, encoder_channels=(8, 16, 16), decoder_channels=(16, 16))


@pytest.mark.parametrize("spatial_dims,shape,int_steps", [(2, (32, 32), 0), (2, (29, 35), 0), (2, (29, 35), 7),
                                                          (3, (16, 16, 16), 0), (3, (13, 17, 10), 0),
                                                          (3, (13, 17, 10), 3)])
def test_initial_flow_is_near_zero_and_every_parameter_gets_a_gradient(spatial_dims, shape, int_steps):
    torch.manual_seed(0)
    net = RegistrationUNet(spatial_dims, encoder_channels=(4, 8, 8, 8), int_steps=int_steps,
                           int_downsize=2 if int_steps else 1)
    moving, fixed = torch.rand(2, 1, *shape), torch.rand(2, 1, *shape)
    ddf = net(moving, fixed)
    assert ddf.shape == (2, spatial_dims, *shape)
    assert float(ddf.detach().abs().max()) < 1e-3
    with torch.no_grad():
        assert float(net.flow.weight.std()) == pytest.approx(1e-5, rel=0.3) and float(net.flow.bias.abs().max()) == 0
    loss = F.mse_loss(warp(moving, ddf), fixed)
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, name


def test_odd_sizes_are_padded_and_cropped_back_in_place():
    torch.manual_seed(1)
    net = RegistrationUNet(2, encoder_channels=(4, 8, 8))
    with torch.no_grad():
        net.flow.weight.normal_(0, 0.1)  # a visibly non-zero field
        moving, fixed = torch.rand(1, 1, 13, 22), torch.rand(1, 1, 13, 22)
        out = net(moving, fixed)
        # 13 -> 16 (1 before, 2 after), 22 -> 24 (1 before, 1 after), replicate padding
        big = net(F.pad(moving, (1, 1, 1, 2), mode="replicate"), F.pad(fixed, (1, 1, 1, 2), mode="replicate"))
    assert net.size_multiple == 8
    torch.testing.assert_close(out, big[:, :, 1:14, 1:23])
    with pytest.raises(ValueError, match="in_channels"):
        net(torch.rand(1, 2, 16, 16), torch.rand(1, 1, 16, 16))


def test_a_few_steps_register_a_shifted_blob():
    torch.manual_seed(0)
    p = torch.from_numpy(_grid((24, 24))).float()
    fixed = torch.exp(-((p[0] - 12) ** 2 + (p[1] - 12) ** 2) / 18)[None, None]
    moving = torch.exp(-((p[0] - 13.5) ** 2 + (p[1] - 11) ** 2) / 18)[None, None]
    net = RegistrationUNet(2, encoder_channels=(8, 8, 8))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    before = float(F.mse_loss(moving, fixed))
    for _ in range(60):
        opt.zero_grad()
        loss = F.mse_loss(warp(moving, net(moving, fixed)), fixed)
        loss.backward()
        opt.step()
    with torch.no_grad():
        ddf = net(moving, fixed)
        after = float(F.mse_loss(warp(moving, ddf), fixed))
    assert after < 0.3 * before
    # fixed(p) = moving(p + s) with s = (1.5, -1): the field near the blob points that way
    s = ddf[0, :, 10:15, 10:15].mean(dim=(1, 2))
    assert float(s[0]) > 0.5 and float(s[1]) < -0.3
