"""One run at a time per run folder: an exclusive lock file that names its holder.

Two ``medlearn`` runs pointed at the same run folder would write the same ``last.ckpt``,
``metrics.csv`` and report, each over the other. :class:`RunLock` claims the folder for one process:
it holds an exclusive ``fcntl.flock`` on ``<run>/.medlearn.lock`` and writes its PID, host and start
time into the file, so a second run refuses with a message that names the folder and the holder.

The kernel releases a ``flock`` when its process ends, however it ends (``SIGKILL``, out of memory,
a node reboot), so a lock file left by a dead process is stale by construction: the next run takes
it over and says whose it was. The file is never deleted (deleting a lock file while another
process waits on it would let two processes hold "the" lock); a released lock is an empty file.

Written here because no library medlearn depends on records the holder's PID in a ``flock``-ed
file without truncating it first (``filelock`` truncates on open, so a second run could not say who
holds the folder). POSIX only (Linux, macOS); where ``fcntl`` does not exist, or the file system
refuses locks (some network mounts), runs are not locked (:attr:`RunLock.unsupported` says why).
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import IO

from medlearn.io.errors import DataError

__all__ = ["RunLock", "RunLockedError", "LOCK_FILE", "held_briefly"]

#: The lock file's name inside a run folder.
LOCK_FILE = ".medlearn.lock"


class RunLockedError(DataError):
    """Another process holds the run folder.

    Attributes:
        holder: what the holder wrote into the lock file (``pid``, ``host``, ``since``, ``command``).
    """

    def __init__(self, folder: Path, holder: dict[str, str]) -> None:
        self.holder = holder
        who = f"PID {holder.get('pid', '?')}"
        if holder.get("host"):
            who += f" on {holder['host']}"
        if holder.get("since"):
            who += f" since {holder['since']}"
        super().__init__(folder, f"another medlearn run ({who}) is using this run folder; wait for it to end, "
                                 "or choose another --trainer.default_root_dir")


def _read_holder(f: IO[str]) -> dict[str, str]:
    f.seek(0)
    holder = {}
    for line in f.read().splitlines():
        key, _, value = line.partition("=")
        if value:
            holder[key.strip()] = value.strip()
    return holder


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


class RunLock:
    """An exclusive claim on a run folder for the life of this process (or until :meth:`release`).

    Args:
        folder: the run folder (created if missing).

    Attributes:
        taken_over: what a previous holder that ended without releasing left in the file (``{}``
            when the lock was free).
        unsupported: why the folder could not be locked (a file system without ``flock``), else
            ``None``; the run goes on unlocked.

    Examples:
        >>> with RunLock("runs/my-run"):  # doctest: +SKIP
        ...     trainer.fit(model, datamodule=dm)
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.taken_over: dict[str, str] = {}
        self.unsupported: str | None = None
        self._file: IO[str] | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._file is not None

    def acquire(self) -> RunLock:
        """Claim the folder.

        Raises:
            RunLockedError: another process holds it (nothing in the folder is changed).
        """
        try:
            import fcntl
        except ImportError:  # not POSIX: no locking
            return self
        if self._file is not None:
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 (held open while the lock is held)
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(f)
            f.close()
            raise RunLockedError(self.folder, holder) from None
        except OSError as exc:  # a file system without locks (ENOLCK, EOPNOTSUPP): run unlocked, say so
            f.close()
            self.unsupported = f"{self.folder} cannot be locked on its file system ({exc.strerror or exc})"
            return self
        except BaseException:
            f.close()
            raise
        previous = _read_holder(f)
        if previous.get("pid") and previous["pid"] != str(os.getpid()):
            self.taken_over = previous
        f.seek(0)
        f.truncate()
        f.write(f"pid={os.getpid()}\nhost={socket.gethostname()}\nsince={time.strftime('%Y-%m-%d %H:%M:%S')}\n"
                f"command={' '.join(sys.argv)[:500]}\n")
        f.flush()
        os.fsync(f.fileno())
        self._file = f
        return self

    def release(self) -> None:
        """Give the folder up (empties the lock file; the kernel drops the lock when the file closes)."""
        f, self._file = self._file, None
        if f is None:
            return
        try:
            f.seek(0)
            f.truncate()
            f.flush()
        finally:
            f.close()

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

    def describe_takeover(self) -> str | None:
        """One line about a stale lock this run took over (``None`` when the lock was free)."""
        if not self.taken_over:
            return None
        pid = self.taken_over.get("pid", "?")
        state = "has ended" if not pid.isdigit() or not _alive(int(pid)) else "no longer holds it"
        return (f"took over the lock of {self.folder} left by PID {pid}"
                f"{' on ' + self.taken_over['host'] if self.taken_over.get('host') else ''}, which {state}")


@contextmanager
def held_briefly(path: str | Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the file ``path`` for a short read-modify-write, waiting for
    any other holder (a report updated by a training run and an evaluation of it at the same time).

    The file is created if missing and never deleted. Where ``fcntl`` does not exist or the file
    system refuses locks, the block runs unlocked.
    """
    try:
        import fcntl
    except ImportError:
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        except OSError:  # no locks on this file system
            yield
            return
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
