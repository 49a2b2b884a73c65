"""Light-microscopy neuron phantoms with a traced reconstruction carrying planted errors (tracing QC).

The spec of per-node tracing quality control (methods/neuron_qc.md section 5; Lu et al.,
arXiv:2003.08556) asks whether a per-node classifier that sees the image and the trace finds tracing
errors that an annotator made. Each phantom is one neuron in a ``size_xy x size_xy x size_z`` voxel
box (x, y, z; the volume is stored ``[z, y, x]``):

- **Tree.** A persistent random walk from near the box centre: step 1.5 voxels, direction noise
  0.25 rad, branching probability 0.03 per step, at most 4 levels, radius 1.0-2.0 tapering; z moves
  at half the xy rate (the box is half as deep), walks stop at the box margin.
- **Image.** Tubes of each branch at intensity ``U(0.4, 1.0)``, 1-3 branches faint (0.15-0.25, weak
  but correctly traced axons); 2-3 untraced **distractor** neurons that start 3-6 voxels beside a
  traced node and run alongside before wandering off; Gaussian PSF (sigma 1.0 in xy, 2.0 in z),
  background 0.05, Poisson-like noise ``poisson(200 I) / 200`` and Gaussian noise (sigma 0.02);
  stored as uint16 TIFF (``round(4000 I)``).
- **Corrected SWC** (the truth): the tree resampled every 2 voxels.
- **Traced SWC**: the truth with, in ``error_fraction`` of the neurons, 1-3 planted errors:
  **jump** (at a node near a distractor the rest of the branch is rerouted onto the distractor for
  10-30 nodes), **drift** (a lateral offset growing linearly to 6-10 voxels over 15 nodes, after
  which the tracing ends: it left the signal) and **spur** (a 10-20 node branch into background).
  The nodes a jump or a drift replaced are missing from the traced file, as when an annotator
  follows the wrong path.

Written files::

    out/images/neuron_000.tif      uint16 stack (z, y, x), SWC coordinates are 0-based voxels
    out/traced/neuron_000.swc      the reconstruction to check
    out/corrected/neuron_000.swc   the reconstruction after correction (the truth)
    out/errors.csv                 name,error,type,start_id,node_ids: the planted errors (ids of traced/)
    out/README.txt                 says this is synthetic, with the arguments

The spec leaves the tree's start, the z damping, the distractor placement and what follows a drift
open: these are our choices [I].
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medlearn.console import track
from medlearn.data.trace_raster import rasterise_tubes
from medlearn.io import atomic_write_text
from medlearn.io.swc import SWCTree, resample_swc, write_swc
from medlearn.synth import prepare_out_dir, register_synth

__all__ = ["ERROR_TYPES", "grow_tree", "render_neuron", "write_neurons"]

#: Planted error types.
ERROR_TYPES = ("jump", "drift", "spur")
STEP = 1.5
RESAMPLE = 2.0
INTENSITY_SCALE = 4000.0


def _perturb(rng: np.random.Generator, d: np.ndarray, sigma: float) -> np.ndarray:
    d = d + rng.normal(0, sigma, 3)
    d[2] *= 0.5  # z moves at half the xy rate
    return d / max(np.linalg.norm(d), 1e-9)


def _turn(rng: np.random.Generator, d: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``d`` rotated by an angle in ``[lo, hi]`` radians about a random perpendicular axis."""
    perp = np.cross(d, rng.normal(size=3))
    perp /= max(np.linalg.norm(perp), 1e-9)
    a = rng.uniform(lo, hi)
    out = np.cos(a) * d + np.sin(a) * perp
    out[2] *= 0.5
    return out / max(np.linalg.norm(out), 1e-9)


