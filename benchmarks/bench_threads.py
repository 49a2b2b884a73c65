"""Threads and the OpenMP wait policy: C2L training steps and the demo's epoch, idle and with one core busy.

Usage::

    python benchmarks/bench_threads.py [--quick] [--out docs/benchmarks.md] [--json PATH] [--threads N]
                                       [--r18-iters N] [--spins N,N,...] [--epochs N] [--epoch-runs N]
                                       [--note TEXT]

What is compared (``medlearn.runtime`` holds the policy):

* **old default**: ``min(2, os.cpu_count())`` torch threads with OpenMP's own wait policy. GNU
  OpenMP (bundled with the PyPI torch wheels) then spins 300,000 times (about 3 ms) after each
  parallel region before its threads sleep. The children run with ``GOMP_SPINCOUNT=300000``: an
  explicit spin count overrides the passive policy that their ``import medlearn`` now sets, and
  GNU OpenMP then holds exactly the settings it had with nothing set (``OMP_DISPLAY_ENV=VERBOSE``
  prints the same; the section records the spin count each side's children read).
* **new default**: ``medlearn.runtime.default_threads()`` threads (``MEDLEARN_THREADS``, else
  ``min(2, usable cores)``) with the wait policy ``import medlearn`` chooses from the load it
  measures when it starts: OpenMP's default (spinning) on free cores, ``OMP_WAIT_POLICY=PASSIVE``
  when a core is busy. The epoch runs start each child on the machine state they are timed in, so
  the child decides for itself (its decision is recorded); the timed steps' children start one
  after another on idle cores (each decides for itself; the section lists what they chose), before
  the busy core is switched on, so there the loaded configuration is given the choice
  ``import medlearn`` makes on a busy core (``OMP_WAIT_POLICY=PASSIVE``), and the old default's row
  shows what happens when the load only arrives after the start.
* **1 thread**, for reference (no OpenMP worker thread to wait), and with ``--spins`` the demo
  step on 2 threads at other GNU OpenMP spin counts (between passive, 0, and the default, 300,000).

each on an **idle** machine and with **one core busy**: a separate process running
``while True: pass`` (not pinned, like another user's job), resumed (``SIGCONT``) only around the
timed repeats of the loaded configurations and stopped (``SIGSTOP``) otherwise, so the repeats of
all configurations of a step interleave in one run.

Every configuration runs in its own ``spawn`` child started with its OpenMP environment, because
OpenMP reads it once, when the child imports torch (a fork-server child would inherit the server's
runtime as it was initialised). The steps are ``bench_c2l``'s: ``C2L.training_step`` + backward +
SGD + teacher EMA, no Trainer; the demo step is ``configs/c2l/demo.yaml`` (plaincnn, 32 px views,
batch 64, mixup), the heavier one the same with ResNet-18 at 64 px, batch 32. The epoch comparison
runs the demo's pretraining itself (its config, ``make_trainer``: Lightning, data loading,
checkpoints) for ``--epochs`` epochs on the demo's synthetic ChestX-ray14 set (1600 images, 64 px),
``--epoch-runs`` times per setting and machine state, each run a fresh ``spawn`` child.

``--quick`` (smoke): 1 warm-up + 3 timed demo steps, 1 + 1 ResNet-18 steps, 1 repeat, 1 epoch on
400 images, 1 run. Default: 3 warm-up + 10 timed demo steps, 1 + 5 ResNet-18 steps, 3 interleaved
repeats, 2 epochs, 2 runs (the old default with a core busy can take seconds per step). The section
between ``<!-- threads:start -->`` and ``<!-- threads:end -->`` of ``--out`` is replaced; the full
results go to ``--json``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
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
#: a heavier step: the same with ResNet-18 at 64 px, batch 32 (as in bench_c2l)
R18_STEP = {**DEMO_STEP, "backbone": "resnet18", "size": 64, "batch": 32}
#: children's OpenMP environment (None: removed before the child starts)
ENV_OLD: dict[str, str | None] = {"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": "300000"}
ENV_NEW: dict[str, str | None] = {"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": None}
#: what ``import medlearn`` chooses with a core busy at its start (see the module docstring)
ENV_NEW_BUSY: dict[str, str | None] = {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": None}


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

    from medlearn.runtime import openmp_decision

    return {"epoch_s": timer.seconds, "steps_per_epoch": int(trainer.num_training_batches),
            "threads": torch.get_num_threads(), "decision": openmp_decision()}


# -- the plan (parent) ------------------------------------------------------------------------------
MACHINES = ("idle", "loaded")
MACHINE_LABEL = {"idle": "idle", "loaded": "one core busy"}


@dataclass
class Setting:
    """A thread count and the OpenMP environment its children start with."""

    key: str
    label: str
    threads: int
    env: dict[str, str | None]
    env_loaded: dict[str, str | None] | None = None  # the timed steps' loaded child, when it differs

    def env_for(self, machine: str) -> dict[str, str | None]:
        """The environment of this setting's timed-step child on ``machine``."""
        return self.env_loaded if machine == "loaded" and self.env_loaded is not None else self.env


