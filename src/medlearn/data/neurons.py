"""Neuron reconstructions with their images: the ``neurons`` layout, per-node labels, per-node blocks.

Per-node tracing quality control (Lu et al., arXiv:2003.08556; spec methods/neuron_qc.md) learns from
pairs of reconstructions: the one an annotator traced, and the same neuron after expert correction.

Layout (``medlearn synth neurons`` writes it; no public dataset ships such pairs with their images)::

    ROOT/images/<name>.tif | .tiff | .v3draw | .nii | .nii.gz   the volume (z, y, x)
    ROOT/traced/<name>.swc | .eswc                               the reconstruction to check
    ROOT/corrected/<name>.swc | .eswc                            after correction (training only)
    ROOT/errors.csv                                              optional: name,error,type,start_id,node_ids

SWC coordinates are voxels ``(x, y, z)``; ``swc_offset`` is subtracted first (1 for tools that write
1-based voxel coordinates). Images are read block by block (:class:`~medlearn.io.blocks.BlockReader`,
memory-mapped), so a volume larger than memory works.

- :func:`read_neurons`: the cases, every problem of the folder in one :class:`DataError` (an image
  without a traced SWC and the reverse, unreadable SWC files, a trace outside its image);
- :func:`label_nodes`: the spec's labels (2.2): resample the traced tree every ``step`` voxels, a node
  is wrong when it is farther than ``max(tau, radius_factor * r)`` from the corrected tree, 1-D
  closing of gaps of up to ``closing`` correct nodes along each path;
- :func:`node_blocks`: per-node blocks ``(C, z, y, x)``: the image normalised per block
  (``(I - p1) / (p99.5 - p1)`` clipped to [0, 1]), the traced tubes, optionally the tubes of the
  path through the node (parent, node, children);
- :class:`NeuronQCDataModule`: folds split by neuron, class-ratio sampling, the held-out fold plus a
  sample of training nodes (for the threshold) as validation.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from medlearn.data.datamodule import SplitDataModule
from medlearn.data.info import DataInfo
from medlearn.data.layouts import RecordSet, register_layout
from medlearn.data.sampling import EpochBalancedSampler
from medlearn.data.trace_raster import rasterise_tubes
from medlearn.io.blocks import BlockReader
from medlearn.io.errors import DataError
from medlearn.io.swc import SWCTree, read_swc, resample_swc

__all__ = ["ERROR_TYPE_NAMES", "NeuronCase", "NeuronQCDataModule", "NodeDataset", "NodeLabels", "NodeSet",
           "close_on_tree", "load_nodes",
           "label_nodes", "node_blocks", "read_neurons", "planted_types"]

IMAGE_SUFFIXES = (".tif", ".tiff", ".v3draw", ".nii", ".nii.gz")
SWC_SUFFIXES = (".swc", ".eswc")
#: Error type codes carried per node (``-1``: correct node; ``other``: a labelled run no planted error explains).
ERROR_TYPE_NAMES = ("jump", "drift", "spur", "other")
#: Traces whose bounding box (plus a block) has at most this many voxels are drawn once and cropped.
FULL_RASTER_VOXELS = 2**26


def _stem(path: Path) -> str:
    name = path.name
    for suf in (".nii.gz", *IMAGE_SUFFIXES, *SWC_SUFFIXES):
        if name.lower().endswith(suf):
            return name[: -len(suf)]
    return path.stem


@dataclass
class NeuronCase:
    """One neuron: its image, traced and (optionally) corrected reconstructions, planted errors if known."""

    name: str
    image: Path
    traced: Path
    corrected: Path | None = None
    errors: list[tuple[str, list[int]]] = field(default_factory=list)  # (type, traced node ids)


def _files(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    if folder.is_dir():
        for p in sorted(folder.iterdir()):
            if p.is_file() and p.name.lower().endswith(suffixes) and not p.name.startswith("."):
                out.setdefault(_stem(p), p)
    return out


def _read_errors(path: Path, problems: list[str]) -> dict[str, list[tuple[str, list[int]]]]:
    out: dict[str, list[tuple[str, list[int]]]] = {}
    if not path.is_file():
        return out
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        missing = {"name", "type", "node_ids"} - set(reader.fieldnames or [])
        if missing:
            problems.append(f"{path.name}: missing column(s) {sorted(missing)}")
            return out
        for i, row in enumerate(reader, start=2):
            try:
                ids = [int(t) for t in (row["node_ids"] or "").split()]
            except ValueError:
                problems.append(f"{path.name} line {i}: node_ids must be integers, got {row['node_ids']!r}")
                continue
            out.setdefault(row["name"], []).append((row["type"].strip() or "other", ids))
    return out


def read_neurons(root: str | Path, require_corrected: bool = False, swc_offset: float = 0.0) -> RecordSet[NeuronCase]:
    """The neurons of a ``neurons`` folder, checked (see the module docstring).

    Args:
        root: the folder.
        require_corrected: every traced SWC must have its corrected one (training).
        swc_offset: subtracted from SWC coordinates before the bounds check.

    Raises:
        DataError: listing every problem: missing folders, an image without a traced SWC or the reverse,
            a missing corrected SWC (when required), unreadable or malformed SWC files, nodes outside the
            image, an unreadable image, a malformed ``errors.csv``.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "dataset folder not found")
    problems: list[str] = []
    images = _files(root / "images", IMAGE_SUFFIXES)
    traced = _files(root / "traced", SWC_SUFFIXES)
    corrected = _files(root / "corrected", SWC_SUFFIXES)
    if not images:
        problems.append(f"no images in {root / 'images'} (expected {', '.join(IMAGE_SUFFIXES)})")
    if not traced:
        problems.append(f"no traced reconstructions in {root / 'traced'} (expected .swc / .eswc)")
    errors = _read_errors(root / "errors.csv", problems)
    for name in sorted(set(images) - set(traced)):
        problems.append(f"images/{images[name].name}: no traced/{name}.swc")
    for name in sorted(set(traced) - set(images)):
        problems.append(f"traced/{traced[name].name}: no image named {name} in images/")
    cases = []
    for name in sorted(set(images) & set(traced)):
        if require_corrected and name not in corrected:
            problems.append(f"traced/{traced[name].name}: no corrected/{name}.swc (needed for training labels)")
        try:
            tree = read_swc(traced[name])
            with BlockReader(images[name]) as reader:
                shape = np.asarray(reader.shape)
        except DataError as exc:
            problems.append(str(exc))
            continue
        zyx = tree.xyz[:, ::-1] - swc_offset
        outside = np.flatnonzero(np.any((zyx < -0.5) | (zyx > shape - 0.5), axis=1))
        if outside.size:
            ids = ", ".join(str(int(tree.id[k])) for k in outside[:5])
            problems.append(f"traced/{traced[name].name}: {outside.size} of {len(tree)} nodes lie outside the image "
                            f"(z, y, x) shape {tuple(int(s) for s in shape)} (node ids {ids}"
                            f"{' ...' if outside.size > 5 else ''}); wrong image, or 1-based coordinates "
                            f"(swc_offset=1)?")
        cases.append(NeuronCase(name, images[name], traced[name], corrected.get(name), errors.get(name, [])))
    if problems:
        raise DataError(root, f"{len(problems)} problem(s) in the neurons folder:\n  " + "\n  ".join(problems))
    return RecordSet(cases, class_names=["correct", "wrong"])