def grow_tree(rng: np.random.Generator, box_xyz: np.ndarray, start: np.ndarray, direction: np.ndarray,
              max_level: int = 4, branch_steps: tuple[int, int] = (25, 60), max_nodes: int = 700,
              margin: float = 2.0, n_primary: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A random-walk tree: ``xyz (N, 3)``, ``parent (N,)`` indices, ``radius (N,)``, ``branch (N,)`` ids.

    Node 0 is the root (the soma), with ``n_primary`` primary branches (the first along ``direction``);
    a branch is grown from a stack of ``(parent node, direction, level, radius)``.
    """
    xyz, parent, radius, branch = [np.asarray(start, float)], [-1], [float(rng.uniform(1.6, 2.0))], [0]
    d0 = np.asarray(direction, float)
    stack: list[tuple[int, np.ndarray, int, float]] = [
        (0, d0 if i == 0 else _turn(rng, d0, 1.2, np.pi), 1, radius[0]) for i in range(n_primary)]
    n_branch = 0
    while stack and len(xyz) < max_nodes:
        node, d, level, r0 = stack.pop()
        bid = n_branch
        n_branch += 1
        length = int(rng.integers(*branch_steps))
        pos = xyz[node].copy()
        for s in range(length):
            d = _perturb(rng, d, 0.25)
            nxt = pos + STEP * d
            if np.any(nxt < margin) or np.any(nxt > box_xyz - 1 - margin) or len(xyz) >= max_nodes:
                break
            r = float(np.clip(r0 * (1 - 0.3 * s / length), 1.0, 2.0))
            xyz.append(nxt)
            parent.append(node)
            radius.append(r)
            branch.append(bid)
            node, pos = len(xyz) - 1, nxt
            if level < max_level and rng.random() < 0.03:
                stack.append((node, _turn(rng, d, 0.5, 1.2), level + 1, max(1.0, 0.85 * r)))
    return np.array(xyz), np.array(parent), np.array(radius), np.array(branch)


def _tree(xyz: np.ndarray, parent: np.ndarray, radius: np.ndarray) -> SWCTree:
    n = len(parent)
    types = np.where(parent < 0, 1, 3).astype(np.int64)
    ids = np.arange(1, n + 1, dtype=np.int64)
    return SWCTree(ids, types, xyz.astype(np.float64), radius.astype(np.float64),
                   np.where(parent < 0, -1, parent + 1).astype(np.int64), [[] for _ in range(n)], [], [])


def _chain(children: list[list[int]], start: int, n: int) -> list[int]:
    """Up to ``n`` nodes following the first child from ``start`` (excluded)."""
    out: list[int] = []
    k = start
    while len(out) < n and children[k]:
        k = children[k][0]
        out.append(k)
    return out


class _Editable:
    """A resampled tree under edit: nodes can be removed (with their subtree) or appended."""

    def __init__(self, t: SWCTree) -> None:
        self.xyz = [p.copy() for p in t.xyz]
        self.radius = list(t.radius.astype(float))
        self.parent = list(t.parent_index().astype(int))
        self.alive = [True] * len(self.parent)
        self.error = [-1] * len(self.parent)  # index of the planted error a node belongs to

    def children(self) -> list[list[int]]:
        out: list[list[int]] = [[] for _ in self.parent]
        for k, p in enumerate(self.parent):
            if p >= 0 and self.alive[k]:
                out[p].append(k)
        return out

    def remove_subtree(self, k: int) -> None:
        kids = self.children()
        stack = [k]
        while stack:
            n = stack.pop()
            self.alive[n] = False
            stack.extend(kids[n])

    def add(self, p: np.ndarray, r: float, parent: int, error: int) -> int:
        self.xyz.append(np.asarray(p, float))
        self.radius.append(r)
        self.parent.append(parent)
        self.alive.append(True)
        self.error.append(error)
        return len(self.parent) - 1

    def clean_below(self, k: int) -> bool:
        """Whether no node below ``k`` belongs to a planted error (so its subtree may be replaced)."""
        kids = self.children()
        stack = list(kids[k])
        while stack:
            n = stack.pop()
            if self.error[n] >= 0:
                return False
            stack.extend(kids[n])
        return True

    def depth_ok(self, k: int, n: int = 3) -> bool:
        for _ in range(n):
            k = self.parent[k]
            if k < 0:
                return False
        return True

    def tree(self) -> tuple[SWCTree, list[int]]:
        """The live nodes in topological order as an SWC tree, and each node's error index."""
        kids = self.children()
        order: list[int] = []
        stack = [k for k, p in enumerate(self.parent) if p < 0 and self.alive[k]]
        while stack:
            n = stack.pop()
            order.append(n)
            stack.extend(reversed(kids[n]))
        pos = {k: i for i, k in enumerate(order)}
        xyz = np.array([self.xyz[k] for k in order])
        par = np.array([pos[self.parent[k]] if self.parent[k] >= 0 else -1 for k in order])
        rad = np.array([self.radius[k] for k in order])
        return _tree(xyz, par, rad), [self.error[k] for k in order]


def _path_points(xyz: np.ndarray, parent: np.ndarray, start: int, n: int, step: float) -> np.ndarray:
    """``n`` points every ``step`` voxels from node ``start`` along the longer direction of its tree."""
    kids: list[list[int]] = [[] for _ in parent]
    for k, p in enumerate(parent):
        if p >= 0:
            kids[p].append(k)
    down = [start]
    while kids[down[-1]]:
        down.append(kids[down[-1]][0])
    up = [start]
    while parent[up[-1]] >= 0:
        up.append(int(parent[up[-1]]))
    path = xyz[down if len(down) >= len(up) else up]
    d = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(path, axis=0), axis=1))])
    s = np.arange(1, n + 1) * step
    s = s[s <= d[-1]]
    return np.stack([np.interp(s, d, path[:, a]) for a in range(3)], axis=1) if len(s) else np.zeros((0, 3))


