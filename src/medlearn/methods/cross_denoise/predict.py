"""What ``medlearn predict`` writes for optic disc / cup segmentation: REFUGE-encoded masks and overlays.

For every image of the prediction folder (:class:`~medlearn.data.two_domain.TwoDomainDataModule`
``predict_root``), the label map predicted on the network input (the disc-centred crop, resized)
is put back into the full photograph (:func:`~medlearn.data.roi.paste_box`: resized to the crop
box by nearest neighbour, background outside it) and written:

* ``masks/<name>.bmp``: single-channel 8-bit in the REFUGE encoding (255 background, 128 rim,
  0 cup), at the photograph's own size, so the REFUGE evaluation (and medlearn's REFUGE reader)
  take it as is;
* ``overlays/<name>.png``: the photograph (longest side at most ``overlay_max_side``) with the
  predicted disc outline in green and the cup outline in blue, and the crop box in white;
* ``predictions.csv``: ``name, vcdr, disc_pixels, cup_pixels, roi_y0, roi_x0, roi_y1, roi_x1`` (the
  vertical cup-to-disc ratio of the full-size mask; empty when no disc was found).

Files are written through a temporary name and renamed. The folder is the prediction run's
records folder (a new ``predict`` subfolder of a training run).
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from PIL import Image

from medlearn.console import say
from medlearn.data.decode import load_image
from medlearn.data.roi import paste_box
from medlearn.metrics.fundus import vertical_cdr

__all__ = ["FundusMaskWriter", "refuge_encode", "overlay_outlines"]

_REFUGE = np.array([255, 128, 0], dtype=np.uint8)  # label 0 / 1 / 2 -> stored value


def refuge_encode(labels: np.ndarray) -> np.ndarray:
    """Labels 0 background / 1 rim / 2 cup -> REFUGE's stored values 255 / 128 / 0 (uint8)."""
    return _REFUGE[np.asarray(labels).astype(np.int64)]


def _outline(region: np.ndarray, width: int) -> np.ndarray:
    from scipy.ndimage import binary_dilation, binary_erosion

    edge = region & ~binary_erosion(region)
    return binary_dilation(edge, iterations=max(0, width - 1)) if width > 1 else edge


def overlay_outlines(rgb: np.ndarray, labels: np.ndarray, box: tuple[int, int, int, int] | None = None,
                     width: int = 1) -> np.ndarray:
    """The photograph ``(H, W, 3)`` uint8 with the disc outline (green), the cup outline (blue) and ``box`` (white)."""
    out = rgb.copy()
    if box is not None:
        h, w = labels.shape
        y0, x0, y1, x1 = (int(v) for v in box)
        frame = np.zeros((h, w), dtype=bool)
        ys, xs = slice(max(y0, 0), min(y1, h)), slice(max(x0, 0), min(x1, w))
        frame[ys, xs] = True
        out[_outline(frame, width)] = (255, 255, 255)
    out[_outline(labels >= 1, width)] = (40, 220, 40)
    out[_outline(labels == 2, width)] = (40, 120, 255)
    return out


def _save(path: Path, array: np.ndarray, fmt: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, path)


class FundusMaskWriter(BasePredictionWriter):
    """Write full-size REFUGE masks, overlays and ``predictions.csv`` from ``CrossDenoise.predict_step``.

    Args:
        out_dir: the prediction records folder.
        overlay_max_side: longest side of the overlay PNGs (the masks keep the full size).
    """

    def __init__(self, out_dir: str | Path, overlay_max_side: int = 1024) -> None:
        super().__init__(write_interval="batch")
        self.out_dir = Path(out_dir)
        self.overlay_max_side = int(overlay_max_side)
        self.rows: list[list[Any]] = []

    def write_on_batch_end(self, trainer: Any, pl_module: Any, prediction: Any, batch_indices: Any, batch: Any,
                           batch_idx: int, dataloader_idx: int = 0) -> None:
        """Write the batch's masks and overlays."""
        labels = prediction["labels"]
        for i, name in enumerate(prediction["name"]):
            lab = labels[i].numpy()
            roi, hw = prediction.get("roi"), prediction.get("orig_hw")
            if roi is not None and hw is not None:
                box = tuple(int(v) for v in roi[i].tolist())
                full = paste_box(lab, box, tuple(int(v) for v in hw[i].tolist()), fill=0)
            else:
                box, full = (0, 0, *lab.shape), lab
            stem = Path(name).with_suffix("")
            _save(self.out_dir / "masks" / f"{stem}.bmp", refuge_encode(full), "BMP")
            self._overlay(Path(prediction["path"][i]), full, box, self.out_dir / "overlays" / f"{stem}.png")
            cdr = float(vertical_cdr(torch.from_numpy(full)[None, None])[0])
            self.rows.append([name, "" if np.isnan(cdr) else f"{cdr:.4f}", int((full >= 1).sum()),
                              int((full == 2).sum()), *box])

    def _overlay(self, path: Path, labels: np.ndarray, box: tuple[int, ...], out: Path) -> None:
        try:
            rgb = (load_image(path, 3).permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
        except Exception:  # the image may be gone (prediction on the test split of a moved dataset)
            rgb = np.zeros((*labels.shape, 3), dtype=np.uint8)
        if rgb.shape[:2] != labels.shape:
            rgb = np.zeros((*labels.shape, 3), dtype=np.uint8)
        scale = min(1.0, self.overlay_max_side / max(labels.shape))
        width = max(1, int(round(2 / scale))) if max(labels.shape) > 256 else 1
        img = overlay_outlines(rgb, labels, box, width)  # type: ignore[arg-type]
        if scale < 1.0:
            size = (max(1, round(labels.shape[1] * scale)), max(1, round(labels.shape[0] * scale)))
            img = np.asarray(Image.fromarray(img).resize(size, Image.Resampling.BILINEAR))
        _save(out, img, "PNG")

    def on_predict_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        """Write ``predictions.csv`` and say where everything went."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        suffix = f".rank{trainer.global_rank}" if trainer.world_size > 1 else ""
        out = self.out_dir / f"predictions{suffix}.csv"
        tmp = out.with_name(f".{out.name}.tmp")
        with tmp.open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["name", "vcdr", "disc_pixels", "cup_pixels", "roi_y0", "roi_x0", "roi_y1", "roi_x1"])
            w.writerows(self.rows)
        os.replace(tmp, out)
        say(f"wrote {len(self.rows)} masks (REFUGE encoding) to {self.out_dir / 'masks'}, overlays to "
            f"{self.out_dir / 'overlays'} and {out}")
        self.rows = []
