"""Rubik benchmark: the 3D data path and the pretraining step, against peers measured in the same run.

Usage::

    python benchmarks/bench_rubik.py [--quick] [--out docs/benchmarks.md] [--json PATH] [--threads N]

**Data path** (``medlearn.data.volumes``). Synthetic head CT volumes
(:func:`medlearn.synth.headct.write_headct`, ``--volumes`` of ``--volume-size``^3 int16 NIfTI) are
written once into a temporary folder; a *step* is one batch of 16 volumes from a DataLoader with
``num_workers=0``: decode, CT window ``[0, 80]`` HU -> [-1, 1], centred crop/pad to 40^3 (the
preprocessing of ``configs/rubik/demo.yaml``). Configurations:

* (a) medlearn without cache: ``VolumeDataModule(cache=False).train_dataloader()`` (every pass is
  a first pass: ``LoadVolumed`` -> ``ScaleIntensityRanged`` -> ``ResizeWithPadOrCropd`` ->
  ``EnsureTyped`` on every access);
* (a') medlearn's cache fill: building ``VolumeDataset(cache=True)`` (a ``monai.data.CacheDataset``)
  over 16 volumes, i.e. the first pass of the cached pipeline (done in ``setup``);
* (b) medlearn cached: ``VolumeDataModule(cache=True)``, after ``setup`` filled the cache (every
  timed batch is a second-or-later epoch);
* (c) the peer, a plain MONAI pipeline of the same steps: ``LoadImaged`` + ``EnsureChannelFirstd``
  + ``ScaleIntensityRanged`` + ``ResizeWithPadOrCropd`` over ``monai.data.Dataset`` and
  ``monai.data.DataLoader`` (shuffled, ``drop_last``, as medlearn's training loader).

Ratios (a)/(c), (a')/(c) and (b)/(c) are times per volume (all steps are 16 volumes).

**Pretraining step.** ``Rubik`` from ``configs/rubik/demo.yaml`` (smallcnn encoder, K = 100, 16^3
cubes, order + two rotation heads): ``training_step`` (puzzle construction, Siamese-Octad forward,
loss, accuracies) + ``backward`` + Adam with the module's lr / weight decay, called directly (no
Trainer), on a fixed random batch ``(16, 1, 40, 40, 40)`` in [-1, 1]. Peers:

* a plain loop: the same encoder (``build_backbone("smallcnn", 3, 1)``) on the 8 cubes of each
  volume cut by plain slicing (centred in their 20^3 cells, no shuffling or turning), one linear
  head classifying each cube's cell (8 classes) with cross-entropy, Adam: the ratio is what the
  puzzle construction + the cube FC and the three heads cost;
* Rubik on pre-built puzzles (the same forward, loss and accuracies, the puzzles built once
  outside the step): splits that cost into puzzle construction (Rubik / pre-built) and heads
  (pre-built / plain loop);
* Rubik under ``torch.autocast("cpu", dtype=torch.bfloat16)`` around ``training_step`` (what
  Lightning's ``precision="bf16-mixed"`` does on CPU) vs fp32, plus the losses of
  ``--loss-steps`` identical steps from the same seed (same batch, same puzzles) in both.

``--quick`` (smoke, about 20 s): 16 volumes, 1 repeat of 1 + 3 data batches and 1 + 3 training
steps, 3 loss steps. Default (sized from the smoke run's step times for about 3-5 minutes on an idle
2-core machine): 64 volumes, 7 interleaved repeats of 2 + 40 data batches and 5 + 50 training
steps, 50 loss steps. The section between ``<!-- rubik:start -->`` and
``<!-- rubik:end -->`` of ``--out`` is replaced; the full results go to ``--json``.
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (  # noqa: E402
    BenchConfig,
    Budget,
    Comparison,
    PeakMemory,
    StepBench,
    bench_parser,
    command_line,
    compare,
    drift_summary,
    drift_table,
    finish,
    machine_info,
    markdown_table,
    run_interleaved,
    run_isolated,
    run_meta,
    section_header,
)

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "rubik" / "demo.yaml"
#: modules the fork server imports once, so every configuration's process starts with them loaded
PRELOAD = ["torch", "monai.transforms", "monai.data", "medlearn.data.volumes", "medlearn.methods.rubik.module",
           "medlearn.engine.config"]
SECTION = "rubik"
BATCH = 16
SIZE = 40  # volume side of the demo (spatial_size and the training batch)
WINDOW = (0.0, 80.0)  # the demo's brain window (HU)


def _quiet() -> None:
    """Warnings that are expected here and would only clutter the log."""
    # training_step calls self.log without a Trainer attached: Lightning warns and skips it.
    warnings.filterwarnings("ignore", message=r".*self\.log\(\)")
    warnings.filterwarnings("ignore", message=r".*nvImageCodec.*")


# -- data path (runs in the child processes) ---------------------------------------------------
def _cycle(loader: Any) -> Any:
    """A zero-argument step returning the next batch, starting a new epoch when one ends."""
    state = {"it": iter(loader)}

    def step() -> Any:
        try:
            return next(state["it"])
        except StopIteration:
            state["it"] = iter(loader)
            return next(state["it"])

    return step


def _rss_mb() -> float | None:
    """Resident set of this process in MiB (Linux), else ``None``."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _nbytes(obj: Any) -> int:
    """Bytes of the tensors and arrays inside nested dicts / lists / tuples."""
    import numpy as np
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.untyped_storage().nbytes()
    if isinstance(obj, np.ndarray):
        return obj.nbytes
    if isinstance(obj, dict):
        return sum(_nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(v) for v in obj)
    return 0


