"""``medlearn predict`` over thousands of images streams: flat memory, every batch written as it ends.

The CLI runs in a fresh process (``medlearn predict --config ...``, exactly what a user types) on
2,500 tiny PNGs listed in an ``image,label,split`` table (a 2D classifier predicts on the test
part). A callback given on the command line samples the process's resident memory (``VmRSS``)
after every batch and counts the outputs Lightning holds. Before streaming, each of these grew
with the number of images: Lightning kept every output (``return_predictions`` defaulted to true
under LightningCLI), the CSV writer kept every row until the end, and the DataModule's cache kept
every decoded image (3 x 64 x 64 bytes each, 31 MB for this folder).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medlearn.engine.predict import CSVPredictionWriter, StreamedCSV, uncached_data

N_TEST = 2500
BATCH = 64
SIZE = 64  # decoded side: a cached image would take 3 * 64 * 64 B = 12 kB
#: RSS growth allowed between the first and the last tenth of the batches: an accumulating path
#: adds about 31 MB over this run (the cache alone), a streaming one stays within allocator noise.
GROWTH_BOUND_MB = 8.0

PROBE = '''
import json
from lightning.pytorch.callbacks import Callback


def rss_kb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


class RSSProbe(Callback):
    def __init__(self, out: str) -> None:
        self.out = out
        self.samples = []

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        held = sum(len(p) for p in trainer.predict_loop._predictions)
        self.samples.append([batch_idx, rss_kb(), held, bool(trainer.predict_loop.return_predictions)])

    def on_predict_end(self, trainer, pl_module):
        with open(self.out, "w") as f:
            json.dump(self.samples, f)
'''


@pytest.fixture(scope="module")
def image_table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2,500 test images and 4 training images, 8 x 8 RGB PNGs, in a ``labels.csv`` table."""
    root = tmp_path_factory.mktemp("many-images")
    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    rows = [["image", "label", "split"]]
    for i in range(N_TEST + 4):
        name = f"img_{i:05d}.png"
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / "images" / name)
        rows.append([name, "a" if i % 2 else "b", "train" if i < 4 else "test"])
    with (root / "labels.csv").open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    return root


def _config(root: Path, run_dir: Path, probe_out: Path) -> str:
    return textwrap.dedent(f"""\
        seed_everything: 0
        trainer:
          accelerator: cpu
          devices: 1
          precision: 32-true
          default_root_dir: {run_dir}
          callbacks:
            - class_path: rss_probe.RSSProbe
              init_args: {{out: {probe_out}}}
        model:
          class_path: medlearn.tasks.classification.ImageClassifier
          init_args:
            backbone: smallcnn
            spatial_dims: 2
            in_channels: 3
            num_classes: 2
            class_names: [a, b]
            multilabel: false
        data:
          class_path: medlearn.data.labelled2d.LabelledImageDataModule
          init_args:
            root: {root}
            layout: csv
            table: labels.csv
            image_dir: images
            group_col: null
            image_size: {SIZE}
            channels: 3
            batch_size: {BATCH}
            num_workers: 0
            val_fraction: 0.0
            cache: true
        """)


def test_cli_predict_memory_is_flat_over_thousands_of_images(image_table: Path, tmp_path: Path) -> None:
    (tmp_path / "rss_probe.py").write_text(PROBE)
    probe_out = tmp_path / "rss.json"
    run_dir = tmp_path / "run"
    cfg = tmp_path / "predict.yaml"
    cfg.write_text(_config(image_table, run_dir, probe_out))
    env = {**os.environ, "MEDLEARN_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    proc = subprocess.run([sys.executable, "-c", "import sys; from medlearn.cli import main; sys.exit(main())",
                           "predict", "--config", str(cfg)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    samples = json.loads(probe_out.read_text())
    n_batches = -(-N_TEST // BATCH)
    assert len(samples) == n_batches
    assert not any(s[3] for s in samples), "the CLI's predict loop keeps the outputs"
    assert max(s[2] for s in samples) == 0, "Lightning holds prediction outputs"
    rss_mb = np.array([s[1] for s in samples], dtype=float) / 1024.0
    tenth = max(1, n_batches // 10)
    growth = float(np.median(rss_mb[-tenth:]) - np.median(rss_mb[:tenth]))
    assert growth < GROWTH_BOUND_MB, f"RSS grew {growth:.1f} MB over {N_TEST} images: {rss_mb.round(1).tolist()}"

    # one row per image, in the table's order, with both class columns
    with (run_dir / "predictions.csv").open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["name", "a", "b"]
    assert [r[0] for r in rows[1:]] == [f"img_{i:05d}.png" for i in range(4, N_TEST + 4)]
    probs = np.array([[float(v) for v in r[1:]] for r in rows[1:]])
    assert np.allclose(probs.sum(1), 1.0, atol=1e-5)
    assert not list(run_dir.glob(".*.tmp"))
    assert "cache: false" in (run_dir / "config.yaml").read_text()


def test_streamed_csv_writes_rows_as_they_come_and_discards_on_failure(tmp_path: Path) -> None:
    out = tmp_path / "p.csv"
    rows = StreamedCSV(out, ["name", "x"])
    rows.write([["a", 1]])
    assert rows.tmp.read_text() == "name,x\na,1\n" and not out.exists()  # on disk already, not in memory
    rows.write([["b", 2], ["c", 3]])
    assert rows.rows == 3 and rows.close() == out
    assert out.read_text() == "name,x\na,1\nb,2\nc,3\n" and not rows.tmp.exists()
    with pytest.raises(ValueError, match="closed"):
        rows.write([["d", 4]])
    failed = StreamedCSV(out, ["name", "x"])
    failed.write([["z", 9]])
    failed.discard()
    assert out.read_text().startswith("name,x\na,1") and not failed.tmp.exists()


def test_default_writer_streams_per_batch_and_names_a_missing_probs_key(tmp_path: Path) -> None:
    import torch

    writer = CSVPredictionWriter(tmp_path)
    assert writer.interval.on_batch and not writer.interval.on_epoch

    class Trainer:
        global_rank, world_size = 0, 1

    class Module(torch.nn.Module):
        class_names = ["x", "y"]
        hparams: dict = {}

    trainer, module = Trainer(), Module()
    writer.on_predict_epoch_start(trainer, module)
    writer.write_on_batch_end(trainer, module, {"name": ["i1", "i2"], "probs": torch.tensor([[0.25, 0.75], [1, 0]])},
                              None, None, 0)
    assert not (tmp_path / "predictions.csv").exists()
    writer.on_predict_epoch_end(trainer, module)
    assert (tmp_path / "predictions.csv").read_text().splitlines() == [
        "name,x,y", "i1,0.250000,0.750000", "i2,1.000000,0.000000"]
    writer.on_predict_epoch_start(trainer, module)
    with pytest.raises(KeyError, match="not 'probs'"):
        writer.write_on_batch_end(trainer, module, {"name": ["v"], "seg": torch.zeros(1, 1, 4, 4)}, None, None, 0)


def test_uncached_data_turns_the_cache_off_in_dicts_and_defaults() -> None:
    given = {"class_path": "medlearn.data.labelled2d.LabelledImageDataModule", "init_args": {"cache": True}}
    assert uncached_data(given) and given["init_args"]["cache"] is False
    default = {"class_path": "medlearn.data.labelled2d.LabelledImageDataModule"}
    assert uncached_data(default) and default["init_args"] == {"cache": False}
    no_cache = {"class_path": "medlearn.data.datamodule.SplitDataModule", "init_args": {}}
    assert not uncached_data(no_cache) and no_cache["init_args"] == {}
