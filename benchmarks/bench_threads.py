"""Threads and the OpenMP wait policy: a C2L demo training step and epoch, idle and with one core busy.

Usage::

    python benchmarks/bench_threads.py [--quick] [--out docs/benchmarks.md] [--json PATH] [--threads N]
                                       [--epochs N] [--note TEXT]

What is compared (``medlearn.runtime`` holds the policy):

* **old default**: ``min(2, os.cpu_count())`` torch threads with OpenMP's own wait policy. GNU
  OpenMP (bundled with the PyPI torch wheels) then spins 300,000 times (about 3 ms) after each
  parallel region before its threads sleep. The children run with ``GOMP_SPINCOUNT=300000``: an
  explicit spin count overrides the passive policy that their ``import medlearn`` now sets, and
  GNU OpenMP then holds exactly the settings it had with nothing set (``OMP_DISPLAY_ENV=VERBOSE``
  prints the same; the section records the spin count each side's children read).
* **new default**: ``medlearn.runtime.default_threads()`` threads (``MEDLEARN_THREADS``, else
  ``min(2, usable cores)``) with the wait policy ``import medlearn`` sets (``OMP_WAIT_POLICY=PASSIVE``).
* **1 thread**, for reference (no OpenMP worker threads to wait).

each on an **idle** machine and with **one core busy**: a separate process running
``while True: pass`` (not pinned, like another user's job), resumed (``SIGCONT``) only around the
timed repeats of the loaded configurations and stopped (``SIGSTOP``) otherwise, so all six
configurations' repeats interleave in one run.

Every configuration runs in its own ``spawn`` child started with its OpenMP environment, because
OpenMP reads it once, when the child imports torch (a fork-server child would inherit the server's
runtime as it was initialised). The step is ``bench_c2l``'s C2L demo step: ``configs/c2l/demo.yaml``
(plaincnn, 32 px views, batch 64, mixup), ``training_step`` + backward + SGD + teacher EMA, no
Trainer. The epoch comparison runs the demo's pretraining itself (Lightning ``Trainer`` from
``make_trainer``, data loading, checkpoints) for ``--epochs`` epochs on the demo's synthetic
ChestX-ray14 set (1600 images, 64 px), old vs new default, idle and loaded; each run in a fresh
``spawn`` child.

``--quick`` (smoke): 1 warm-up + 3 timed steps, 1 repeat, 1 epoch on 400 images. Default: 3
warm-up + 10 timed steps, 3 interleaved repeats, 2 epochs (the old default with a core busy takes
seconds per step, so this already runs several minutes). The section
between ``<!-- threads:start -->`` and ``<!-- threads:end -->`` of ``--out`` is replaced; the full
results go to ``--json``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_c2l import CONFIG, make_c2l_step  # noqa: E402
from harness import (  # noqa: E402
    BenchConfig,
    Budget,
    Comparison,
    bench_parser,
    command_line,
    compare,
    comparison_table,
    finish,
    machine_info,
    markdown_table,
    run_interleaved,
    run_isolated,
    run_meta,
    section_header,
)

SECTION = "threads"
#: the C2L demo step (configs/c2l/demo.yaml at its demo size and batch)
DEMO_STEP = {"backbone": "plaincnn", "size": 32, "batch": 64, "mixup": True, "channels_last": False,
             "precision": "32"}
#: children's OpenMP environment (None: removed before the child starts)
ENV_OLD: dict[str, str | None] = {"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": "300000"}
ENV_NEW: dict[str, str | None] = {"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": None}


# -- the background load ------------------------------------------------------------------------
class BusyCore:
    """One separate process spinning a core, paused until :meth:`on` resumes it."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        os.kill(self.proc.pid, signal.SIGSTOP)

    @contextlib.contextmanager
    def on(self, settle_s: float = 0.3) -> Iterator[None]:
        os.kill(self.proc.pid, signal.SIGCONT)
        time.sleep(settle_s)  # let the scheduler give it a core before timing starts
        try:
            yield
        finally:
            os.kill(self.proc.pid, signal.SIGSTOP)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


