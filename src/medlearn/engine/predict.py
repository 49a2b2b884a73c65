"""Write predictions into the run folder (``medlearn predict``), batch by batch.

By default a CSV of per-class probabilities (:class:`CSVPredictionWriter`); a module whose output
needs another format (a challenge's submission files, overlays) overrides
:meth:`medlearn.engine.module.MethodModule.prediction_writer`, which :func:`prediction_writer`
(called by the run builder for ``predict``) picks up.

Memory stays flat over any number of inputs: ``medlearn predict`` runs Lightning's predict loop
with ``return_predictions=False`` and writers that write each batch as it ends
(``write_interval="batch"``), so no output is kept; :class:`StreamedCSV` appends a batch's rows to
a temporary file and moves it into place when the run ends. The data is read without the
DataModules' in-memory caches (:func:`uncached_data`): a prediction run reads each input once.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO

from lightning.pytorch.callbacks import BasePredictionWriter

from medlearn.console import say

__all__ = ["CSVPredictionWriter", "StreamedCSV", "StreamedCSVWriter", "prediction_writer", "uncached_data"]


def prediction_writer(model: Any, run_dir: str | Path) -> BasePredictionWriter:
    """``model.prediction_writer(run_dir)`` when the module provides one, else :class:`CSVPredictionWriter`."""
    make = getattr(model, "prediction_writer", None)
    return make(run_dir) if callable(make) else CSVPredictionWriter(run_dir)


def uncached_data(section: Any) -> bool:
    """Turn off the in-memory cache in a config's ``data`` section (``class_path`` + ``init_args``).

    A prediction run reads every input once, so a DataModule's cache would only grow with the
    number of inputs (ChestX-ray14 at 224 px: 5.6 GB); ``medlearn predict`` and
    :func:`medlearn.engine.run.predict_from_config` decode each image when its batch is loaded.
    ``section`` is a dict or LightningCLI's namespace; its ``init_args`` is changed in place
    (created when missing).

    Returns:
        Whether the DataModule takes a ``cache`` argument (now ``False``).
    """
    import importlib
    import inspect

    if section is None or not section.get("class_path"):
        return False
    init_args = section.get("init_args")
    if init_args is None or "cache" not in init_args:
        module, _, name = str(section["class_path"]).rpartition(".")
        cls = getattr(importlib.import_module(module), name, None)
        if cls is None or "cache" not in inspect.signature(cls).parameters:
            return False
        if init_args is None:
            init_args = section["init_args"] = {}
    init_args["cache"] = False
    return True


class StreamedCSV:
    """A CSV written as rows come: to a hidden temporary file beside ``path``, moved to ``path`` by :meth:`close`.

    Nothing but the open file is kept, so a writer can hold one for millions of rows; a run that
    fails calls :meth:`discard` and leaves no partial ``path`` (an older ``path`` stays as it was).

    Args:
        path: the final file.
        header: the column names, written first.

    Examples:
        >>> import tempfile
        >>> out = Path(tempfile.mkdtemp()) / "p.csv"
        >>> rows = StreamedCSV(out, ["name", "p"])
        >>> rows.write([["a", 0.5], ["b", 0.25]])
        >>> rows.close().read_text().splitlines()
        ['name,p', 'a,0.5', 'b,0.25']
    """

    def __init__(self, path: str | Path, header: Sequence[Any]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.name}.tmp")
        self._file: TextIO | None = self.tmp.open("w", newline="", encoding="utf-8")
        self._csv = csv.writer(self._file, lineterminator="\n")
        self._csv.writerow(list(header))
        self.rows = 0

    def write(self, rows: Iterable[Sequence[Any]]) -> None:
        """Append ``rows`` and flush them to the file."""
        if self._file is None:
            raise ValueError(f"{self.path} is already closed")
        for row in rows:
            self._csv.writerow(list(row))
            self.rows += 1
        self._file.flush()

    def close(self) -> Path:
        """Finish the file and move it to :attr:`path` (atomic rename); returns the path."""
        if self._file is not None:
            self._file.close()
            self._file = None
            os.replace(self.tmp, self.path)
        return self.path

    def discard(self) -> None:
        """Close and delete the temporary file (a failed run)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self.tmp.unlink(missing_ok=True)


