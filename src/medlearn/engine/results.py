"""``docs/results.md``: one section per method, replaced in place by ``medlearn reproduce NAME``."""

from __future__ import annotations

import time
from pathlib import Path

__all__ = ["write_results_section"]


def write_results_section(path: Path, method: str, body: str, command: str | None = None) -> None:
    """Replace (or add) the ``## method`` section of ``docs/results.md`` between markers."""
    command = command or f"medlearn reproduce {method}"
    start, end = f"<!-- {method}:start -->", f"<!-- {method}:end -->"
    block = f"{start}\n## {method}\n\nCommand: `{command}` (measured {time.strftime('%Y-%m-%d')}).\n\n{body}\n{end}"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = path.read_text(encoding="utf-8") if path.is_file() else "# Reproductions\n\nTables as measured.\n"
    if start in text and end in text:
        pre, _, rest = text.partition(start)
        _, _, post = rest.partition(end)
        text = pre + block + post
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text, encoding="utf-8")
