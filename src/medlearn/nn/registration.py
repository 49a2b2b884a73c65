"""Dense deformable registration blocks (2D and 3D): warping, velocity integration, composition, a VoxelMorph U-Net.

Conventions (shared by :mod:`medlearn.losses.registration` and :mod:`medlearn.metrics.registration`):

* A dense displacement field (DDF) ``f`` of images ``(B, C, *spatial)`` has shape ``(B, D, *spatial)``,
  ``D = len(spatial)``, in **voxel units**; channel ``d`` displaces tensor axis ``2 + d`` (channel 0 is
  the first spatial axis: ``H`` in 2D, the first of ``(D, H, W)`` in 3D). There is no ``x, y, z``
  reversal in the field: that reversal happens only inside ``grid_sample``.
* Warping is backward sampling: ``warp(x, f)(p) = x(p + f(p))`` (linear interpolation, border
  padding by default), as in the VoxelMorph ``SpatialTransformer`` (Balakrishnan et al.,
  "VoxelMorph: A Learning Framework for Deformable Medical Image Registration", IEEE TMI 2019).
  A field that registers ``moving`` to ``fixed`` is the one for which ``warp(moving, f) ~ fixed``.

MONAI's :class:`monai.networks.blocks.Warp` (read in MONAI 1.6) has exactly this convention: it
adds ``ddf`` to an ``ij``-indexed voxel grid (``torch.arange`` per axis, channel ``d`` = axis
``2 + d``), normalises each axis with ``2 p / (n - 1) - 1``, reverses the last axis of the grid to
``grid_sample``'s ``(x, y[, z])`` order and samples with ``align_corners=True``: so voxel centres
sit at integer positions, ``f = 0`` is the exact identity and an integer shift moves whole voxels
(``tests/nn/test_registration.py`` checks it against ``np.roll``). Two things of MONAI's Warp are
handled here: it caches its reference grid as a plain attribute checked on shape only (so a grid
built on one device or dtype was reused on another; :class:`SpatialTransformer` rebuilds it), and
it warns on every construction when MONAI's compiled extension is absent (silenced here).

:func:`integrate_velocity` is MONAI's :class:`~monai.networks.blocks.DVF2DDF` (scaling and
squaring, the same recursion as VoxelMorph's ``VecInt``: ``f = v / 2^N``, then ``N`` times
``f = f + warp(f, f)``); :func:`compose` and :class:`RegistrationUNet` are written here.

No Lightning, no matplotlib.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.blocks import DVF2DDF, Warp
from torch import nn

__all__ = ["SpatialTransformer", "warp", "integrate_velocity", "compose", "RegistrationUNet",
           "default_decoder_channels"]

_MODES = ("bilinear", "nearest")
_PADDINGS = ("border", "zeros", "reflection")


_NATIVE_WARNING = ".*Using PyTorch native grid_sample.*"


class _Warp(Warp):
    """MONAI's :class:`~monai.networks.blocks.Warp` whose cached reference grid follows the field's device and dtype."""

    def __init__(self, mode: str = "bilinear", padding_mode: str = "border") -> None:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_NATIVE_WARNING)
            super().__init__(mode=mode, padding_mode=padding_mode)

    def get_reference_grid(self, ddf: torch.Tensor, jitter: bool = False, seed: int = 0) -> torch.Tensor:
        ref = self.ref_grid
        if ref is not None and (ref.device != ddf.device or ref.dtype != ddf.dtype):
            self.ref_grid = None
        return super().get_reference_grid(ddf, jitter=jitter, seed=seed)


def _check_field(image: torch.Tensor, ddf: torch.Tensor, what: str = "image") -> None:
    nd = image.ndim - 2
    if nd not in (2, 3):
        raise ValueError(f"{what} must be (B, C, H, W) or (B, C, D, H, W), got {tuple(image.shape)}")
    want = (image.shape[0], nd, *image.shape[2:])
    if tuple(ddf.shape) != want:
        raise ValueError(f"a displacement field for {what} {tuple(image.shape)} must have shape {want} "
                         f"(B, spatial dims, *spatial), got {tuple(ddf.shape)}")


class SpatialTransformer(nn.Module):
    """Backward warping ``warp(x, f)(p) = x(p + f(p))`` of 2D / 3D images by a voxel-unit field (MONAI ``Warp``).

    ``bilinear`` is linear interpolation in every spatial dimension (trilinear in 3D). Integer
    (label) images are warped in floating point and rounded back to their dtype; with ``bilinear``
    that makes in-between values, so warp labels with ``nearest``, or warp their one-hot maps
    with ``bilinear`` and take the argmax.

    Args:
        mode: ``"bilinear"`` or ``"nearest"``.
        padding_mode: where ``p + f(p)`` leaves the grid: ``"border"`` (the edge value, default),
            ``"zeros"`` or ``"reflection"``.

    Examples:
        >>> st = SpatialTransformer()
        >>> x = torch.arange(5.0).view(1, 1, 1, 5)
        >>> st(x, torch.stack([torch.zeros(1, 5), torch.ones(1, 5)])[None])  # x(p + 1) along the last axis
        tensor([[[[1., 2., 3., 4., 4.]]]])
    """

    def __init__(self, mode: str = "bilinear", padding_mode: str = "border") -> None:
        super().__init__()
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
        if padding_mode not in _PADDINGS:
            raise ValueError(f"padding_mode must be one of {_PADDINGS}, got {padding_mode!r}")
        self.mode, self.padding_mode = mode, padding_mode
        self.warp = _Warp(mode, padding_mode)

    def forward(self, image: torch.Tensor, ddf: torch.Tensor) -> torch.Tensor:
        """``image (B, C, *spatial)`` sampled at ``p + ddf(p)``; ``ddf (B, D, *spatial)`` in voxels, same spatial size.

        Raises:
            ValueError: not 2D / 3D, or a field of the wrong shape.
        """
        _check_field(image, ddf)
        if not ddf.is_floating_point():
            raise ValueError(f"the displacement field must be floating point, got {ddf.dtype}")
        if image.is_floating_point():
            return self.warp(image.to(ddf.dtype), ddf).to(image.dtype)
        out = self.warp(image.to(ddf.dtype), ddf)
        return out.round().to(image.dtype)

    def extra_repr(self) -> str:
        """The mode and the padding."""
        return f"mode={self.mode!r}, padding_mode={self.padding_mode!r}"


def warp(image: torch.Tensor, ddf: torch.Tensor, mode: str = "bilinear", padding_mode: str = "border") -> torch.Tensor:
    """Functional :class:`SpatialTransformer`: ``warp(x, f)(p) = x(p + f(p))``.

    Args:
        image: ``(B, C, *spatial)``, 2D or 3D.
        ddf: ``(B, D, *spatial)`` displacement in voxels, channel ``d`` along tensor axis ``2 + d``.
        mode: ``"bilinear"`` or ``"nearest"``.
        padding_mode: ``"border"``, ``"zeros"`` or ``"reflection"``.

    Returns:
        The warped image, shape and dtype of ``image``.
    """
    return SpatialTransformer(mode, padding_mode)(image, ddf)


def integrate_velocity(velocity: torch.Tensor, steps: int = 7, padding_mode: str = "zeros") -> torch.Tensor:
    """Displacement of the time-1 flow of a stationary velocity field, by scaling and squaring.

    MONAI's :class:`~monai.networks.blocks.DVF2DDF`: ``f = v / 2^steps``, then ``steps`` times
    ``f = f + warp(f, f)`` (linear interpolation). This is VoxelMorph's ``VecInt`` (same recursion,
    same zero padding by default, same ``align_corners=True`` grid), so it is used as is (with this
    module's device-safe ``Warp``).

    Args:
        velocity: ``(B, D, *spatial)`` in voxels (same layout as a displacement field).
        steps: squarings; 0 returns ``velocity`` itself (a plain displacement field).
        padding_mode: how the field is extended outside the grid while squaring: ``"zeros"``
            (VoxelMorph and MONAI) or ``"border"``.

    Returns:
        The displacement field, shape of ``velocity``.

    Raises:
        ValueError: negative ``steps`` or a field that is not ``(B, D, *spatial)``.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if padding_mode not in _PADDINGS:
        raise ValueError(f"padding_mode must be one of {_PADDINGS}, got {padding_mode!r}")
    _check_field(velocity, velocity, "velocity")
    if steps == 0:
        return velocity
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_NATIVE_WARNING)
        integrator = DVF2DDF(num_steps=steps, mode="bilinear", padding_mode=padding_mode)
    integrator.warp_layer = _Warp("bilinear", padding_mode)
    return integrator(velocity)


