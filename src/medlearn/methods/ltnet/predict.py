"""What ``medlearn predict`` (and ``medlearn oneshot``) write for LT-Net: one label map per image.

Labels are transferred on the working grid (the atlas grid, or its ``size`` version), brought back onto
each image's own grid by nearest neighbour (values kept, never re-indexed), and written under the
image's own file name with its affine, as NIfTI (``.mgz`` / ``.mgh`` images get ``.mgz`` / ``.mgh``
label maps), in the smallest integer type that holds the atlas's label values. Written batch by batch,
so memory does not grow with the number of images.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch.callbacks import BasePredictionWriter

from medlearn.console import say
from medlearn.io import atomic_write_text, label_map_dtype, write_label_map

__all__ = ["OneShotLabelWriter"]


class OneShotLabelWriter(BasePredictionWriter):
    """Write ``<run>/labels/<image file name>`` per predicted image and ``<run>/labels.csv``.

    ``labels.csv``: image, label file, the label values present and the forward field's folding fraction.
    """

    def __init__(self, run_dir: str | Path) -> None:
        super().__init__(write_interval="batch")
        self.out_dir = Path(run_dir) / "labels"
        self.rows: list[list[Any]] = []

    def write_on_batch_end(self, trainer: Any, pl_module: Any, prediction: Any, batch_indices: Any, batch: Any,
                           batch_idx: int, dataloader_idx: int = 0) -> None:
        """Write the batch's label maps on their images' grids."""
        from medlearn.data.oneshot import OneShotSet
        from medlearn.io import image_geometry

        dm = trainer.datamodule
        paths = {OneShotSet.name_of(p): Path(p) for p in dm.oneshot.images}
        dtype = label_map_dtype(dm.label_values)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for name, labels, folding in zip(prediction["name"], prediction["labels"], prediction["folding"]):
            src = paths[name]
            stored, affine = image_geometry(src)
            own = dm.labels_to_image(name, labels)
            dest = write_label_map(self.out_dir / src.name, own, affine, tuple(int(s) for s in stored[:3]), dtype)
            present = " ".join(str(int(v)) for v in np.unique(own))
            self.rows.append([name, dest.name, present, f"{folding:.6f}"])

    def on_predict_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        """Write ``labels.csv`` and say where the label maps are."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["image", "labels_file", "label_values_present", "folding_fraction"])
        w.writerows(self.rows)
        atomic_write_text(self.out_dir.parent / "labels.csv", buf.getvalue())
        say(f"wrote {len(self.rows)} label map(s) to {self.out_dir}")
