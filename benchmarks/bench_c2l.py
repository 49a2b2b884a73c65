"""C2L training-step benchmark: speed and peak memory against peers, plus the bf16 loss drift.

Usage::

    python benchmarks/bench_c2l.py [--quick] [--out docs/benchmarks.md] [--json PATH] [--threads N]

A *step* is what one Lightning training step does, called directly on the module (no Trainer):
``C2L.training_step`` (two augmented views, student and shuffled/ghost-BN teacher forwards, the
InfoNCE terms, queue updates), ``zero_grad`` + ``backward`` + SGD step with the module's own
hyper-parameters, and the teacher EMA (``on_train_batch_end``). The model comes from
``configs/c2l/demo.yaml`` with the overrides of each configuration; the batch is a fixed random
``(B, 1, S, S)`` tensor in [0, 1] (content does not change the work). Lightning's logging and
data loading are not included.

Comparisons (each timed against its peer in the same run, repeats interleaved, see ``harness.py``):

* C2L (``mixup=True``) vs the plain two-view momentum-contrast step (``mixup=False``), for
  ResNet-18 at 64 px batch 32 and the demo's ``plaincnn`` at 32 px batch 64: what the two mixup
  terms cost (two more student and teacher forwards, so about 2x is expected).
* C2L ResNet-18 with ``channels_last=True`` vs the default memory format.
* C2L ResNet-18 under ``torch.autocast("cpu", dtype=torch.bfloat16)`` around the training step
  (what Lightning's ``precision="bf16-mixed"`` does on CPU) vs fp32, together with the losses of
  ``--loss-steps`` identical steps from the same seed in fp32 and in bf16.
* torch threads 2 vs 1 for the plaincnn C2L step.

``--quick`` (smoke): 2 warm-up + 3 timed steps, 1 repeat, 3 loss steps. Default: 5 warm-up + 20
timed steps, 3 interleaved repeats, 20 loss steps. The section between ``<!-- c2l:start -->`` and
``<!-- c2l:end -->`` of ``--out`` is replaced; the full results go to ``--json``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import sys
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (  # noqa: E402
    BenchConfig,
    Comparison,
    StepBench,
    compare,
    comparison_table,
    default_threads,
    machine_info,
    machine_markdown,
    markdown_table,
    run_interleaved,
    run_isolated,
    update_section,
    utc_now,
    write_json,
)

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "c2l" / "demo.yaml"
#: modules the fork server imports once, so every configuration's process starts with them loaded
PRELOAD = ["torch", "medlearn.methods.c2l.module", "medlearn.engine.config"]
SECTION = "c2l"


# -- the step (runs in the child processes) -----------------------------------------------------
def _build(spec: dict[str, Any]) -> tuple[Any, Any, Any]:
    """Model (demo config + overrides), SGD optimizer as ``C2L.configure_optimizers``, batch."""
    import torch

    from medlearn.engine.config import instantiate_class, load_config

    # training_step calls self.log without a Trainer attached: Lightning warns and skips it.
    warnings.filterwarnings("ignore", message=r".*self\.log\(\)")
    torch.manual_seed(spec.get("seed", 0))
    cfg = load_config(CONFIG)
    model = instantiate_class(cfg["model"], backbone=spec["backbone"], view_size=spec["size"],
                              mixup=spec["mixup"], channels_last=spec.get("channels_last", False))
    model.train()
    h = model.hparams
    opt = torch.optim.SGD(model.student.parameters(), lr=h.optimizer_lr, momentum=h.momentum,
                          weight_decay=h.weight_decay)
    g = torch.Generator().manual_seed(1234)
    batch = {"image": torch.rand(spec["batch"], 1, spec["size"], spec["size"], generator=g)}
    return model, opt, batch


def _step_fn(model: Any, opt: Any, batch: dict[str, Any], precision: str) -> Any:
    """One training step as Lightning runs it (autocast around ``training_step`` only for bf16)."""
    import torch

    def autocast() -> Any:
        if precision == "bf16":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def step() -> Any:
        opt.zero_grad(set_to_none=True)
        with autocast():
            loss = model.training_step(batch, 0)
        loss.backward()
        opt.step()
        model.on_train_batch_end(loss, batch, 0)
        return loss.detach()

    return step


def make_c2l_step(spec: dict[str, Any]) -> StepBench:
    """Harness factory: a C2L training step for ``spec`` (backbone, size, batch, mixup, channels_last,
    precision)."""
    model, opt, batch = _build(spec)
    n_params = sum(p.numel() for p in model.student.parameters())
    return StepBench(_step_fn(model, opt, batch, spec.get("precision", "32")), spec["batch"],
                     {"student_params": n_params, "queue_size": model.hparams.queue_size})


def loss_drift(spec: dict[str, Any], steps: int) -> dict[str, Any]:
    """Losses of ``steps`` identical steps (same seed, batch and random draws) in fp32 and bf16."""
    out: dict[str, Any] = {"steps": steps}
    for precision in ("32", "bf16"):
        model, opt, batch = _build(spec)
        step = _step_fn(model, opt, batch, precision)
        out[precision] = [float(step()) for _ in range(steps)]
    a, b = out["32"], out["bf16"]
    out["final_abs_diff"] = abs(a[-1] - b[-1])
    out["final_rel_diff"] = abs(a[-1] - b[-1]) / max(abs(a[-1]), 1e-12)
    out["max_abs_diff"] = max(abs(x - y) for x, y in zip(a, b))
    return out


# -- the plan (parent) ----------------------------------------------------------------------------
def plan(threads: int) -> tuple[list[BenchConfig], list[Comparison], dict[str, Any]]:
    """Configurations (identical ones shared) and comparisons; also the spec of the loss drift."""
    configs: dict[str, BenchConfig] = {}

    def add(name: str, spec: dict[str, Any], n_threads: int) -> str:
        for c in configs.values():  # identical spec + threads: measure once, use in several comparisons
            if c.spec == spec and c.threads == n_threads:
                return c.name
        configs[name] = BenchConfig(name, make_c2l_step, spec, threads=n_threads)
        return name

    r18 = {"backbone": "resnet18", "size": 64, "batch": 32, "mixup": True, "channels_last": False,
           "precision": "32"}
    pcnn = {"backbone": "plaincnn", "size": 32, "batch": 64, "mixup": True, "channels_last": False,
            "precision": "32"}
    t = threads
    r18_c2l = add("r18-c2l", r18, t)
    r18_moco = add("r18-moco", {**r18, "mixup": False}, t)
    r18_cl = add("r18-c2l-channels_last", {**r18, "channels_last": True}, t)
    r18_bf16 = add("r18-c2l-bf16", {**r18, "precision": "bf16"}, t)
    pc_c2l = add("plaincnn-c2l", pcnn, t)
    pc_moco = add("plaincnn-moco", {**pcnn, "mixup": False}, t)
    pc_t1 = add("plaincnn-c2l-1thread", pcnn, 1)
    pc_t2 = add("plaincnn-c2l-2threads", pcnn, 2)
    comps = [
        Comparison("mixup terms: ResNet-18, 64 px, batch 32", r18_c2l, r18_moco,
                   "~2 expected (twice the forwards)", "C2L", "two-view MoCo (mixup=False)"),
        Comparison("mixup terms: plaincnn (demo), 32 px, batch 64", pc_c2l, pc_moco,
                   "~2 expected", "C2L", "two-view MoCo (mixup=False)"),
        Comparison("memory format: ResNet-18 C2L, 64 px, batch 32", r18_cl, r18_c2l,
                   "< 1: channels_last is faster", "channels_last", "default (NCHW)"),
        Comparison("precision: ResNet-18 C2L, 64 px, batch 32", r18_bf16, r18_c2l,
                   "< 1: bf16 is faster (needs CPU bf16 support)", "bf16 autocast", "fp32"),
        Comparison("threads: plaincnn C2L, 32 px, batch 64", pc_t2, pc_t1,
                   "< 1: 2 threads are faster (only on idle cores)", "2 threads", "1 thread"),
    ]
    return list(configs.values()), comps, r18


def render(meta: dict[str, Any], rows: list[dict[str, Any]], drift: dict[str, Any]) -> str:
    """The markdown section."""
    s = meta["settings"]
    lines = [
        "## C2L (Comparing to Learn)",
        "",
        f"Command: `{meta['command']}`  ",
        f"Date: {meta['date']}  ",
        f"Settings: {s['warmup']} warm-up + {s['iters']} timed steps per repeat, {s['repeats']} interleaved "
        f"repeat(s), median; torch threads {s['threads']} unless the row says otherwise; "
        f"wall time {meta['wall_s']:.0f} s.",
    ]
    if s["quick"]:
        lines += ["", "> Smoke run (`--quick`): too few steps for the numbers to mean much."]
    lines += [
        "",
        "Machine:",
        "",
        machine_markdown(meta["machine"]),
        "",
        "A step = `C2L.training_step` (two views, student + ghost-BN teacher forwards, InfoNCE terms, "
        "queue) + backward + SGD + teacher EMA, called directly (no Trainer, no data loading), "
        "model from `configs/c2l/demo.yaml` (queue 512, tau 0.2) with the row's backbone and view size. "
        "Time ratio = method ms/step / peer ms/step (medians; per-repeat range in brackets). "
        "Peak MiB = the process's peak resident set above the one after imports and model build.",
        "",
        comparison_table(rows),
        "",
        f"bf16 vs fp32 loss after {drift['steps']} identical ResNet-18 C2L steps (same seed, batch and "
        "random draws; autocast around `training_step`, the loss itself is computed in fp32):",
        "",
        markdown_table(["steps", "fp32 loss", "bf16 loss", "abs diff (last step)", "rel diff (last step)",
                        "max abs diff (any step)"],
                       [[drift["steps"], f"{drift['32'][-1]:.4f}", f"{drift['bf16'][-1]:.4f}",
                         f"{drift['final_abs_diff']:.4f}", f"{100 * drift['final_rel_diff']:.2f}%",
                         f"{drift['max_abs_diff']:.4f}"]], "rrrrrr"),
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke: 2 warm-up + 3 timed steps, 1 repeat")
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"), help="markdown file to update")
    p.add_argument("--json", default=None, help="results JSON (default: next to --out, '<stem>-c2l.json')")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: MEDLEARN_THREADS or min(2, cores), as set_cpu_threads)")
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--iters", type=int, default=None)
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--loss-steps", type=int, default=None, help="steps of the fp32/bf16 loss comparison")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    warmup = args.warmup if args.warmup is not None else (2 if args.quick else 5)
    iters = args.iters if args.iters is not None else (3 if args.quick else 20)
    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 3)
    loss_steps = args.loss_steps if args.loss_steps is not None else (3 if args.quick else 20)
    threads = args.threads if args.threads is not None else default_threads()
    out = Path(args.out)
    json_path = Path(args.json) if args.json else out.with_name(out.stem + "-c2l.json")

    env = " ".join(f"{k}={os.environ[k]}" for k in ("MEDLEARN_THREADS",) if k in os.environ)
    cmd = " ".join(x for x in [env, "python benchmarks/bench_c2l.py", shlex.join(sys.argv[1:] if argv is None
                                                                                else argv)] if x)
    t0 = time.perf_counter()
    machine = machine_info()
    configs, comps, r18 = plan(threads)
    results = run_interleaved(configs, warmup, iters, repeats, preload=PRELOAD)
    rows = compare(results, comps)
    print(f"[bench] loss drift: {loss_steps} ResNet-18 steps in fp32 and bf16", file=sys.stderr, flush=True)
    drift = loss_drift_isolated(r18, loss_steps, threads)
    try:
        machine["loadavg_end"] = list(os.getloadavg())
    except OSError:
        pass
    meta = {"command": cmd, "date": utc_now(), "machine": machine, "wall_s": time.perf_counter() - t0,
            "settings": {"quick": args.quick, "warmup": warmup, "iters": iters, "repeats": repeats,
                         "loss_steps": loss_steps, "threads": threads}}
    body = render(meta, rows, drift)
    update_section(out, SECTION, body)
    write_json(json_path, {**meta, "configs": results, "comparisons": rows, "loss_drift": drift})
    print(body)
    print(f"\nwrote {out} (section {SECTION!r}) and {json_path}", file=sys.stderr)
    return 0


def loss_drift_isolated(spec: dict[str, Any], steps: int, threads: int) -> dict[str, Any]:
    """:func:`loss_drift` in a fresh process with ``threads`` torch threads."""
    return run_isolated(loss_drift, {**spec, "precision": "32"}, steps, threads=threads, preload=PRELOAD)


if __name__ == "__main__":
    sys.exit(main())
