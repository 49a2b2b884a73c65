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

__all__ = ["GROUP_COLUMNS", "SPLIT_NAMES", "find_column", "natural_key", "read_csv_table"]

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


def natural_key(s: str) -> tuple[int, Any]:
    """Sort key putting integer strings first, in numeric order, then the rest alphabetically."""
    return (0, int(s)) if s.lstrip("-").isdigit() else (1, s)