def _datamodule(spec: dict[str, Any], cache: bool) -> Any:
    from medlearn.data.volumes import VolumeDataModule

    return VolumeDataModule(spec["root"], layout="headct", task="unlabeled", spatial_size=(SIZE, SIZE, SIZE),
                            normalisation="ct", window=WINDOW, foreground_threshold=None, batch_size=BATCH,
                            num_workers=0, cache=cache, val_fraction=0.0, test_fraction=0.0)


def make_data_step(spec: dict[str, Any]) -> StepBench:
    """Harness factory: one batch of 16 volumes from the pipeline ``spec["pipeline"]``.

    ``medlearn`` (``spec["cache"]`` False / True: the cache is filled here, before timing),
    ``medlearn-fill`` (a step builds a fresh cached ``VolumeDataset`` of 16 volumes) or ``monai``.
    """
    _quiet()
    import torch

    torch.manual_seed(0)
    kind = spec["pipeline"]
    info: dict[str, Any] = {"pipeline": kind}
    if kind == "medlearn":
        dm = _datamodule(spec, spec["cache"])
        mem = PeakMemory("cpu")
        mem.reset()
        t0 = time.perf_counter()
        dm.setup("fit")  # with cache: decodes and preprocesses every training volume (the first pass)
        fill_s = time.perf_counter() - t0
        n = dm.n_train
        info.update(n_volumes=n, setup_s=fill_s, setup_peak_mb=mem.peak_mb())
        if spec["cache"]:
            rss = _rss_mb()  # resident set now vs the baseline before setup
            resident = max(0.0, rss - mem.baseline_mb) if rss is not None and mem.method.startswith("VmHWM") else None
            cache = getattr(getattr(dm.train_set, "inner", None), "_cache", None)  # monai.data.CacheDataset's list
            info.update(cache_fill_ms_per_volume=1000.0 * fill_s / n, cache_resident_mb=resident,
                        cache_tensor_mb=_nbytes(cache) / 2**20 if cache is not None else None)
        return StepBench(_cycle(dm.train_dataloader()), BATCH, info)
    if kind == "medlearn-fill":
        from medlearn.data.volume_preprocess import volume_transforms
        from medlearn.data.volumes import VolumeDataset

        dm = _datamodule(spec, cache=True)  # only to list the training volumes
        records = dm.splits["train"][:BATCH]
        items = [{"image": str(r.path), "name": r.case} for r in records]
        # the chain VolumeDataModule builds for these settings
        transform = volume_transforms(normalisation="ct", window=WINDOW, spatial_size=(SIZE, SIZE, SIZE),
                                      foreground_threshold=None)
        holder: dict[str, Any] = {}

        def fill() -> Any:
            holder.pop("ds", None)  # drop the previous cache first: the peak is one cache
            holder["ds"] = VolumeDataset(items, transform, cache=True)
            return holder["ds"]

        info.update(n_volumes=len(items))
        return StepBench(fill, len(items), info)
    if kind == "monai":
        from monai.data import DataLoader, Dataset
        from monai.transforms import (
            Compose,
            EnsureChannelFirstd,
            LoadImaged,
            ResizeWithPadOrCropd,
            ScaleIntensityRanged,
        )

        dm = _datamodule(spec, cache=False)  # only to list the same training volumes
        items = [{"image": str(r.path)} for r in dm.splits["train"]]
        transform = Compose([
            LoadImaged("image"),
            EnsureChannelFirstd("image"),
            ScaleIntensityRanged("image", a_min=WINDOW[0], a_max=WINDOW[1], b_min=-1.0, b_max=1.0, clip=True),
            ResizeWithPadOrCropd("image", spatial_size=(SIZE, SIZE, SIZE), mode="constant", value=-1.0),
        ])
        loader = DataLoader(Dataset(items, transform), batch_size=BATCH, shuffle=True, drop_last=True, num_workers=0)
        info.update(n_volumes=len(items))
        return StepBench(_cycle(loader), BATCH, info)
    raise ValueError(f"unknown pipeline {kind!r}")


