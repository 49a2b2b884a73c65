"""Reading the CSV tables of the generic layouts: parsing, finding columns, split and group names.

This module owns what the table readers of :mod:`medlearn.data.labelled2d` (``image,label``),
:mod:`medlearn.data.segmentation2d` (``image,mask``) and :mod:`medlearn.data.manifest`
(volume manifests) share: a CSV parsed as text with every bad parse a
:class:`~medlearn.io.errors.DataError` (:func:`read_csv_table`), case-insensitive column look-up
(:func:`find_column`), the accepted spellings of split names (:data:`SPLIT_NAMES`), the usual
grouping columns (:data:`GROUP_COLUMNS`) and the natural sort order of label names
(:func:`natural_key`). Row checks shared by every reader (empty or repeated names) are
:func:`medlearn.io.errors.name_issues`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from medlearn.io.errors import DataError

__all__ = ["GROUP_COLUMNS", "SPLIT_NAMES", "find_column", "natural_key", "read_csv_table", "read_columns"]

#: Columns taken as the grouping column when ``group_col="auto"`` (first match, case-insensitive).
GROUP_COLUMNS = ("lesion_id", "patient_id", "patient", "case", "case_id", "group", "subject")

#: Accepted spellings of a split (lower case) -> ``"train"``, ``"val"`` or ``"test"``.
SPLIT_NAMES = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val",
    "test": "test", "testing": "test",
}


def read_csv_table(csv: Path) -> pd.DataFrame:
    """Parse a CSV table as text (no NA conversion, leading spaces skipped, column names stripped).

    Args:
        csv: the table.

    Returns:
        The table, every cell a ``str``.

    Raises:
        DataError: the file is missing or cannot be parsed.
    """
    if not csv.is_file():
        raise DataError(csv, "table not found")
    try:
        df = pd.read_csv(csv, dtype=str, keep_default_na=False, na_filter=False, skipinitialspace=True)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(csv, f"cannot parse the table: {exc}") from exc
    df.columns = [str(c).strip() for c in df.columns]
    return df


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
                 optional: dict[str, str | None] | None = None) -> dict[str, list[str]]:
    """Read a table and the cells of its columns, every required column checked at once.

    Args:
        csv: the table.
        required: ``{key: column name}`` of columns that must be there (e.g. ``{"image": "image"}``).
        group_col: the grouping column (``"auto"``: the first of :data:`GROUP_COLUMNS` present, or
            none; ``None``: no grouping); a named one must be there.
        optional: ``{key: column name or None}`` of columns used when present.

    Returns:
        ``{key: stripped cell strings}`` for the required keys, ``"group"`` and the optional keys
        (empty strings for a column that is absent).

    Raises:
        DataError: the table is missing or unreadable, or columns are missing (all named).
    """
    df = read_csv_table(csv)
    cols = {key: find_column(df, name) for key, name in required.items()}
    missing = [f"missing column {required[key]!r}" for key, col in cols.items() if col is None]
    if group_col not in (None, "auto") and find_column(df, group_col) is None:
        missing.append(f"missing grouping column {group_col!r}")
    if missing:
        raise DataError(csv, f"missing required columns (found: {', '.join(df.columns) or 'none'})", missing)
    cols["group"] = find_column(df, group_col, GROUP_COLUMNS) if group_col is not None else None
    for key, name in (optional or {}).items():
        cols[key] = find_column(df, name) if name else None
    return {key: [s.strip() for s in df[col].tolist()] if col is not None else [""] * len(df)
            for key, col in cols.items()}


def natural_key(s: str) -> tuple[int, Any]:
    """Sort key putting integer strings first, in numeric order, then the rest alphabetically."""
    return (0, int(s)) if s.lstrip("-").isdigit() else (1, s)