class OtherLoad:
    """CPU time other processes (not this run and its children) used while the run went on.

    System-wide busy time from ``/proc/stat`` (steal included: another VM's use of the host) minus
    this process's own time and that of its reaped children (``os.times``), over the wall time:
    the average number of cores taken by someone else. ``None`` where ``/proc/stat`` is missing.
    """

    def __init__(self) -> None:
        self.t0, self.busy0, self.own0 = time.perf_counter(), self._busy_s(), self._own_s()

    @staticmethod
    def _busy_s() -> float | None:
        try:
            with open("/proc/stat", encoding="ascii") as f:
                v = [int(x) for x in f.readline().split()[1:9]]
        except (OSError, ValueError):
            return None
        return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait

    @staticmethod
    def _own_s() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def cores(self) -> float | None:
        """Average cores used by other processes since construction (call after the children are reaped)."""
        busy = self._busy_s()
        if busy is None or self.busy0 is None:
            return None
        other = (busy - self.busy0) - (self._own_s() - self.own0)
        return max(0.0, other) / (time.perf_counter() - self.t0)


def openmp_spincount(env: dict[str, str | None], code: str = "import medlearn, torch") -> str:
    """GNU OpenMP's spin count as a child started with ``env`` and running ``code`` reads it."""
    child = {k: v for k, v in os.environ.items()}
    for k, v in {**env, "OMP_DISPLAY_ENV": "VERBOSE"}.items():
        if v is None:
            child.pop(k, None)
        else:
            child[k] = v
    out = subprocess.run([sys.executable, "-c", code], env=child, capture_output=True,
                         text=True, timeout=300)
    for line in out.stderr.splitlines():
        if line.strip().startswith("GOMP_SPINCOUNT"):
            return line.split("=", 1)[1].strip().strip("'")
    return "? (not GNU OpenMP)"


# -- the demo epoch (runs in a child) ------------------------------------------------------------
def write_demo_data(root: str, n_images: int) -> str:
    """The C2L demo's synthetic ChestX-ray14 set (as ``methods/c2l/recipe.py`` writes it)."""
    from medlearn.synth.chestxray import write_chestxray14

    write_chestxray14(root, n_images=n_images, size=64, seed=0, overwrite=True)
    return root


def demo_epochs(root: str, run_dir: str, epochs: int) -> dict[str, Any]:
    """Pretrain as the C2L demo does (its config, ``make_trainer``) for ``epochs``; seconds per epoch."""
    import warnings

    from lightning.pytorch import Callback

    from medlearn.engine.config import instantiate_class, load_config
    from medlearn.engine.seed import seed_everything
    from medlearn.engine.trainer import make_trainer

    warnings.filterwarnings("ignore", message=".*does not have many workers.*")

    class EpochSeconds(Callback):
        def __init__(self) -> None:
            self.t0, self.seconds = 0.0, []

        def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            self.t0 = time.perf_counter()

        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            self.seconds.append(time.perf_counter() - self.t0)

    cfg = load_config(CONFIG, {"data.init_args.root": root})
    seed_everything(int(cfg["seed_everything"]), workers=True, verbose=False)
    model, dm = instantiate_class(cfg["model"]), instantiate_class(cfg["data"])
    timer = EpochSeconds()
    monitor, mode = getattr(model, "monitor", (None, "max"))
    tkw = {k: v for k, v in cfg["trainer"].items() if k not in ("default_root_dir", "max_epochs")}
    trainer = make_trainer(run_dir, max_epochs=epochs, monitor=monitor, mode=mode, progress="none", report=False,
                           callbacks=[timer], **tkw)
    trainer.fit(model, datamodule=dm)
    import torch

    return {"epoch_s": timer.seconds, "steps_per_epoch": int(trainer.num_training_batches),
            "threads": torch.get_num_threads()}


# -- the plan (parent) ------------------------------------------------------------------------------
SETTINGS = ("1thread", "old", "new")
MACHINES = ("idle", "loaded")


