"""The one error type for bad input in medlearn.

Every reader, dataset layout parser and validator raises :class:`DataError` for input that cannot be
used: a corrupt or truncated file, a wrong shape, NaN pixels, a missing column, a label out of range.
The message always names the file and the reason, so a user sees *what* to fix and *where* instead of
a stack trace from deep inside a transform.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any


class DataError(ValueError):
    """Input data that medlearn cannot use.

    Args:
        path: the file (or dataset root) at fault.
        reason: what is wrong, in words a user can act on.
        problems: optional list of individual problems (e.g. every bad row of a table), each listed
            in the message, not only the first.
        partial: what a reader made of the input without problems (e.g. the records of a table's
            good rows), for a caller that goes on checking the rest (``medlearn check-data``);
            ``None`` when the reader has nothing to give.

    Examples:
        >>> raise DataError("scan.dcm", "file is truncated")  # doctest: +SKIP
        medlearn.io.errors.DataError: scan.dcm: file is truncated
    """

    def __init__(self, path: str | Path, reason: str, problems: Iterable[str] | None = None,
                 partial: list[Any] | None = None) -> None:
        self.path = str(path)
        self.reason = reason
        self.problems = list(problems or [])
        self.partial = partial
        msg = f"{self.path}: {reason}"
        if self.problems:
            shown = self.problems[:50]
            msg += "\n" + "\n".join(f"  - {p}" for p in shown)
            if len(self.problems) > len(shown):
                msg += f"\n  ... and {len(self.problems) - len(shown)} more"
        super().__init__(msg)


def name_issues(name: str, line: int, first_line: dict[str, int], empty: str = "empty image name",
                duplicate: str = "duplicate image name") -> list[str]:
    """Row checks shared by the table readers: an empty or repeated image name.

    ``first_line`` maps each name seen so far to its line and is updated with ``name``.

    Examples:
        >>> seen = {}
        >>> name_issues("a.png", 2, seen), name_issues("a.png", 3, seen), name_issues("", 4, seen)
        ([], ['duplicate image name, first on line 2'], ['empty image name'])
    """
    if not name:
        return [empty]
    if name in first_line:
        return [f"{duplicate}, first on line {first_line[name]}"]
    first_line[name] = line
    return []
