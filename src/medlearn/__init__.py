"""medlearn: published medical-imaging methods on shared, tested building blocks."""

from __future__ import annotations

__version__ = "0.1.0"
