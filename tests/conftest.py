"""Test-wide settings: one torch thread per test process (no oversubscription on small machines),
with medlearn's OpenMP wait policy (``medlearn.runtime``), applied before anything imports torch."""

from __future__ import annotations

import os
import warnings

import pytest

from medlearn.runtime import set_cpu_threads

os.environ.setdefault("MEDLEARN_THREADS", "1")
set_cpu_threads()


@pytest.fixture(autouse=True)
def _quiet_lightning() -> None:
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*self.log.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")


_ITK_DATA = "usr/share/doc/insighttoolkit5-examples/examples/Data"


@pytest.fixture
def itk_example_data() -> "os.PathLike[str]":
    """ITK's example data folder (Debian `insighttoolkit5-examples`): installed system-wide or
    unpacked by `tools/fetch-test-data` (run by `make test`) into .cache/testdata."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    for base in (Path("/"), root / ".cache" / "testdata"):
        folder = base / _ITK_DATA
        if (folder / "KmeansTest_T1UCharRaw.nii.gz").is_file():
            return folder
    pytest.skip("ITK's example T1 is not here (apt-get install insighttoolkit5-examples, or tools/fetch-test-data)")
