"""Large light-microscopy volumes: the Vaa3D ``.v3draw`` format, and a block reader that reads only what it needs.

Whole-brain neuron images do not fit in memory; per-node tracing QC (Lu et al., arXiv:2003.08556)
needs only a small block around each node. :class:`BlockReader` opens a volume without reading its
voxels and returns the block around a voxel, zero-padded where it leaves the volume:

- ``.v3draw`` (uncompressed Vaa3D raw): a memory map of the voxel payload;
- ``.tif`` / ``.tiff`` stacks: ``tifffile.memmap`` when the pages are stored contiguously and
  uncompressed, else only the pages (z slices) the block covers;
- ``.nii`` / ``.nii.gz``: nibabel's array proxy, sliced (uncompressed files are memory-mapped).

Axes are ``(z, y, x)`` (SWC ``x, y, z`` reversed). ``.v3draw`` layout (Vaa3D ``stackutil``): the
24-byte magic ``raw_image_stack_by_hpeng``, one endianness byte ``L`` or ``B``, a 2-byte data type
(1 uint8, 2 uint16, 4 float32), four sizes ``x, y, z, c`` as 4-byte integers (2-byte in old files;
told apart by the file size), then the voxels with x fastest and channel slowest.
:func:`read_v3draw` / :func:`write_v3draw` read and write whole files. Written by hand: no
maintained PyPI package reads ``.v3draw``.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np

from medlearn.io._common import atomic_write
from medlearn.io.errors import DataError

__all__ = ["BlockReader", "read_v3draw", "write_v3draw"]

_MAGIC = b"raw_image_stack_by_hpeng"
_DTYPES = {1: np.uint8, 2: np.uint16, 4: np.float32}


def _v3draw_header(path: Path) -> tuple[np.dtype, tuple[int, int, int, int], int]:
    """``(dtype, (c, z, y, x), payload offset)`` of a .v3draw file."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(43)
    if len(head) < 35 or head[:24] != _MAGIC:
        raise DataError(path, "not a Vaa3D .v3draw file (no 'raw_image_stack_by_hpeng' magic)")
    endian = {b"L": "<", b"B": ">"}.get(head[24:25])
    if endian is None:
        raise DataError(path, f"bad .v3draw endianness byte {head[24:25]!r} (expected L or B)")
    code = struct.unpack(endian + "h", head[25:27])[0]
    if code not in _DTYPES:
        raise DataError(path, f".v3draw data type {code} is not supported (1 uint8, 2 uint16, 4 float32)")
    dtype = np.dtype(_DTYPES[code]).newbyteorder("<" if endian == "<" else ">")
    for width, fmt in ((4, "i"), (2, "h")):
        offset = 27 + 4 * width
        if len(head) < offset:
            continue
        dims = struct.unpack(endian + fmt * 4, head[27:offset])
        if min(dims) > 0 and offset + int(np.prod(dims)) * dtype.itemsize == size:
            x, y, z, c = (int(d) for d in dims)
            return dtype, (c, z, y, x), offset
    raise DataError(path, f".v3draw header sizes do not match the file size ({size} bytes): truncated or corrupt")


