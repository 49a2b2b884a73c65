"""CCL-Net demo and CPU-scale reproduction (placeholder filled below)."""

from __future__ import annotations

from pathlib import Path

from medlearn.synth.isic import write_isic2018

__all__ = ["write_contract_data"]


def write_contract_data(folder: Path) -> Path:
    """A tiny ISIC-layout phantom set for the contract tests."""
    root = Path(folder) / "isic"
    write_isic2018(root, counts="6,10,6,6,6,6,6", n_test_per_class=3, size=24, seed=1, overwrite=True)
    return root


def demo(*a, **k):  # replaced below
    raise NotImplementedError


reproduce = None