def _detect(root: str | Path, **_: Any) -> bool:
    root = Path(root)
    return (root / "images").is_dir() and (root / "traced").is_dir()


register_layout("neurons", _detect, read_neurons, kind="neuron", synth="neurons",
                description="neuron tracing QC: images/<name>.tif|v3draw|nii.gz, traced/<name>.swc, "
                            "corrected/<name>.swc",
                tasks=("classification",), classes=("correct", "wrong"))


# ---------------------------------------------------------------------------------------------------- labels
def close_on_tree(parent: np.ndarray, wrong: np.ndarray, gap: int = 2) -> np.ndarray:
    """1-D morphological closing along the tree: runs of up to ``gap`` correct nodes between two wrong
    nodes on a root-to-leaf path become wrong.
    """
    out = np.asarray(wrong, dtype=bool).copy()
    par = np.asarray(parent, dtype=np.int64)
    for i in np.flatnonzero(wrong):
        chain: list[int] = []
        k = int(par[i])
        while k >= 0 and len(chain) <= gap:
            if wrong[k]:
                out[chain] = True
                break
            chain.append(k)
            k = int(par[k])
    return out


@dataclass
class NodeLabels:
    """Per-node labels of a (resampled) traced tree."""

    tree: SWCTree  # the tree the labels refer to (resampled when ``step`` was given)
    wrong: np.ndarray  # (N,) bool
    distance: np.ndarray  # (N,) distance to the corrected tree, voxels