class StreamedCSVWriter(BasePredictionWriter):
    """A prediction writer whose rows stream into ``predictions.csv`` (:class:`StreamedCSV`).

    Owns the file's life: a fresh file per prediction run, the atomic rename when the run ends
    (``predictions.rank<N>.csv`` per rank with several), no partial file after a failed run.
    Subclasses write rows in ``write_on_batch_end`` through :meth:`_rows`, and say what the empty
    file's header is (:meth:`_header`) and what the run wrote (:meth:`_finished`).
    """

    def __init__(self, csv_dir: str | Path) -> None:
        super().__init__(write_interval="batch")
        self.csv_dir = Path(csv_dir)
        self._out: StreamedCSV | None = None

    def _header(self, trainer: Any, pl_module: Any, batch_prediction: Any = None) -> list[str]:
        raise NotImplementedError

    def _finished(self, n: int, path: Path) -> str:
        return f"wrote {n} predictions to {path}"

    def _rows(self, trainer: Any, pl_module: Any, batch_prediction: Any) -> StreamedCSV:
        """The open file (opened with the header of the first batch's prediction)."""
        if self._out is None:
            suffix = f".rank{trainer.global_rank}" if trainer.world_size > 1 else ""
            self._out = StreamedCSV(self.csv_dir / f"predictions{suffix}.csv",
                                    self._header(trainer, pl_module, batch_prediction))
        return self._out

    def on_predict_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        """Start a new file (a writer may serve several prediction runs)."""
        if self._out is not None:
            self._out.discard()
        self._out = None

    def on_predict_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        """Move ``predictions.csv`` into place (a header only when there was nothing to predict)."""
        out = self._rows(trainer, pl_module, None)
        n = out.rows
        path = out.close()
        self._out = None
        say(self._finished(n, path))

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        """Delete the partial file of a failed run."""
        if self._out is not None:
            self._out.discard()
            self._out = None


class CSVPredictionWriter(StreamedCSVWriter):
    """Write ``{"name": [...], "probs": (B, C)}`` batches to ``predictions.csv`` as each batch ends.

    Columns: ``name`` then one column per class (the module's ``class_names`` when it has them).
    Rows go to a temporary file batch by batch (nothing accumulates in memory), which becomes
    ``predictions.csv`` when the run ends (atomic rename; with several ranks each writes
    ``predictions.rank<N>.csv``); a failed run leaves no partial file.

    Raises:
        KeyError: a prediction without ``probs`` (the module needs its own ``prediction_writer``).
    """

    def __init__(self, out_dir: str | Path) -> None:
        super().__init__(out_dir)
        self.out_dir = Path(out_dir)

    def _header(self, trainer: Any, pl_module: Any, batch_prediction: Any = None) -> list[str]:
        n_classes = (int(batch_prediction["probs"].shape[1]) if batch_prediction is not None
                     else int(getattr(pl_module.hparams, "num_classes", 0) or 0))
        classes = list(getattr(pl_module, "class_names", [])) or [f"class_{i}" for i in range(n_classes)]
        return ["name", *classes]

    def write_on_batch_end(self, trainer: Any, pl_module: Any, prediction: Any, batch_indices: Any, batch: Any,
                           batch_idx: int, dataloader_idx: int = 0) -> None:
        """Append the batch's rows."""
        if "probs" not in prediction:
            raise KeyError(f"{type(pl_module).__name__}.predict_step returned {sorted(prediction)}, not 'probs': "
                           "the default prediction writer writes class probabilities only")
        probs = prediction["probs"]
        names = prediction.get("name") or [""] * probs.shape[0]
        self._rows(trainer, pl_module, prediction).write(
            [name, *[f"{v:.6f}" for v in p]] for name, p in zip(names, probs.tolist()))
