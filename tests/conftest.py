"""Test-wide settings: one torch thread per test process (no oversubscription on small machines)."""

from __future__ import annotations

import os
import warnings

import pytest
import torch

os.environ.setdefault("MEDLEARN_THREADS", "1")
torch.set_num_threads(int(os.environ["MEDLEARN_THREADS"]))


@pytest.fixture(autouse=True)
def _quiet_lightning() -> None:
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*self.log.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
