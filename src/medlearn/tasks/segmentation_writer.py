"""What ``medlearn predict`` writes for a segmenter: one label map per input, on the input's own grid.

A :class:`~medlearn.tasks.segmentation.Segmenter` predicts label values on the network's grid, the
grid the DataModule's preprocessing made (resampled, reoriented, cropped, padded or resized).
:class:`LabelMapWriter` puts each prediction back on its input's grid and writes it as the batch
ends (``write_interval="batch"``: nothing is kept per input but a CSV row, already on disk):

* **Volumes** (:class:`~medlearn.data.volumes.VolumeDataModule`): MONAI tracks the voxel-to-world
  affine through every spatial step of the preprocessing, and the prediction batches carry it
  (``grid_affine``) with the input file (``source``). The label map is resampled from that grid
  onto the input's (its header's shape and affine, :func:`~medlearn.io.image_geometry`) by nearest
  neighbour through the two affines (:func:`~medlearn.data.oneshot.to_image_grid`): one resampling
  undoes orientation, spacing, crops, pads and resizing at once, and voxels the network never saw
  (cropped away) are background. Written as NIfTI (``.nii`` / ``.nii.gz`` as the input; MGH/MGZ
  inputs as ``.mgz`` / ``.mgh``) with the input's affine, in the smallest integer type holding
  the label values (:func:`~medlearn.io.write_label_map`).
* **Images** (:class:`~medlearn.data.segmentation2d.ImageMaskDataModule`): the batches carry each
  image's stored size (``orig_hw``) and, with a region of interest, its crop box (``roi``); the
  label map is resized back to the box by nearest neighbour and pasted into a background canvas
  of the image's size (:func:`~medlearn.data.roi.paste_box`), then written as a PNG (8-bit, 16-bit
  when a value exceeds 255) with the values the dataset's masks store: the DataModule's
  ``stored_label_values`` (the inverse of its ``value_map``) when it has them, else the label
  values themselves.

Label values are the model's ``label_values`` (BraTS: 0 / 1 / 2 / 4), never class indices.
Files go to ``<run>/labels/`` under the input's name (its name in the dataset, with its folders:
a ``folder`` layout's ``sub/scan.nii.gz`` is written as ``labels/sub/scan.nii.gz``; a BraTS case
as ``labels/<case>.nii.gz``; a 2D image ``img/a.jpg`` as ``labels/img/a.png``); two inputs of one
name get ``-2``, ``-3`` ... . ``predictions.csv`` (streamed, moved into place when the run ends;
``predictions.rank<N>.csv`` per process under DDP) has one row per input: ``name``, ``input``
(the input file where the batch says it), ``label_map`` (relative to the run folder) and the
number of voxels (pixels) of each value in the written file. Every file is written atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch

from medlearn.engine.predict import StreamedCSVWriter

__all__ = ["LabelMapWriter"]

_VOLUME_SUFFIXES = (".nii.gz", ".nii", ".mgz", ".mgh")


def _relative_name(name: str, fallback: str) -> PurePosixPath:
    """``name`` as a path that stays inside the output folder (no root, no ``..``)."""
    parts = [p for p in PurePosixPath(str(name).replace("\\", "/")).parts if p not in ("/", ".", "..", "")]
    return PurePosixPath(*parts) if parts else PurePosixPath(fallback)


def _volume_suffix(source: str) -> str:
    low = source.lower()
    return next((s for s in _VOLUME_SUFFIXES if low.endswith(s)), ".nii.gz")


def _strip_suffix(rel: PurePosixPath, suffixes: Sequence[str]) -> str:
    text = rel.as_posix()
    low = text.lower()
    for s in suffixes:
        if low.endswith(s) and len(text) > len(s):
            return text[: -len(s)]
    return text


class LabelMapWriter(StreamedCSVWriter):
    """Write ``{"name", "seg": (B, 1, *spatial)}`` predictions as label maps on the inputs' grids.

    See the module docstring for what is written where. The batch must say where each input
    came from: volumes ``"source"`` and ``"grid_affine"`` (``VolumeDataModule`` prediction
    batches), images ``"orig_hw"`` (and ``"roi"`` when cropped; ``ImageMaskDataModule``).

    Args:
        run_dir: the prediction run's records folder.
        label_values: the label value of each class, background first.
        spatial_dims: 3 (volumes, NIfTI) or 2 (images, PNG).

    Raises:
        ValueError: (when writing) a batch without the keys above, or a prediction of another
            dimensionality than ``spatial_dims``.
    """

    def __init__(self, run_dir: str | Path, label_values: Sequence[int], spatial_dims: int) -> None:
        super().__init__(run_dir)
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        self.run_dir = Path(run_dir)
        self.out_dir = self.run_dir / "labels"
        self.label_values = [int(v) for v in label_values]
        self.spatial_dims = int(spatial_dims)
        self._used: set[str] = set()
        self._stored: list[int] | None = None

    # --- the run ---

    def on_predict_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        """Start afresh (a writer may serve several prediction runs)."""
        super().on_predict_epoch_start(trainer, pl_module)
        self._used = set()
        self._stored = self._stored_values(getattr(trainer, "datamodule", None))

    def _stored_values(self, datamodule: Any) -> list[int]:
        """The value written for each class: the label values, or (2D) what the masks store for them."""
        if self.spatial_dims == 2:
            stored = getattr(datamodule, "stored_label_values", None)
            if isinstance(stored, dict) and all(v in stored for v in self.label_values):
                return [int(stored[v]) for v in self.label_values]
        return list(self.label_values)

    def _header(self, trainer: Any, pl_module: Any, batch_prediction: Any = None) -> list[str]:
        unit = "voxels" if self.spatial_dims == 3 else "pixels"
        values = self._stored if self._stored is not None else self.label_values
        return ["name", "input", "label_map", *[f"{unit}_{v}" for v in values]]

    def _finished(self, n: int, path: Path) -> str:
        return f"wrote {n} label map(s) to {self.out_dir} and {path}"

    def write_on_batch_end(self, trainer: Any, pl_module: Any, prediction: Any, batch_indices: Any, batch: Any,
                           batch_idx: int, dataloader_idx: int = 0) -> None:
        """Write the batch's label maps and append their rows to ``predictions.csv``."""
        seg = prediction["seg"]
        if seg.ndim != self.spatial_dims + 2:
            raise ValueError(f"a {self.spatial_dims}D label map batch is (B, 1, *spatial), not {tuple(seg.shape)}")
        if self._stored is None:
            self._stored = self._stored_values(getattr(trainer, "datamodule", None))
        out = self._rows(trainer, pl_module, prediction)
        names = prediction.get("name") or batch.get("name") or [f"input_{batch_idx}_{i}" for i in range(len(seg))]
        classes = self._class_indices(seg[:, 0])
        rows = []
        for i, name in enumerate(names):
            if self.spatial_dims == 3:
                source, path, counts = self._write_volume(classes[i], batch, i, str(name))
            else:
                source, path, counts = self._write_image(classes[i], batch, i, str(name))
            rows.append([name, source, path.relative_to(self.run_dir).as_posix(), *counts])
        out.write(rows)

    # --- one input ---

    def _class_indices(self, labels: torch.Tensor) -> np.ndarray:
        """Label values -> class indices ``0..K-1`` (uint8 when K <= 256), so that background is 0."""
        values = torch.as_tensor(self.label_values, dtype=torch.int64)
        lut = torch.zeros(int(values.max()) + 1, dtype=torch.int64)
        lut[values] = torch.arange(len(values))
        out = lut[labels.detach().cpu().to(torch.int64)]
        return out.to(torch.uint8 if len(values) <= 256 else torch.int32).numpy()

    def _destination(self, name: str, suffix: str, strip: Sequence[str]) -> Path:
        """``labels/<name><suffix>``, made unique within the run."""
        stem = _strip_suffix(_relative_name(name, "input"), strip)
        rel, k = f"{stem}{suffix}", 1
        while rel.lower() in self._used:
            k += 1
            rel = f"{stem}-{k}{suffix}"
        self._used.add(rel.lower())
        return self.out_dir / rel

    def _counts(self, classes: np.ndarray) -> list[int]:
        return np.bincount(classes.ravel(), minlength=len(self.label_values))[: len(self.label_values)].tolist()

    def _write_volume(self, classes: np.ndarray, batch: Any, i: int, name: str) -> tuple[str, Path, list[int]]:
        from medlearn.data.oneshot import to_image_grid
        from medlearn.io import image_geometry, label_map_dtype, write_label_map

        missing = [k for k in ("source", "grid_affine") if k not in batch]
        if missing:
            raise ValueError(f"the prediction batch has no {missing}: a volume's label map goes back onto its input's "
                             "grid through the input file and the preprocessed grid's affine "
                             "(VolumeDataModule's prediction batches carry both)")
        source = str(batch["source"][i])
        grid_affine = torch.as_tensor(batch["grid_affine"][i]).detach().cpu().double().numpy()
        stored, affine = image_geometry(source)
        shape = tuple(int(s) for s in stored[:3])
        own = to_image_grid(classes, grid_affine, shape, affine)
        suffix = _volume_suffix(source)
        path = self._destination(name, suffix, _VOLUME_SUFFIXES)
        values = np.asarray(self._stored or self.label_values)
        write_label_map(path, values[own], affine, shape, label_map_dtype(values.tolist()))
        return source, path, self._counts(own)

    def _write_image(self, classes: np.ndarray, batch: Any, i: int, name: str) -> tuple[str, Path, list[int]]:
        from medlearn.data.roi import paste_box
        from medlearn.io import write_image

        if "orig_hw" not in batch:
            raise ValueError("the prediction batch has no 'orig_hw': an image's label map is written at the image's "
                             "own size (ImageMaskDataModule's batches carry it)")
        h, w = (int(v) for v in batch["orig_hw"][i].tolist())
        roi = batch.get("roi")
        box = tuple(int(v) for v in roi[i].tolist()) if roi is not None else (0, 0, h, w)
        own = paste_box(classes, box, (h, w), fill=0)
        values = np.asarray(self._stored or self.label_values)
        dtype = np.uint8 if values.max() <= 255 else np.uint16
        path = self._destination(name, ".png", (".nii.gz", PurePosixPath(name).suffix.lower() or ".png"))
        write_image(path, values[own].astype(dtype)[None], overwrite=True)
        source = batch.get("path")
        return str(source[i]) if source is not None else name, path, self._counts(own)
