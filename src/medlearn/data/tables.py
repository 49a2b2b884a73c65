"""Reading the tables of the layouts: parsing CSV and xlsx, finding columns, paths, split names.

This module owns what every table reader shares: a CSV or xlsx table parsed as text with each
cell a ``str`` and each row's line in the file kept (:func:`read_csv_table`, :func:`read_table`),
every bad parse a :class:`~medlearn.io.errors.DataError` naming the file and the line;
case-insensitive column look-up (:func:`find_column`, :func:`read_columns`); table entries
turned into paths that stay inside the table's folder (:func:`table_path`); the accepted
spellings of split names (:data:`SPLIT_NAMES`), the usual grouping columns
(:data:`GROUP_COLUMNS`) and the natural sort order of label names (:func:`natural_key`). Row
checks shared by every reader (empty or repeated names) are :func:`medlearn.io.errors.name_issues`.

What a table may look like (each case is checked by ``tests/data/test_bad_input_corpus.py``):

- read as the user meant: UTF-8 with or without a byte-order mark (UTF-16 with one), Windows
  (CR LF) or old Mac (CR) line ends, blank lines anywhere and rows of empty cells above or below
  the table (skipped; a row keeps its line number in the file; a row of empty cells inside the
  table stays, for its reader to name), quoted cells with separators, spaces, line breaks or
  non-ASCII characters, ``;`` or tab as the separator when the header line has no comma (sniffed
  from the first non-blank line), a trailing separator on every line, lines above the header (a
  title, notes; in xlsx, or in a CSV whose title line has the separator) when the reader names
  the columns it needs;
- refused with a :class:`~medlearn.io.errors.DataError`: bytes that are not UTF-8 (the line and
  the byte are named), NUL bytes (a binary file), a row with more cells than the header (every
  such line listed), a column name given twice, an empty table; in xlsx, merged cells below the
  header row (every merged range listed with its rows).
"""

from __future__ import annotations

import codecs
import csv as _csv
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from medlearn.io.errors import DataError

__all__ = ["GROUP_COLUMNS", "HEADER_SEARCH_ROWS", "SEPARATORS", "SPLIT_NAMES", "TableColumns", "find_column",
           "natural_key", "read_columns", "read_csv_table", "read_table", "table_lines", "table_path"]

#: Columns taken as the grouping column when ``group_col="auto"`` (first match, case-insensitive).
GROUP_COLUMNS = ("lesion_id", "patient_id", "patient", "case", "case_id", "group", "subject")

#: Accepted spellings of a split (lower case) -> ``"train"``, ``"val"`` or ``"test"``.
SPLIT_NAMES = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val",
    "test": "test", "testing": "test",
}

#: Cell separators of a CSV table, sniffed from its header line (a comma wins when it has one).
SEPARATORS = (",", ";", "\t")

#: How many rows from the top are searched for the header when the first row lacks a required column.
HEADER_SEARCH_ROWS = 20

_XLSX_SUFFIXES = (".xlsx", ".xlsm")


class TableColumns(dict[str, list[str]]):
    """``{key: cells}`` of the columns :func:`read_columns` took, with each row's line in the file.

    Attributes:
        lines: the line (CSV) or spreadsheet row (xlsx) of each row, 1-based, in table order.
    """

    def __init__(self, cells: dict[str, list[str]], lines: list[int]) -> None:
        super().__init__(cells)
        self.lines = lines


