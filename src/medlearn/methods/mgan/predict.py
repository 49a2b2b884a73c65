"""What ``medlearn predict`` writes for MGAN: each case's missing contrasts as NIfTI, in the BraTS layout.

For every case of ``predict_root`` (a BraTS-layout folder whose cases hold T2 and any subset of the
other contrasts), :class:`SynthesisWriter` writes into ``<out>/<case>/``:

- ``<case>_<contrast>.nii.gz`` for each contrast the case lacks, synthesised slice by slice,
  resized back to the input's in-plane size and stacked on the input's grid with its affine
  (float32 in [0, 1], 0 outside T2's brain);
- a copy of every file the case had (the real contrasts and ``_seg`` if present),

so the folder is a complete BraTS case for a segmenter, plus ``synthesis.csv`` listing, per case,
what was synthesised and what was copied. Files are written atomically; an existing output file
is never overwritten (the run folder is new for every prediction run).
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import BasePredictionWriter

from medlearn.io import write_image

__all__ = ["SynthesisWriter"]


class SynthesisWriter(BasePredictionWriter):
    """Write the synthesised contrasts of each predicted case (see the module docstring).

    Args:
        out_dir: the prediction folder.
    """

    def __init__(self, out_dir: str | Path) -> None:
        super().__init__(write_interval="batch")
        self.out_dir = Path(out_dir)
        self.rows: list[dict[str, str]] = []

    def write_on_batch_end(self, trainer: Any, pl_module: Any, prediction: Any, batch_indices: Any, batch: Any,
                           batch_idx: int, dataloader_idx: int = 0) -> None:
        """Write one case."""
        case = str(prediction["case"])
        folder = self.out_dir / case
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        for contrast, vol in prediction["volumes"].items():
            write_image(folder / f"{case}_{contrast}.nii.gz", vol[None], {"affine": prediction["affine"]})
            written.append(contrast)
        copied = []
        for key, src in sorted(prediction["files"].items()):
            dst = folder / Path(src).name
            if not dst.exists():
                tmp = dst.with_name(f".{dst.name}.tmp")
                shutil.copy2(src, tmp)
                tmp.replace(dst)
            copied.append(key)
        self.rows.append({"case": case, "synthesised": " ".join(sorted(written)), "copied": " ".join(copied)})
        with open(self.out_dir / "synthesis.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=["case", "synthesised", "copied"])
            w.writeheader()
            w.writerows(self.rows)