def plan(old_threads: int, new_threads: int) -> tuple[list[BenchConfig], list[Comparison]]:
    """Six configurations (setting x machine) and the comparisons read from them."""
    settings = {"1thread": (1, ENV_NEW), "old": (old_threads, ENV_OLD), "new": (new_threads, ENV_NEW)}
    configs = [BenchConfig(f"{m}-{s}", make_c2l_step, DEMO_STEP, threads=settings[s][0], env=settings[s][1])
               for m in MACHINES for s in SETTINGS]
    new, old = f"new default ({new_threads} threads, passive)", f"old default ({old_threads} threads, OpenMP default)"
    comps = [
        Comparison("idle machine: new vs old default", "idle-new", "idle-old", "~1: no cost when idle", new, old),
        Comparison("one core busy: new vs old default", "loaded-new", "loaded-old",
                   "< 1: no thread spinning on a core it lacks", new, old),
        Comparison("idle machine: new default vs 1 thread", "idle-new", "idle-1thread",
                   "< 1: the second thread helps when idle", new, "1 thread"),
        Comparison("one core busy: new default vs 1 thread", "loaded-new", "loaded-1thread",
                   "~1: little lost when a core is taken", new, "1 thread"),
    ]
    return configs, comps


def run_epochs(busy: BusyCore, old_threads: int, new_threads: int, epochs: int, n_images: int,
               work: Path) -> dict[str, Any]:
    """Demo pretraining epochs: old and new default, idle and loaded (order old new | new old)."""
    root = write_demo_data(str(work / "cxr"), n_images)  # here: its CPU time counts as this run's
    out: dict[str, Any] = {}
    order = [("idle", "old"), ("idle", "new"), ("loaded", "new"), ("loaded", "old")]
    for machine, setting in order:
        threads, env = (old_threads, ENV_OLD) if setting == "old" else (new_threads, ENV_NEW)
        print(f"[bench] demo epochs: {machine} machine, {setting} default", file=sys.stderr, flush=True)
        with busy.on() if machine == "loaded" else contextlib.nullcontext():
            t0 = time.perf_counter()
            res = run_isolated(demo_epochs, root, str(work / f"run-{machine}-{setting}"), epochs,
                               threads=threads, env=env)
            res["wall_s"] = time.perf_counter() - t0
        out[f"{machine}-{setting}"] = res
        print(f"[bench]   epochs: {', '.join(f'{s:.1f}' for s in res['epoch_s'])} s", file=sys.stderr, flush=True)
    return out


