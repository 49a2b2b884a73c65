"""The layering rules of docs/architecture.md, checked on the source and in a fresh interpreter.

Every import counts, including the lazy ones inside functions. The rule that no dataset module
imports another is in ``tests/data/test_layouts.py::test_import_rules``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "medlearn"

#: package -> the medlearn packages it may import (lower layers only; :data:`BASE` is below them all).
ALLOWED: dict[str, set[str]] = {
    "io": set(),
    "nn": {"io"},
    "metrics": {"io"},
    "losses": {"io", "nn", "metrics"},
    "data": {"io", "metrics"},
    "synth": {"io", "data"},
    "engine": {"io", "data", "nn", "metrics", "losses"},
    "tasks": {"io", "data", "nn", "metrics", "losses", "engine"},
}
LIGHT = ("io", "nn", "losses", "metrics")
#: Top-level modules below every package, importable from anywhere: the thread policy
#: (``runtime``) and the progress / quiet switch (``console``). They import no medlearn package,
#: nor torch or Lightning when imported.
BASE = ("runtime", "console")


def _imports(path: Path, package: tuple[str, ...] | None = None) -> set[str]:
    """Absolute medlearn modules imported anywhere in ``path`` (relative imports resolved against
    ``package``, by default the file's own package)."""
    if package is None:
        package = path.relative_to(SRC.parent).with_suffix("").parts[:-1]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("medlearn")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[: len(package) - node.level + 1])
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.startswith("medlearn"):
                out.add(mod)
                out |= {f"{mod}.{a.name}" for a in node.names}
    return out


def _package_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _modules(package: str) -> list[Path]:
    return sorted((SRC / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_shared_packages_import_only_lower_layers(package):
    bad = {}
    for path in _modules(package):
        used = {_package_of(m) for m in _imports(path)} - {package, None, *BASE}
        wrong = {p for p in used if (SRC / p).is_dir() or (SRC / f"{p}.py").is_file()} - ALLOWED[package]
        if wrong:
            bad[str(path.relative_to(SRC))] = sorted(wrong)
    assert not bad, f"imports above their layer (or of methods / registry / cli): {bad}"


def test_no_method_imports_another():
    bad = {}
    for folder in sorted(p for p in (SRC / "methods").iterdir() if p.is_dir() and not p.name.startswith("_")):
        for path in folder.rglob("*.py"):
            others = {m.split(".")[2] for m in _imports(path) if m.startswith("medlearn.methods.")} - {folder.name}
            if others:
                bad[str(path.relative_to(SRC))] = sorted(others)
    assert not bad, f"a method imports another method: {bad}"


def test_the_rules_see_lazy_and_relative_imports(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from medlearn.engine import trainer\n    from ..methods import c2l\n")
    found = _imports(probe, ("medlearn", "nn"))
    assert {"medlearn.engine", "medlearn.methods"} <= found


def _third_party(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            out.add(node.module.split(".")[0])
    return out


def test_light_packages_import_neither_lightning_nor_matplotlib():
    heavy = {"lightning", "pytorch_lightning", "matplotlib"}
    bad = {str(p.relative_to(SRC)): sorted(_third_party(p) & heavy) for pkg in LIGHT for p in _modules(pkg)
           if _third_party(p) & heavy}
    assert not bad, f"light packages import {bad}"


def test_light_packages_load_no_lightning_in_a_fresh_interpreter():
    # (matplotlib is not checked here: MONAI itself imports it when it is installed)
    modules = sorted(".".join(p.relative_to(SRC.parent).with_suffix("").parts).removesuffix(".__init__")
                     for pkg in LIGHT for p in _modules(pkg))
    code = ("import importlib, sys\n"
            f"for m in {modules!r}:\n    importlib.import_module(m)\n"
            "print(sorted(k for k in ('lightning', 'pytorch_lightning') if k in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    assert out.stdout.strip() == "[]", f"importing {LIGHT} loaded {out.stdout.strip()}"


@pytest.mark.parametrize("module", BASE)
def test_base_modules_import_no_medlearn_package(module):
    used = {_package_of(m) for m in _imports(SRC / f"{module}.py")} - {None, *BASE}
    assert not used, f"medlearn.{module} imports {sorted(used)}"


def test_base_modules_load_neither_torch_nor_lightning():
    code = ("import sys\n" + "".join(f"import medlearn.{m}\n" for m in BASE)
            + "print(sorted(k for k in ('torch', 'lightning', 'pytorch_lightning') if k in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    assert out.stdout.strip() == "[]", f"importing {BASE} loaded {out.stdout.strip()}"
