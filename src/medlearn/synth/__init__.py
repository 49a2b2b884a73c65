"""Phantom generators that write public dataset layouts to disk.

Every generator here *writes files* in the exact layout of a public dataset (for example the NIH
ChestX-ray14 layout of Wang et al., "ChestX-ray8", CVPR 2017), so that demos and tests go through
the same readers in :mod:`medlearn.data` that a user with the real data hits.

Generators register themselves under a short name with :func:`register_synth`; the CLI
(``medlearn synth NAME --out DIR ...``) looks them up with :func:`get_synth` and builds its options
from the function signature, so a generator must:

* take ``out`` (the output folder) as its first argument and return the folder it wrote;
* take every other option as a keyword argument with a type hint and a default;
* have a docstring whose first line is the help text.

Examples:
    >>> from medlearn.synth import get_synth, list_synth
    >>> "chestxray" in list_synth()
    True
    >>> get_synth("chestxray")(out="/tmp/cxr14", n_images=40, size=32)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["SYNTHESIZERS", "get_synth", "list_synth", "prepare_out_dir", "register_synth", "held_out_count"]

F = TypeVar("F", bound=Callable[..., Any])

#: name -> generator function; fill it with :func:`register_synth`.
SYNTHESIZERS: dict[str, Callable[..., Any]] = {}
_HELP: dict[str, str] = {}


def register_synth(name: str, help: str) -> Callable[[F], F]:  # noqa: A002 - the CLI's word
    """Register a phantom generator under ``name``.

    Args:
        name: the short name users type (``medlearn synth NAME``).
        help: one line describing what the generator writes.

    Returns:
        A decorator that records the function and returns it unchanged.

    Raises:
        ValueError: if ``name`` is empty or already taken by a different function.
    """
    if not name or not name.strip():
        raise ValueError("synthesizer name must be a non-empty string")

    def decorator(fn: F) -> F:
        existing = SYNTHESIZERS.get(name)
        key = (fn.__module__, fn.__qualname__)
        # a module reload registers the same function again: allowed
        if existing is not None and (existing.__module__, existing.__qualname__) != key:
            owner = f"{existing.__module__}.{existing.__qualname__}"
            raise ValueError(f"synthesizer {name!r} is already registered ({owner})")
        SYNTHESIZERS[name] = fn
        _HELP[name] = help
        return fn

    return decorator


def get_synth(name: str) -> Callable[..., Any]:
    """Return the generator registered under ``name``.

    Args:
        name: a registered name, see :func:`list_synth`.

    Returns:
        The generator function; call it as ``fn(out=..., **options)``.

    Raises:
        KeyError: if no generator has that name (the message lists the known names).
    """
    try:
        return SYNTHESIZERS[name]
    except KeyError:
        known = ", ".join(sorted(SYNTHESIZERS)) or "(none)"
        raise KeyError(f"unknown synthesizer {name!r}; known: {known}") from None


def prepare_out_dir(out: str | Path, overwrite: bool) -> Path:
    """The output folder of a generator: refuse a file, and a non-empty folder unless ``overwrite``.

    Raises:
        FileExistsError: ``out`` is a file, or a non-empty folder and ``overwrite`` is False.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} is not empty; refusing to write into it (pass overwrite=True)")
    return out


def held_out_count(n_test: int | None, n: int, what: str) -> int:
    """How many of ``n`` items a generator puts in its test split.

    ``n_test`` when given; by default a quarter (at least 1 and at most ``n - 1`` when ``n > 1``,
    else 0).

    Raises:
        ValueError: ``n_test`` outside ``[0, n]`` (the message names the ``what`` argument).
    """
    if n_test is None:
        n_test = min(max(round(0.25 * n), 1), n - 1) if n > 1 else 0
    if not 0 <= n_test <= n:
        raise ValueError(f"n_test must be in [0, {what}={n}], got {n_test}")
    return n_test


def list_synth() -> dict[str, str]:
    """List the registered generators.

    Returns:
        ``{name: help}`` sorted by name (iterating it yields the names).
    """
    return {name: _HELP[name] for name in sorted(SYNTHESIZERS)}


# Generators register themselves on import; keep these imports below the registry definitions.
from medlearn.synth import acdc as _acdc  # noqa: E402,F401
from medlearn.synth import asoct as _asoct  # noqa: E402,F401
from medlearn.synth import brats as _brats  # noqa: E402,F401
from medlearn.synth import chestxray as _chestxray  # noqa: E402,F401
from medlearn.synth import endoscopy as _endoscopy  # noqa: E402,F401
from medlearn.synth import fundus as _fundus  # noqa: E402,F401
from medlearn.synth import headct as _headct  # noqa: E402,F401
from medlearn.synth import inbreast as _inbreast  # noqa: E402,F401
from medlearn.synth import isic as _isic  # noqa: E402,F401
from medlearn.synth import kits19 as _kits19  # noqa: E402,F401
from medlearn.synth import neurons as _neurons  # noqa: E402,F401
from medlearn.synth import oneshot as _oneshot  # noqa: E402,F401
from medlearn.synth import rings as _rings  # noqa: E402,F401