def compose(outer: torch.Tensor, inner: torch.Tensor, padding_mode: str = "border") -> torch.Tensor:
    """Displacement of "apply ``inner``, then ``outer``": ``c(p) = inner(p) + outer(p + inner(p))``.

    ``c = inner + warp(outer, inner)`` (linear interpolation of ``outer``), so that
    ``warp(warp(x, outer), inner) ~ warp(x, c)``: ``x`` is sampled at ``q + outer(q)`` with
    ``q = p + inner(p)``. With ``outer = dF`` and ``inner = dB`` this is LT-Net's transformation
    cycle ``dB(p) + dF(p + dB(p))``, zero for exactly inverse fields.

    Args:
        outer: ``(B, D, *spatial)`` field sampled at the displaced positions.
        inner: ``(B, D, *spatial)`` field applied first.
        padding_mode: extension of ``outer`` outside the grid (``"border"``: its edge values).

    Returns:
        The composed field ``(B, D, *spatial)``.
    """
    _check_field(inner, outer, "inner field")
    return inner + warp(outer, inner, "bilinear", padding_mode)


def default_decoder_channels(encoder_channels: Sequence[int]) -> tuple[int, ...]:
    """VoxelMorph's decoder widths for an encoder: ``(e[-1],) * len(e) + (e[1], e[0], e[0])``.

    ``(16, 32, 32, 32)`` gives VoxelMorph's ``(32, 32, 32, 32, 32, 16, 16)``; ``(8, 16, 16, 16)`` gives
    ``(16, 16, 16, 16, 16, 8, 8)`` (a one-level encoder uses ``e[0]`` for ``e[1]``).
    """
    e = [int(c) for c in encoder_channels]
    if not e:
        raise ValueError("encoder_channels must not be empty")
    return (e[-1],) * len(e) + (e[1] if len(e) > 1 else e[0], e[0], e[0])


