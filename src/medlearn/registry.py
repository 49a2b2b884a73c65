"""Method registry: name -> what a method provides.

Every method folder registers one :class:`MethodSpec` when ``medlearn.methods`` is imported.
``medlearn list``, ``medlearn demo``, ``medlearn reproduce`` and the contract tests iterate this
registry; nothing is discovered from file names.

Examples:
    >>> from medlearn.registry import get_method, list_methods
    >>> [m.name for m in list_methods()]  # doctest: +SKIP
    ['c2l']
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["MethodSpec", "DemoResult", "UnknownMethodError", "register", "get_method", "list_methods", "config_dir"]

_REGISTRY: dict[str, MethodSpec] = {}


@dataclass
class DemoResult:
    """What a demo reports back to ``medlearn demo``'s summary table."""

    method: str
    headline: str  # e.g. "mean AUC @50 labels: C2L 0.91 vs scratch 0.80"
    passed: bool  # did the method beat its baseline in this run
    seconds: float
    run_dir: Path
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class MethodSpec:
    """A registered method.

    Attributes:
        name: CLI name (``medlearn demo NAME``).
        paper: short citation.
        summary: what a user does with it, one line.
        contract_configs: demo config files (in ``configs/NAME/``) that the contract tests build.
        write_contract_data: writes a tiny synthetic dataset in the method's public layout into a
            folder and returns the data root to put into those configs.
        demo: ``demo(out_dir) -> DemoResult``, the built-in demo (minutes on a CPU).
        reproduce: ``reproduce(out_dir, **options) -> str`` (markdown table), or ``None``.
        contract_data_for: per-config data writers for configs whose layout differs from
            ``write_contract_data``'s (e.g. a BraTS segmentation config of a method pretrained on CT).
        encoders: the method's modules whose checkpoints offer an encoder for transfer, and its
            key prefix there (``{C2L: "student.backbone."}``). :func:`register` declares it on the
            class; every checkpoint then carries it, and ``pretrained: <ckpt>`` in a downstream
            config finds the encoder without a prefix table in the engine.
    """

    name: str
    paper: str
    summary: str
    contract_configs: list[str]
    write_contract_data: Callable[[Path], Path]
    demo: Callable[..., DemoResult]
    reproduce: Callable[..., str] | None = None
    contract_data_for: dict[str, Callable[[Path], Path]] = field(default_factory=dict)
    encoders: dict[type, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def contract_writer(self, config: str) -> Callable[[Path], Path]:
        """The data writer for one of ``contract_configs``."""
        return self.contract_data_for.get(config, self.write_contract_data)


def register(spec: MethodSpec) -> MethodSpec:
    """Add ``spec`` to the registry (re-registering the same name replaces it).

    Declares ``spec.encoders`` on the module classes (their ``encoder_prefix``).
    """
    for cls, prefix in spec.encoders.items():
        if not prefix.endswith("."):
            raise ValueError(f"{spec.name}: encoder prefix {prefix!r} of {cls.__name__} must end with '.'")
        cls.encoder_prefix = prefix  # type: ignore[attr-defined]
    _REGISTRY[spec.name] = spec
    return spec


def _load() -> None:
    import medlearn.methods  # noqa: F401  (registers every method)


class UnknownMethodError(KeyError):
    """A method name that is not registered (the message lists the registered ones)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown method"


def get_method(name: str) -> MethodSpec:
    """The registered method ``name``.

    Raises:
        UnknownMethodError: (a ``KeyError``) with the list of known names.
    """
    _load()
    if name not in _REGISTRY:
        raise UnknownMethodError(f"unknown method {name!r}; registered: {', '.join(sorted(_REGISTRY)) or 'none'}")
    return _REGISTRY[name]


def list_methods() -> list[MethodSpec]:
    """All registered methods, in registration order."""
    _load()
    return list(_REGISTRY.values())


def config_dir(method: str) -> Path:
    """Folder holding ``configs/<method>/*.yaml`` (shipped inside the package)."""
    return Path(__file__).parent / "configs" / method