def _decode(path: Path, data: bytes) -> str:
    """The table's bytes as text: UTF-8 (a byte-order mark dropped) or UTF-16 with its byte-order mark."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise DataError(path, "the table starts with a UTF-16 byte-order mark but is not UTF-16 text "
                                  f"({exc.reason})") from exc
    if b"\x00" in data:
        line = data.count(b"\n", 0, data.index(b"\x00")) + 1
        raise DataError(path, f"not a text table: a NUL byte on line {line} (a binary file or a spreadsheet "
                              "saved under a .csv name?)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataError(path, f"not UTF-8 text: byte 0x{data[exc.start]:02x} on line {line} cannot be decoded "
                              "(save the table as UTF-8, e.g. 'CSV UTF-8' in Excel)") from exc


def _outside_quotes(line: str, sep: str) -> int:
    """How often ``sep`` occurs in ``line`` outside double-quoted cells."""
    count, quoted = 0, False
    for ch in line:
        if ch == '"':
            quoted = not quoted
        elif ch == sep and not quoted:
            count += 1
    return count


def _sniff_separator(text: str) -> str:
    """The separator of the header (the first non-blank line): a comma if it has one, else ``;`` or tab.

    A header with none of :data:`SEPARATORS` is a one-column table (comma).
    """
    line = next((line for line in text.splitlines() if line.strip()), "")
    counts = {sep: _outside_quotes(line, sep) for sep in SEPARATORS}
    if counts[","]:
        return ","
    best = max(SEPARATORS[1:], key=lambda sep: counts[sep])
    return best if counts[best] else ","


def _csv_rows(path: Path, text: str) -> list[tuple[int, list[str]]]:
    """``(first line, cells)`` of every row but blank lines and rows of empty cells above or below the table."""
    reader = _csv.reader(io.StringIO(text, newline=""), delimiter=_sniff_separator(text), skipinitialspace=True)
    rows: list[tuple[int, list[str]]] = []
    append = rows.append
    last = 0
    try:
        for cells in reader:
            if len(cells) > 1 or (cells and cells[0].strip()):
                append((last + 1, cells))
            last = reader.line_num
    except _csv.Error as exc:
        raise DataError(path, f"cannot parse the table: line {reader.line_num}: {exc}") from exc
    def blank(row: tuple[int, list[str]]) -> bool:
        return not "".join(row[1]).strip()

    lo, hi = 0, len(rows)
    while lo < hi and blank(rows[lo]):
        lo += 1
    while hi > lo and blank(rows[hi - 1]):
        hi -= 1
    return rows[lo:hi]


def _cell_text(value: Any) -> str:
    """A spreadsheet cell as the text a CSV export would hold."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if hasattr(value, "isoformat"):
        return str(value.isoformat())
    return str(value)


def _xlsx_rows(path: Path) -> tuple[list[tuple[int, list[str]]], list[tuple[int, int, str]]]:
    """The first sheet's rows and merged ranges, through openpyxl.

    Returns ``(rows, merged)``: ``(row number, cells)`` of the non-blank rows, ``(first row, last row,
    range)`` of each merged range.
    """
    try:
        import openpyxl
    except ImportError as exc:
        raise DataError(path, f"cannot read xlsx: {exc} (pip install openpyxl)") from exc
    try:
        book = openpyxl.load_workbook(path, data_only=True)
    except Exception as exc:  # openpyxl raises many types (zip, XML, key errors) for a corrupt file
        raise DataError(path, f"cannot read the workbook: {type(exc).__name__}: {exc}") from exc
    try:
        sheet = book.worksheets[0]
        rows = [(i, [_cell_text(v) for v in values])
                for i, values in enumerate(sheet.iter_rows(values_only=True), start=1)]
        merged = [(r.min_row, r.max_row, r.coord) for r in sheet.merged_cells.ranges]
    finally:
        book.close()
    return [(i, cells) for i, cells in rows if any(c.strip() for c in cells)], merged


def _header_index(rows: list[tuple[int, list[str]]], required: Sequence[str]) -> int:
    """Index of the header among ``rows``.

    The first row, or else the first of the top rows that holds every required name and more filled
    cells than each row above it (a title, notes).
    """
    if not required or not rows:
        return 0
    wanted = {str(r).strip().lower() for r in required}
    filled = [sum(1 for c in cells if c.strip()) for _, cells in rows[:HEADER_SEARCH_ROWS]]
    for k, (_, cells) in enumerate(rows[:HEADER_SEARCH_ROWS]):
        if wanted <= {c.strip().lower() for c in cells}:
            return k if all(f < filled[k] for f in filled[:k]) else 0
    return 0