def settings(old_threads: int, new_threads: int, spins: list[int]) -> list[Setting]:
    """1 thread, the old default, the new default, and 2-thread runs at the given GNU OpenMP spin counts."""
    out = [Setting("1thread", "1 thread (reference)", 1, ENV_NEW),
           Setting("old", f"old default: {old_threads} threads, OpenMP default wait", old_threads, ENV_OLD),
           Setting("new", f"new default: {new_threads} threads, wait chosen from the load at start", new_threads,
                   ENV_NEW, ENV_NEW_BUSY)]
    out += [Setting(f"spin{n}", f"{new_threads} threads, GOMP_SPINCOUNT={n}", new_threads,
                    {"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": str(n)}) for n in spins]
    return out


def plan(step: str, spec: dict[str, Any], sets: list[Setting]) -> tuple[list[BenchConfig], list[Comparison]]:
    """One configuration per (machine, setting) for ``spec``, and the comparisons read from them."""
    configs = [BenchConfig(f"{step}-{m}-{st.key}", make_c2l_step, spec, threads=st.threads, env=st.env_for(m))
               for m in MACHINES for st in sets]
    new, old = "new default", "old default"
    comps = []
    for m in MACHINES:
        comps += [
            Comparison(f"{step}, {MACHINE_LABEL[m]}: new vs old default", f"{step}-{m}-new", f"{step}-{m}-old",
                       "~1 idle: the same spinning; < 1 busy: passive wait", new, old),
            Comparison(f"{step}, {MACHINE_LABEL[m]}: new default vs 1 thread", f"{step}-{m}-new",
                       f"{step}-{m}-1thread", "what the second thread gives", new, "1 thread"),
        ]
    return configs, comps


def run_epochs(busy: BusyCore, sets: list[Setting], epochs: int, runs: int, n_images: int,
               work: Path) -> dict[str, list[dict[str, Any]]]:
    """Demo pretraining epochs per (machine, setting), ``runs`` times, the order reversed every other round."""
    root = write_demo_data(str(work / "cxr"), n_images)  # here: its CPU time counts as this run's
    out: dict[str, list[dict[str, Any]]] = {}
    seq = [(m, st) for m in MACHINES for st in sets]
    for r in range(runs):
        for machine, st in seq if r % 2 == 0 else reversed(seq):
            print(f"[bench] demo epochs, run {r + 1}/{runs}: {machine} machine, {st.label}", file=sys.stderr,
                  flush=True)
            with busy.on() if machine == "loaded" else contextlib.nullcontext():
                t0 = time.perf_counter()
                res = run_isolated(demo_epochs, root, str(work / f"run-{machine}-{st.key}-{r}"), epochs,
                                   threads=st.threads, env=st.env)
                res["wall_s"] = time.perf_counter() - t0
            out.setdefault(f"{machine}-{st.key}", []).append(res)
            print(f"[bench]   epochs: {', '.join(f'{x:.1f}' for x in res['epoch_s'])} s", file=sys.stderr,
                  flush=True)
    return out


def step_grid(results: dict[str, Any], step: str, sets: list[Setting]) -> str:
    """ms/step medians: one row per setting, idle and busy side by side."""
    rows = []
    for st in sets:
        idle, loaded = results[f"{step}-idle-{st.key}"], results[f"{step}-loaded-{st.key}"]
        spread = [" (" + "-".join(f"{f(x['ms_per_step'] for x in r['repeats']):.0f}" for f in (min, max)) + ")"
                  if len(r["repeats"]) > 1 else "" for r in (idle, loaded)]
        rows.append([st.label, f"{idle['ms_per_step']:.1f}{spread[0]}", f"{loaded['ms_per_step']:.1f}{spread[1]}",
                     f"{loaded['ms_per_step'] / idle['ms_per_step']:.2f}"])
    return markdown_table(["setting", "idle ms/step (repeats min-max)", "one core busy ms/step (min-max)",
                           "busy / idle"], rows, "lrrr")