def render(meta: dict[str, Any], results: dict[str, Any], rows: list[dict[str, Any]], epochs: dict[str, Any] | None,
           spin: dict[str, str], old_threads: int, new_threads: int, note: str) -> str:
    """The markdown section."""
    s = meta["settings"]
    lines = section_header(
        "Threads and the OpenMP wait policy (C2L demo step and epoch)", meta,
        f"{s['warmup']} warm-up + {s['iters']} timed steps per repeat, {s['repeats']} interleaved repeat(s), "
        f"median; old default {old_threads} threads, new default {new_threads} threads")
    other = meta.get("other_cores")
    load = (f"other processes used {other:.2f} cores on average during the run (`/proc/stat` busy time "
            "minus this run's own)" if other is not None else "")
    if load or note:
        lines += ["Background load: " + "; ".join(x for x in (load, note) if x) + ".", ""]
    lines += [
        "Old default: torch threads `min(2, os.cpu_count())` with OpenMP's own wait policy (GNU OpenMP "
        f"spins about 3 ms before sleeping; children read GOMP_SPINCOUNT={spin['old']}). New default: "
        "`medlearn.runtime.default_threads()` with `OMP_WAIT_POLICY=PASSIVE` as `import medlearn` sets it "
        f"(children read GOMP_SPINCOUNT={spin['new']}; a process importing torch before medlearn reads "
        f"{spin['torch_first']}: OpenMP reads its environment when torch loads it). "
        "One core busy: a separate `while True: pass` process, "
        "running only during the loaded configurations' repeats. A step = the C2L demo step "
        "(`configs/c2l/demo.yaml`: plaincnn, 32 px views, batch 64, mixup; training_step + backward + SGD + "
        "teacher EMA, no Trainer), each configuration in its own `spawn` child started with its OpenMP "
        "environment.",
        "",
    ]
    label = {"1thread": "1 thread (reference)", "old": f"old default: {old_threads} threads, OpenMP default wait",
             "new": f"new default: {new_threads} threads, passive wait"}
    grid = []
    for st in SETTINGS:
        idle, loaded = results[f"idle-{st}"]["ms_per_step"], results[f"loaded-{st}"]["ms_per_step"]
        grid.append([label[st], f"{idle:.1f}", f"{loaded:.1f}", f"{loaded / idle:.2f}"])
    lines += ["ms per demo training step (median):", "",
              markdown_table(["setting", "idle ms/step", "one core busy ms/step", "busy / idle"], grid, "lrrr"),
              "", comparison_table(rows)]
    if epochs:
        n_ep = len(next(iter(epochs.values()))["epoch_s"])
        steps = next(iter(epochs.values()))["steps_per_epoch"]
        body = []
        for st in ("old", "new"):
            idle, loaded = epochs[f"idle-{st}"]["epoch_s"], epochs[f"loaded-{st}"]["epoch_s"]
            body.append([label[st], " / ".join(f"{x:.1f}" for x in idle), " / ".join(f"{x:.1f}" for x in loaded),
                         f"{loaded[-1] / idle[-1]:.1f}"])
        ratio = [epochs[f"{m}-new"]["epoch_s"][-1] / epochs[f"{m}-old"]["epoch_s"][-1] for m in MACHINES]
        lines += ["", f"C2L demo pretraining, {n_ep} epoch(s) of {steps} steps (the demo's Trainer, data loading and "
                  "checkpoints; one fresh process per run, runs in the order idle old, idle new, busy new, busy old):",
                  "", markdown_table(["setting", f"idle s/epoch (epochs 1..{n_ep})",
                                      f"one core busy s/epoch (epochs 1..{n_ep})", "busy / idle (last epoch)"],
                                     body, "lrrr"),
                  "", f"Last epoch, new / old default: idle **{ratio[0]:.2f}**, one core busy **{ratio[1]:.2f}**."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__, SECTION, "smoke: 1 warm-up + 3 timed steps, 1 repeat, 1 epoch on 400 images")
    parser.add_argument("--epochs", type=int, default=None, help="demo pretraining epochs per run (0: skip)")
    parser.add_argument("--note", default="", help="what else ran on the machine (shown in the section)")
    budget = Budget(parser.parse_args(argv))
    warmup, iters = budget.pick("warmup", 1, 3), budget.pick("iters", 3, 10)
    repeats, n_epochs = budget.pick("repeats", 1, 3), budget.pick("epochs", 1, 2)
    n_images = 400 if budget.args.quick else 1600
    new_threads, old_threads = budget.threads, min(2, os.cpu_count() or 1)
    cmd = command_line("benchmarks/bench_threads.py", argv)
    t0 = time.perf_counter()
    others = OtherLoad()
    machine = machine_info()
    spin = {"old": openmp_spincount(ENV_OLD), "new": openmp_spincount(ENV_NEW),
            "torch_first": openmp_spincount(ENV_NEW, "import torch, medlearn")}
    print(f"[bench] GNU OpenMP spin count in the children: {spin}", file=sys.stderr, flush=True)
    configs, comps = plan(old_threads, new_threads)
    busy = BusyCore()
    # a terminated run still stops its children and the busy loop (the finally blocks run)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        def around(c: BenchConfig) -> contextlib.AbstractContextManager[Any]:
            return busy.on() if c.name.startswith("loaded") else contextlib.nullcontext()

        results = run_interleaved(configs, warmup, iters, repeats, preload=["torch"], around=around)
        epochs = None
        if n_epochs > 0:
            with tempfile.TemporaryDirectory(prefix="bench-threads-") as work:
                epochs = run_epochs(busy, old_threads, new_threads, n_epochs, n_images, Path(work))
    finally:
        busy.close()
    rows = compare(results, comps)
    meta = run_meta(cmd, t0, machine, budget, note=budget.args.note, other_cores=others.cores())
    body = render(meta, results, rows, epochs, spin, old_threads, new_threads, budget.args.note)
    return finish(budget, SECTION, meta, body, {"configs": results, "comparisons": rows, "epochs": epochs,
                                                "openmp_spincount": spin})


if __name__ == "__main__":
    sys.exit(main())
