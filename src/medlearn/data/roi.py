"""Disc-centred regions of interest of fundus photographs: where the box comes from, and cropping.

Optic disc and cup segmentation works on a square crop centred on the optic disc, resized to the
network's input (pOSAL, Wang et al., IEEE TMI 2019; BEAL, MICCAI 2019; about 800 x 800 pixels of
a 2124 x 2056 REFUGE training photograph, 600-800 pixels elsewhere, resized to 512 x 512). This
module owns that box for every 2D fundus layout (REFUGE, Drishti-GS, an image + mask table):

* :class:`DiscROI`, the option object the 2D DataModules take (``roi:`` in a config): the box side
  (a fraction of the image's shorter side, or pixels) and where its centre comes from, one rule
  for training images and one for evaluation / unlabelled images:

  - ``"mask"``: the centre of the disc's bounding box in the image's own mask (training, where
    the mask is the annotation; an image whose mask has no disc falls back to the detector);
  - ``"table"``: a CSV ``name,x,y`` of disc centres in original-image pixels (``x`` = column,
    ``y`` = row), e.g. a dataset's published disc centres;
  - ``"detector"``: :func:`detect_disc_centre`, a coarse detector for images without a mask
    (test and unlabelled images).

* :func:`detect_disc_centre`: the optic disc is the brightest compact structure of a fundus
  photograph; the detector smooths the image's brightness with a Gaussian of about a disc radius
  and takes the maximum. Hand-written (a few lines on SciPy's ``gaussian_filter``): no library
  in medlearn's dependencies ships a disc detector. It is coarse by design: the crop only has to
  contain the disc, with margin.

* :func:`roi_box`, :func:`crop_pad` and :func:`paste_box`: the box ``(y0, x0, y1, x1)`` in
  original-image pixels (half-open; it may reach outside the image, which is padded: image 0,
  mask background), cropping an array to it, and pasting a prediction made on the crop back into
  a full-size canvas. The 2D datasets keep the box of every item (``roi``) and the original size
  (``orig_hw``) in the batch, so predictions map back to the full photograph.

It knows no dataset layout.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from medlearn.io.errors import DataError

__all__ = ["DiscROI", "CENTRE_RULES", "detect_disc_centre", "mask_disc_centre", "roi_box", "crop_pad",
           "paste_box", "read_disc_centres"]

#: Where a box centre may come from.
CENTRE_RULES = ("mask", "table", "detector")


def roi_box(centre: tuple[float, float], side: int) -> tuple[int, int, int, int]:
    """The square box of ``side`` pixels centred on ``centre = (row, col)``: ``(y0, x0, y1, x1)``, half-open.

    Examples:
        >>> roi_box((10.0, 20.0), 8)
        (6, 16, 14, 24)
    """
    side = int(side)
    if side < 1:
        raise ValueError(f"the ROI side must be >= 1 pixel, got {side}")
    y0 = int(round(centre[0] - side / 2))
    x0 = int(round(centre[1] - side / 2))
    return y0, x0, y0 + side, x0 + side


def crop_pad(array: np.ndarray | torch.Tensor, box: Sequence[int], fill: float = 0) -> np.ndarray | torch.Tensor:
    """Crop the last two axes of ``array`` to ``box = (y0, x0, y1, x1)``, padding outside the array with ``fill``.

    Works on ``(H, W)`` and ``(C, H, W)`` numpy arrays and tensors; returns the same type.

    Examples:
        >>> crop_pad(np.arange(9).reshape(3, 3), (-1, 1, 2, 4), fill=-1).tolist()
        [[-1, -1, -1], [1, 2, -1], [4, 5, -1]]
    """
    y0, x0, y1, x1 = (int(v) for v in box)
    h, w = array.shape[-2:]
    out_shape = (*array.shape[:-2], y1 - y0, x1 - x0)
    sy0, sx0, sy1, sx1 = max(y0, 0), max(x0, 0), min(y1, h), min(x1, w)
    if isinstance(array, torch.Tensor):
        out_t = torch.full(out_shape, fill, dtype=array.dtype)
        if sy1 > sy0 and sx1 > sx0:
            out_t[..., sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = array[..., sy0:sy1, sx0:sx1]
        return out_t
    out = np.full(out_shape, fill, dtype=array.dtype)
    if sy1 > sy0 and sx1 > sx0:
        out[..., sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = array[..., sy0:sy1, sx0:sx1]
    return out


def paste_box(crop: np.ndarray, box: Sequence[int], full_hw: Sequence[int], fill: int = 0) -> np.ndarray:
    """Put a label map predicted on a box back into a full-size ``(H, W)`` canvas.

    ``crop`` (any size; resized to the box by nearest neighbour, on the pixel-centre grid of
    :func:`~medlearn.data.decode.resize_mask`) lands on ``box = (y0, x0, y1, x1)``; the parts of
    the box outside the canvas are dropped, the canvas elsewhere is ``fill``.

    Examples:
        >>> paste_box(np.array([[1, 2], [3, 4]]), (1, 1, 3, 3), (3, 4)).tolist()
        [[0, 0, 0, 0], [0, 1, 2, 0], [0, 3, 4, 0]]
    """
    y0, x0, y1, x1 = (int(v) for v in box)
    h, w = int(full_hw[0]), int(full_hw[1])
    bh, bw = y1 - y0, x1 - x0
    src = torch.as_tensor(np.asarray(crop)).to(torch.float64)[None, None]
    if tuple(src.shape[-2:]) != (bh, bw):
        src = F.interpolate(src, size=(bh, bw), mode="nearest-exact")
    region = src[0, 0].numpy().astype(np.asarray(crop).dtype)
    canvas = np.full((h, w), fill, dtype=region.dtype)
    sy0, sx0, sy1, sx1 = max(y0, 0), max(x0, 0), min(y1, h), min(x1, w)
    if sy1 > sy0 and sx1 > sx0:
        canvas[sy0:sy1, sx0:sx1] = region[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0]
    return canvas


def mask_disc_centre(labels: np.ndarray, disc_values: Sequence[int] = (1, 2)) -> tuple[float, float] | None:
    """Centre ``(row, col)`` of the bounding box of the disc pixels of a label map, or ``None`` if it has none."""
    disc = np.isin(np.asarray(labels), list(disc_values))
    rows, cols = np.flatnonzero(disc.any(axis=1)), np.flatnonzero(disc.any(axis=0))
    if rows.size == 0:
        return None
    return (rows[0] + rows[-1]) / 2.0, (cols[0] + cols[-1]) / 2.0


def detect_disc_centre(image: torch.Tensor | np.ndarray, sigma: float = 0.04,
                       work_size: int = 256) -> tuple[float, float]:
    """Coarse optic disc centre ``(row, col)`` of a colour fundus photograph, in its own pixels.

    The brightness (mean over channels) is resized to at most ``work_size`` pixels on the longer
    side, smoothed with a Gaussian of ``sigma`` x the shorter side (about a disc radius), and the
    maximum is the centre. The dark surround outside the field of view never wins; a bright
    lesion larger than the disc or a strong flash reflex can (check the crops: the box side leaves
    margin for a coarse centre).

    Args:
        image: ``(C, H, W)`` or ``(H, W)`` intensities (any range).
        sigma: smoothing, as a fraction of the shorter side.
        work_size: longer side the search runs at.

    Returns:
        ``(row, col)`` in the input's pixels.
    """
    from scipy.ndimage import gaussian_filter

    x = torch.as_tensor(np.asarray(image) if not isinstance(image, torch.Tensor) else image).float()
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise ValueError(f"image must be (C, H, W) or (H, W), got {tuple(x.shape)}")
    h, w = x.shape[-2:]
    scale = min(1.0, work_size / max(h, w))
    gray = x.mean(dim=0, keepdim=True)[None]
    if scale < 1.0:
        gray = F.interpolate(gray, size=(max(1, round(h * scale)), max(1, round(w * scale))), mode="area")
    g = gray[0, 0].numpy().astype(np.float64)
    smooth = gaussian_filter(g, sigma=max(0.5, sigma * min(g.shape)), mode="nearest")
    r, c = np.unravel_index(int(np.argmax(smooth)), smooth.shape)
    sy, sx = h / g.shape[0], w / g.shape[1]
    return (r + 0.5) * sy - 0.5, (c + 0.5) * sx - 0.5


def read_disc_centres(path: str | Path) -> dict[str, tuple[float, float]]:
    """A CSV ``name,x,y`` of disc centres (original-image pixels, ``x`` = column) -> ``{name: (row, col)}``.

    ``name`` is matched against an image's table name, its file name or its stem.

    Raises:
        DataError: a missing file or column, or rows with an empty name, a repeated name or
            coordinates that are not numbers (every bad row listed).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "disc-centre table not found")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields = [c.strip().lower() for c in (reader.fieldnames or [])]
        missing = [c for c in ("name", "x", "y") if c not in fields]
        if missing:
            raise DataError(path, f"a disc-centre table has columns name,x,y (found: {', '.join(fields)})",
                            [f"missing column {c!r}" for c in missing])
        out: dict[str, tuple[float, float]] = {}
        problems: list[str] = []
        for i, row in enumerate(reader):
            row = {str(k).strip().lower(): (v or "").strip() for k, v in row.items()}
            name, issues = row["name"], []
            if not name:
                issues.append("empty name")
            elif name in out:
                issues.append("repeated name")
            try:
                x, y = float(row["x"]), float(row["y"])
                if not (np.isfinite(x) and np.isfinite(y)):
                    raise ValueError
            except ValueError:
                issues.append(f"x, y must be numbers, got {row['x']!r}, {row['y']!r}")
            if issues:
                problems.append(f"line {i + 2} ({name or '<empty name>'}): {'; '.join(issues)}")
            else:
                out[name] = (y, x)
    if problems:
        raise DataError(path, f"{len(problems)} invalid rows", problems)
    return out