class _ConvAct(nn.Sequential):
    """3x3(x3) convolution, stride 1, then LeakyReLU (VoxelMorph's ``ConvBlock``)."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, negative_slope: float) -> None:
        conv = (nn.Conv2d, nn.Conv3d)[spatial_dims - 2]
        super().__init__(conv(in_channels, out_channels, 3, padding=1), nn.LeakyReLU(negative_slope))


class RegistrationUNet(nn.Module):
    """VoxelMorph's registration U-Net (``VxmDense``): ``forward(moving, fixed)`` returns the field registering them.

    Architecture (VoxelMorph ``networks.Unet`` with one conv per level, read in
    ``voxelmorph/torch/networks.py``): every conv is 3x3(x3), stride 1, then LeakyReLU(0.2).

    * Encoder: ``cat(moving, fixed)``; for each width ``e[i]``: conv, keep the output as a skip,
      2x max-pool. ``L = len(encoder_channels)`` levels, so the bottleneck is at ``1 / 2^L``.
    * Decoder: for each of the first ``L`` widths ``d[i]``: conv, nearest x2 upsampling,
      concatenation of the skip of that resolution (deepest first); then one conv per remaining
      width of ``decoder_channels`` at full resolution.
    * Flow head: 3x3(x3) conv to ``spatial_dims`` channels, weights ~ N(0, 1e-5) (standard
      deviation), bias 0, so the initial field is ~0 (the identity map).
    * ``int_steps > 0``: the head gives a stationary velocity field, integrated by scaling and
      squaring (:func:`integrate_velocity`), at ``1 / int_downsize`` resolution when
      ``int_downsize > 1`` (VoxelMorph's ``ResizeTransform``: linear resizing, values scaled by the
      resize factor). VoxelMorph's diffeomorphic default is ``int_steps=7, int_downsize=2``.

    Any spatial size works: inputs are padded (``pad_mode``, split evenly between both ends of
    each axis) to a multiple of :attr:`size_multiple` and the field is cropped back; the field of
    an input that is already a multiple is computed without padding.

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels of ``cat(moving, fixed)`` (2 for two single-channel images).
        encoder_channels: widths of the encoder levels, shallow to deep (VoxelMorph: 16, 32, 32, 32;
            the CPU-scale LT-Net recipe: 8, 16, 16, 16).
        decoder_channels: the ``L`` decoder level widths (deep to shallow), then the full-resolution
            convs; at least ``L`` values. Default: :func:`default_decoder_channels` (VoxelMorph's
            32, 32, 32, 32, 32, 16, 16 for the default encoder).
        int_steps: scaling-and-squaring steps (0: the head's output is the displacement).
        int_downsize: integrate at ``1 / int_downsize`` resolution (only with ``int_steps > 0``).
        negative_slope: LeakyReLU slope.
        pad_mode: :func:`torch.nn.functional.pad` mode for sizes not a multiple of
            :attr:`size_multiple` (``"replicate"``, ``"constant"`` (zeros), ``"reflect"``).

    Attributes:
        size_multiple: the padded size is a multiple of it (``lcm(2^L, int_downsize)``).
        flow: the flow head (a conv).

    Examples:
        >>> net = RegistrationUNet(2, encoder_channels=(8, 16, 16, 16))
        >>> net(torch.rand(1, 1, 30, 41), torch.rand(1, 1, 30, 41)).shape
        torch.Size([1, 2, 30, 41])
    """

    def __init__(self, spatial_dims: int = 3, in_channels: int = 2, encoder_channels: Sequence[int] = (16, 32, 32, 32),
                 decoder_channels: Sequence[int] | None = None, int_steps: int = 0, int_downsize: int = 1,
                 negative_slope: float = 0.2, pad_mode: str = "replicate") -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        enc = [int(c) for c in encoder_channels]
        if not enc or min(enc) < 1:
            raise ValueError(f"encoder_channels must be positive widths, got {tuple(encoder_channels)}")
        dec = [int(c) for c in (default_decoder_channels(enc) if decoder_channels is None else decoder_channels)]
        if len(dec) < len(enc) or min(dec) < 1:
            raise ValueError(f"decoder_channels needs at least {len(enc)} positive widths (one per encoder level, "
                             f"then the full-resolution convs), got {tuple(dec)}")
        if int_steps < 0 or int_downsize < 1:
            raise ValueError(f"int_steps must be >= 0 and int_downsize >= 1, got {int_steps}, {int_downsize}")
        if pad_mode not in ("replicate", "constant", "reflect", "circular"):
            raise ValueError(f"unknown pad_mode {pad_mode!r}")
        self.spatial_dims, self.in_channels = spatial_dims, int(in_channels)
        self.encoder_channels, self.decoder_channels = tuple(enc), tuple(dec)
        self.int_steps, self.int_downsize = int(int_steps), int(int_downsize) if int_steps > 0 else 1
        self.pad_mode = pad_mode
        levels = len(enc)
        self.size_multiple = math.lcm(2**levels, self.int_downsize)

        self.encoder = nn.ModuleList()
        prev, skips = self.in_channels, []
        for c in enc:
            self.encoder.append(_ConvAct(spatial_dims, prev, c, negative_slope))
            skips.append(c)
            prev = c
        self.decoder = nn.ModuleList()
        for c, skip in zip(dec[:levels], reversed(skips)):
            self.decoder.append(_ConvAct(spatial_dims, prev, c, negative_slope))
            prev = c + skip
        self.remaining = nn.ModuleList()
        for c in dec[levels:]:
            self.remaining.append(_ConvAct(spatial_dims, prev, c, negative_slope))
            prev = c
        conv = (nn.Conv2d, nn.Conv3d)[spatial_dims - 2]
        self.flow = conv(prev, spatial_dims, 3, padding=1)
        nn.init.normal_(self.flow.weight, mean=0.0, std=1e-5)
        nn.init.zeros_(self.flow.bias)  # type: ignore[arg-type]
        self._pool = (F.max_pool2d, F.max_pool3d)[spatial_dims - 2]
        self._linear = ("bilinear", "trilinear")[spatial_dims - 2]

    def _pads(self, shape: Sequence[int]) -> list[tuple[int, int]]:
        m = self.size_multiple
        out = []
        for n in shape:
            total = -int(n) % m
            out.append((total // 2, total - total // 2))
        return out

    def _resize(self, field: torch.Tensor, size: Sequence[int], factor: float) -> torch.Tensor:
        """VoxelMorph's ``ResizeTransform``: linear resizing to ``size``, displacements multiplied by ``factor``."""
        if factor < 1:
            return factor * F.interpolate(field, size=tuple(size), mode=self._linear, align_corners=True)
        return F.interpolate(factor * field, size=tuple(size), mode=self._linear, align_corners=True)

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        """The field ``(B, spatial_dims, *spatial)`` (voxels) with ``warp(moving, field) ~ fixed``.

        Raises:
            ValueError: mismatched shapes, wrong rank or a channel total other than ``in_channels``.
        """
        if moving.ndim != self.spatial_dims + 2 or moving.shape[0] != fixed.shape[0] \
                or moving.shape[2:] != fixed.shape[2:] or fixed.ndim != moving.ndim:
            raise ValueError(f"moving and fixed must be (B, C, *spatial) with {self.spatial_dims} equal spatial sizes, "
                             f"got {tuple(moving.shape)} and {tuple(fixed.shape)}")
        if moving.shape[1] + fixed.shape[1] != self.in_channels:
            raise ValueError(f"moving + fixed have {moving.shape[1] + fixed.shape[1]} channels, the network "
                             f"expects in_channels={self.in_channels}")
        shape = tuple(int(s) for s in moving.shape[2:])
        pads = self._pads(shape)
        x = torch.cat([moving, fixed], dim=1)
        if any(a or b for a, b in pads):
            flat = [p for pair in reversed(pads) for p in pair]  # F.pad: last axis first
            x = F.pad(x, flat, mode=self.pad_mode)
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
            x = self._pool(x, 2)
        for block in self.decoder:
            x = block(x)
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = torch.cat([x, skips.pop()], dim=1)
        for block in self.remaining:
            x = block(x)
        field = self.flow(x)
        if self.int_steps > 0:
            full = field.shape[2:]
            if self.int_downsize > 1:
                small = [s // self.int_downsize for s in full]
                field = self._resize(field, small, 1.0 / self.int_downsize)
            field = integrate_velocity(field, self.int_steps)
            if self.int_downsize > 1:
                field = self._resize(field, full, float(self.int_downsize))
        if any(a or b for a, b in pads):
            crop = (slice(None), slice(None)) + tuple(slice(a, a + n) for (a, _), n in zip(pads, shape))
            field = field[crop]
        return field
