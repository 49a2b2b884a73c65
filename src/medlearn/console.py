"""What medlearn's long commands show while they work: progress bars on a terminal, silence elsewhere.

This module owns three decisions that the ``medlearn`` command, the phantom writers and the
experiment runner share:

* **One quiet switch for the whole process and its children.** :func:`set_quiet` (``--quiet`` on
  every command) sets the environment variable ``MEDLEARN_QUIET=1``, so a data-loader worker or a
  child process started by a recipe inherits it; :func:`is_quiet` reads it. Quiet means no bars,
  no per-run or per-epoch lines and no Lightning progress (:func:`lightning_progress` turns any
  requested mode into ``"none"``); a command's result lines and real warnings still print.
* **Bars only where someone watches.** :func:`track` wraps a loop in a ``rich.progress`` bar with
  the count, the elapsed time and the time left, drawn on standard error, and only when standard
  error is a terminal and quiet is off. In a CI log, a pipe or a file it yields the items and
  writes nothing. ``track`` only iterates: it draws no random numbers and changes no result.
* **medlearn's log on the console.** :func:`show_log` lets the ``medlearn`` command print what
  medlearn's modules log (``logging.getLogger("medlearn.*")``): warnings always, information lines
  (a video grouping derived from frame differences and where it was kept) unless quiet, each as
  one ``medlearn: ...`` line on standard error. A library user's own logging setup is left alone.
* **Lines with a count and the time left for steps of minutes.** :class:`Countdown` counts the runs
  of a reproduction or the demos of ``medlearn demo`` and estimates the time left from the mean
  duration of the steps timed so far; :func:`say` prints such a line unless quiet.

Like :mod:`medlearn.runtime`, this module sits below every package and imports neither torch nor
Lightning (``rich`` is loaded when a bar is drawn).

Examples:
    >>> from medlearn.console import track
    >>> [i * i for i in track(range(4), description="squares")]  # no bar: not a terminal here
    [0, 1, 4, 9]
    >>> clock = Countdown(total=4, noun="demo")
    >>> step = clock.next()
    >>> clock.timed(30.0)
    >>> clock.line(step, "c2l", "done", seconds=30.0)
    '[demo 1 of 4] c2l: done in 30 s; 0 s so far, about 1.5 min left'
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator, Sized
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console

__all__ = ["QUIET_ENV", "is_quiet", "set_quiet", "lightning_progress", "bars_enabled", "track", "say",
           "format_duration", "Countdown", "show_log"]

#: Environment variable of the quiet switch (``1``, ``true``, ``yes`` or ``on``: quiet).
QUIET_ENV = "MEDLEARN_QUIET"
_TRUE = ("1", "true", "yes", "on")

T = TypeVar("T")

_stderr_console: Console | None = None


# ----------------------------------------------------------------------------------------- quiet
def is_quiet() -> bool:
    """Whether quiet mode is on (``MEDLEARN_QUIET`` in this process's environment)."""
    return os.environ.get(QUIET_ENV, "").strip().lower() in _TRUE


def set_quiet(quiet: bool = True) -> None:
    """Turn quiet mode on or off for this process and the processes it starts.

    Args:
        quiet: ``True`` sets ``MEDLEARN_QUIET=1``; ``False`` removes the variable.
    """
    if quiet:
        os.environ[QUIET_ENV] = "1"
    else:
        os.environ.pop(QUIET_ENV, None)


class _ConsoleLog(logging.Handler):
    """``medlearn: <message>`` on the standard error of the moment (not the one at setup)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            print(f"medlearn: {record.getMessage()}", file=sys.stderr, flush=True)
        except Exception:  # noqa: BLE001 (logging must never raise)
            self.handleError(record)


def show_log() -> None:
    """Print medlearn's log records on the console: warnings always, information unless quiet.

    Called by the ``medlearn`` command (once per command; calling it again only updates the
    level). Records still propagate to any handler the caller configured.
    """
    logger = logging.getLogger("medlearn")
    if not any(isinstance(h, _ConsoleLog) for h in logger.handlers):
        logger.addHandler(_ConsoleLog())
    logger.setLevel(logging.WARNING if is_quiet() else logging.INFO)


def lightning_progress(requested: str) -> str:
    """The Lightning progress mode to use: ``"none"`` in quiet mode, else ``requested``.

    Args:
        requested: ``"rich"``, ``"line"``, ``"none"`` or ``"auto"``.
    """
    return "none" if is_quiet() else requested


def say(message: str) -> None:
    """Print a progress line to standard output (flushed), unless quiet."""
    if not is_quiet():
        print(message, flush=True)


# ------------------------------------------------------------------------------------------- bars
def _default_console() -> Console:
    """One console on standard error for every bar (looked up at each write, so a replaced
    ``sys.stderr`` is followed).
    """
    global _stderr_console
    if _stderr_console is None:
        from rich.console import Console

        _stderr_console = Console(stderr=True)
    return _stderr_console


def bars_enabled(console: Console | None = None) -> bool:
    """Whether :func:`track` draws a bar: quiet is off and the console writes to a terminal.

    Args:
        console: the ``rich`` console the bar would be drawn on (default: standard error).
    """
    if is_quiet():
        return False
    if console is None:
        stream = sys.stderr
        if stream is None or not stream.isatty():
            return False
        console = _default_console()
    return bool(console.is_terminal)


def track(iterable: Iterable[T], total: int | None = None, description: str = "working",
          console: Console | None = None) -> Iterator[T]:
    """Yield the items of ``iterable``, with a progress bar on a terminal.

    The bar shows ``description``, the count (``12/40``), the elapsed time and the time left; it
    is drawn with ``rich.progress`` on ``console`` (default: standard error) only when
    :func:`bars_enabled`. Otherwise the items are yielded and nothing is written. The items are
    never changed, reordered or drawn from a random generator.

    Args:
        iterable: what the loop goes over.
        total: the number of items (default: ``len(iterable)`` when it has one; without a total the
            bar shows the count and the elapsed time only).
        description: what is being done, e.g. ``"head CT volumes"``.
        console: a ``rich.console.Console`` to draw on (tests pass one writing to a string).

    Yields:
        The items of ``iterable``, in order.

    Examples:
        >>> from io import StringIO
        >>> from rich.console import Console
        >>> screen = Console(file=StringIO(), force_terminal=True, width=80)
        >>> sum(track(range(3), description="cases", console=screen))
        3
        >>> "3/3" in screen.file.getvalue()
        True
    """
    if total is None and isinstance(iterable, Sized):
        total = len(iterable)
    if not bars_enabled(console):
        yield from iterable
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns: list[Any] = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TextColumn("elapsed"), TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn()]
    with Progress(*columns, console=console or _default_console()) as progress:
        task = progress.add_task(description, total=total)
        for item in iterable:
            yield item
            progress.advance(task)


# ------------------------------------------------------------------------------------------- lines
def format_duration(seconds: float) -> str:
    """``42 s``, ``4.2 min`` or ``1.5 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class Countdown:
    """Count long steps (runs, demos) and estimate the time left.

    The estimate is the mean duration of the steps timed so far (:meth:`timed`) times the steps
    left; it needs ``total`` and at least one timed step. Counted steps past ``total`` (a recipe
    that ran more than it declared) are shown without a total and without an estimate.

    Args:
        total: how many steps there will be (``None``: unknown).
        noun: what a step is called in the lines (``"run"``, ``"demo"``).

    Attributes:
        total: as given (may be changed while counting).
        index: the number of the current step (1-based; 0 before the first).
    """

    def __init__(self, total: int | None = None, noun: str = "step") -> None:
        self.total = total
        self.noun = noun
        self.index = 0
        self._durations: list[float] = []
        self._t0 = time.perf_counter()

    def next(self) -> int:
        """Count a step; returns its number (1-based)."""
        self.index += 1
        return self.index

    def timed(self, seconds: float) -> None:
        """Record how long a finished step took (its mean drives :meth:`left`)."""
        self._durations.append(float(seconds))

    @property
    def elapsed(self) -> float:
        """Seconds since the countdown was made."""
        return time.perf_counter() - self._t0

    def left(self, index: int, finished: bool) -> float | None:
        """Estimated seconds left after step ``index`` (``finished``) or before it (not yet run);
        ``None`` when there is no total or no step has been timed.
        """
        if not self.total or not self._durations or index > self.total:
            return None
        remaining = self.total - index + (0 if finished else 1)
        return remaining * sum(self._durations) / len(self._durations)

    def position(self, index: int) -> str:
        """``7 of 25``, or ``7`` without a total (or past it)."""
        return f"{index} of {self.total}" if self.total and index <= self.total else f"{index}"

    def line(self, index: int, what: str, state: str, seconds: float | None = None,
             finished: bool | None = None) -> str:
        """A progress line: ``[run 7 of 25] what: done in 40 s; 12.0 min so far, about 4.1 min left``.

        Args:
            index: the step's number.
            what: which step (a run's cell, a method's name).
            state: ``"started"``, ``"done"`` ...
            seconds: the step's own duration, shown when given.
            finished: whether step ``index`` is behind us for the estimate (default: ``seconds`` given).
        """
        own = f" in {format_duration(seconds)}" if seconds is not None else ""
        parts = [f"{format_duration(self.elapsed)} so far"]
        finished = seconds is not None if finished is None else finished
        left = self.left(index, finished)
        if left is not None and not (finished and index == self.total):  # the last step's end: nothing left
            parts.append(f"about {format_duration(left)} left")
        return f"[{self.noun} {self.position(index)}] {what}: {state}{own}; {', '.join(parts)}"