# -- training step (runs in the child processes) -------------------------------------------------
def _rubik(seed: int) -> tuple[Any, Any, dict[str, Any]]:
    """Rubik from the demo config, Adam as ``Rubik.configure_optimizers`` (constant lr), batch."""
    import torch

    from medlearn.engine.config import instantiate_class, load_config

    _quiet()
    torch.manual_seed(seed)
    model = instantiate_class(load_config(CONFIG)["model"])
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=model.hparams.lr, weight_decay=model.hparams.weight_decay)
    g = torch.Generator().manual_seed(1234)
    batch = {"image": torch.rand(BATCH, 1, SIZE, SIZE, SIZE, generator=g) * 2 - 1}
    return model, opt, batch


def _rubik_step(model: Any, opt: Any, batch: dict[str, Any], precision: str) -> Any:
    """One training step as Lightning runs it (autocast around ``training_step`` only for bf16)."""
    import torch

    def step() -> Any:
        opt.zero_grad(set_to_none=True)
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
        with ctx:
            loss = model.training_step(batch, 0)
        loss.backward()
        opt.step()
        return loss.detach()

    return step


def _prebuilt_step(model: Any, opt: Any, batch: dict[str, Any]) -> Any:
    """Rubik's step minus the puzzle construction: the puzzles are built once, here."""
    import torch

    from medlearn.methods.rubik.losses import pretext_accuracy, rubik_loss

    with torch.no_grad():
        targets = model.make_puzzles(batch["image"])
    h = model.hparams

    def step() -> Any:
        opt.zero_grad(set_to_none=True)
        out = model.octad(targets["cubes"])
        loss, _ = rubik_loss(out, targets, h.w_order, h.w_rot, h.w_mask)
        pretext_accuracy(out, targets)
        loss.backward()
        opt.step()
        return loss.detach()

    return step