def _plant(rng: np.random.Generator, ed: _Editable, kind: str, err: int, box: np.ndarray,
           truth_pts: np.ndarray, distractors: list[tuple[np.ndarray, np.ndarray]]) -> bool:
    """Plant one error of ``kind`` into ``ed``; False when no suitable node was found."""
    kids = ed.children()
    cand = [k for k in range(len(ed.parent)) if ed.alive[k] and ed.error[k] < 0 and ed.depth_ok(k)]
    rng.shuffle(cand)
    if kind == "jump":
        for k in cand:
            for dxyz, dpar in distractors:
                dist = np.linalg.norm(dxyz - ed.xyz[k], axis=1)
                j = int(dist.argmin())
                if not 2.5 <= dist[j] <= 7.0 or len(_chain(kids, k, 3)) < 3 or not ed.clean_below(k):
                    continue
                path = _path_points(dxyz, dpar, j, int(rng.integers(10, 31)), RESAMPLE)
                if len(path) < 10:
                    continue
                for c in kids[k]:
                    ed.remove_subtree(c)
                gap = int(np.ceil(dist[j] / RESAMPLE))
                bridge = [ed.xyz[k] + (dxyz[j] - ed.xyz[k]) * (i / gap) for i in range(1, gap + 1)]
                node = k
                for p in [*bridge, *path]:
                    node = ed.add(p, 1.0, node, err)
                return True
        return False
    if kind == "drift":
        for k in cand:
            chain = _chain(kids, k, 15)
            if len(chain) < 15 or not ed.clean_below(k):
                continue
            tangent = ed.xyz[chain[-1]] - ed.xyz[k]
            lateral = np.cross(tangent, rng.normal(size=3))
            lateral[2] *= 0.5
            lateral /= max(np.linalg.norm(lateral), 1e-9)
            amp = rng.uniform(6.0, 10.0)
            new = [ed.xyz[c] + lateral * amp * (i + 1) / 15 for i, c in enumerate(chain)]
            if any(np.any(p < 1) or np.any(p > box - 2) for p in new):
                continue
            for c in kids[k]:
                ed.remove_subtree(c)
            node = k
            for i, p in enumerate(new):
                node = ed.add(p, ed.radius[chain[i]], node, err)
            return True
        return False
    # spur: a branch into background, the direction that stays farthest from the signal
    n = int(rng.integers(10, 21))
    for k in cand[:20]:
        best: tuple[float, list[np.ndarray]] | None = None
        for _ in range(6):
            d = _turn(rng, rng.normal(size=3), 0.0, 0.0)
            pts, p = [], ed.xyz[k].copy()
            for _s in range(n):
                d = _perturb(rng, d, 0.15)
                p = p + RESAMPLE * d
                pts.append(p)
            arr = np.array(pts)
            if np.any(arr < 1) or np.any(arr > box - 2):
                continue
            clearance = float(np.min(np.linalg.norm(arr[3:, None] - truth_pts[None], axis=2)))
            if best is None or clearance > best[0]:
                best = (clearance, pts)
        if best is not None and best[0] >= 4.0:
            node = k
            for p in best[1]:
                node = ed.add(p, 1.0, node, err)
            return True
    return False


