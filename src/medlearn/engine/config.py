"""Run configurations: the LightningCLI YAML format, used by recipes as well as by ``medlearn fit``.

A config has ``seed_everything``, ``trainer`` (``Trainer`` arguments), ``model`` and ``data``
(``class_path`` + ``init_args``). ``medlearn fit --config FILE`` parses it with LightningCLI;
the demo and reproduce recipes load the very same files with :func:`load_config`, apply dotted
overrides, and build the objects with :func:`instantiate`, so a demo exercises the user's path.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

__all__ = ["load_config", "apply_overrides", "instantiate_class", "dump_config", "resolve_links", "INPUT_SIZE_LINKS"]

#: The network input size is set once per config: a model argument named here that is left out
#: (or ``null``) takes the data's ``image_size`` (the size images are decoded at). Configs that
#: decode larger than they feed the network (random crops) set both.
INPUT_SIZE_LINKS = ("image_size", "view_size")


def load_config(path: str | Path, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Read a YAML config, apply ``{"model.init_args.lr": 0.1, ...}`` overrides, then the links
    (:func:`resolve_links`), as ``medlearn fit`` does.
    """
    path = Path(path)
    with path.open(encoding="utf-8") as f:
        cfg = yaml.safe_load(f) or {}
    return resolve_links(apply_overrides(cfg, overrides or {}))


def apply_overrides(cfg: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``cfg`` with dotted-key overrides set (intermediate dicts created)."""
    out = copy.deepcopy(dict(cfg))
    for key, value in overrides.items():
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


def _class_params(class_path: str) -> set[str]:
    import inspect

    module, _, name = class_path.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    params: set[str] = set()
    for klass in cls.__mro__:  # keyword arguments handed to a parent's __init__ count too
        init = klass.__dict__.get("__init__")
        if init is not None:
            params |= {p for p in inspect.signature(init).parameters if p not in ("self", "args", "kwargs")}
    return params


def link_input_size(model: Any, data: Any) -> None:
    """Give ``model["init_args"]`` the data's ``image_size`` where its input-size argument is unset.

    ``model`` and ``data`` are ``{"class_path", "init_args"}`` mappings (a dict, or LightningCLI's
    namespace); changed in place.
    """
    try:
        size = data["init_args"]["image_size"]
        model_args = model["init_args"]
        params = _class_params(str(model["class_path"]))
    except (KeyError, TypeError, AttributeError, ImportError, ValueError):
        return
    if size is None:
        return
    for name in INPUT_SIZE_LINKS:
        if name in params and (name not in model_args or model_args[name] is None):
            model_args[name] = size


def resolve_links(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``cfg`` with the declared links applied (:data:`INPUT_SIZE_LINKS`)."""
    out = copy.deepcopy(dict(cfg))
    if isinstance(out.get("model"), Mapping) and isinstance(out.get("data"), Mapping):
        out["model"].setdefault("init_args", {})
        if out["model"]["init_args"] is None:
            out["model"]["init_args"] = {}
        link_input_size(out["model"], out["data"])
    return out


def instantiate_class(spec: Mapping[str, Any], **extra: Any) -> Any:
    """Build ``class_path(**init_args, **extra)``; nested ``class_path`` values are built first,
    as LightningCLI does (e.g. a datamodule's ``train_transform``).
    """
    module, _, name = spec["class_path"].rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    args = {k: _build(v) for k, v in dict(spec.get("init_args") or {}).items()}
    return cls(**{**args, **extra})


def _build(value: Any) -> Any:
    if isinstance(value, Mapping) and "class_path" in value:
        return instantiate_class(value)
    if isinstance(value, list):
        return [_build(v) for v in value]
    return value


def dump_config(cfg: Mapping[str, Any], path: str | Path) -> Path:
    """Write the resolved config as YAML (the run folder's ``config.yaml``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(dict(cfg), sort_keys=False), encoding="utf-8")
    return path
