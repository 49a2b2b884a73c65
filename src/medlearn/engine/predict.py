"""Write predictions into the run folder (``medlearn predict``).

By default a CSV of per-class probabilities (:class:`CSVPredictionWriter`); a module whose output
needs another format (a challenge's submission files, overlays) overrides
:meth:`medlearn.engine.module.MethodModule.prediction_writer`, which :func:`prediction_writer`
(called by the run builder for ``predict``) picks up.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import BasePredictionWriter

from medlearn.console import say

__all__ = ["CSVPredictionWriter", "prediction_writer"]


def prediction_writer(model: Any, run_dir: str | Path) -> BasePredictionWriter:
    """``model.prediction_writer(run_dir)`` when the module provides one, else :class:`CSVPredictionWriter`."""
    make = getattr(model, "prediction_writer", None)
    return make(run_dir) if callable(make) else CSVPredictionWriter(run_dir)


class CSVPredictionWriter(BasePredictionWriter):
    """Collect ``{"name": [...], "probs": (B, C)}`` batches and write ``predictions.csv``.

    Columns: ``name`` then one column per class (the module's ``class_names`` when it has them).
    Written atomically (temp file + rename); an existing file is replaced only by a new prediction
    run in the same folder.
    """

    def __init__(self, out_dir: str | Path) -> None:
        super().__init__(write_interval="epoch")
        self.out_dir = Path(out_dir)

    def write_on_epoch_end(self, trainer: Any, pl_module: Any, predictions: Any, batch_indices: Any) -> None:
        """Write ``predictions.csv`` from the epoch's prediction batches."""
        rows: list[list[Any]] = []
        n_cls = 0
        for batch in predictions:
            probs = batch["probs"]
            n_cls = probs.shape[1]
            names = batch.get("name") or [""] * probs.shape[0]
            for name, p in zip(names, probs.tolist()):
                rows.append([name, *[f"{v:.6f}" for v in p]])
        classes = list(getattr(pl_module, "class_names", [])) or [f"class_{i}" for i in range(n_cls)]
        self.out_dir.mkdir(parents=True, exist_ok=True)
        suffix = f".rank{trainer.global_rank}" if trainer.world_size > 1 else ""
        out = self.out_dir / f"predictions{suffix}.csv"
        tmp = out.with_suffix(".csv.tmp")
        with tmp.open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["name", *classes])
            w.writerows(rows)
        tmp.replace(out)
        say(f"wrote {len(rows)} predictions to {out}")