def _frame(path: Path, rows: list[tuple[int, list[str]]], required: Sequence[str]) -> pd.DataFrame:
    """The table below the header row as a frame of ``str`` cells indexed by line."""
    if not rows:
        raise DataError(path, "the table is empty (no header line)")
    h = _header_index(rows, required)
    header_line, header = rows[h]
    names = [c.strip() for c in header]
    while names and not names[-1]:  # a trailing separator on the header line
        names.pop()
    names = [n or f"Unnamed: {k}" for k, n in enumerate(names)]
    seen: dict[str, int] = {}
    twice = []
    for k, n in enumerate(names):
        if n.lower() in seen:
            twice.append(f"column {n!r} is both column {seen[n.lower()] + 1} and column {k + 1}")
        else:
            seen[n.lower()] = k
    if twice:
        raise DataError(path, f"a column name appears twice in the header (line {header_line})", twice)
    width = len(names)
    lines: list[int] = []
    body: list[list[str]] = []
    long_rows: list[str] = []
    for line, cells in rows[h + 1:]:
        if len(cells) > width and "".join(cells[width:]).strip():
            long_rows.append(f"line {line}: {len(cells)} cells, the header (line {header_line}) names {width} "
                             "columns (an unquoted separator in a cell?)")
            continue
        if len(cells) != width:
            cells = cells[:width] + [""] * (width - len(cells))
        lines.append(line)
        body.append(cells)
    if long_rows:
        raise DataError(path, f"{len(long_rows)} rows have more cells than the header", long_rows)
    df = pd.DataFrame(body, columns=names, index=pd.Index(lines, name="line"), dtype=object)
    return df


def read_csv_table(csv: Path, required: Sequence[str] = ()) -> pd.DataFrame:
    """Parse a CSV table as text: each cell a ``str`` (leading spaces skipped), column names stripped.

    The separator is sniffed (:data:`SEPARATORS`); blank lines, and rows of empty cells above or
    below the table, are skipped; shorter rows are padded with empty cells. Parsing is Python's
    ``csv`` module (quoting as Excel writes it); the frame is pandas.

    Args:
        csv: the table.
        required: columns the caller needs (any case); when the first row lacks one, the first of
            the top :data:`HEADER_SEARCH_ROWS` rows holding them all is the header (lines above
            it, a title or notes, are skipped).

    Returns:
        The table, every cell a ``str``, indexed by the line each row starts on (``index.name`` =
        ``"line"``; :func:`table_lines`).

    Raises:
        DataError: naming ``csv``: missing, unreadable, not UTF-8 text (the line), NUL bytes, no
            header, a column name repeated, rows with more cells than the header (each line).
    """
    csv = Path(csv)
    if not csv.is_file():
        raise DataError(csv, "table not found")
    try:
        data = csv.read_bytes()
    except OSError as exc:
        raise DataError(csv, f"cannot read the table: {exc.strerror or exc}") from exc
    return _frame(csv, _csv_rows(csv, _decode(csv, data)), required)


