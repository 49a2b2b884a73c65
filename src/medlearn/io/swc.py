"""SWC and ESWC neuron reconstructions: a reader and writer that round-trip a file, and tree utilities.

SWC (Cannon et al., J Neurosci Methods 1998; the NeuroMorpho.org / Vaa3D format) is plain text:
``#`` comment lines, then one node per line, ``id type x y z radius parent`` separated by
whitespace, ``parent = -1`` for a root. ESWC (Vaa3D) adds columns after ``parent`` (``seg_id level
mode timestamp feature_value`` ...); they are kept as they are, named from a ``##n,type,x,...``
header line when there is one. What real files do, and this module keeps: several roots (a
forest), ids that are neither contiguous nor sorted, parents listed after their children.

:func:`read_swc` returns a :class:`SWCTree` (numpy arrays in file order, the comments, the extra
columns as text); :func:`write_swc` writes it back (atomically) so that reading the result gives
the same tree: ids, order, comments and extra columns preserved, numbers in the shortest form that
reads back exactly. A malformed file (wrong column count, non-numeric fields, NaN coordinates or
radius, duplicate ids, a parent that does not exist, a cycle, no nodes) raises one
:class:`~medlearn.io.errors.DataError` that lists every bad line. Tree utilities work on node
indices (positions in the arrays): :meth:`SWCTree.parent_index`, children, roots, leaves, branch
points, topological order, the unbranched segments, and :func:`resample_swc` (uniform step along
each segment, keeping roots, branch points and leaves; Vaa3D's ``resample_swc`` does the same).
Written by hand: the SWC libraries on PyPI (navis, neurom, morphio) are heavy or GPL, and none
keeps ESWC columns and comments on a round trip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medlearn.io._common import atomic_write_text
from medlearn.io.errors import DataError

__all__ = ["SWCTree", "read_swc", "resample_swc", "write_swc"]

_MAX_LISTED = 20


@dataclass
class SWCTree:
    """A neuron reconstruction in file order.

    Attributes:
        id: node ids ``(N,)`` int64.
        type: structure type codes (0 undefined, 1 soma, 2 axon, 3 basal, 4 apical dendrite ...).
        xyz: coordinates ``(N, 3)`` float64, SWC order ``x, y, z``.
        radius: radii ``(N,)`` float64.
        parent: parent ids ``(N,)`` int64, ``-1`` for a root.
        extra: ESWC columns after ``parent``, as text, one list per node.
        extra_names: names of the extra columns (from the header; ``""`` where unknown).
        comments: the ``#`` lines (without the ``#``), in order.
    """

    id: np.ndarray
    type: np.ndarray
    xyz: np.ndarray
    radius: np.ndarray
    parent: np.ndarray
    extra: list[list[str]] = field(default_factory=list)
    extra_names: list[str] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.id.shape[0])

    def parent_index(self) -> np.ndarray:
        """Index of each node's parent in the arrays, ``-1`` for a root."""
        pos = {int(i): k for k, i in enumerate(self.id.tolist())}
        return np.array([pos.get(int(p), -1) if p >= 0 else -1 for p in self.parent.tolist()], dtype=np.int64)

    def children(self) -> list[list[int]]:
        """Child indices of every node."""
        out: list[list[int]] = [[] for _ in range(len(self))]
        for k, p in enumerate(self.parent_index().tolist()):
            if p >= 0:
                out[p].append(k)
        return out

    def roots(self) -> list[int]:
        """Indices of the roots (one per tree of the forest)."""
        return [int(k) for k in np.flatnonzero(self.parent_index() < 0)]

    def leaves(self) -> list[int]:
        """Indices of nodes without children."""
        return [k for k, c in enumerate(self.children()) if not c]

    def branch_points(self) -> list[int]:
        """Indices of nodes with two or more children."""
        return [k for k, c in enumerate(self.children()) if len(c) >= 2]

    def topological_order(self) -> list[int]:
        """Indices with every parent before its children (roots first, depth-first)."""
        kids = self.children()
        order: list[int] = []
        for r in self.roots():
            stack = [r]
            while stack:
                n = stack.pop()
                order.append(n)
                stack.extend(reversed(kids[n]))
        return order

    def segments(self) -> list[list[int]]:
        """Unbranched paths: each starts at a root or branch point and ends at the next branch point or leaf."""
        kids, pi = self.children(), self.parent_index()
        out = []
        for start in self.topological_order():
            if pi[start] >= 0 and len(kids[start]) < 2:
                continue
            for c in kids[start]:
                path = [start, c]
                while len(kids[path[-1]]) == 1:
                    path.append(kids[path[-1]][0])
                out.append(path)
        return out

    def path_to_root(self, k: int) -> list[int]:
        """Indices from node ``k`` up to its root."""
        pi = self.parent_index()
        out = [k]
        while pi[out[-1]] >= 0:
            out.append(int(pi[out[-1]]))
        return out


def _num(text: str) -> str:
    """The shortest text of a float that reads back to the same float64."""
    v = float(text) if isinstance(text, str) else float(text)
    if v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    return repr(v)


