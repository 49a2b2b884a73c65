"""The checks every registered method passes (the registry-driven contract test runs them).

Usable on a new module before it is registered::

    from medlearn.engine.contract import training_step_problems, reload_problems
    assert not training_step_problems(model, batch)

Both functions return a list of problems (empty = the contract holds), so a test can show all of
them at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from medlearn.engine.module import MethodModule

__all__ = ["training_step_problems", "reload_problems"]


def training_step_problems(model: MethodModule, batch: Any) -> list[str]:
    """One training batch through ``model.contract_step``: every loss finite, and each reaches every
    parameter it names with a non-zero gradient (automatic and manual optimisation alike).
    """
    problems: list[str] = []
    if not isinstance(model, MethodModule):
        return [f"{type(model).__name__} does not extend MethodModule"]
    model.train()
    losses = model.contract_step(batch)
    if not losses:
        return ["contract_step returned no loss"]
    for cl in losses:
        if cl.loss.numel() != 1 or not bool(torch.isfinite(cl.loss)):
            problems.append(f"{cl.name}: loss {cl.loss.detach().flatten()[:4].tolist()} is not a finite scalar")
            continue
        if not cl.params:
            problems.append(f"{cl.name}: names no parameters")
            continue
        model.zero_grad(set_to_none=True)
        cl.loss.backward(retain_graph=True)
        missing = [n for n, p in cl.params if p.grad is None]
        if missing:
            problems.append(f"{cl.name}: no gradient reaches {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        elif sum(float(p.grad.abs().sum()) for _, p in cl.params if p.grad is not None) == 0:
            problems.append(f"{cl.name}: every gradient is zero")
    model.zero_grad(set_to_none=True)
    return problems


def reload_problems(model: MethodModule, checkpoint: str | Path) -> list[str]:
    """The checkpoint reloads weights-only into a module whose outputs equal ``model``'s (on the
    random inputs of ``model.contract_inputs()``: one input or several).
    """
    loaded = type(model).load_from_checkpoint(checkpoint, map_location="cpu", weights_only=True)
    model.eval()
    loaded.eval()
    inputs = model.contract_inputs()
    with torch.no_grad():
        a, b = model(*inputs), loaded(*inputs)
    flat_a = a if isinstance(a, (tuple, list)) else (a,)
    flat_b = b if isinstance(b, (tuple, list)) else (b,)
    if len(flat_a) != len(flat_b) or not all(torch.equal(x, y) for x, y in zip(flat_a, flat_b)):
        return [f"{type(model).__name__}: outputs differ after reloading {checkpoint}"]
    return []