def render_neuron(rng: np.random.Generator, size_xy: int = 96, size_z: int = 48, n_errors: int = 0
                  ) -> dict[str, Any]:
    """One phantom: ``image`` float ``(z, y, x)``, ``traced`` / ``corrected`` trees and ``errors``.

    ``errors`` lists ``(type, node indices of the traced tree)`` in planting order.
    """
    box = np.array([size_xy, size_xy, size_z], float)
    shape = (size_z, size_xy, size_xy)
    start = box / 2 + rng.uniform(-0.15, 0.15, 3) * box
    def walk() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return grow_tree(rng, box, start, _turn(rng, np.array([1.0, 0, 0]), 0, np.pi),
                         n_primary=int(rng.integers(3, 5)))

    least = max(30, int(250 * float(np.prod(box)) / (96 * 96 * 48)))
    xyz, par, rad, br = walk()
    for _ in range(20):  # walks that hit the walls early: grow a new tree
        if len(par) >= least:
            break
        xyz, par, rad, br = walk()
    vol = np.zeros(shape, np.float32)
    branches = np.unique(br)
    faint = set(rng.choice(branches[1:], size=min(len(branches) - 1, int(rng.integers(1, 4))), replace=False)
                .tolist()) if len(branches) > 1 else set()
    for b in branches:
        nodes = np.flatnonzero(br == b)
        level = rng.uniform(0.15, 0.25) if b in faint else rng.uniform(0.4, 1.0)
        mask = rasterise_tubes(xyz, par, rad, (0, 0, 0), shape, nodes=nodes.tolist())
        np.maximum(vol, mask * np.float32(level), out=vol)
    distractors: list[tuple[np.ndarray, np.ndarray]] = []
    for _ in range(int(rng.integers(2, 4))):
        k = int(rng.integers(1, len(par)))
        tangent = xyz[k] - xyz[par[k]]
        tangent /= max(np.linalg.norm(tangent), 1e-9)
        side = np.cross(tangent, rng.normal(size=3))
        side /= max(np.linalg.norm(side), 1e-9)
        s0 = np.clip(xyz[k] + side * rng.uniform(3.0, 6.0), 3, box - 4)
        dxyz, dpar, drad, _ = grow_tree(rng, box, s0, _turn(rng, tangent * rng.choice([-1, 1]), 0.0, 0.3),
                                        max_level=2, branch_steps=(30, 60), max_nodes=200)
        if len(dpar) < 10:
            continue
        mask = rasterise_tubes(dxyz, dpar, drad, (0, 0, 0), shape)
        np.maximum(vol, mask * np.float32(rng.uniform(0.4, 1.0)), out=vol)
        dres = resample_swc(_tree(dxyz, dpar, drad), RESAMPLE)
        distractors.append((dres.xyz, dres.parent_index()))
    from scipy.ndimage import gaussian_filter

    img = gaussian_filter(vol, sigma=(2.0, 1.0, 1.0)) + 0.05
    img = rng.poisson(np.clip(img, 0, None) * 200) / 200.0 + rng.normal(0, 0.02, shape)
    truth = resample_swc(_tree(xyz, par, rad), RESAMPLE)
    ed = _Editable(truth)
    dense = resample_swc(truth, 0.5).xyz
    planted: list[str] = []
    for _ in range(n_errors):
        kinds = list(ERROR_TYPES)
        rng.shuffle(kinds)
        for kind in kinds:
            if _plant(rng, ed, kind, len(planted), box, dense, distractors):
                planted.append(kind)
                break
    traced, err_of = ed.tree()
    errors = [(kind, [i for i, e in enumerate(err_of) if e == k]) for k, kind in enumerate(planted)]
    return {"image": np.clip(img, 0, None).astype(np.float32), "traced": traced, "corrected": truth,
            "errors": errors}