class DiscROI:
    """A disc-centred square crop of every image, before resizing (the ``roi`` option of the 2D data path).

    Args:
        fraction: box side as a fraction of the image's shorter side (0.4: ~800 px on REFUGE's
            2124 x 2056 training photographs, ~650 px on its 1634 x 1634 Canon images, ~720 px on
            Drishti-GS).
        pixels: box side in pixels instead (``None``: use ``fraction``).
        train_centre: where training images' centres come from: ``"mask"`` (default), ``"table"``
            or ``"detector"``.
        eval_centre: the rule for validation, test, unlabelled and prediction images (default
            ``"detector"``: never the test mask).
        centres: the ``name,x,y`` CSV for the ``"table"`` rule.
        disc_values: label values of the disc in the (mapped) masks.
        detector_sigma: smoothing of :func:`detect_disc_centre`, a fraction of the shorter side.

    Raises:
        ValueError: an unknown rule, ``"table"`` without ``centres``, or a side that is not positive.

    Examples:
        >>> roi = DiscROI(fraction=0.5)
        >>> roi.box((40.0, 60.0), (100, 120))
        (15, 35, 65, 85)
    """

    def __init__(self, fraction: float = 0.4, pixels: int | None = None, train_centre: str = "mask",
                 eval_centre: str = "detector", centres: str | None = None, disc_values: Sequence[int] = (1, 2),
                 detector_sigma: float = 0.04) -> None:
        for rule in (train_centre, eval_centre):
            if rule not in CENTRE_RULES:
                raise ValueError(f"a centre rule must be one of {CENTRE_RULES}, got {rule!r}")
        if "table" in (train_centre, eval_centre) and not centres:
            raise ValueError("the 'table' centre rule needs centres: a CSV name,x,y")
        if pixels is None and not 0.0 < float(fraction) <= 4.0:
            raise ValueError(f"fraction must be in (0, 4], got {fraction}")
        if pixels is not None and int(pixels) < 1:
            raise ValueError(f"pixels must be >= 1, got {pixels}")
        self.fraction = float(fraction)
        self.pixels = None if pixels is None else int(pixels)
        self.train_centre = train_centre
        self.eval_centre = eval_centre
        self.centres = centres
        self.disc_values = tuple(int(v) for v in disc_values)
        self.detector_sigma = float(detector_sigma)
        self._table: dict[str, tuple[float, float]] | None = None

    def side(self, hw: Sequence[int]) -> int:
        """Box side in pixels for an image of size ``hw = (H, W)``."""
        return self.pixels if self.pixels is not None else max(1, int(round(self.fraction * min(hw))))

    def box(self, centre: tuple[float, float], hw: Sequence[int]) -> tuple[int, int, int, int]:
        """The box around ``centre`` for an image of size ``hw``."""
        return roi_box(centre, self.side(hw))

    def table_centre(self, name: str, path: Path) -> tuple[float, float]:
        """The centre the ``centres`` table gives ``name`` (or the file's name or stem).

        Raises:
            DataError: the table has none of them.
        """
        if self._table is None:
            self._table = read_disc_centres(self.centres or "")
        for key in (name, path.name, path.stem):
            if key in self._table:
                return self._table[key]
        raise DataError(self.centres or "", f"no disc centre for {name!r} ({path})")

    def __getstate__(self) -> dict[str, object]:
        state = dict(self.__dict__)
        state["_table"] = None  # re-read in each worker process
        return state

    def __repr__(self) -> str:
        side = f"pixels={self.pixels}" if self.pixels is not None else f"fraction={self.fraction}"
        return f"DiscROI({side}, train_centre={self.train_centre!r}, eval_centre={self.eval_centre!r})"