def epoch_table(epochs: dict[str, list[dict[str, Any]]], sets: list[Setting]) -> tuple[str, dict[str, float]]:
    """Last-epoch seconds per (machine, setting): median over runs, every run listed."""
    med: dict[str, float] = {}
    rows = []
    for st in sets:
        cells = []
        for m in MACHINES:
            last = [run["epoch_s"][-1] for run in epochs[f"{m}-{st.key}"]]
            med[f"{m}-{st.key}"] = statistics.median(last)
            cells.append(f"{med[f'{m}-{st.key}']:.1f} (" + ", ".join(f"{x:.1f}" for x in last) + ")")
        rows.append([st.label, *cells, f"{med[f'loaded-{st.key}'] / med[f'idle-{st.key}']:.2f}"])
    table = markdown_table(["setting", "idle s/epoch (runs)", "one core busy s/epoch (runs)", "busy / idle"],
                           rows, "lrrr")
    return table, med


def render(meta: dict[str, Any], results: dict[str, Any], rows: list[dict[str, Any]],
           epochs: dict[str, list[dict[str, Any]]] | None, spin: dict[str, str], sets: list[Setting],
           step_sets: dict[str, list[Setting]], old_threads: int, n_images: int, note: str) -> str:
    """The markdown section."""
    s = meta["settings"]
    lines = section_header(
        "Threads and the OpenMP wait policy (C2L demo step and epoch, idle and with one core busy)", meta,
        f"demo step {s['warmup']} warm-up + {s['iters']} timed steps, ResNet-18 step 1 + {s['r18_iters']}, "
        f"per repeat; {s['repeats']} interleaved repeat(s), median; demo pretraining {s['epochs']} epoch(s), "
        f"{s['epoch_runs']} run(s) per setting")
    other = meta.get("other_cores")
    load = (f"other processes used {other:.2f} cores on average during the run (`/proc/stat` busy time "
            "minus this run's own)" if other is not None else "")
    step_choice = "; ".join(
        f"{step}: " + (results.get(f"{step}-idle-new", {}).get("env") or {}).get("OMP_WAIT_POLICY",
                                                                                 "OpenMP default wait")
        for step in step_sets)
    if load or note:
        lines += ["Background load: " + "; ".join(x for x in (load, note) if x) + ".", ""]
    lines += [
        f"Old default: `min(2, os.cpu_count())` = {old_threads} torch threads with OpenMP's own wait policy "
        f"(GNU OpenMP spins about 3 ms before sleeping; the children read GOMP_SPINCOUNT={spin['old']}). New "
        "default: `medlearn.runtime.default_threads()` threads; `import medlearn` measures the load on its "
        "cores (0.1 s of `/proc/stat`) and sets `OMP_WAIT_POLICY=PASSIVE` only when a core is busy (the "
        f"passive children read GOMP_SPINCOUNT={spin['new']}; a process that imports torch before medlearn "
        f"reads {spin['torch_first']}: OpenMP reads its environment when torch loads it). The timed steps' "
        "children start one after another on idle cores (the idle new-default child decides for itself: "
        f"{step_choice}), so the loaded new-default child is given the passive policy "
        "`import medlearn` chooses on a busy core; the old default's loaded row is also what the new default "
        "does when the load arrives after its start. The epoch runs start each child on the state they are "
        "timed in, and the child decides for itself (decisions listed under the table). One "
        "core busy: a separate `while True: pass` process, running only during the loaded configurations' "
        "repeats. Every configuration runs in its own `spawn` child started with its OpenMP environment. "
        "Steps: `C2L.training_step` + backward + SGD + teacher EMA, no Trainer (as in the C2L section); "
        "demo = `configs/c2l/demo.yaml` (plaincnn, 32 px views, batch 64), ResNet-18 = the same at 64 px, "
        "batch 32. Brackets: the range over repeats.",
        "",
    ]
    for step, title in (("demo", "C2L demo step"), ("resnet18", "C2L ResNet-18 step (64 px, batch 32)")):
        if step in step_sets:
            lines += [f"{title}, ms per step (median):", "", step_grid(results, step, step_sets[step]), ""]
    lines += ["Ratios (time ratio < 1: the new default is faster):", "", comparison_table(rows)]
    if epochs:
        first = next(iter(epochs.values()))[0]
        table, med = epoch_table(epochs, sets)
        ratio = {m: med[f"{m}-new"] / med[f"{m}-old"] for m in MACHINES}
        lines += ["", f"C2L demo pretraining as the demo runs it (its config and `make_trainer`: Lightning, data "
                  f"loading, checkpoints), {len(first['epoch_s'])} epoch(s) of {first['steps_per_epoch']} steps on "
                  f"{n_images} synthetic radiographs (the demo's set); seconds of the last epoch, median over runs "
                  "(each run a fresh process; the order of the runs reversed every other round):", "", table, "",
                  f"Last epoch, new / old default: idle **{ratio['idle']:.2f}**, one core busy "
                  f"**{ratio['loaded']:.2f}**.", "",
                  "What `import medlearn` chose in the new default's epoch runs: "
                  + "; ".join(f"{MACHINE_LABEL[m]}: " + ", ".join(sorted({r.get('decision', '?').split(':')[0]
                                                                         for r in epochs[f'{m}-new']}))
                              for m in MACHINES) + "."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__, SECTION, "smoke: 1 warm-up + 3 timed steps (ResNet-18: 1 + 1), 1 repeat, "
                                            "1 epoch on 400 images, 1 run")
    parser.add_argument("--r18-iters", type=int, default=None, help="timed ResNet-18 steps per repeat (0: skip)")
    parser.add_argument("--spins", default="", help="also time the demo step on 2 threads at these "
                                                    "comma-separated GOMP_SPINCOUNT values")
    parser.add_argument("--epochs", type=int, default=None, help="demo pretraining epochs per run (0: skip)")
    parser.add_argument("--epoch-runs", type=int, default=None, help="demo pretraining runs per setting")
    parser.add_argument("--note", default="", help="what else ran on the machine (shown in the section)")
    budget = Budget(parser.parse_args(argv))
    warmup, iters = budget.pick("warmup", 1, 3), budget.pick("iters", 3, 10)
    repeats, r18_iters = budget.pick("repeats", 1, 3), budget.pick("r18_iters", 1, 5)
    n_epochs, epoch_runs = budget.pick("epochs", 1, 2), budget.pick("epoch_runs", 1, 2)
    spins = [int(x) for x in budget.args.spins.split(",") if x.strip()]
    budget.settings["spins"] = spins
    n_images = 400 if budget.args.quick else 1600
    new_threads, old_threads = budget.threads, min(2, os.cpu_count() or 1)
    cmd = command_line("benchmarks/bench_threads.py", argv)
    t0 = time.perf_counter()
    others = OtherLoad()
    machine = machine_info()
    spin = {"old": openmp_spincount(ENV_OLD), "new": openmp_spincount(ENV_NEW_BUSY),
            "torch_first": openmp_spincount(ENV_NEW, "import torch, medlearn")}
    print(f"[bench] GNU OpenMP spin count in the children: {spin}", file=sys.stderr, flush=True)
    base = settings(old_threads, new_threads, [])
    step_sets = {"demo": settings(old_threads, new_threads, spins)}
    if r18_iters > 0:
        step_sets["resnet18"] = base
    busy = BusyCore()
    # a terminated run still stops its children and the busy loop (the finally blocks run)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results: dict[str, Any] = {}
    comps: list[Comparison] = []
    epochs = None
    try:
        def around(c: BenchConfig) -> contextlib.AbstractContextManager[Any]:
            return busy.on() if "-loaded-" in c.name else contextlib.nullcontext()

        for step, sets in step_sets.items():
            spec = DEMO_STEP if step == "demo" else R18_STEP
            configs, step_comps = plan(step, spec, sets)
            w, it = (warmup, iters) if step == "demo" else (1, r18_iters)
            results.update(run_interleaved(configs, w, it, repeats, preload=["torch"], around=around))
            comps += step_comps
        if n_epochs > 0:
            with tempfile.TemporaryDirectory(prefix="bench-threads-") as work:
                epochs = run_epochs(busy, base, n_epochs, epoch_runs, n_images, Path(work))
    finally:
        busy.close()
    rows = compare(results, comps)
    meta = run_meta(cmd, t0, machine, budget, note=budget.args.note, other_cores=others.cores())
    body = render(meta, results, rows, epochs, spin, base, step_sets, old_threads, n_images,
                  budget.args.note)
    return finish(budget, SECTION, meta, body, {"configs": results, "comparisons": rows, "epochs": epochs,
                                                "openmp_spincount": spin})


if __name__ == "__main__":
    sys.exit(main())