def read_swc(path: str | Path) -> SWCTree:
    """Read an SWC or ESWC file (see the module docstring).

    Raises:
        DataError: missing or unreadable file, no nodes, or malformed lines / nodes (every one listed).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="strict")
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(path, f"cannot read as text ({type(exc).__name__}: {exc})") from exc
    comments: list[str] = []
    rows: list[tuple[int, list[str]]] = []
    for n, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s:
            continue
        if s.startswith("#"):
            comments.append(line.lstrip()[1:])
            continue
        rows.append((n, s.split()))
    problems: list[str] = []
    ids, types, xyz, rad, par, extra = [], [], [], [], [], []
    width = None
    for n, f in rows:
        if len(f) < 7:
            problems.append(f"line {n}: {len(f)} columns, an SWC node needs 7 (id type x y z radius parent)")
            continue
        width = width or len(f)
        if len(f) != width:
            problems.append(f"line {n}: {len(f)} columns where earlier lines have {width}")
            continue
        try:
            i, t, p = int(f[0]), int(float(f[1])), int(f[6])
            x, y, z, r = (float(v) for v in f[2:6])
        except ValueError:
            problems.append(f"line {n}: non-numeric field in {' '.join(f[:7])!r}")
            continue
        if not all(math.isfinite(v) for v in (x, y, z, r)):
            problems.append(f"line {n}: node {i} has a non-finite coordinate or radius")
            continue
        ids.append(i)
        types.append(t)
        xyz.append((x, y, z))
        rad.append(r)
        par.append(p)
        extra.append(f[7:])
    if not rows:
        problems.append("no nodes (only comments or empty)")
    seen: dict[int, int] = {}
    for i in ids:
        seen[i] = seen.get(i, 0) + 1
    problems += [f"node id {i} appears {c} times" for i, c in seen.items() if c > 1]
    known = set(ids)
    problems += [f"node {i}: parent {p} does not exist" for i, p in zip(ids, par) if p >= 0 and p not in known]
    problems += [f"node {i}: negative parent id {p} (roots use -1)" for i, p in zip(ids, par) if p < -1]
    if not problems:
        parent_of = dict(zip(ids, par))
        state: dict[int, int] = {}
        for start in ids:  # cycles: walk up; a node met twice on one walk is on a cycle
            walk, node = [], start
            while node >= 0 and state.get(node, 0) == 0:
                state[node] = 1
                walk.append(node)
                node = parent_of[node]
            if node >= 0 and state.get(node) == 1:
                problems.append(f"cycle through nodes {walk[walk.index(node):][:10]}")
            for w in walk:
                state[w] = 2
    if problems:
        listed = "; ".join(problems[:_MAX_LISTED])
        more = f" (and {len(problems) - _MAX_LISTED} more)" if len(problems) > _MAX_LISTED else ""
        raise DataError(path, f"malformed SWC, {len(problems)} problem(s): {listed}{more}")
    names: list[str] = []
    for c in comments:  # Vaa3D ESWC header: "##n,type,x,y,z,radius,parent,seg_id,level,mode,timestamp,..."
        if c.startswith("#") and "," in c:
            cols = [v.strip() for v in c.lstrip("#").split(",")]
            if len(cols) > 7:
                names = cols[7:]
    n_extra = (width or 7) - 7
    names = (names + [""] * n_extra)[:n_extra]
    return SWCTree(np.array(ids, np.int64), np.array(types, np.int64), np.array(xyz, np.float64).reshape(-1, 3),
                   np.array(rad, np.float64), np.array(par, np.int64), extra, names, comments)


def write_swc(path: str | Path, tree: SWCTree, overwrite: bool = False) -> Path:
    """Write ``tree`` as SWC (ESWC when it has extra columns), atomically; reading it back gives ``tree``."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists (pass overwrite=True)")
    n = len(tree)
    extra = tree.extra if len(tree.extra) == n else [[] for _ in range(n)]
    lines = [f"#{c}" for c in tree.comments]
    for k in range(n):
        x, y, z = (_num(str(v)) for v in tree.xyz[k])
        cols = [str(int(tree.id[k])), str(int(tree.type[k])), x, y, z, _num(str(tree.radius[k])),
                str(int(tree.parent[k])), *extra[k]]
        lines.append(" ".join(cols))
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def resample_swc(tree: SWCTree, step: float) -> SWCTree:
    """The tree with nodes every ``step`` along each unbranched segment; roots, branch points and leaves kept.

    Coordinates, radii and types are interpolated linearly along each segment (type: the segment
    end's); ids are renumbered 1..N in topological order, extra columns and comments dropped.
    """
    if not step > 0:
        raise ValueError(f"step must be > 0, got {step}")
    new_xyz: list[np.ndarray] = []
    new_r: list[float] = []
    new_t: list[int] = []
    new_p: list[int] = []
    index: dict[int, int] = {}

    def add(xyz: np.ndarray, r: float, t: int, parent: int) -> int:
        new_xyz.append(xyz)
        new_r.append(r)
        new_t.append(t)
        new_p.append(parent)
        return len(new_xyz)  # 1-based id

    for root in tree.roots():
        index[root] = add(tree.xyz[root], float(tree.radius[root]), int(tree.type[root]), -1)
    for seg in tree.segments():  # in topological order of their starts
        pts, rs = tree.xyz[seg], tree.radius[seg]
        d = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))])
        total = float(d[-1])
        parent = index[seg[0]]
        n_new = int(math.ceil(total / step - 1e-9))  # gaps of `step`, the last one shorter
        for s in (step * j for j in range(1, n_new)):
            p = np.array([np.interp(s, d, pts[:, a]) for a in range(3)])
            parent = add(p, float(np.interp(s, d, rs)), int(tree.type[seg[-1]]), parent)
        index[seg[-1]] = add(tree.xyz[seg[-1]], float(tree.radius[seg[-1]]), int(tree.type[seg[-1]]), parent)
    n = len(new_xyz)
    return SWCTree(np.arange(1, n + 1, dtype=np.int64), np.array(new_t, np.int64),
                   np.array(new_xyz, np.float64).reshape(-1, 3), np.array(new_r, np.float64),
                   np.array(new_p, np.int64), [[] for _ in range(n)], [], [])