def read_v3draw(path: str | Path) -> np.ndarray:
    """The whole ``.v3draw`` volume ``(C, Z, Y, X)`` in its stored type."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    dtype, shape, offset = _v3draw_header(path)
    return np.fromfile(path, dtype=dtype, offset=offset).reshape(shape).astype(dtype.newbyteorder("="))


def write_v3draw(path: str | Path, volume: np.ndarray, overwrite: bool = False) -> Path:
    """Write ``(C, Z, Y, X)`` or ``(Z, Y, X)`` uint8 / uint16 / float32 as little-endian ``.v3draw`` (atomic)."""
    path = Path(path)
    v = np.asarray(volume)
    v = v[None] if v.ndim == 3 else v
    codes = {np.dtype(t): c for c, t in _DTYPES.items()}
    if v.ndim != 4 or v.dtype not in codes:
        raise ValueError(f"need (C, Z, Y, X) or (Z, Y, X) of uint8, uint16 or float32, got {v.shape} {v.dtype}")
    c, z, y, x = v.shape
    head = _MAGIC + b"L" + struct.pack("<h", codes[v.dtype]) + struct.pack("<4i", x, y, z, c)
    payload = head + np.ascontiguousarray(v).astype(v.dtype.newbyteorder("<")).tobytes()

    def write(tmp: str) -> None:
        Path(tmp).write_bytes(payload)

    return atomic_write(path, write, overwrite=overwrite)


class BlockReader:
    """Blocks of a volume file around given voxels, without loading the volume (see the module docstring).

    Args:
        path: a ``.v3draw``, ``.tif`` / ``.tiff`` or ``.nii`` / ``.nii.gz`` file.
        channel: the channel of a multi-channel ``.v3draw`` / TIFF.

    Attributes:
        shape: ``(Z, Y, X)`` of the volume.
    """

    def __init__(self, path: str | Path, channel: int = 0) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(self.path, "file not found")
        name = self.path.name.lower()
        self._pages: Any = None
        if name.endswith(".v3draw"):
            dtype, (c, z, y, x), offset = _v3draw_header(self.path)
            if not 0 <= channel < c:
                raise DataError(self.path, f"channel {channel} of a {c}-channel volume")
            mm = np.memmap(self.path, dtype=dtype, mode="r", offset=offset, shape=(c, z, y, x))
            self._array: Any = mm[channel]
        elif name.endswith((".tif", ".tiff")):
            import tifffile

            try:
                self._array = tifffile.memmap(self.path, mode="r")
            except (ValueError, tifffile.TiffFileError, OSError):
                self._array = None
                self._pages = tifffile.TiffFile(self.path)
            if self._array is not None and self._array.ndim == 4:
                self._array = self._array[:, channel] if self._array.shape[1] < self._array.shape[-1] else \
                    self._array[..., channel]
        elif name.endswith((".nii", ".nii.gz")):
            import nibabel as nib

            try:
                img: Any = nib.load(self.path)
            except Exception as exc:
                raise DataError(self.path, f"cannot open as NIfTI ({type(exc).__name__}: {exc})") from exc
            self._nifti = img.dataobj  # (x, y, z): sliced and transposed per block
            self.shape = tuple(int(s) for s in img.shape[:3][::-1])
            self._array = None
            return
        else:
            raise DataError(self.path, "block reading supports .v3draw, .tif / .tiff and .nii / .nii.gz")
        if self._array is not None:
            if self._array.ndim != 3:
                raise DataError(self.path, f"expected a 3D stack, got shape {self._array.shape}")
            self.shape = tuple(int(s) for s in self._array.shape)
        else:
            series = self._pages.series[0]
            if len(series.shape) != 3:
                raise DataError(self.path, f"expected a 3D stack, got shape {series.shape}")
            self.shape = tuple(int(s) for s in series.shape)

    @classmethod
    def from_array(cls, volume: np.ndarray, name: str = "<array>") -> BlockReader:
        """A reader over a ``(Z, Y, X)`` array already in memory (same blocks as from its file)."""
        volume = np.asarray(volume)
        if volume.ndim != 3:
            raise ValueError(f"expected a (Z, Y, X) volume, got shape {volume.shape}")
        reader = cls.__new__(cls)
        reader.path, reader._pages, reader._array = Path(name), None, volume
        reader.shape = tuple(int(s) for s in volume.shape)
        return reader

    def _read(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        if self._array is not None:
            return np.asarray(self._array[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]])
        if self._pages is not None:
            pages = self._pages.series[0].pages
            return np.stack([pages[z].asarray()[lo[1]:hi[1], lo[2]:hi[2]] for z in range(lo[0], hi[0])])
        sub = np.asarray(self._nifti[lo[2]:hi[2], lo[1]:hi[1], lo[0]:hi[0]])
        return np.transpose(sub, (2, 1, 0))

    def block(self, centre_zyx: Any, size_zyx: Any) -> np.ndarray:
        """The ``size_zyx`` block whose centre voxel is ``centre_zyx`` (rounded), zero outside the volume, float32.

        The block starts at ``round(centre) - size // 2``.
        """
        size = np.asarray(size_zyx, dtype=int)
        start = np.rint(np.asarray(centre_zyx, dtype=float)).astype(int) - size // 2
        out = np.zeros(tuple(size), dtype=np.float32)
        lo = np.maximum(start, 0)
        hi = np.minimum(start + size, self.shape)
        if np.any(hi <= lo):
            return out
        data = self._read(lo, hi)
        out[tuple(slice(a - s, b - s) for a, b, s in zip(lo, hi, start))] = data
        return out

    def max_projection(self, lo_zyx: Any = None, hi_zyx: Any = None, chunk: int = 16) -> np.ndarray:
        """Maximum over z of the box ``[lo, hi)`` (default the whole volume), read ``chunk`` slices at a time.

        Memory stays at one slab, so the projection of a volume larger than memory works.
        """
        lo = np.maximum(np.asarray(lo_zyx if lo_zyx is not None else (0, 0, 0), dtype=int), 0)
        hi = np.minimum(np.asarray(hi_zyx if hi_zyx is not None else self.shape, dtype=int), self.shape)
        if np.any(hi <= lo):
            raise ValueError(f"empty box {lo.tolist()}..{hi.tolist()} in a volume of shape {self.shape}")
        out: np.ndarray | None = None
        for z in range(int(lo[0]), int(hi[0]), max(int(chunk), 1)):
            top = min(z + max(int(chunk), 1), int(hi[0]))
            slab = self._read(np.array([z, lo[1], lo[2]]), np.array([top, hi[1], hi[2]])).max(axis=0)
            out = slab if out is None else np.maximum(out, slab)
        assert out is not None
        return out

    def close(self) -> None:
        """Release the file (TIFF page access)."""
        if self._pages is not None:
            self._pages.close()

    def __enter__(self) -> BlockReader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
