"""SWC / ESWC: round trips (hand-made edge cases and real skeletons), malformed files, tree utilities, resampling."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from medlearn.io import DataError, read_swc, resample_swc, write_swc

EDGE = """# a forest, unsorted and non-contiguous ids, a parent after its child
# second comment line
10 1 0 0 0 2.5 -1
30 3 2.25 0 0 1 20
20 3 1 0 0 1.125 10
40 3 3 1 0 1 30
41 3 3 -1 0 1 30
7 2 100 100 5 0.5 -1
8 2 101 100 5 0.5 7
"""

ESWC = """#name test
##n,type,x,y,z,radius,parent,seg_id,level,mode,timestamp,TFresindex
1 1 10 20 30 1 -1 0 0 0 1700000000 1
2 3 11 20 30 1 1 0 1 0 1700000001 1
3 3 12.5 20 30 1 2 1 1 0 1700000002 1
"""


def _rt(text: str, tmp_path: Path) -> None:
    src = tmp_path / "in.swc"
    src.write_text(text)
    a = read_swc(src)
    write_swc(tmp_path / "out.swc", a, overwrite=True)
    b = read_swc(tmp_path / "out.swc")
    for k in ("id", "type", "xyz", "radius", "parent"):
        assert np.array_equal(getattr(a, k), getattr(b, k)), k
    assert a.extra == b.extra and a.comments == b.comments and a.extra_names == b.extra_names


def test_edge_cases_round_trip_and_tree_utilities(tmp_path: Path) -> None:
    _rt(EDGE, tmp_path)
    t = read_swc(tmp_path / "in.swc")
    assert t.id.tolist() == [10, 30, 20, 40, 41, 7, 8] and t.comments[1] == " second comment line"
    assert t.parent_index().tolist() == [-1, 2, 0, 1, 1, -1, 5]
    assert t.roots() == [0, 5] and sorted(t.leaves()) == [3, 4, 6] and t.branch_points() == [1]
    order = t.topological_order()
    assert all(order.index(int(p)) < order.index(k) for k, p in enumerate(t.parent_index()) if p >= 0)
    assert sorted(map(tuple, t.segments())) == [(0, 2, 1), (1, 3), (1, 4), (5, 6)]
    assert t.path_to_root(3) == [3, 1, 2, 0]
    with pytest.raises(FileExistsError):
        write_swc(tmp_path / "out.swc", t)


def test_eswc_columns_and_header_are_kept(tmp_path: Path) -> None:
    _rt(ESWC, tmp_path)
    t = read_swc(tmp_path / "in.swc")
    assert t.extra_names == ["seg_id", "level", "mode", "timestamp", "TFresindex"]
    assert t.extra[2] == ["1", "1", "0", "1700000002", "1"]
    assert (tmp_path / "out.swc").read_text().splitlines()[3] == "2 3 11 20 30 1 1 0 1 0 1700000001 1"


def _navis_swcs() -> list[Path]:
    spec = importlib.util.find_spec("navis")
    if spec is None or not spec.submodule_search_locations:
        return []
    return sorted((Path(list(spec.submodule_search_locations)[0]) / "data" / "swc").glob("*.swc"))


@pytest.mark.skipif(not _navis_swcs(), reason="navis (its example skeletons) is not installed")
def test_real_skeletons_round_trip(tmp_path: Path) -> None:
    for f in _navis_swcs():
        _rt(f.read_text(), tmp_path)
        assert len(read_swc(f)) > 1000


@pytest.mark.parametrize("text, reason", [
    ("1 1 0 0 0 1 -1\n2 3 1 0 0 1 1\n3 3 a 0 0 1 2\n4 3 1 0\n", ["line 3: non-numeric", "line 4: 4 columns"]),
    ("1 1 0 0 0 1 -1\n1 3 1 0 0 1 -1\n2 3 1 0 0 1 9\n", ["node id 1 appears 2 times", "parent 9 does not exist"]),
    ("1 3 0 0 0 1 3\n2 3 1 0 0 1 1\n3 3 2 0 0 1 2\n", ["cycle through nodes"]),
    ("1 1 nan 0 0 1 -1\n", ["non-finite"]),
    ("# only a comment\n", ["no nodes"]),
    ("1 1 0 0 0 1 -1 5\n2 3 1 0 0 1 1\n", ["2 columns" if False else "7 columns where earlier lines have 8"]),
])
def test_malformed_files_list_every_problem(tmp_path: Path, text: str, reason: list[str]) -> None:
    p = tmp_path / "bad.swc"
    p.write_text(text)
    with pytest.raises(DataError) as e:
        read_swc(p)
    assert str(p) in str(e.value) and all(r in str(e.value) for r in reason), str(e.value)
    with pytest.raises(DataError, match="not found"):
        read_swc(tmp_path / "missing.swc")


def test_resampling_keeps_branch_points_and_leaves(tmp_path: Path) -> None:
    (tmp_path / "in.swc").write_text(EDGE)
    t = read_swc(tmp_path / "in.swc")
    r = resample_swc(t, 0.5)
    kept = {tuple(p) for p in r.xyz.tolist()}
    for k in [*t.roots(), *t.branch_points(), *t.leaves()]:
        assert tuple(t.xyz[k].tolist()) in kept
    pi = r.parent_index()
    steps = np.linalg.norm(r.xyz[pi >= 0] - r.xyz[pi[pi >= 0]], axis=1)
    assert steps.max() <= 0.5 + 1e-9 and steps.min() > 0
    assert len(r.roots()) == 2 and len(r.branch_points()) == 1 and len(r.leaves()) == 3
    # path 10 -> 20 -> 30 is 2.25 long: nodes at 0, .5, 1, 1.5, 2, 2.25
    assert len(r.path_to_root(int(np.flatnonzero((r.xyz == [2.25, 0, 0]).all(1))[0]))) == 6
    with pytest.raises(ValueError):
        resample_swc(t, 0)