def _plain(seed: int) -> StepBench:
    """The plain loop: smallcnn on the 8 sliced cubes, one linear head (cube -> its cell), CE, Adam."""
    import torch
    from torch import nn

    from medlearn.engine.config import load_config
    from medlearn.nn import build_backbone

    torch.manual_seed(seed)
    args = load_config(CONFIG)["model"]["init_args"]
    cube = [int(c) for c in args["cube_size"]]
    encoder = build_backbone(args["encoder"], 3, int(args["in_channels"]))
    head = nn.Linear(encoder.out_features, 8)
    encoder.train()
    params = [*encoder.parameters(), *head.parameters()]
    opt = torch.optim.Adam(params, lr=float(args["lr"]), weight_decay=float(args["weight_decay"]))
    g = torch.Generator().manual_seed(1234)
    x = torch.rand(BATCH, 1, SIZE, SIZE, SIZE, generator=g) * 2 - 1
    cell = SIZE // 2
    starts = [[lo + (cell - c) // 2 for lo in (0, cell)] for c in cube]  # centred in each cell, per axis
    corners = [(z, y, w) for z in starts[0] for y in starts[1] for w in starts[2]]
    labels = torch.arange(8).repeat(BATCH)
    d, hh, ww = cube

    def step() -> Any:
        opt.zero_grad(set_to_none=True)
        cubes = torch.stack([x[:, :, z:z + d, y:y + hh, w:w + ww] for z, y, w in corners], dim=1)  # (B, 8, C, ...)
        logits = head(encoder(cubes.flatten(0, 1)))
        loss = nn.functional.cross_entropy(logits, labels)
        loss.backward()
        opt.step()
        return loss.detach()

    n = sum(p.numel() for p in params)
    return StepBench(step, BATCH, {"params": n, "cube_size": cube})


def make_train_step(spec: dict[str, Any]) -> StepBench:
    """Harness factory: ``spec["kind"]`` = ``rubik`` (with ``precision``), ``rubik-prebuilt`` or ``plain``."""
    kind = spec["kind"]
    if kind == "plain":
        return _plain(spec.get("seed", 0))
    model, opt, batch = _rubik(spec.get("seed", 0))
    info = {"params": sum(p.numel() for p in model.parameters()),
            "encoder_params": sum(p.numel() for p in model.octad.encoder.parameters())}
    if kind == "rubik":
        return StepBench(_rubik_step(model, opt, batch, spec.get("precision", "32")), BATCH, info)
    if kind == "rubik-prebuilt":
        return StepBench(_prebuilt_step(model, opt, batch), BATCH, info)
    raise ValueError(f"unknown kind {kind!r}")


def loss_drift(steps: int, seed: int = 0) -> dict[str, Any]:
    """Losses of ``steps`` identical Rubik steps (same seed, batch and puzzles) in fp32 and bf16."""
    losses = {}
    for precision in ("32", "bf16"):
        model, opt, batch = _rubik(seed)
        step = _rubik_step(model, opt, batch, precision)
        losses[precision] = [float(step()) for _ in range(steps)]
    return drift_summary(losses["32"], losses["bf16"])


def write_volumes(root: Path, n: int, size: int) -> dict[str, Any]:
    """Write the synthetic head CT set (all ``train``); returns what was written and how long it took."""
    from medlearn.synth.headct import write_headct

    t0 = time.perf_counter()
    write_headct(root, n_volumes=n, size=size, n_test=0, seed=0)
    files = sorted((root / "volumes").glob("*.nii.gz"))
    return {"n_volumes": len(files), "size": size, "write_s": time.perf_counter() - t0,
            "mean_file_kb": statistics.fmean(f.stat().st_size for f in files) / 1024}


# -- the plan (parent) ----------------------------------------------------------------------------
def data_plan(root: str, threads: int) -> tuple[list[BenchConfig], list[Comparison]]:
    configs = [
        BenchConfig("data-medlearn-nocache", make_data_step, {"pipeline": "medlearn", "cache": False, "root": root},
                    threads=threads),
        BenchConfig("data-medlearn-cachefill", make_data_step, {"pipeline": "medlearn-fill", "root": root},
                    threads=threads),
        BenchConfig("data-medlearn-cached", make_data_step, {"pipeline": "medlearn", "cache": True, "root": root},
                    threads=threads),
        BenchConfig("data-monai", make_data_step, {"pipeline": "monai", "root": root}, threads=threads),
    ]
    comps = [
        Comparison("(a) no cache / first pass", "data-medlearn-nocache", "data-monai",
                   "~1: same MONAI transforms; medlearn decodes with its own reader",
                   "medlearn, cache=False", "plain MONAI"),
        Comparison("(a') cache fill (first pass of the cached pipeline)", "data-medlearn-cachefill", "data-monai",
                   "~1: the same work, into a CacheDataset", "medlearn CacheDataset build", "plain MONAI"),
        Comparison("(b) cached, second epoch", "data-medlearn-cached", "data-monai",
                   "<< 1: batches come from memory", "medlearn, cache=True", "plain MONAI"),
    ]
    return configs, comps


def train_plan(threads: int) -> tuple[list[BenchConfig], list[Comparison]]:
    configs = [
        BenchConfig("rubik-fp32", make_train_step, {"kind": "rubik", "precision": "32"}, threads=threads),
        BenchConfig("rubik-prebuilt", make_train_step, {"kind": "rubik-prebuilt"}, threads=threads),
        BenchConfig("plain-loop", make_train_step, {"kind": "plain"}, threads=threads),
        BenchConfig("rubik-bf16", make_train_step, {"kind": "rubik", "precision": "bf16"}, threads=threads),
    ]
    comps = [
        Comparison("Rubik step vs plain loop", "rubik-fp32", "plain-loop",
                   "> 1: puzzle construction + cube FC + three heads", "Rubik",
                   "plain loop (8 sliced cubes, linear head)"),
        Comparison("puzzle construction", "rubik-fp32", "rubik-prebuilt",
                   "> 1: building the puzzles in the step", "Rubik", "Rubik, puzzles pre-built"),
        Comparison("cube FC + three heads + loss", "rubik-prebuilt", "plain-loop",
                   ">= 1: what the cube FC and heads cost over one linear head", "Rubik, puzzles pre-built",
                   "plain loop"),
        Comparison("precision", "rubik-bf16", "rubik-fp32",
                   "< 1: bf16 is faster (needs CPU bf16 support)", "bf16 autocast", "fp32"),
    ]
    return configs, comps


def _num(x: float) -> str:
    """Two decimals, or three significant digits below 0.1 (so tiny ratios and times stay readable)."""
    return f"{x:.3g}" if abs(x) < 0.1 else f"{x:.2f}"


def _ratio_table(rows: list[dict[str, Any]], per: int, unit: str) -> str:
    """Comparison rows (:func:`harness.compare`) as markdown; times divided by ``per`` (1: per step)."""
    body = []
    for r in rows:
        spread = r["ratio_per_repeat"]
        rng = f" ({_num(min(spread))}-{_num(max(spread))})" if len(spread) > 1 else ""
        body.append([r["title"], r["method_label"] or r["method"], r["peer_label"] or r["peer"],
                     _num(r["method_ms"] / per), _num(r["peer_ms"] / per),
                     f"{r['method_images_per_s']:.1f}", f"{r['peer_images_per_s']:.1f}",
                     f"**{_num(r['ratio'])}**{rng}", f"{r['method_peak_mb']:.0f}", f"{r['peer_peak_mb']:.0f}",
                     r["note"]])
    header = ["comparison", "method", "peer", f"method ms/{unit}", f"peer ms/{unit}", "method volumes/s",
              "peer volumes/s", "time ratio method/peer", "method peak MiB", "peer peak MiB", "reading"]
    return markdown_table(header, body, "lllrrrrrrrl")


def render(meta: dict[str, Any], data_rows: list[dict[str, Any]], train_rows: list[dict[str, Any]],
           data_res: dict[str, Any], drift: dict[str, Any]) -> str:
    """The markdown section."""
    s = meta["settings"]
    vol = meta["volumes"]
    cached = data_res["data-medlearn-cached"]["info"]
    resident = cached.get("cache_resident_mb")
    tensors = cached.get("cache_tensor_mb")
    lines = section_header("Rubik's cube (3D data path and pretraining step)", meta,
                           f"data {s['data_warmup']} warm-up + {s['data_iters']} timed batches, training "
                           f"{s['warmup']} warm-up + {s['iters']} timed steps, per repeat; {s['repeats']} "
                           f"interleaved repeat(s), median; torch threads {s['threads']}")
    lines += [
        "### Data path",
        "",
        f"{vol['n_volumes']} synthetic head CT volumes (`write_headct`, {vol['size']}^3 int16 NIfTI .nii.gz, "
        f"{vol['mean_file_kb']:.0f} KiB each, in the page cache), batch {BATCH}, `num_workers=0`: decode, CT "
        f"window [{WINDOW[0]:g}, {WINDOW[1]:g}] HU -> [-1, 1], centred crop/pad to {SIZE}^3 (the preprocessing of "
        "`configs/rubik/demo.yaml`). A step = one batch of 16 volumes (for the cache fill: building a "
        "`VolumeDataset(cache=True)` over 16 volumes). The peer is plain MONAI: `LoadImaged` + "
        "`EnsureChannelFirstd` + `ScaleIntensityRanged` + `ResizeWithPadOrCropd` over `monai.data.Dataset` / "
        "`DataLoader`. Time ratio = method ms/volume / peer ms/volume (medians; per-repeat range in brackets). "
        "Peak MiB = the process's peak resident set during the timed batches above the one after the build "
        "(so it excludes a filled cache; see below).",
        "",
        _ratio_table(data_rows, BATCH, "volume"),
        "",
        f"Cache of the cached pipeline, filled in `setup` before timing: {cached['n_volumes']} volumes in "
        f"{cached['setup_s']:.2f} s ({cached['cache_fill_ms_per_volume']:.2f} ms/volume; one pass, the first "
        "in that process, so it includes first-use initialisation, unlike row (a')); "
        + (f"the cached tensors hold {tensors:.1f} MiB ({tensors / cached['n_volumes']:.2f} MiB/volume, one "
           f"{SIZE}^3 float32 volume is {SIZE**3 * 4 / 2**20:.2f} MiB); " if tensors is not None else "")
        + f"peak resident set +{cached['setup_peak_mb']:.0f} MiB during the fill"
        + (f", +{resident:.0f} MiB still resident after it (decoding buffers the allocator keeps, "
           "first-use initialisation)." if resident is not None else "."),
        "",
        "### Pretraining step",
        "",
        f"A step = `Rubik.training_step` (model from `configs/rubik/demo.yaml`: smallcnn encoder, K = 100, "
        f"16^3 cubes, order + two rotation heads; puzzle construction, Siamese-Octad forward, loss, accuracies) "
        f"+ backward + Adam, called directly (no Trainer), on a fixed random batch ({BATCH}, 1, {SIZE}, {SIZE}, "
        f"{SIZE}). Plain loop = the same encoder on the 8 cubes of each volume cut by slicing (centred in their "
        "cells), one linear head classifying each cube's cell, cross-entropy, Adam. \"Puzzles pre-built\" = "
        "Rubik's forward, loss and accuracies on puzzles built once outside the step. Peak MiB = the process's "
        "peak resident set during the steps above the one after the build.",
        "",
        _ratio_table(train_rows, 1, "step"),
        "",
        f"bf16 vs fp32 loss over {drift['steps']} identical Rubik steps (same seed, batch and puzzles; autocast "
        "around `training_step`):",
        "",
        drift_table(drift),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = bench_parser(__doc__, "rubik", "smoke: 16 volumes, 1 repeat, a few steps")
    p.add_argument("--volumes", type=int, default=None, help="synthetic volumes written (>= 16)")
    p.add_argument("--volume-size", type=int, default=48, help="side of the written volumes (cropped to 40)")
    p.add_argument("--data-warmup", type=int, default=None)
    p.add_argument("--data-iters", type=int, default=None)
    args = p.parse_args(argv)
    budget = Budget(args)
    n_volumes = budget.pick("volumes", BATCH, 64)
    if n_volumes < BATCH:
        raise SystemExit(f"--volumes must be >= {BATCH}")
    data_warmup, data_iters = budget.pick("data_warmup", 1, 2), budget.pick("data_iters", 3, 40)
    warmup, iters = budget.pick("warmup", 1, 5), budget.pick("iters", 3, 50)
    repeats, loss_steps = budget.pick("repeats", 1, 7), budget.pick("loss_steps", 3, 50)
    threads = budget.threads
    budget.settings.update(batch=BATCH, spatial_size=SIZE)
    cmd = command_line("benchmarks/bench_rubik.py", argv)
    t0 = time.perf_counter()
    machine = machine_info()
    with tempfile.TemporaryDirectory(prefix="bench-rubik-") as tmp:
        root = Path(tmp) / "headct"
        print(f"[bench] writing {n_volumes} volumes of {args.volume_size}^3 to {root}", file=sys.stderr, flush=True)
        volumes = run_isolated(write_volumes, root, n_volumes, args.volume_size, preload=PRELOAD)
        configs, data_comps = data_plan(str(root), threads)
        data_res = run_interleaved(configs, data_warmup, data_iters, repeats, preload=PRELOAD)
    data_rows = compare(data_res, data_comps)
    configs, train_comps = train_plan(threads)
    train_res = run_interleaved(configs, warmup, iters, repeats, preload=PRELOAD)
    train_rows = compare(train_res, train_comps)
    print(f"[bench] loss drift: {loss_steps} Rubik steps in fp32 and bf16", file=sys.stderr, flush=True)
    drift = run_isolated(loss_drift, loss_steps, threads=threads, preload=PRELOAD)
    meta = run_meta(cmd, t0, machine, budget, volumes=volumes)
    return finish(budget, SECTION, meta, render(meta, data_rows, train_rows, data_res, drift),
                  {"data_configs": data_res, "data_comparisons": data_rows, "train_configs": train_res,
                   "train_comparisons": train_rows, "loss_drift": drift})


if __name__ == "__main__":
    sys.exit(main())
