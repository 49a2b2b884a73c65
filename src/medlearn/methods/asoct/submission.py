"""The AGE submission: two CSVs and a ZIP, overlay PNGs, and scoring of a submission against a table.

The AGE challenge (Fu et al., MedIA 2020) takes a ZIP with ``Classification_Results.csv`` and
``Localization_Results.csv``, whose columns mirror the annotation table (``ASOCT_Name, Left_Label,
Right_Label`` and ``ASOCT_Name, X1, Y1, X2, Y2``). The exact headers could not be verified, so they
are arguments. Classification values are P(closure) by default (AUC needs scores), or 0 / 1 labels;
localisation values are full-image pixels.

:func:`score_submission` grades such a submission against an AGE folder as the challenge does:
AUC, sensitivity and specificity over all angles, and the average Euclidean distance (plus the 95th
percentile and the fraction within 3 / 5 px) over the annotated spurs.
"""

from __future__ import annotations

import csv
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from lightning.pytorch.callbacks import BasePredictionWriter

from medlearn.console import say
from medlearn.data.age_asoct import SIDES, read_age
from medlearn.io.errors import DataError
from medlearn.metrics.binary import binary_metrics
from medlearn.metrics.keypoints import keypoint_summary, point_distances

__all__ = ["AGESubmissionWriter", "CLASSIFICATION_CSV", "LOCALIZATION_CSV", "draw_overlay", "score_submission",
           "write_submission"]

CLASSIFICATION_CSV = "Classification_Results.csv"
LOCALIZATION_CSV = "Localization_Results.csv"


def _write_csv(path: Path, header: Sequence[str], rows: list[list[Any]]) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(list(header))
        w.writerows(rows)
    os.replace(tmp, path)
    return path


