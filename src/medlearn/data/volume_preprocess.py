"""The MONAI preprocessing of volumes: a loader over medlearn's reader and the transform chain.

This module owns the path from NIfTI files to preprocessed tensors: :func:`load_volume` reads one
volume (or co-registered volumes stacked as channels) through :func:`medlearn.io.read_image` into
a MONAI ``MetaTensor``, so that errors name the file and the affine, spacing and orientation come
from our reader; :class:`LoadVolumed` wraps it as a MONAI dictionary transform; and
:func:`volume_transforms` chains it with MONAI's own ``Orientationd``, ``Spacingd``,
``ScaleIntensityRanged`` (CT window) or ``ScaleIntensityRangePercentilesd`` (MR),
``CropForegroundd``, ``ResizeWithPadOrCropd`` / ``Resized`` and ``EnsureTyped``; :class:`RecordAffined` keeps the
affine of the preprocessed grid, which MONAI updates through every spatial step, so that labels
predicted on that grid go back onto the input's own (``medlearn predict`` of a segmenter). It
knows no dataset layout.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    CropForegroundd,
    EnsureTyped,
    MapTransform,
    Orientationd,
    Resized,
    ResizeWithPadOrCropd,
    ScaleIntensityRanged,
    ScaleIntensityRangePercentilesd,
    Spacingd,
)
from monai.utils import MetaKeys, SpaceKeys

from medlearn.io import read_image
from medlearn.io.errors import DataError

__all__ = ["NORMALISATIONS", "LoadVolumed", "RecordAffined", "load_volume", "volume_transforms"]

#: The intensity normalisations :func:`volume_transforms` offers.
NORMALISATIONS = ("ct", "mr", "none")


def load_volume(source: str | Path | Sequence[str | Path] | Mapping[str, str | Path], atol: float = 1e-3) -> MetaTensor:
    """Read one volume, or co-registered volumes stacked as channels, into a MONAI ``MetaTensor``.

    Decoding is :func:`medlearn.io.read_image` (float32, channel-first, stored voxel order, header
    scaling applied); a 4D NIfTI keeps its volumes as channels. The tensor's affine is the
    reader's (nibabel's best affine, RAS world), so MONAI's spatial transforms (``Spacingd``,
    ``Orientationd``) work on it.

    Args:
        source: one file, a sequence of files, or ``{name: file}`` (channels in that order).
        atol: tolerance on affine entries between the stacked files.

    Returns:
        ``(C, X, Y, Z)`` float32 ``MetaTensor`` with ``affine`` and meta ``filename_or_obj`` (the
        first file), ``filenames``, ``spacing``, ``orientation``.

    Raises:
        DataError: naming the file: unreadable (any :func:`~medlearn.io.read_image` reason: missing,
            truncated, NaN/Inf...), not a 3D volume, or a shape / affine that differs from the
            first file's.
    """
    if isinstance(source, (str, os.PathLike)):
        paths = [Path(source)]
    elif isinstance(source, Mapping):
        paths = [Path(p) for p in source.values()]
    else:
        paths = [Path(p) for p in source]
    if not paths:
        raise ValueError("load_volume needs at least one file")
    arrays: list[np.ndarray] = []
    first: tuple[Path, tuple[int, ...], np.ndarray, dict[str, Any]] | None = None
    for path in paths:
        array, meta = read_image(path)
        if array.ndim != 4:
            raise DataError(path, f"a 3D volume is needed (channel, x, y, z); the image has shape {array.shape}")
        affine = meta.get("affine")
        if affine is None:
            spacing = [float(s) for s in (meta.get("spacing") or ())][:3]
            affine = np.diag([*spacing, *([1.0] * (3 - len(spacing))), 1.0])
        affine = np.asarray(affine, dtype=np.float64)
        if first is None:
            first = (path, tuple(array.shape[1:]), affine, meta)
        else:
            p0, shape0, affine0, _ = first
            if tuple(array.shape[1:]) != shape0:
                raise DataError(path, f"spatial shape {tuple(array.shape[1:])} differs from {p0.name} {shape0}")
            if not np.allclose(affine, affine0, rtol=0.0, atol=atol):
                diff = float(np.abs(affine - affine0).max())
                raise DataError(path, f"affine differs from {p0.name} (max difference {diff:.4g} > {atol:g})")
        arrays.append(array)
    assert first is not None
    data = arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=0)
    meta0 = first[3]
    meta_out = {
        "filename_or_obj": str(paths[0]),
        "filenames": [str(p) for p in paths],
        "spacing": meta0.get("spacing"),
        "orientation": meta0.get("orientation"),
        MetaKeys.SPACE: SpaceKeys.RAS,
    }
    return MetaTensor(torch.from_numpy(np.ascontiguousarray(data)), affine=torch.as_tensor(first[2]), meta=meta_out)


class LoadVolumed(MapTransform):
    """MONAI dictionary transform: load the files under ``keys`` with :func:`load_volume`.

    The value of each key is a file, a sequence of files or a ``{name: file}`` mapping (stacked as
    channels). Reading goes through :func:`medlearn.io.read_image`, so bad files raise a
    :class:`~medlearn.io.errors.DataError` naming the file. (MONAI's ``Compose`` wraps exceptions
    in a ``RuntimeError``; :class:`~medlearn.data.volumes.VolumeDataset` unwraps them again.)

    Args:
        keys: the keys to load (e.g. ``("image", "seg")``).
        allow_missing_keys: skip keys absent from the dict.
        atol: tolerance on affine entries between stacked files.
    """

    def __init__(self, keys: Any, allow_missing_keys: bool = False, atol: float = 1e-3) -> None:
        super().__init__(keys, allow_missing_keys)
        self.atol = float(atol)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """A copy of ``data`` with each key's files loaded as one ``MetaTensor`` ``(C, X, Y, Z)``.

        Every key must lie on the first key's voxel grid (a mask on its image's): the same spatial
        shape and an affine within ``atol``; else a :class:`~medlearn.io.errors.DataError` names
        the file.
        """
        d = dict(data)
        first: tuple[Hashable, MetaTensor] | None = None
        for key in self.key_iterator(d):
            volume = load_volume(d[key], atol=self.atol)
            if first is None:
                first = (key, volume)
            else:
                _check_same_grid(volume, first[1], self.atol)
            d[key] = volume
        return d


def _check_same_grid(volume: MetaTensor, reference: MetaTensor, atol: float) -> None:
    """Raise a DataError naming ``volume``'s file unless it has ``reference``'s spatial shape and affine."""
    path, ref = volume.meta["filename_or_obj"], Path(reference.meta["filename_or_obj"]).name
    if tuple(volume.shape[1:]) != tuple(reference.shape[1:]):
        raise DataError(path, f"spatial shape {tuple(volume.shape[1:])} differs from {ref} "
                              f"{tuple(reference.shape[1:])} (not on its grid)")
    diff = float((volume.affine.double() - reference.affine.double()).abs().max())
    if diff > atol:
        raise DataError(path, f"affine differs from {ref} (max difference {diff:.4g} > {atol:g}; not on its grid)")


class RecordAffined(MapTransform):
    """MONAI dictionary transform: copy the voxel-to-world affine of ``key`` into ``affine_key``.

    MONAI's spatial transforms (``Orientationd``, ``Spacingd``, crops, pads, ``Resized``) update a
    ``MetaTensor``'s affine as they go, so after them it maps the preprocessed grid's voxel indices
    to the same world coordinates (RAS, mm) as the input file's affine. Kept as a plain
    ``(4, 4)`` float64 tensor (it collates into ``(B, 4, 4)``), it survives ``EnsureTyped(...,
    track_meta=False)``; a label map predicted on that grid is put back on the input's grid by
    nearest-neighbour resampling between the two affines, which undoes every spatial step at once.

    Args:
        key: the (``MetaTensor``) image key.
        affine_key: where the affine goes.
    """

    def __init__(self, key: str = "image", affine_key: str = "grid_affine") -> None:
        super().__init__([key])
        self.key = key
        self.affine_key = affine_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """A copy of ``data`` with ``affine_key`` set to the affine of ``data[key]``."""
        d = dict(data)
        image = d[self.key]
        if not isinstance(image, MetaTensor):
            raise TypeError(f"{self.key!r} is not a MetaTensor (its affine is not tracked)")
        d[self.affine_key] = image.affine.detach().to(torch.float64).clone()
        return d


class _Above:
    """Foreground selector for ``CropForegroundd``: ``x > threshold``, or everything if none is.

    (A class, not a lambda, so that datasets pickle into worker processes.)
    """

    def __init__(self, threshold: float) -> None:
        self.threshold = float(threshold)

    def __call__(self, x: Any) -> Any:
        mask = x > self.threshold
        if not bool(mask.any()):  # nothing above: keep the whole volume rather than crop to nothing
            return torch.ones_like(mask) if isinstance(mask, torch.Tensor) else np.ones_like(mask)
        return mask


def volume_transforms(
    image_key: str = "image",
    seg_key: str | None = None,
    normalisation: str = "ct",
    window: Sequence[float] = (-100.0, 200.0),
    percentiles: Sequence[float] = (0.5, 99.5),
    target_spacing: Sequence[float] | float | None = None,
    orientation: str | None = None,
    spatial_size: Sequence[int] | int = (32, 32, 32),
    foreground_threshold: float | None = -0.9,
    fit: str = "pad_crop",
    pad_value: float | None = None,
    affine_key: str | None = None,
) -> Compose:
    """The deterministic preprocessing of a volume (and its mask), as MONAI dictionary transforms.

    In order: :class:`LoadVolumed`; ``Orientationd`` (if ``orientation``); ``Spacingd`` (if
    ``target_spacing``; bilinear for the image, nearest for the mask); intensity normalisation of
    the image to [-1, 1]; ``CropForegroundd`` to the box where any image channel exceeds
    ``foreground_threshold`` (in normalised units; the whole volume is kept if nothing does);
    ``ResizeWithPadOrCropd`` (centred pad/crop, ``fit="pad_crop"``) or ``Resized`` (trilinear with
    anti-aliasing / nearest, ``fit="resize"``) to ``spatial_size``; with ``affine_key``,
    :class:`RecordAffined` (the preprocessed grid's affine); ``EnsureTyped`` to plain tensors
    (image float32, mask int64).

    Normalisation: ``"ct"``: ``ScaleIntensityRanged`` maps the HU window ``[lo, hi]`` to [-1, 1]
    and clips; ``"mr"``: ``ScaleIntensityRangePercentilesd`` maps the ``percentiles`` (0.5 / 99.5)
    of each channel to [-1, 1] and clips; ``"none"``: values kept.

    Args:
        image_key: the image key.
        seg_key: the mask key, or ``None``.
        normalisation: ``"ct"``, ``"mr"`` or ``"none"``.
        window: CT window ``(lo, hi)`` in HU (``"ct"`` only); the default is a brain window.
        percentiles: lower and upper percentile (``"mr"`` only).
        target_spacing: resample to this voxel size (mm; one number = isotropic); ``None`` keeps it.
        orientation: reorient to these axis codes first (e.g. ``"RAS"``); ``None`` keeps the stored
            voxel order.
        spatial_size: the output ``(D, H, W)``.
        foreground_threshold: crop threshold in normalised units; ``None`` disables the crop.
        fit: ``"pad_crop"`` or ``"resize"``.
        pad_value: image padding value; default -1 (the normalised minimum), 0 for ``"none"``.
        affine_key: also return the preprocessed grid's voxel-to-world affine under this key
            (``None``: not).

    Returns:
        A ``monai.transforms.Compose`` mapping ``{image_key: file(s)[, seg_key: file]}`` (other keys
        pass through) to ``{image_key: (C, D, H, W) float32[, seg_key: (1, D, H, W) int64]
        [, affine_key: (4, 4) float64]}``.

    Raises:
        ValueError: an unknown ``normalisation`` or ``fit``, a bad window, percentiles, spacing or
            size.
    """
    if normalisation not in NORMALISATIONS:
        raise ValueError(f"normalisation must be one of {NORMALISATIONS}, got {normalisation!r}")
    if fit not in ("pad_crop", "resize"):
        raise ValueError(f"fit must be 'pad_crop' or 'resize', got {fit!r}")
    size = _triple(spatial_size, "spatial_size", int)
    if min(size) < 1:
        raise ValueError(f"spatial_size must be positive, got {spatial_size!r}")
    lo, hi = (float(v) for v in window)
    if not hi > lo:
        raise ValueError(f"window must be (lo, hi) with hi > lo, got {window!r}")
    p_lo, p_hi = (float(v) for v in percentiles)
    if not 0.0 <= p_lo < p_hi <= 100.0:
        raise ValueError(f"percentiles must satisfy 0 <= lower < upper <= 100, got {percentiles!r}")
    keys = [image_key] + ([seg_key] if seg_key else [])
    interp = ["bilinear"] + (["nearest"] if seg_key else [])
    steps: list[Callable[..., Any]] = [LoadVolumed(keys)]
    if orientation:
        steps.append(Orientationd(keys, axcodes=orientation))
    if target_spacing is not None:
        spacing = _triple(target_spacing, "target_spacing", float)
        if min(spacing) <= 0:
            raise ValueError(f"target_spacing must be positive, got {target_spacing!r}")
        steps.append(Spacingd(keys, pixdim=spacing, mode=interp, padding_mode="border"))
    if normalisation == "ct":
        steps.append(ScaleIntensityRanged(image_key, a_min=lo, a_max=hi, b_min=-1.0, b_max=1.0, clip=True))
    elif normalisation == "mr":
        steps.append(ScaleIntensityRangePercentilesd(image_key, lower=p_lo, upper=p_hi, b_min=-1.0, b_max=1.0,
                                                     clip=True, channel_wise=True))
    if foreground_threshold is not None:
        steps.append(CropForegroundd(keys, source_key=image_key, select_fn=_Above(foreground_threshold),
                                     allow_smaller=True, start_coord_key=None, end_coord_key=None))
    fill = float(pad_value) if pad_value is not None else (0.0 if normalisation == "none" else -1.0)
    if fit == "pad_crop":
        steps.append(ResizeWithPadOrCropd(image_key, spatial_size=size, mode="constant", value=fill))
        if seg_key:
            steps.append(ResizeWithPadOrCropd(seg_key, spatial_size=size, mode="constant", value=0))
    else:
        steps.append(Resized(image_key, spatial_size=size, mode="trilinear", anti_aliasing=True))
        if seg_key:
            steps.append(Resized(seg_key, spatial_size=size, mode="nearest"))
    if affine_key:
        steps.append(RecordAffined(image_key, affine_key))
    steps.append(EnsureTyped(image_key, dtype=torch.float32, track_meta=False))
    if seg_key:
        steps.append(EnsureTyped(seg_key, dtype=torch.long, track_meta=False))
    return Compose(steps, log_stats=False)


def _triple(value: Sequence[Any] | Any, name: str, kind: type) -> tuple[Any, Any, Any]:
    if isinstance(value, (int, float)):
        values = [kind(value)] * 3
    else:
        values = [kind(v) for v in value]
    if len(values) != 3:
        raise ValueError(f"{name} needs 3 values (or one), got {value!r}")
    return values[0], values[1], values[2]