def read_table(path: Path, required: Sequence[str] = ()) -> pd.DataFrame:
    """Read a CSV (:func:`read_csv_table`) or xlsx table (first sheet, through openpyxl) as text cells.

    An xlsx sheet follows the CSV rules (header detection with ``required``, blank rows skipped;
    numbers written as a CSV export would: ``1`` not ``1.0``); cells merged below the header row
    are refused, since the rows they span do not hold their own values.

    Args:
        path: the table (``.csv``, ``.xlsx`` or ``.xlsm``; any other suffix is read as CSV).
        required: columns the caller needs (see :func:`read_csv_table`).

    Returns:
        The table, indexed by line (CSV) or spreadsheet row (xlsx).

    Raises:
        DataError: as :func:`read_csv_table`; for xlsx also an unreadable workbook, an ``.xls``
            file (not read: save as xlsx or CSV), or merged cells in the table (each range named).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".xls":
        raise DataError(path, "Excel 97-2003 (.xls) workbooks are not read; save the table as .xlsx or .csv")
    if suffix not in _XLSX_SUFFIXES:
        return read_csv_table(path, required)
    if not path.is_file():
        raise DataError(path, "table not found")
    rows, merged = _xlsx_rows(path)
    df = _frame(path, rows, required)
    header_row = rows[_header_index(rows, required)][0] if rows else 0
    spans = sorted((lo, hi, coord) for lo, hi, coord in merged if hi > header_row)
    if spans:
        raise DataError(path, f"{len(spans)} merged cell ranges in the table (unmerge them: every row must hold "
                              "its own values)",
                        [f"{f'rows {lo}-{hi}' if lo != hi else f'row {lo}'}: cells {coord} are merged"
                         for lo, hi, coord in spans])
    return df


def table_lines(df: pd.DataFrame) -> list[int]:
    """The line of each row of a table read by :func:`read_csv_table` / :func:`read_table`."""
    return [int(v) for v in df.index]


def table_path(base: Path, value: str) -> tuple[Path, str | None]:
    """A table entry as a path, and what is wrong with it: ``(base / value, problem or None)``.

    A relative entry is relative to ``base`` (an absolute one is kept, as the user wrote it); one
    that leaves ``base`` through ``..`` (``../other/x.png``, ``a/../../x.png``) is refused, since
    a table describes the files of its own dataset folder. The check is on the text (symbolic
    links inside ``base`` may point anywhere).

    Examples:
        >>> table_path(Path("data"), "a/../b.png")
        (PosixPath('data/a/../b.png'), None)
        >>> table_path(Path("data"), "../b.png")[1]
        "'../b.png' goes up out of data through '..' (give a path inside it, or an absolute one)"
    """
    p = Path(value)
    if p.is_absolute():
        return p, None
    parts = Path(os.path.normpath(value)).parts if value else ()
    if parts and parts[0] == "..":
        return base / p, f"{value!r} goes up out of {base} through '..' (give a path inside it, or an absolute one)"
    return base / p, None


def find_column(df: pd.DataFrame, name: str | None, candidates: Sequence[str] = ()) -> str | None:
    """The column of ``df`` called ``name`` (any case), or ``None`` when there is none.

    With ``name`` ``None`` or ``"auto"``: the first of ``candidates`` present.
    """
    lower = {c.lower(): c for c in df.columns}
    if name not in (None, "auto"):
        return lower.get(str(name).lower())
    for c in candidates:
        if c in lower:
            return lower[c]
    return None


def read_columns(csv: Path, required: dict[str, str], group_col: str | None = "auto",
                 optional: dict[str, str | None] | None = None) -> TableColumns:
    """Read a table and the cells of its columns, every required column checked at once.

    Args:
        csv: the table.
        required: ``{key: column name}`` of columns that must be there (e.g. ``{"image": "image"}``).
        group_col: the grouping column (``"auto"``: the first of :data:`GROUP_COLUMNS` present, or
            none; ``None``: no grouping); a named one must be there.
        optional: ``{key: column name or None}`` of columns used when present.

    Returns:
        ``{key: stripped cell strings}`` for the required keys, ``"group"`` and the optional keys
        (empty strings for a column that is absent), with each row's line (``.lines``).

    Raises:
        DataError: the table is missing or unreadable, or columns are missing (all named).
    """
    df = read_csv_table(csv, [name for name in required.values()])
    cols = {key: find_column(df, name) for key, name in required.items()}
    missing = [f"missing column {required[key]!r}" for key, col in cols.items() if col is None]
    if group_col not in (None, "auto") and find_column(df, group_col) is None:
        missing.append(f"missing grouping column {group_col!r}")
    if missing:
        raise DataError(csv, f"missing required columns (found: {', '.join(df.columns) or 'none'})", missing)
    cols["group"] = find_column(df, group_col, GROUP_COLUMNS) if group_col is not None else None
    for key, name in (optional or {}).items():
        cols[key] = find_column(df, name) if name else None
    return TableColumns({key: [s.strip() for s in df[col].tolist()] if col is not None else [""] * len(df)
                         for key, col in cols.items()}, table_lines(df))


def natural_key(s: str) -> tuple[int, Any]:
    """Sort key putting integer strings first, in numeric order, then the rest alphabetically."""
    digits = s[1:] if s.startswith("-") else s
    return (0, int(s)) if digits.isdecimal() else (1, s)
