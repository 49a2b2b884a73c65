"""Property-based fuzzing of the table readers (hypothesis, derandomized so every run is the same).

Random CSV text (random bytes, random cells written by Python's ``csv`` writer with a random
separator, line end, byte-order mark and quoting, random subsets of a reader's columns) either
parses into records consistent with the input or raises :class:`~medlearn.io.errors.DataError`:
never another exception, never a hang (each example is time-bounded by hypothesis' deadline).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medlearn.data.labelled2d import read_image_table
from medlearn.data.manifest import read_volume_manifest
from medlearn.data.segmentation2d import read_mask_table
from medlearn.data.tables import read_columns, read_csv_table, table_lines
from medlearn.io.errors import DataError

#: Examples per property; the six properties take a few seconds together.
EXAMPLES = 150
FUZZ = settings(max_examples=EXAMPLES, derandomize=True, deadline=2000, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

#: Any text a cell may hold (no NUL: refused as binary; no lone surrogates: not encodable).
CELL = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
#: Cells a user types: letters, digits, spaces, punctuation, path separators, non-ASCII (none of
#: the letters of the column names, so that no data row looks like a header).
TYPED = st.text(st.sampled_from(list("xy01 .-/é²٣;,\"'\t")), max_size=10)
NAME = st.text(st.sampled_from(list("abcdefgh_")), min_size=1, max_size=6)


def _write(path: Path, rows: list[list[str]], sep: str, newline: str, quoting: int, bom: bool) -> None:
    buf = io.StringIO()
    csv.writer(buf, delimiter=sep, lineterminator=newline, quoting=quoting).writerows(rows)
    path.write_bytes((("\ufeff" if bom else "") + buf.getvalue()).encode("utf-8"))


@st.composite
def tables(draw: st.DrawFn, cells: st.SearchStrategy[str] = CELL) -> tuple[list[str], list[list[str]], dict]:
    header = draw(st.lists(NAME, min_size=1, max_size=5, unique_by=str.lower))
    rows = draw(st.lists(st.lists(cells, min_size=len(header), max_size=len(header)), max_size=8))
    sep = draw(st.sampled_from([",", ";", "\t"]) if len(header) > 1 else st.just(","))
    style = dict(sep=sep, newline=draw(st.sampled_from(["\n", "\r\n", "\r"])),
                 quoting=draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL])), bom=draw(st.booleans()))
    if style["quoting"] == csv.QUOTE_MINIMAL and style["newline"] != "\r\n":
        # Python's writer quotes only the line end it writes: a lone CR or LF in a cell would be a
        # real line break in the file (Excel quotes both); keep such cells to QUOTE_ALL
        rows = [[c.replace("\r", " ").replace("\n", " ") for c in r] for r in rows]
    return header, rows, style


def _expected(header: list[str], rows: list[list[str]]) -> list[list[str]]:
    """The rows a reader keeps: blank lines (a one-column empty cell) and trailing empty rows go."""
    kept = [r for r in rows if len(header) > 1 or r[0].strip()]
    while kept and not any(c.strip() for c in kept[-1]):
        kept.pop()
    return [[c.strip() for c in r] for r in kept]


@FUZZ
@given(data=st.binary(max_size=300))
def test_random_bytes_parse_or_raise_a_data_error(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(data)
    try:
        df = read_csv_table(path)
    except DataError as exc:
        assert exc.path == str(path)
        return
    assert all(isinstance(v, str) for col in df.columns for v in df[col])
    assert table_lines(df) == sorted(set(table_lines(df)))  # rows in file order, one line each


@FUZZ
@given(table=tables())
def test_written_tables_read_back_cell_for_cell(tmp_path: Path, table: tuple) -> None:
    header, rows, style = table
    path = tmp_path / "t.csv"
    _write(path, [header, *rows], **style)
    df = read_csv_table(path)
    assert list(df.columns) == header
    got = [[c.strip() for c in row] for row in df.itertuples(index=False, name=None)]
    assert got == _expected(header, rows)
    assert all(line >= 2 for line in table_lines(df))


@FUZZ
@given(table=tables(TYPED), required=st.lists(NAME, min_size=1, max_size=3, unique_by=str.lower))
def test_read_columns_finds_columns_or_names_the_missing(tmp_path: Path, table: tuple, required: list[str]) -> None:
    header, rows, style = table
    path = tmp_path / "t.csv"
    _write(path, [header, *rows], **style)
    try:
        cols = read_columns(path, {c: c for c in required}, group_col=None)
    except DataError as exc:
        missing = [c for c in required if c.lower() not in {h.lower() for h in header}]
        assert missing and all(repr(c) in str(exc) for c in missing)
        return
    kept = _expected(header, rows)
    index = {h.lower(): k for k, h in enumerate(header)}
    for c in required:
        assert cols[c] == [r[index[c.lower()]] for r in kept]
    assert len(cols.lines) == len(kept)


@FUZZ
@given(table=tables(TYPED), columns=st.sets(st.sampled_from(["image", "label", "group", "split"]), min_size=1))
def test_image_table_rows_become_records_or_a_data_error(tmp_path: Path, table: tuple, columns: set[str]) -> None:
    _, rows, style = table
    header = sorted(columns)
    rows = [(r * len(header))[: len(header)] for r in rows]
    path = tmp_path / "labels.csv"
    _write(path, [header, *rows], **{**style, "sep": style["sep"] if len(header) > 1 else ","})
    try:
        records, classes = read_image_table(path, check_files=False)
    except DataError as exc:
        assert exc.path == str(path)
        return
    kept = _expected(header, rows)
    names = [r[header.index("image")] for r in kept]
    assert [r.name for r in records] == names
    assert all(0 <= r.label < len(classes) for r in records)


@FUZZ
@given(table=tables(TYPED), columns=st.sets(st.sampled_from(["image", "mask", "split", "domain"]), min_size=1))
def test_mask_table_rows_become_records_or_a_data_error(tmp_path: Path, table: tuple, columns: set[str]) -> None:
    _, rows, style = table
    header = sorted(columns)
    rows = [(r * len(header))[: len(header)] for r in rows]
    path = tmp_path / "masks.csv"
    _write(path, [header, *rows], **{**style, "sep": style["sep"] if len(header) > 1 else ","})
    try:
        records = read_mask_table(path, check_files=False)
    except DataError as exc:
        assert exc.path == str(path)
        return
    kept = _expected(header, rows)
    assert [r.name for r in records] == [r[header.index("image")] for r in kept]
    assert [r.mask for r in records] == [tmp_path / m[header.index("mask")] for m in kept]


@FUZZ
@given(table=tables(TYPED), columns=st.sets(st.sampled_from(["path", "label", "split", "seg", "case"]), min_size=1))
def test_volume_manifest_rows_become_records_or_a_data_error(tmp_path: Path, table: tuple,
                                                            columns: set[str]) -> None:
    _, rows, style = table
    header = sorted(columns)
    rows = [(r * len(header))[: len(header)] for r in rows]
    path = tmp_path / "manifest.csv"
    _write(path, [header, *rows], **{**style, "sep": style["sep"] if len(header) > 1 else ","})
    try:
        records = read_volume_manifest(path, check_files=False)
    except DataError as exc:
        assert exc.path == str(path)
        return
    kept = _expected(header, rows)
    assert len(records) == len(kept)
    for record, row in zip(records, kept):
        assert record.path == tmp_path / row[header.index("path")]
        assert record.label == ((row[header.index("label")] or None) if "label" in header else None)


@pytest.mark.parametrize("text", ["a,b\n1,2,3\n", "a;b\n1;2;3\n", "image\n\x00\n", "a,a\n1,2\n", ""])
def test_fuzz_seeds_are_data_errors(tmp_path: Path, text: str) -> None:
    """The shapes the fuzzers found or must keep finding: each a DataError, never a crash."""
    path = tmp_path / "t.csv"
    path.write_text(text)
    with pytest.raises(DataError):
        read_csv_table(path)
