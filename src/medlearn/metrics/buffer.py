"""The per-batch buffer every epoch metric here accumulates into.

MONAI's :class:`~monai.metrics.Cumulative` keeps the rows of every batch and, under DDP, gathers
every process's rows when they are read (``get_buffer``); the metrics in this package compute
from those rows. :class:`CaseBuffer` is that class with its ``aggregate`` defined (MONAI declares
it abstract on the base), so it can be built directly.
"""

from __future__ import annotations

from typing import Any

from monai.metrics import Cumulative

__all__ = ["CaseBuffer"]


class CaseBuffer(Cumulative):
    """Rows of every batch (``extend(rows)``), gathered across processes by :meth:`aggregate`."""

    def aggregate(self, *args: Any, **kwargs: Any) -> Any:
        """The gathered buffers (``get_buffer()``: one tensor, or a list of tensors per ``extend`` argument)."""
        return self.get_buffer()
