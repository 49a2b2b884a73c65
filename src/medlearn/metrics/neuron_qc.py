"""Error-level readings of per-node tracing quality control on a reconstruction tree.

Lu et al. ("Quality control of neuron reconstruction based on deep learning", arXiv:2003.08556)
score every node of a manual reconstruction and report errors detected at a node false-alert rate
(74.7 % at 1.4 %). The definitions below follow the spec's reading (methods/neuron_qc.md, 2.4 and
3); the paper's exact ones could not be checked, so both readings it names are offered.

A tree is its ``parent`` array: ``parent[i]`` is the index of node ``i``'s parent, ``-1`` for a
root (a forest is allowed). Written by hand: no imaging library scores tree-structured detections.

- :func:`error_runs`: maximal connected runs of wrong nodes; a run starts at its wrong node whose
  parent is correct (or that is a root): "where the wrong tracing begins";
- :func:`threshold_at_false_alert_rate`: the lowest threshold whose node false-alert rate (flagged
  correct nodes / correct nodes, flagged = score > threshold) is at most the target;
- :func:`smooth_on_tree`: mean score over the nodes within ``radius`` edges along the tree;
- :func:`qc_scores`: error-level detection rate (an error is detected when one of its first ``k``
  nodes, by distance from its start, is flagged; also the "any node" reading), per error type when
  types are given, node and alert-level false-alert rates, and the tree distance from each true
  error start to the nearest predicted start.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["ErrorRun", "error_runs", "pooled_qc_scores", "predicted_starts", "qc_scores", "smooth_on_tree",
           "threshold_at_false_alert_rate", "tree_distances"]


@dataclass(frozen=True)
class ErrorRun:
    """One error: its start node and its nodes ordered by distance (in edges) from the start."""

    start: int
    nodes: tuple[int, ...]


def _check_parent(parent: np.ndarray) -> np.ndarray:
    p = np.asarray(parent, dtype=np.int64)
    if p.ndim != 1:
        raise ValueError(f"parent must be 1-D, got shape {p.shape}")
    bad = np.flatnonzero((p < -1) | (p >= p.size) | (p == np.arange(p.size)))
    if bad.size:
        raise ValueError(f"parent indices out of range or self-loops at nodes {bad[:10].tolist()}")
    return p


def _neighbours(parent: np.ndarray) -> list[list[int]]:
    nb: list[list[int]] = [[] for _ in range(parent.size)]
    for i, q in enumerate(parent.tolist()):
        if q >= 0:
            nb[i].append(q)
            nb[q].append(i)
    return nb


def error_runs(parent: Sequence[int] | np.ndarray, wrong: Sequence[bool] | np.ndarray) -> list[ErrorRun]:
    """Maximal runs of connected wrong nodes, each with its start (the wrong node whose parent is correct).

    A run that branches keeps one start (its node nearest the root); nodes are listed in breadth-first
    order from the start, so ``nodes[:k]`` are its first ``k`` nodes.
    """
    p = _check_parent(np.asarray(parent))
    w = np.asarray(wrong, dtype=bool)
    if w.shape != p.shape:
        raise ValueError(f"wrong {w.shape} and parent {p.shape} differ")
    nb = _neighbours(p)
    runs = []
    for s in np.flatnonzero(w & ((p < 0) | ~w[np.maximum(p, 0)])).tolist():
        order, seen, queue = [], {s}, deque([s])
        while queue:
            n = queue.popleft()
            order.append(n)
            for m in nb[n]:
                if w[m] and m not in seen and p[n] != m:  # downstream only: a run has one start
                    seen.add(m)
                    queue.append(m)
        runs.append(ErrorRun(int(s), tuple(order)))
    return runs


def predicted_starts(parent: Sequence[int] | np.ndarray, flagged: Sequence[bool] | np.ndarray) -> list[int]:
    """Flagged nodes whose parent is unflagged (or that are roots): the predicted error starts."""
    return [r.start for r in error_runs(parent, flagged)]


def threshold_at_false_alert_rate(scores: Sequence[float] | np.ndarray, wrong: Sequence[bool] | np.ndarray,
                                  rate: float) -> float:
    """The lowest threshold ``t`` with (correct nodes scoring ``> t``) / (correct nodes) ``<= rate``."""
    s, w = np.asarray(scores, dtype=np.float64), np.asarray(wrong, dtype=bool)
    if s.shape != w.shape:
        raise ValueError(f"scores {s.shape} and wrong {w.shape} differ")
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must be in [0, 1], got {rate}")
    neg = np.sort(s[~w])[::-1]
    if neg.size == 0:
        return -math.inf
    allowed = int(math.floor(rate * neg.size + 1e-9))
    if allowed >= neg.size:
        return -math.inf
    return float(neg[allowed])  # neg[:allowed] lie above it; ties at neg[allowed] are not flagged


def smooth_on_tree(scores: Sequence[float] | np.ndarray, parent: Sequence[int] | np.ndarray,
                   radius: int = 2) -> np.ndarray:
    """Mean score over the nodes within ``radius`` edges of each node (0: the scores unchanged)."""
    s, p = np.asarray(scores, dtype=np.float64), _check_parent(np.asarray(parent))
    if radius <= 0:
        return s.copy()
    nb = _neighbours(p)
    out = np.empty_like(s)
    for i in range(s.size):
        seen, frontier = {i}, [i]
        for _ in range(radius):
            frontier = [m for n in frontier for m in nb[n] if m not in seen]
            seen.update(frontier)
        out[i] = s[list(seen)].mean()
    return out


def tree_distances(parent: Sequence[int] | np.ndarray, sources: Sequence[int]) -> np.ndarray:
    """Distance in edges from every node to the nearest of ``sources`` (inf where unreachable)."""
    p = _check_parent(np.asarray(parent))
    nb = _neighbours(p)
    d = np.full(p.size, np.inf)
    queue = deque(int(x) for x in sources)
    for x in queue:
        d[x] = 0
    while queue:
        n = queue.popleft()
        for m in nb[n]:
            if d[m] == np.inf:
                d[m] = d[n] + 1
                queue.append(m)
    return d


@dataclass
class _Details:
    hit_k: list[bool]
    hit_any: list[bool]
    kinds: list[str | None]
    start_dist: list[float]
    false_pred: list[bool]
    flagged_correct: int
    correct: int


def _details(parent: Sequence[int] | np.ndarray, wrong: Sequence[bool] | np.ndarray,
             flagged: Sequence[bool] | np.ndarray, first_k: int, error_types: dict[int, str] | None) -> _Details:
    p = _check_parent(np.asarray(parent))
    w, f = np.asarray(wrong, dtype=bool), np.asarray(flagged, dtype=bool)
    if not (w.shape == f.shape == p.shape):
        raise ValueError(f"parent {p.shape}, wrong {w.shape} and flagged {f.shape} differ")
    runs = error_runs(p, w)
    pred = error_runs(p, f)
    d = tree_distances(p, [r.start for r in pred]) if pred else np.full(p.size, np.inf)
    return _Details(
        hit_k=[bool(f[list(r.nodes[:first_k])].any()) for r in runs],
        hit_any=[bool(f[list(r.nodes)].any()) for r in runs],
        kinds=[(error_types or {}).get(r.start) for r in runs],
        start_dist=[float(d[r.start]) for r in runs],
        false_pred=[not w[list(r.nodes)].any() for r in pred],
        flagged_correct=int((f & ~w).sum()), correct=int((~w).sum()))


def pooled_qc_scores(cases: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, dict[int, str] | None]],
                     first_k: int = 5) -> dict[str, float]:
    """:func:`qc_scores` over several neurons, errors and nodes pooled (a 5-fold evaluation's reading).

    Args:
        cases: ``(parent, wrong, flagged, error_types)`` per neuron (``error_types`` may be ``None``).
        first_k: an error is detected when one of its first ``first_k`` nodes is flagged.
    """
    parts = [_details(p, w, f, first_k, t) for p, w, f, t in cases]
    hit_k = [h for d in parts for h in d.hit_k]
    hit_any = [h for d in parts for h in d.hit_any]
    kinds = [k for d in parts for k in d.kinds]
    dist = [x for d in parts for x in d.start_dist if math.isfinite(x)]
    false_pred = [x for d in parts for x in d.false_pred]
    correct = sum(d.correct for d in parts)
    out: dict[str, float] = {
        "n_errors": float(len(hit_k)),
        "detection_rate": float(np.mean(hit_k)) if hit_k else math.nan,
        "detection_rate_any": float(np.mean(hit_any)) if hit_any else math.nan,
        "false_alert_rate": sum(d.flagged_correct for d in parts) / correct if correct else math.nan,
        "alert_false_rate": float(np.mean(false_pred)) if false_pred else math.nan,
        "start_distance": float(np.median(dist)) if dist else math.nan,
    }
    by: dict[str, list[bool]] = {}
    for kind, h in zip(kinds, hit_k):
        if kind is not None:
            by.setdefault(kind, []).append(h)
    for kind, hits in sorted(by.items()):
        out[f"detection_rate/{kind}"] = float(np.mean(hits))
        out[f"n_errors/{kind}"] = float(len(hits))
    return out


def qc_scores(parent: Sequence[int] | np.ndarray, wrong: Sequence[bool] | np.ndarray,
              flagged: Sequence[bool] | np.ndarray, first_k: int = 5,
              error_types: dict[int, str] | None = None) -> dict[str, float]:
    """Error- and node-level readings of ``flagged`` nodes against the ``wrong`` ones.

    Args:
        parent: the tree.
        wrong: true per-node labels.
        flagged: predicted per-node flags.
        first_k: an error is detected when one of its first ``first_k`` nodes is flagged.
        error_types: start node -> error type (``"jump"``, ``"drift"``, ``"spur"`` ...) for per-type rates.

    Returns:
        ``n_errors``, ``detection_rate`` (first ``k``), ``detection_rate_any``, ``false_alert_rate``
        (flagged correct / correct nodes), ``alert_false_rate`` (false predicted starts / predicted
        starts; a predicted start is false when no node of its run is wrong), ``start_distance`` (median
        tree distance from each true start to the nearest predicted start), and per type
        ``detection_rate/<type>`` and ``n_errors/<type>``.
    """
    return pooled_qc_scores([(np.asarray(parent), np.asarray(wrong), np.asarray(flagged), error_types)], first_k)