def write_submission(scans: dict[str, dict[str, Any]], out_dir: str | Path, label_output: str = "probability",
                     classification_columns: Sequence[str] = ("ASOCT_Name", "Left_Label", "Right_Label"),
                     localization_columns: Sequence[str] = ("ASOCT_Name", "X1", "Y1", "X2", "Y2"),
                     suffix: str = "") -> list[Path]:
    """Write the two CSVs and ``submission.zip`` for ``{name: {"left": (p, x, y), "right": (p, x, y)}}``.

    Scans are written in name order; a scan missing a side gets empty cells for it. When no ``p`` is
    given (``None`` everywhere: a localiser alone), only the localisation CSV is written (and zipped).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with_cls = any(v[0] is not None for sides in scans.values() for v in sides.values())
    cls_rows, loc_rows = [], []
    for name in sorted(scans):
        cells_c, cells_l = [name], [name]
        for side in SIDES:
            got = scans[name].get(side)
            if got is None:
                cells_c.append("")
                cells_l += ["", ""]
                continue
            p, x, y = got
            if p is None:
                cells_c.append("")
            else:
                cells_c.append(f"{p:.6f}" if label_output == "probability" else str(int(p >= 0.5)))
            cells_l += [f"{x:.2f}", f"{y:.2f}"]
        cls_rows.append(cells_c)
        loc_rows.append(cells_l)
    stem_c, stem_l = Path(CLASSIFICATION_CSV).stem + suffix, Path(LOCALIZATION_CSV).stem + suffix
    paths = [_write_csv(out / f"{stem_c}.csv", classification_columns, cls_rows)] if with_cls else []
    paths.append(_write_csv(out / f"{stem_l}.csv", localization_columns, loc_rows))
    zpath = out / f"submission{suffix}.zip"
    tmp = zpath.with_name(f".{zpath.name}.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for p in paths:
            z.write(p, arcname=p.name.replace(suffix, "") if suffix else p.name)
    os.replace(tmp, zpath)
    return [*paths, zpath]


def draw_overlay(scan_path: str | Path, sides: dict[str, tuple[float | None, float, float]], out_png: str | Path,
                 min_width: int = 640) -> Path:
    """The scan with each angle's predicted spur (circle + cross) and P(closure) (red >= 0.5, green below).

    ``sides`` maps ``"left"`` / ``"right"`` to ``(P(closure), x, y)`` in scan pixels (P ``None``: the spur
    only, in yellow). Scans narrower than ``min_width`` are enlarged by an integer factor (nearest
    neighbour) first.
    """
    from PIL import Image, ImageDraw, ImageFont

    from medlearn.data.decode import load_gray

    gray = (load_gray(scan_path)[0].numpy() * 255.0 + 0.5).astype(np.uint8)
    img = Image.fromarray(gray, mode="L").convert("RGB")
    k = max(1, -(-min_width // img.width))  # small scans: enlarge by an integer factor, for legibility
    if k > 1:
        img = img.resize((img.width * k, img.height * k), Image.Resampling.NEAREST)
    w, h = img.size
    draw = ImageDraw.Draw(img)
    r = max(3.0, min(h, w) / 40.0)
    font = ImageFont.load_default(size=max(9, round(h / 14)))
    for side, (p, x, y) in sides.items():
        x, y = (x + 0.5) * k - 0.5, (y + 0.5) * k - 0.5
        colour = (240, 200, 40) if p is None else (230, 40, 40) if p >= 0.5 else (40, 200, 60)
        draw.ellipse([x - r, y - r, x + r, y + r], outline=colour, width=max(1, round(r / 4)))
        draw.line([x - 2 * r, y, x + 2 * r, y], fill=colour, width=1)
        draw.line([x, y - 2 * r, x, y + 2 * r], fill=colour, width=1)
        tx = 0.02 * w if side == "left" else 0.52 * w
        label = f"{side} spur" if p is None else f"{side} P(closed) {p:.2f}"
        draw.text((tx, 0.02 * h), label, fill=colour, font=font)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_png.with_name(f".{out_png.name}.tmp")
    img.save(tmp, format="PNG")
    os.replace(tmp, out_png)
    return out_png


class AGESubmissionWriter(BasePredictionWriter):
    """Collect :class:`~medlearn.methods.asoct.module.ASOCTPredictor` batches; write the AGE submission.

    Batches: ``name``, ``side`` (0 left, 1 right), ``path``, ``point (B, 2)`` in full-image pixels and,
    from a predictor with a classifier, ``p_closed (B,)`` (without it: the localisation CSV only).
    Each batch is reduced to its scans' rows as it ends (a few numbers per scan are kept, never an
    image); the files are written when the run ends (atomic writes; with several ranks each writes
    its own, suffixed ``.rankN``): ``Classification_Results.csv``, ``Localization_Results.csv``,
    ``submission.zip`` and, with ``overlays``, ``overlays/<scan>.png`` (each scan decoded again, one
    at a time).
    """

    def __init__(self, out_dir: str | Path, label_output: str = "probability",
                 classification_columns: Sequence[str] = ("ASOCT_Name", "Left_Label", "Right_Label"),
                 localization_columns: Sequence[str] = ("ASOCT_Name", "X1", "Y1", "X2", "Y2"),
                 overlays: bool = True) -> None:
        super().__init__(write_interval="batch")
        self.out_dir = Path(out_dir)
        self.label_output = label_output
        self.classification_columns = list(classification_columns)
        self.localization_columns = list(localization_columns)
        self.overlays = overlays
        self._scans: dict[str, dict[str, Any]] = {}
        self._paths: dict[str, str] = {}

    def on_predict_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        """Start with no scans (a writer may serve several prediction runs)."""
        self._scans, self._paths = {}, {}

    def write_on_batch_end(self, trainer: Any, pl_module: Any, prediction: Any, batch_indices: Any, batch: Any,
                           batch_idx: int, dataloader_idx: int = 0) -> None:
        """Keep each angle's ``(P(closure), x, y)`` and its scan's path."""
        for i, name in enumerate(prediction["name"]):
            x, y = (float(v) for v in prediction["point"][i])
            p = float(prediction["p_closed"][i]) if prediction.get("p_closed") is not None else None
            self._scans.setdefault(name, {})[SIDES[int(prediction["side"][i])]] = (p, x, y)
            self._paths[name] = prediction["path"][i]

    def on_predict_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        """Write the AGE submission files and overlays."""
        scans, paths = self._scans, self._paths
        suffix = f".rank{trainer.global_rank}" if trainer.world_size > 1 else ""
        written = write_submission(scans, self.out_dir, self.label_output, self.classification_columns,
                                   self.localization_columns, suffix)
        if self.overlays:
            for name, sides in scans.items():
                draw_overlay(paths[name], sides, self.out_dir / "overlays" / f"{Path(name).stem}.png")
        say(f"wrote predictions for {len(scans)} scans: {', '.join(str(p) for p in written)}"
            + (f" and {len(scans)} overlays in {self.out_dir / 'overlays'}" if self.overlays else ""))
        self._scans, self._paths = {}, {}


def score_submission(submission_dir: str | Path, root: str | Path, table: str | None = None,
                     classification_columns: Sequence[str] = ("ASOCT_Name", "Left_Label", "Right_Label"),
                     localization_columns: Sequence[str] = ("ASOCT_Name", "X1", "Y1", "X2", "Y2"),
                     radii: Sequence[float] = (3.0, 5.0)) -> dict[str, float]:
    """Grade a submission folder against an AGE folder (all of whose scans must be in the submission).

    Returns:
        ``auc``, ``sensitivity``, ``specificity``, ``accuracy`` over all angles (P >= 0.5 positive;
        a 0 / 1 submission works too) and ``aed``, ``median``, ``p95``, ``max``, ``within<r>`` over the
        annotated spurs, in full-image pixels; ``n_angles``, ``n_points``.

    Raises:
        DataError: a CSV is missing, lacks a column, or lacks a scan of the table.
    """
    sub = Path(submission_dir)
    frames = []
    for fname, cols in ((CLASSIFICATION_CSV, classification_columns), (LOCALIZATION_CSV, localization_columns)):
        path = sub / fname
        if not path.is_file():
            raise DataError(path, "submission file not found")
        df = pd.read_csv(path)
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise DataError(path, "missing columns", [f"missing column {c!r}" for c in missing])
        frames.append(df.set_index(cols[0]))
    cls, loc = frames
    records = read_age(root, table)
    absent = [r.name for r in records if r.name not in cls.index or r.name not in loc.index]
    if absent:
        raise DataError(sub, f"{len(absent)} scans of the table are not in the submission", absent)
    scores, labels, pred, target = [], [], [], []
    for r in records:
        assert r.labels is not None and r.points is not None
        for k in range(len(SIDES)):
            scores.append(float(cls.loc[r.name, classification_columns[1 + k]]))
            labels.append(r.labels[k])
            gt = r.points[k]
            pred.append([float(loc.loc[r.name, localization_columns[1 + 2 * k]]),
                         float(loc.loc[r.name, localization_columns[2 + 2 * k]])])
            target.append(list(gt) if gt is not None else [np.nan, np.nan])
    rates = binary_metrics(np.array(scores), np.array(labels)).as_dict()
    kp = keypoint_summary(point_distances(np.array(pred), np.array(target)), radii)
    return {**rates, **kp.as_dict(), "n_angles": float(len(labels)), "n_points": float(kp.n)}