def label_nodes(traced: SWCTree, corrected: SWCTree, step: float | None = 2.0, tau: float = 3.0,
                radius_factor: float = 2.0, closing: int = 2) -> NodeLabels:
    """The spec's per-node labels from an (initial, corrected) pair (methods/neuron_qc.md 2.2).

    The distance to the corrected tree is measured to its segments densified every 0.5 voxel (so it
    is exact to 0.25 voxel). Written by hand: no neuron library labels one tracing against another.

    Args:
        traced: the initial reconstruction.
        corrected: the reconstruction after correction.
        step: resample the traced tree every ``step`` voxels first (``None``: label its own nodes).
        tau: the least distance (voxels) that makes a node wrong.
        radius_factor: a node is wrong when farther than ``max(tau, radius_factor * radius)``.
        closing: close gaps of up to this many correct nodes between wrong ones along a path.
    """
    from scipy.spatial import cKDTree

    t = resample_swc(traced, step) if step else traced
    dense = resample_swc(corrected, 0.5).xyz
    dist, _ = cKDTree(dense).query(t.xyz)
    wrong = dist > np.maximum(tau, radius_factor * t.radius)
    if closing > 0:
        wrong = close_on_tree(t.parent_index(), wrong, closing)
    return NodeLabels(t, wrong, np.asarray(dist, dtype=np.float64))


def planted_types(labels: NodeLabels, traced: SWCTree, errors: Sequence[tuple[str, Sequence[int]]],
                  tol: float = 1.5) -> np.ndarray:
    """Error type code per labelled node (:data:`ERROR_TYPE_NAMES`; ``-1`` for correct nodes).

    A wrong node takes the type of the planted error (``errors``: type and traced node ids) that has a
    node within ``tol`` voxels of it, else ``other``; every node of a run gets its start's type.
    """
    from scipy.spatial import cKDTree

    from medlearn.metrics.neuron_qc import error_runs

    codes = np.full(len(labels.tree), -1, dtype=np.int64)
    pos = {int(i): k for k, i in enumerate(traced.id.tolist())}
    pts, kinds = [], []
    for kind, ids in errors:
        code = ERROR_TYPE_NAMES.index(kind) if kind in ERROR_TYPE_NAMES else len(ERROR_TYPE_NAMES) - 1
        for i in ids:
            if int(i) in pos:
                pts.append(traced.xyz[pos[int(i)]])
                kinds.append(code)
    wrong = np.flatnonzero(labels.wrong)
    codes[wrong] = len(ERROR_TYPE_NAMES) - 1
    if pts and wrong.size:
        d, j = cKDTree(np.asarray(pts)).query(labels.tree.xyz[wrong])
        codes[wrong[d <= tol]] = np.asarray(kinds)[j[d <= tol]]
    for run in error_runs(labels.tree.parent_index(), labels.wrong):
        codes[list(run.nodes)] = codes[run.start]
    return codes


