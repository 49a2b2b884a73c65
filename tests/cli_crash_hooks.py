"""A callback that lets tests/test_cli_crash_safety.py stop a real `medlearn fit` at a chosen moment.

Passed to the CLI as ``--trainer.callbacks+=cli_crash_hooks.CrashHook`` (this folder on
PYTHONPATH) and driven by environment variables, so the command line stays the user's:

- ``CRASH_HOOK=pause:E:B``: after training batch ``B`` of epoch ``E`` (both from 0) write the
  marker file and sleep, so the test can SIGKILL the process in the middle of the epoch.
- ``CRASH_HOOK=kill_in_write:E``: from epoch ``E`` on, the first write of ``last.ckpt`` stops
  after 4 KiB (a partial temp file on disk), writes the marker and sleeps until killed.
- ``CRASH_HOOK=full_disk:E``: from epoch ``E`` on, every checkpoint write fails after 4 KiB with
  ``ENOSPC``, as on a full disk.
- ``CRASH_HOOK_MARKER``: the marker file.
"""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback

BUDGET = 4096


def _mark() -> None:
    Path(os.environ["CRASH_HOOK_MARKER"]).write_text(str(os.getpid()))


class _LimitedFile:
    """A real file whose writes stop after ``BUDGET`` bytes: sleep (to be killed) or raise ENOSPC."""

    def __init__(self, f: Any, on_full: str) -> None:
        self._f = f
        self._left = BUDGET
        self._on_full = on_full

    def write(self, data: Any) -> int:
        data = bytes(data)
        if len(data) <= self._left:
            self._left -= len(data)
            return self._f.write(data)
        self._f.write(data[:self._left])
        self._left = 0
        if self._on_full == "sleep":
            self._f.flush()
            os.fsync(self._f.fileno())
            _mark()
            time.sleep(600)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)

    def __enter__(self) -> _LimitedFile:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._f.close()


def _patch_checkpoint_writes(name_part: str, on_full: str) -> None:
    real_fdopen = os.fdopen

    def fdopen(fd: int, *args: Any, **kwargs: Any) -> Any:
        f = real_fdopen(fd, *args, **kwargs)
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return f
        if name_part in os.path.basename(target) and target.endswith(".tmp"):
            return _LimitedFile(f, on_full)
        return f

    os.fdopen = fdopen


class CrashHook(Callback):
    """See the module docstring."""

    def __init__(self) -> None:
        kind, *args = os.environ.get("CRASH_HOOK", "none").split(":")
        self.kind = kind
        self.args = [int(a) for a in args]
        self.patched = False

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        if self.patched or self.kind not in ("kill_in_write", "full_disk") or trainer.current_epoch < self.args[0]:
            return
        if self.kind == "kill_in_write":
            _patch_checkpoint_writes(".last.ckpt.", "sleep")
        else:
            _patch_checkpoint_writes(".ckpt.", "raise")
        self.patched = True

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.kind == "pause" and [trainer.current_epoch, batch_idx] == self.args:
            _mark()
            time.sleep(600)
