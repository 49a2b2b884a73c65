"""medlearn: published medical-imaging methods on shared, tested building blocks."""

from __future__ import annotations

from medlearn.runtime import configure_openmp as _configure_openmp

__version__ = "0.1.0"

# Before anything imports torch: OpenMP reads its wait policy once, when torch loads it.
_configure_openmp()
