"""Image readers and writers: PNG, JPEG, BMP, TIFF, DICOM, NIfTI, FreeSurfer MGH/MGZ (read only).

The readers are thin, hand-written wrappers over Pillow (PNG/JPEG/BMP), tifffile (TIFF), pydicom
with its pylibjpeg plugins (DICOM) and nibabel (NIfTI, MGH/MGZ); the libraries do all the decoding. What
this package adds is one contract for every format and one error type for every bad input.

Array contract (``read_image`` and every ``read_*``)
-----------------------------------------------------
The array is **float32** and **channel-first**, always:

====================================  ==================================
input                                 array shape
====================================  ==================================
2D gray (PNG/JPEG/BMP/TIFF/DICOM)     ``(1, H, W)``
2D colour (RGB, RGBA, palette, YBR)   ``(3, H, W)`` (alpha dropped)
DICOM multi-frame, TIFF stack         ``(C, F, H, W)``, C = 1 or 3
NIfTI 3D                              ``(1, X, Y, Z)`` stored voxel order
NIfTI 4D                              ``(T, X, Y, Z)`` stored voxel order
MGH/MGZ (FreeSurfer)                  as NIfTI: ``(1, X, Y, Z)``, frames ``(T, X, Y, Z)``
====================================  ==================================

Values are in **display convention** (higher = brighter: DICOM ``MONOCHROME1`` and TIFF
``MINISWHITE`` are inverted) and otherwise in the **stored intensity units**: no rescaling to
[0, 1]. The DICOM Modality LUT (``RescaleSlope``/``RescaleIntercept``) and NIfTI
``scl_slope``/``scl_inter`` are applied, so CT stays in HU; an 8-bit PNG stays in 0..255.

Metadata contract
-----------------
The dict always has these keys:

- ``format``: ``"png"``, ``"jpeg"``, ``"bmp"``, ``"tiff"``, ``"dicom"``, ``"nifti"`` or ``"mgh"``;
- ``path``: the file read, as ``str``;
- ``spatial_shape``: the array shape without the channel axis (tuple of int);
- ``spacing``: a float per spatial axis, in mm where known, or ``None`` when the format has none
  (PNG, JPEG, BMP, TIFF) or the header does not give a valid one (DICOM);
- ``affine``: 4x4 ``np.ndarray`` voxel-to-world (NIfTI, MGH) or ``None``;
- ``orientation``: axis codes such as ``"RAS"`` (NIfTI, MGH) or ``None``;
- ``channels``: ``array.shape[0]``;
- ``bit_depth``: bits per stored sample where known, else ``None``;
- ``extension_mismatch`` (``read_image`` only): the content was another format than the name said;

plus format-specific extras (``modality``, ``photometric``, ``n_frames``, ``time_step``...; see
each reader). DICOM patient and study identifiers are never included.

Errors
------
Bad input always raises :class:`DataError` (a :class:`ValueError`) whose message starts with the
file path and says what is wrong: missing, empty, truncated or corrupt files, content that is no
supported format, DICOM without pixel data or with a transfer syntax no installed plugin decodes,
NaN or Inf pixels (counted; for NIfTI, ``nonfinite=<value>`` replaces them with a
:class:`NonFiniteReplacedWarning` instead, the policy for NaN outside the brain after
resampling), zero-size dimensions, NIfTI with more than 4 dimensions. Library
exceptions are wrapped (``raise DataError(...) from exc``). A file whose content is another
supported format than its extension (a PNG renamed ``.dcm``) is read by content with a
:class:`FormatMismatchWarning`.

Writing
-------
:func:`write_image` writes PNG (uint8/uint16, dtype chosen explicitly for float input), TIFF and
NIfTI (with affine), atomically (temp file + ``os.replace``), and raises :class:`FileExistsError`
rather than overwrite unless ``overwrite=True``. DICOM is read-only. :func:`write_label_map`
writes an integer label map on an image's grid (NIfTI or MGH/MGZ) in :func:`label_map_dtype`.

Checking without decoding
-------------------------
:func:`nifti_geometry` gives a NIfTI file's shape and affine from its header and detects truncated
files from the file size or gzip footer, without decoding the voxels; :func:`mgh_geometry` does
the same for MGH/MGZ and :func:`image_geometry` for either.
"""

from __future__ import annotations

from medlearn.io._common import (
    FormatMismatchWarning,
    NonFiniteReplacedWarning,
    PrecisionLossWarning,
    atomic_write_text,
    detect_format,
)
from medlearn.io.api import image_geometry, read_image, write_image
from medlearn.io.blocks import BlockReader, read_v3draw, write_v3draw
from medlearn.io.dicom import read_dicom
from medlearn.io.errors import DataError
from medlearn.io.image2d import read_bmp, read_jpeg, read_png, read_tiff, write_png, write_tiff
from medlearn.io.labelmaps import label_map_dtype, write_label_map
from medlearn.io.mgh import mgh_geometry, read_mgh
from medlearn.io.nifti import nifti_geometry, read_nifti, reorient_to, write_nifti
from medlearn.io.swc import SWCTree, read_swc, resample_swc, write_swc

__all__ = [
    "atomic_write_text",
    "DataError",
    "FormatMismatchWarning",
    "NonFiniteReplacedWarning",
    "PrecisionLossWarning",
    "detect_format",
    "read_image",
    "image_geometry",
    "write_image",
    "read_png",
    "read_jpeg",
    "read_bmp",
    "read_tiff",
    "read_dicom",
    "read_nifti",
    "nifti_geometry",
    "read_mgh",
    "mgh_geometry",
    "write_png",
    "write_tiff",
    "write_nifti",
    "reorient_to",
    "label_map_dtype",
    "write_label_map",
    "BlockReader",
    "read_v3draw",
    "write_v3draw",
    "SWCTree",
    "read_swc",
    "write_swc",
    "resample_swc",
]