@register_synth("neurons", help="neuron volumes with a traced SWC carrying planted jump / drift / spur errors and "
                                "the corrected SWC (neuron_qc)")
def write_neurons(out: str | Path, n_neurons: int = 40, size_xy: int = 96, size_z: int = 48,
                  error_fraction: float = 0.5, seed: int = 0, overwrite: bool = False) -> Path:
    """Write neuron phantoms with traced (planted errors) and corrected reconstructions (the ``neurons`` layout).

    Args:
        out: output folder.
        n_neurons: phantoms (one neuron each).
        size_xy: box side in x and y (voxels).
        size_z: box depth (voxels).
        error_fraction: share of neurons whose traced SWC gets 1-3 planted errors.
        seed: random seed; the output depends only on the arguments.
        overwrite: allow a non-empty ``out``.

    Returns:
        ``out``.

    Raises:
        FileExistsError: ``out`` is not empty and ``overwrite`` is False.
        ValueError: fewer than 1 neuron, a box under 32 x 32 x 16, a fraction outside [0, 1] or a negative seed.
    """
    if n_neurons < 1 or size_xy < 32 or size_z < 16 or not 0 <= error_fraction <= 1 or seed < 0:
        raise ValueError(f"need n_neurons >= 1, size_xy >= 32, size_z >= 16, 0 <= error_fraction <= 1, seed >= 0 "
                         f"(got {n_neurons}, {size_xy}, {size_z}, {error_fraction}, {seed})")
    import tifffile

    out = prepare_out_dir(out, overwrite)
    for sub in ("images", "traced", "corrected"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    rows = ["name,error,type,start_id,node_ids"]
    for i in track(range(n_neurons), description="neuron volumes + tracings"):
        rng = np.random.default_rng([seed, i, 5807])
        n_err = int(rng.integers(1, 4)) if rng.random() < error_fraction else 0
        ph = render_neuron(rng, size_xy, size_z, n_err)
        name = f"neuron_{i:03d}"
        stack = np.clip(np.rint(ph["image"] * INTENSITY_SCALE), 0, 65535).astype(np.uint16)
        tmp = out / "images" / f".{name}.tif.tmp"
        tifffile.imwrite(tmp, stack, photometric="minisblack", metadata={"axes": "ZYX"})
        tmp.replace(out / "images" / f"{name}.tif")
        write_swc(out / "traced" / f"{name}.swc", ph["traced"], overwrite=True)
        write_swc(out / "corrected" / f"{name}.swc", ph["corrected"], overwrite=True)
        ids = ph["traced"].id
        for e, (kind, nodes) in enumerate(ph["errors"]):
            rows.append(f"{name},{e},{kind},{ids[nodes[0]]},{' '.join(str(ids[k]) for k in nodes)}")
    atomic_write_text(out / "errors.csv", "\n".join(rows) + "\n")
    atomic_write_text(out / "README.txt",
                      "Synthetic neuron phantoms generated by medlearn (medlearn.synth.neurons.write_neurons).\n"
                      f"n_neurons={n_neurons} size_xy={size_xy} size_z={size_z} error_fraction={error_fraction} "
                      f"seed={seed}\nSWC coordinates: 0-based voxels (x, y, z); images are stored (z, y, x).\n"
                      "errors.csv: the planted errors, node ids of traced/.\n")
    return out