# ---------------------------------------------------------------------------------------------------- blocks
def _normalise_block(block: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(block, [1.0, 99.5])
    if hi - lo < 1e-6:
        return np.zeros_like(block, dtype=np.float32)
    return np.clip((block - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def node_blocks(reader: BlockReader, tree: SWCTree, size_zyx: Sequence[int] = (8, 16, 16),
                centre_path: bool = False, nodes: Sequence[int] | None = None,
                swc_offset: float = 0.0) -> np.ndarray:
    """Per-node blocks ``(N, C, z, y, x)`` float16: image (normalised per block), traced tubes, centre path.

    Args:
        reader: the image's block reader.
        tree: the reconstruction (its nodes are the block centres).
        size_zyx: block size.
        centre_path: add the channel of the path through the node (its edge, its children's edges).
        nodes: node indices (default all).
        swc_offset: subtracted from the SWC coordinates (1 for 1-based files).
    """
    from scipy.spatial import cKDTree

    size = np.asarray(size_zyx, dtype=int)
    xyz = tree.xyz - swc_offset
    par = tree.parent_index()
    kids = tree.children()
    idx = list(range(len(tree))) if nodes is None else list(nodes)
    # edges (node -> parent) near a block: their midpoints within half the block diagonal + half the edge + r
    mid = np.where(par[:, None] >= 0, (xyz + xyz[np.maximum(par, 0)]) / 2, xyz)
    half_len = np.where(par >= 0, np.linalg.norm(xyz - xyz[np.maximum(par, 0)], axis=1) / 2, 0.0)
    reach = float(np.linalg.norm(size / 2) + half_len.max(initial=0.0) + max(tree.radius.max(initial=1.0), 1.0) + 1)
    near = cKDTree(mid).query_ball_point(xyz[idx], reach)
    n_ch = 3 if centre_path else 2
    out = np.zeros((len(idx), n_ch, *size), dtype=np.float16)
    # the whole trace drawn once when it spans few voxels (then cropped); else per block
    lo = np.floor(xyz[:, ::-1].min(0) - reach).astype(int)
    hi = np.ceil(xyz[:, ::-1].max(0) + reach).astype(int) + 1
    full = (rasterise_tubes(xyz, par, tree.radius, lo.tolist(), (hi - lo).tolist())
            if np.prod(hi - lo) <= FULL_RASTER_VOXELS else None)
    for row, (i, cand) in enumerate(zip(idx, near)):
        centre = xyz[i, ::-1]
        out[row, 0] = _normalise_block(reader.block(centre, size))
        origin = np.rint(centre).astype(int) - size // 2
        if full is not None:
            a = origin - lo
            out[row, 1] = full[a[0]:a[0] + size[0], a[1]:a[1] + size[1], a[2]:a[2] + size[2]]
        else:
            out[row, 1] = rasterise_tubes(xyz, par, tree.radius, origin.tolist(), size.tolist(), nodes=cand)
        if centre_path:
            out[row, 2] = rasterise_tubes(xyz, par, tree.radius, origin.tolist(), size.tolist(),
                                          nodes=[i, *kids[i]])
    return out


# ---------------------------------------------------------------------------------------------------- datasets
@dataclass
class NodeSet:
    """The nodes of one neuron, ready for the classifier."""

    case: NeuronCase
    tree: SWCTree  # the scored (resampled) tree
    blocks: np.ndarray  # (N, C, z, y, x) float16
    wrong: np.ndarray | None  # (N,) bool, None without a corrected tree
    types: np.ndarray  # (N,) error type codes, -1 for correct nodes


_CACHE: dict[str, NodeSet] = {}


def _cache_key(case: NeuronCase, params: tuple[Any, ...]) -> str:
    parts = [str(params)]
    for p in (case.image, case.traced, case.corrected):
        if p is not None:
            st = p.stat()
            parts.append(f"{p.resolve()}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha1("|".join(parts).encode()).hexdigest()


def load_nodes(case: NeuronCase, step: float | None, block: Sequence[int], centre_path: bool, tau: float,
               radius_factor: float, closing: int, swc_offset: float) -> NodeSet:
    """A neuron's scored tree, blocks and labels (kept in memory for the process: folds and arms reuse them)."""
    params = (step, tuple(block), centre_path, tau, radius_factor, closing, swc_offset)
    key = _cache_key(case, params)
    if key in _CACHE:
        return _CACHE[key]
    traced = read_swc(case.traced)
    wrong = None
    if case.corrected is not None:
        labels = label_nodes(traced, read_swc(case.corrected), step, tau, radius_factor, closing)
        tree, wrong = labels.tree, labels.wrong
        types = planted_types(labels, traced, case.errors)
    else:
        tree = resample_swc(traced, step) if step else traced
        types = np.full(len(tree), -1, dtype=np.int64)
    with BlockReader(case.image) as reader:
        blocks = node_blocks(reader, tree, block, centre_path, swc_offset=swc_offset)
    out = NodeSet(case, tree, blocks, wrong, types)
    if len(_CACHE) > 4096:
        _CACHE.clear()
    _CACHE[key] = out
    return out


class NodeDataset(Dataset):
    """Items of several neurons' nodes: ``x (C, z, y, x)``, ``y`` (1 wrong, 0 correct, -1 unknown), ``case``,
    ``node``, ``parent`` (index within its neuron), ``etype`` and ``calib`` (a training node in validation).

    Args:
        sets: the neurons.
        case_ids: each set's index in the DataModule's case list.
        nodes: ``(set, node)`` pairs to serve (default every node).
        augment: random xy flips, 90-degree xy rotations, gamma 0.7-1.5 and noise on the image channel,
            and a +-1 voxel shift of the trace channels.
        calib: mark the items as calibration (training) nodes.
    """

    def __init__(self, sets: Sequence[NodeSet], case_ids: Sequence[int], nodes: Sequence[tuple[int, int]] | None = None,
                 augment: bool = False, calib: bool = False, seed: int = 0) -> None:
        self.sets = list(sets)
        self.case_ids = list(case_ids)
        self.parents = [s.tree.parent_index() for s in self.sets]
        self.items = list(nodes) if nodes is not None else [(k, i) for k, s in enumerate(self.sets)
                                                            for i in range(len(s.tree))]
        self.augment = augment
        self.calib = calib
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.items)

    def labels(self) -> np.ndarray:
        """The label of every item (``-1`` unknown)."""
        wrong = [s.wrong for s in self.sets]
        return np.array([int(w[i]) if (w := wrong[k]) is not None else -1 for k, i in self.items], dtype=np.int64)

    def _augment(self, x: np.ndarray) -> np.ndarray:
        rng = self.rng
        if rng.random() < 0.5:
            x = x[..., ::-1]
        if rng.random() < 0.5:
            x = x[..., ::-1, :]
        x = np.rot90(x, int(rng.integers(4)), axes=(-2, -1))
        img = np.clip(x[0], 0, 1) ** rng.uniform(0.7, 1.5) + rng.normal(0, 0.03, x[0].shape)
        shift = rng.integers(-1, 2, size=3)
        trace = np.roll(x[1:], tuple(int(s) for s in shift), axis=(1, 2, 3))
        return np.concatenate([img[None], trace]).astype(np.float32)

    def __getitem__(self, index: int) -> dict[str, Any]:
        k, i = self.items[index]
        s = self.sets[k]
        x = s.blocks[i].astype(np.float32)
        if self.augment:
            x = self._augment(x)
        wrong = s.wrong
        return {"x": torch.from_numpy(np.ascontiguousarray(x)),
                "y": int(wrong[i]) if wrong is not None else -1,
                "case": self.case_ids[k], "node": i, "parent": int(self.parents[k][i]),
                "etype": int(s.types[i]), "calib": self.calib}


class _Concat(Dataset):
    def __init__(self, parts: Sequence[NodeDataset]) -> None:
        self.parts = [p for p in parts if len(p)]
        self.offsets = np.cumsum([0, *[len(p) for p in self.parts]])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, index: int) -> dict[str, Any]:
        k = int(np.searchsorted(self.offsets, index, side="right") - 1)
        return self.parts[k][index - int(self.offsets[k])]


class NeuronQCDataModule(SplitDataModule[Any]):
    """Per-node blocks of traced neurons for tracing QC, folds split by neuron.

    Args:
        root: a ``neurons`` folder (see the module docstring).
        fold: the held-out fold (validation and test); ``-1``: train on every neuron (no validation).
        n_folds: folds, neurons assigned round-robin after a shuffle with ``split_seed``.
        split_seed: the fold assignment and loader seed.
        block: block size ``[z, y, x]`` (the spec's CPU scale: 8 x 16 x 16).
        centre_path: add the centre-path channel.
        step: resampling step of the traced trees (voxels; ``0``: score the file's own nodes).
        tau: least node-to-corrected-tree distance that makes a node wrong (voxels).
        radius_factor: a node is wrong beyond ``max(tau, radius_factor * radius)``.
        closing: close gaps of up to this many correct nodes between wrong ones.
        swc_offset: subtracted from SWC coordinates (1 for 1-based files).
        wrong_fraction: share of wrong nodes per training batch (class-ratio sampling with replacement);
            ``0``: plain shuffling.
        calibration_nodes: training nodes added to validation (``calib``) to choose the threshold on.
        augment: training augmentation (see :class:`NodeDataset`).
        num_train: train on this many of the training neurons (a seeded subset; ``None``: all).
        batch_size: nodes per batch.
        num_workers: loader workers.
        cache: unused by this module (blocks are always kept in memory); kept for the shared loader.
    """

    layout_kind = "neuron"

    no_test_reason = "the test part is the held-out fold: set fold >= 0"

    def __init__(self, root: str | Path, fold: int = 0, n_folds: int = 5, split_seed: int = 0,
                 block: list[int] | None = None, centre_path: bool = False, step: float = 2.0, tau: float = 3.0,
                 radius_factor: float = 2.0, closing: int = 2, swc_offset: float = 0.0,
                 wrong_fraction: float = 0.25, calibration_nodes: int = 4000, augment: bool = True,
                 num_train: int | None = None, batch_size: int = 128, num_workers: int = 0, cache: bool = True) -> None:
        super().__init__(root)
        if block is None:
            block = [8, 16, 16]
        if n_folds < 2 and fold >= 0:
            raise ValueError(f"n_folds must be >= 2 for a held-out fold, got {n_folds}")
        if not -1 <= fold < max(n_folds, 1):
            raise ValueError(f"fold must be in [-1, {n_folds - 1}], got {fold}")
        if not 0 <= wrong_fraction < 1:
            raise ValueError(f"wrong_fraction must be in [0, 1), got {wrong_fraction}")
        self.save_hyperparameters()
        self.cases: list[NeuronCase] = []
        self.sets: list[NodeSet] = []
        self._built_for: str | None = None

    def loader_seed(self) -> int:
        """The split seed."""
        return int(self.hparams.split_seed)

    def _load(self, require_corrected: bool) -> None:
        h = self.hparams
        assert self.root is not None
        self.cases = list(read_neurons(self.root, require_corrected=require_corrected, swc_offset=h.swc_offset))
        self.sets = [load_nodes(c, h.step or None, h.block, h.centre_path, h.tau, h.radius_factor, h.closing,
                                h.swc_offset) for c in self.cases]

    def folds(self) -> np.ndarray:
        """Fold of every case (round-robin over a seeded shuffle of the names)."""
        order = np.random.default_rng(self.hparams.split_seed).permutation(len(self.cases))
        fold = np.empty(len(self.cases), dtype=np.int64)
        fold[order] = np.arange(len(self.cases)) % max(self.hparams.n_folds, 1)
        return fold

    def setup(self, stage: str | None = None) -> None:
        """Read, label and cut the blocks (once), then the parts of ``fold``."""
        h = self.hparams
        if stage == "predict":
            if self._built_for != "predict":
                self._load(require_corrected=False)
                self.predict_set = NodeDataset(self.sets, list(range(len(self.sets))))
                self._built_for = "predict"
            return
        if self._built_for == "fit":
            return
        self._load(require_corrected=True)
        fold = self.folds()
        train_ids = [k for k in range(len(self.cases)) if h.fold < 0 or fold[k] != h.fold]
        held_ids = [k for k in range(len(self.cases)) if h.fold >= 0 and fold[k] == h.fold]
        if h.num_train is not None and h.num_train < len(train_ids):
            pick = np.random.default_rng(h.split_seed + 2).choice(len(train_ids), size=max(h.num_train, 1),
                                                                  replace=False)
            train_ids = sorted(train_ids[j] for j in pick)
        if not train_ids:
            raise DataError(self.root or "<none>", f"no training neurons with fold={h.fold} of {h.n_folds} "
                                                   f"({len(self.cases)} neurons)")
        train_sets = [self.sets[k] for k in train_ids]
        self.train_set = NodeDataset(train_sets, train_ids, augment=h.augment, seed=h.split_seed)
        if held_ids:
            held = NodeDataset([self.sets[k] for k in held_ids], held_ids)
            self.test_set = held
            rng = np.random.default_rng(h.split_seed + 1)
            pool = [(k, i) for k, s in enumerate(train_sets) for i in range(len(s.tree))]
            pick = rng.choice(len(pool), size=min(h.calibration_nodes, len(pool)), replace=False)
            calib = NodeDataset(train_sets, train_ids, [pool[j] for j in sorted(pick)], calib=True)
            self.val_set = _Concat([held, calib])
        self._built_for = "fit"

    def train_sampler(self, dataset: Any) -> Any:
        """Class-ratio sampling: ``wrong_fraction`` of the draws are wrong nodes (``0``: plain shuffling)."""
        f = self.hparams.wrong_fraction
        labels = dataset.labels()
        if not f or labels.min() == labels.max():
            return None
        return EpochBalancedSampler(labels, seed=self.loader_seed(), fractions=[1 - f, f])

    def data_info(self) -> DataInfo:
        """Training nodes, class counts (correct, wrong), block size and channels."""
        self.setup("fit")
        assert isinstance(self.train_set, NodeDataset)
        y = self.train_set.labels()
        return DataInfo(n_train=len(y), class_counts=[int((y == 0).sum()), int((y == 1).sum())], num_classes=2,
                        class_names=["correct", "wrong"], input_size=tuple(self.hparams.block),
                        in_channels=3 if self.hparams.centre_path else 2)
