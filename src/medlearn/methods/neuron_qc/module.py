"""Per-node tracing QC: the classifier module, its threshold, its evaluation and what ``predict`` writes.

Lu et al. (arXiv:2003.08556) score every node of a manual neuron reconstruction from a local block:
is the tracing correct here? Flagged nodes (score above a threshold chosen for a target node
false-alert rate) mark where the tracing went wrong, and the first flagged node of each flagged run
is where the wrong tracing starts. Batches are those of
:class:`~medlearn.data.neurons.NeuronQCDataModule`.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import BasePredictionWriter

from medlearn.console import say
from medlearn.data.info import DataInfo
from medlearn.data.neurons import ERROR_TYPE_NAMES
from medlearn.engine.module import MethodModule
from medlearn.engine.report import Section, save_figure
from medlearn.io import atomic_write_text
from medlearn.methods.neuron_qc.model import build_node_classifier
from medlearn.metrics.neuron_qc import (
    pooled_qc_scores,
    predicted_starts,
    smooth_on_tree,
    threshold_at_false_alert_rate,
)

__all__ = ["INPUTS", "NeuronQC", "NeuronQCWriter", "evaluate_scores", "tree_cases"]

#: Which block channels the classifier sees: name -> channel indices (image 0, trace 1, centre path 2).
INPUTS = {"image+trace": (0, 1), "image": (0,), "trace": (1,)}


def evaluate_scores(scores: np.ndarray, wrong: np.ndarray, case: np.ndarray, node: np.ndarray, parent: np.ndarray,
                    etype: np.ndarray, threshold: float, first_k: int = 5, smooth_radius: int = 0
                    ) -> dict[str, float]:
    """Node ROC-AUC and the error-level readings of per-node ``scores`` of whole neurons (pooled).

    Items are nodes of complete neurons (``case``, ``node`` index, ``parent`` index within the case).
    Scores are smoothed along each tree over ``smooth_radius`` edges, flagged above ``threshold``.
    """
    from sklearn.metrics import roc_auc_score

    w = wrong.astype(bool)
    out: dict[str, float] = {"auc": float(roc_auc_score(w, scores)) if 0 < w.sum() < w.size else math.nan,
                             "threshold": float(threshold), "n_nodes": float(w.size),
                             "wrong_fraction": float(w.mean()) if w.size else math.nan}
    out.update(pooled_qc_scores(tree_cases(scores, w, case, node, parent, etype, threshold, smooth_radius), first_k))
    return out


def tree_cases(scores: np.ndarray, wrong: np.ndarray, case: np.ndarray, node: np.ndarray, parent: np.ndarray,
               etype: np.ndarray, threshold: float, smooth_radius: int = 0
               ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, dict[int, str]]]:
    """Per-node arrays of whole neurons -> ``(parent, wrong, flagged, error types)`` per neuron
    (:func:`~medlearn.metrics.neuron_qc.pooled_qc_scores`' input); scores smoothed, flagged above ``threshold``.
    """
    w = np.asarray(wrong, dtype=bool)
    cases = []
    for c in np.unique(case):
        sel = np.flatnonzero(case == c)
        order = sel[np.argsort(node[sel])]
        if not np.array_equal(node[order], np.arange(order.size)):
            raise ValueError(f"case {int(c)}: the nodes of a neuron must all be present to read errors")
        par = parent[order]
        s = smooth_on_tree(scores[order], par, smooth_radius)
        types = {i: ERROR_TYPE_NAMES[t] for i, t in enumerate(etype[order].tolist()) if t >= 0}
        cases.append((par, w[order], s > threshold, types))
    return cases


class NeuronQC(MethodModule):
    """Per-node error classifier of a traced neuron (tracing quality control).

    Args:
        arch: ``"cnn3d"`` (3D CNN on the block), ``"mip"`` (2.5-D: xy / xz / yz projections), or a
            3D backbone name (``"resnet18"``: the paper-scale classifier; ``widths`` then unused).
        inputs: the block channels seen (:data:`INPUTS`; ``"image"`` is the spec's image-only ablation).
        centre_path: the data carries the centre-path channel (seen too unless ``inputs`` is ``"image"``
            or ``"trace"``).
        block: block size ``[z, y, x]`` (as the data's).
        widths: conv stage widths.
        class_weight: weight of the wrong class relative to the correct one in the cross-entropy;
            ``None``: ``min(weight_cap, n_correct / n_wrong)`` of the training nodes (the spec's).
        weight_cap: cap of the automatic weight.
        target_far: node false-alert rate the threshold is chosen for, on the validation batch's
            training nodes (``calib``), never on the held-out nodes.
        first_k: an error counts as detected when one of its first ``first_k`` nodes is flagged.
        smooth_radius: smooth scores along the tree over this many edges before flagging (0: off).
        optimizer: optimiser name.
        lr: learning rate.
        weight_decay: weight decay.
        schedule: learning-rate schedule.
    """

    threshold: torch.Tensor
    wrong_weight: torch.Tensor
    channels: torch.Tensor

    @property
    def monitor(self) -> tuple[str, str]:
        """``best.ckpt`` on the held-out node ROC-AUC."""
        return ("val/auc", "max")

    @property
    def console_metrics(self) -> tuple[str, ...]:
        """One line per epoch: AUC and the error-level reading at the chosen threshold."""
        return ("val/auc", "val/detection_rate", "val/false_alert_rate")

    def __init__(self, arch: str = "cnn3d", inputs: str = "image+trace", centre_path: bool = False,
                 block: list[int] | None = None, widths: list[int] | None = None,
                 class_weight: float | None = None,
                 weight_cap: float = 10.0, target_far: float = 0.02, first_k: int = 5, smooth_radius: int = 0,
                 optimizer: str = "adam", lr: float = 1e-3, weight_decay: float = 0.0,
                 schedule: str = "constant") -> None:
        super().__init__()
        if inputs not in INPUTS:
            raise ValueError(f"inputs must be one of {sorted(INPUTS)}, got {inputs!r}")
        block = list(block or [8, 16, 16])
        widths = list(widths or [16, 32, 32])
        self.save_hyperparameters()
        channels = list(INPUTS[inputs]) + ([2] if centre_path and inputs == "image+trace" else [])
        self.register_buffer("channels", torch.tensor(channels, dtype=torch.long), persistent=False)
        self.net = build_node_classifier(arch, len(channels), widths)
        self.register_buffer("threshold", torch.tensor(0.5, dtype=torch.float64))
        self.register_buffer("wrong_weight", torch.tensor(float(class_weight or 1.0)))
        self.example_input_array = torch.zeros(2, 3 if centre_path else 2, *block)
        self._last: dict[str, np.ndarray] = {}

    def receive_data(self, info: DataInfo) -> None:
        """Check the block against the data's and set the automatic class weight."""
        h = self.hparams
        if info.input_size is not None and list(info.input_size) != list(h.block):
            raise ValueError(f"the model's block {list(h.block)} differs from the data's {list(info.input_size)}")
        if info.in_channels is not None and info.in_channels != (3 if h.centre_path else 2):
            raise ValueError(f"the data has {info.in_channels} channels but centre_path={h.centre_path}")
        if h.class_weight is None and info.class_counts:
            correct, wrong = info.class_counts
            self.wrong_weight.fill_(min(h.weight_cap, correct / max(wrong, 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, 2)`` of blocks ``(B, C, z, y, x)`` (every channel the data carries)."""
        return self.net(x.index_select(1, self.channels))

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """Probability that the tracing at each block's node is wrong."""
        return torch.softmax(self(x).float(), dim=1)[:, 1]

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """Class-weighted cross-entropy on the batch's nodes."""
        y = batch["y"].long()
        weight = torch.stack([torch.ones_like(self.wrong_weight), self.wrong_weight]).float()
        loss = F.cross_entropy(self(batch["x"]).float(), y, weight=weight)
        self.log("train/loss", loss.detach(), on_step=False, on_epoch=True, batch_size=y.numel())
        return loss

    def evaluation_step(self, batch: dict[str, Any], batch_idx: int, stage: str) -> None:
        """Collect node scores with their neuron, tree position and label."""
        state = self.stage_state(stage, lambda: {k: [] for k in ("s", "y", "case", "node", "parent", "etype",
                                                                  "calib")})
        state["s"].append(self.scores(batch["x"]).detach().cpu().numpy())
        for k in ("y", "case", "node", "parent", "etype", "calib"):
            state[k].append(torch.as_tensor(batch[k]).cpu().numpy())

    def evaluation_end(self, stage: str) -> dict[str, Any] | None:
        """Choose the threshold on the training (``calib``) nodes, then read the held-out neurons."""
        state = self.pop_stage_state(stage)
        if state is None:
            return None
        a = {k: np.concatenate(v) for k, v in state.items()}
        calib = a["calib"].astype(bool)
        h = self.hparams
        if stage == "val" and calib.any() and (a["y"][calib] == 0).any():
            self.threshold.fill_(threshold_at_false_alert_rate(a["s"][calib], a["y"][calib] == 1, h.target_far))
        held = ~calib
        if not held.any():
            return None
        self._last = {k: v[held] for k, v in a.items()}
        return evaluate_scores(a["s"][held], a["y"][held] == 1, a["case"][held], a["node"][held], a["parent"][held],
                               a["etype"][held], float(self.threshold), h.first_k, h.smooth_radius)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """Node scores with their neuron and node index."""
        return {"score": self.scores(batch["x"]).cpu().numpy(), "case": torch.as_tensor(batch["case"]).numpy(),
                "node": torch.as_tensor(batch["node"]).numpy()}

    def prediction_writer(self, run_dir: str | Path) -> BasePredictionWriter:
        """Per neuron: the SWC with scores, a CSV, the predicted error starts and a projection overlay."""
        return NeuronQCWriter(run_dir)

    def report_sections(self, run_dir: Path, stage: str) -> list[Section]:
        """Score distributions of correct and wrong held-out nodes with the threshold, and the readings."""
        import matplotlib.pyplot as plt

        stage = "val" if stage in ("fit", "validate") else stage
        if stage not in self.results or not self._last:
            return []
        r, a = self.results[stage], self._last
        fig, ax = plt.subplots(figsize=(5.5, 3.2))
        bins = np.linspace(0, 1, 41).tolist()
        ax.hist(a["s"][a["y"] == 0], bins=bins, color="#4477aa", alpha=0.7, label="correct nodes")
        ax.hist(a["s"][a["y"] == 1], bins=bins, color="#cc3311", alpha=0.7, label="wrong nodes")
        ax.axvline(float(self.threshold), color="k", ls="--", lw=1,
                   label=f"threshold {float(self.threshold):.3f} "
                         f"(FAR {self.hparams.target_far:.0%} on training nodes)")
        ax.set_yscale("log")
        ax.set_xlabel("score (probability the tracing is wrong)")
        ax.set_ylabel("held-out nodes")
        ax.set_title(f"{stage} node scores, correct vs wrong tracing", fontsize=9)
        ax.legend(fontsize=7)
        png = save_figure(fig, Path(run_dir) / "figures" / f"{stage}_scores.png")
        rows = [[k, v] for k, v in r.items()]
        return [Section(f"{stage}: node scores and error detection",
                        "Scores of the held-out neurons' nodes. An error (a run of wrong nodes) is detected when one "
                        "of "
                        f"its first {self.hparams.first_k} nodes is flagged; the false-alert rate is flagged correct "
                        "nodes over correct nodes.", [png], table=(["metric", "value"], rows))]


class NeuronQCWriter(BasePredictionWriter):
    """What ``medlearn predict`` writes per neuron into ``<run>/qc/``.

    - ``<name>.qc.eswc``: the input reconstruction (its own ids and columns) with ``qc_score`` (the
      score of the nearest scored node) and ``qc_flag`` columns;
    - ``<name>.qc.csv``: ``id,x,y,z,score,flagged,error_start`` per node of the input file;
    - ``<name>_mip.png``: the image's maximum projection with the trace coloured by score, flagged
      nodes red, predicted error starts circled;
    - ``error_starts.csv`` (all neurons): the predicted places where a wrong tracing starts;
    - ``qc_summary.csv``: nodes, flagged nodes and predicted errors per neuron.
    """

    def __init__(self, out_dir: str | Path) -> None:
        super().__init__(write_interval="epoch")
        self.out_dir = Path(out_dir) / "qc"

    def write_on_epoch_end(self, trainer: Any, pl_module: Any, predictions: Any, batch_indices: Any) -> None:
        """Write the files of every predicted neuron."""
        from scipy.spatial import cKDTree

        from medlearn.io.swc import read_swc, write_swc

        dm = trainer.datamodule
        score = np.concatenate([p["score"] for p in predictions])
        case = np.concatenate([p["case"] for p in predictions])
        node = np.concatenate([p["node"] for p in predictions])
        thr = float(pl_module.threshold)
        radius = int(pl_module.hparams.smooth_radius)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        starts_rows: list[list[Any]] = [["name", "node_id", "x", "y", "z", "score"]]
        summary: list[list[Any]] = [["name", "nodes", "flagged", "predicted_errors", "max_score", "threshold"]]
        for c in np.unique(case):
            ns = dm.sets[int(c)]
            sel = np.flatnonzero(case == c)
            s = np.zeros(len(ns.tree))
            s[node[sel]] = score[sel]
            par = ns.tree.parent_index()
            s = smooth_on_tree(s, par, radius)
            flags = s > thr
            starts = predicted_starts(par, flags)
            original = read_swc(ns.case.traced)
            _, near = cKDTree(ns.tree.xyz).query(original.xyz)
            o_score, o_flag = s[near], flags[near]
            o_start = np.zeros(len(original), dtype=bool)
            first: list[int] = (np.atleast_1d(cKDTree(original.xyz).query(ns.tree.xyz[starts])[1]).tolist()
                                if starts else [])
            o_start[first] = True
            names = [n or f"col{k}" for k, n in enumerate(original.extra_names)]
            header = "#n,type,x,y,z,radius,parent," + ",".join([*names, "qc_score", "qc_flag"])
            comments = [c_ for c_ in original.comments if not (c_.startswith("#") and "," in c_)]
            original.extra = [[*e, f"{v:.4f}", str(int(f))] for e, v, f in zip(original.extra, o_score, o_flag)]
            original.extra_names = [*names, "qc_score", "qc_flag"]
            original.comments = [*comments, f" medlearn neuron_qc: threshold {thr:.4f}", header]
            name = ns.case.name
            write_swc(self.out_dir / f"{name}.qc.eswc", original, overwrite=True)
            rows: list[list[Any]] = [["id", "x", "y", "z", "score", "flagged", "error_start"]]
            rows += [[int(i), *(f"{v:.3f}" for v in p), f"{v:.4f}", int(f), int(st)]
                     for i, p, v, f, st in zip(original.id, original.xyz, o_score, o_flag, o_start)]
            self._csv(self.out_dir / f"{name}.qc.csv", rows)
            for k, j in zip(starts, first):
                starts_rows.append([name, int(original.id[j]), *(f"{v:.3f}" for v in ns.tree.xyz[k]), f"{s[k]:.4f}"])
            summary.append([name, len(original), int(o_flag.sum()), len(starts), f"{s.max(initial=0):.4f}",
                            f"{thr:.4f}"])
            self._overlay(ns, s, flags, starts, thr)
        self._csv(self.out_dir / "error_starts.csv", starts_rows)
        self._csv(self.out_dir / "qc_summary.csv", summary)
        say(f"wrote QC of {len(summary) - 1} neuron(s) to {self.out_dir} (threshold {thr:.4f})")

    @staticmethod
    def _csv(path: Path, rows: Sequence[Sequence[Any]]) -> None:
        import io

        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(rows)
        atomic_write_text(path, buf.getvalue())

    def _overlay(self, ns: Any, s: np.ndarray, flags: np.ndarray, starts: list[int], thr: float) -> None:
        import matplotlib.pyplot as plt
        from matplotlib.collections import LineCollection

        from medlearn.io.blocks import BlockReader

        xyz = ns.tree.xyz
        lo = np.maximum(np.floor(xyz[:, ::-1].min(0)).astype(int) - 8, 0)
        with BlockReader(ns.case.image) as reader:
            hi = np.minimum(np.ceil(xyz[:, ::-1].max(0)).astype(int) + 9, reader.shape)
            mip = reader.max_projection(lo, hi).astype(np.float32)
        vmax = float(np.percentile(mip, 99.8)) or 1.0
        par = ns.tree.parent_index()
        segs = [[xyz[i, :2], xyz[p, :2]] for i, p in enumerate(par) if p >= 0]
        vals = [s[i] for i, p in enumerate(par) if p >= 0]
        h, w = mip.shape
        fig, ax = plt.subplots(figsize=(min(12, 3 + w / 40), min(12, 2.5 + h / 40)))
        ax.imshow(mip, cmap="gray", vmin=0, vmax=vmax, extent=(lo[2] - 0.5, lo[2] + w - 0.5, lo[1] + h - 0.5,
                                                                 lo[1] - 0.5))
        lc = LineCollection(segs, cmap="viridis", linewidths=1.2)
        lc.set_array(np.asarray(vals))
        lc.set_clim(0, 1)
        ax.add_collection(lc)
        ax.plot(xyz[flags, 0], xyz[flags, 1], "o", color="#ff3333", ms=2.5, label=f"flagged (score > {thr:.3f})")
        if starts:
            ax.plot(xyz[starts, 0], xyz[starts, 1], "o", mfc="none", mec="#ffdd00", ms=11, mew=1.5,
                    label="predicted error start")
        fig.colorbar(lc, ax=ax, fraction=0.04, label="QC score")
        ax.set_xlabel("x (voxels)")
        ax.set_ylabel("y (voxels)")
        ax.set_title(f"{ns.case.name}: maximum projection over z, trace coloured by QC score", fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
        save_figure(fig, self.out_dir / f"{ns.case.name}_mip.png")
