"""Crossover-Net benchmark: dense inference pixels per second against a U-Net forward on the same image, and
the training step against the official implementation.

Usage::

    python benchmarks/bench_crossover.py [--quick] [--out docs/benchmarks.md] [--json PATH] [--threads N]
                                         [--official PATH] [--no-paper]

Dense inference (``CrossoverSegmenter.segment``: every pixel classified from its own patch, chunks of 4096
centres, argmax; eval mode, ``torch.no_grad``, no Trainer, no data loading) against the U-Net baseline's
forward + argmax (``medlearn.tasks.Segmenter``) on the same image:

* demo scale: ``configs/crossover/demo.yaml`` (the small net, 48 x 8 strips) on a 96 x 96 image, every pixel,
  against ``configs/crossover/demo_unet.yaml`` (smallcnn U-Net) on that image;
* paper scale: ``configs/crossover/kits19.yaml`` (the official 100 x 20 net) on a 192 x 192 KiTS-size ROI,
  every 4th row and column (2,304 classified pixels: a full stride-1 pass is 16 x that, too long for a CPU
  benchmark), against the same U-Net at 192 x 192.

A step's pixels are the pixels it classifies; the number to read is the per-pixel time ratio
(crossover ms per classified pixel / U-Net ms per pixel).

Training step against the official code (if its repository is found: ``--official``, default the
``MEDLEARN_CROSSOVER_OFFICIAL`` variable or ``/work/.mirror/Qianyu1226+Crossover-Net/repo``): one Adam step
on the same batch of 200 packed 100 x 40 patches with the same threads, medlearn's ``CrossoverNet("hv100x20")``
+ ``CrossoverLoss("code")`` against the official ``hvCNN`` + ``MyLoss`` driven as ``train_vh.py`` drives them
(its profile flattening and slicing; its ``print`` calls silenced, so that console output is not timed).

Each configuration runs in its own process, repeats interleaved (``benchmarks/harness.py``); ``--quick``: 1
repeat of 1 + 1 steps. The section between ``<!-- crossover:start -->`` and ``<!-- crossover:end -->`` of
``--out`` is replaced; the full results go to ``--json``.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (  # noqa: E402
    BenchConfig,
    Budget,
    Comparison,
    StepBench,
    bench_parser,
    command_line,
    compare,
    finish,
    machine_info,
    markdown_table,
    run_interleaved,
    run_meta,
    section_header,
)

ROOT = Path(__file__).resolve().parents[1]
_CFG = ROOT / "configs" / "crossover"
CONFIGS = {"demo": _CFG / "demo.yaml", "paper": _CFG / "kits19.yaml", "unet": _CFG / "demo_unet.yaml"}
PRELOAD = ["torch", "medlearn.methods.crossover.module", "medlearn.tasks.segmentation", "medlearn.engine.config"]
SECTION = "crossover"
OFFICIAL = os.environ.get("MEDLEARN_CROSSOVER_OFFICIAL", "/work/.mirror/Qianyu1226+Crossover-Net/repo")


def make_dense(spec: dict[str, Any]) -> StepBench:
    """Harness factory: dense labelling of one image, ``spec = {kind: crossover | unet, scale, size, stride}``."""
    import warnings

    import torch

    from medlearn.engine.config import instantiate_class, load_config

    warnings.filterwarnings("ignore", message=r".*self\.log\(\)")
    torch.manual_seed(0)
    size, stride = int(spec["size"]), int(spec.get("stride", 1))
    image = torch.rand(1, 1, size, size, generator=torch.Generator().manual_seed(1))
    if spec["kind"] == "crossover":
        cfg = load_config(CONFIGS[spec["scale"]], {"model.init_args.eval_stride": stride,
                                                   "model.init_args.eval_chunk": 4096,
                                                   "model.init_args.postprocess": []})
        model = instantiate_class(cfg["model"]).eval()

        def step() -> Any:
            with torch.no_grad():
                return model.segment(image)

        pixels = len(range(0, size, stride)) ** 2
    else:
        cfg = load_config(CONFIGS["unet"])
        model = instantiate_class(cfg["model"]).eval()

        def step() -> Any:
            with torch.no_grad():
                return model(image).argmax(1)

        pixels = size * size
    params = sum(p.numel() for p in model.parameters())
    return StepBench(step, pixels, {"params": params, "pixels": pixels, "size": size, "stride": stride})


def _official_modules(folder: str) -> tuple[Any, Any]:
    import importlib.util

    mods = []
    for name in ("HV_net", "CrossLoss"):
        spec = importlib.util.spec_from_file_location(f"official_{name}", Path(folder) / f"{name}.py")
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        mod.print = lambda *a, **k: None  # type: ignore[attr-defined]  # silence the official debug prints
        mods.append(mod)
    return mods[0], mods[1]


def make_train_step(spec: dict[str, Any]) -> StepBench:
    """Harness factory: one Adam step on 200 packed 100 x 40 patches, ``spec = {impl: medlearn | official}``."""
    import torch

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    batch = 200
    x = torch.rand(batch, 1, 100, 40, generator=g)
    y = torch.randint(0, 2, (batch,), generator=g)
    if spec["impl"] == "medlearn":
        from medlearn.methods.crossover.losses import CrossoverLoss, nonoverlap_positions, overlap_positions
        from medlearn.methods.crossover.model import CrossoverNet

        net = CrossoverNet("hv100x20", long=100, short=20)
        loss_fn = CrossoverLoss(overlap_positions(19), nonoverlap_positions(19, 3), "code")
        opt = torch.optim.Adam(net.parameters(), lr=1e-4)

        def step() -> Any:
            logits, pv, ph = net(x[..., :20], x[..., 20:])
            loss = loss_fn(logits, y, pv, ph).total
            opt.zero_grad()
            loss.backward()
            opt.step()
            return loss

    else:
        hv_net, cross_loss = _official_modules(spec["folder"])
        net = hv_net.hvCNN()
        my_loss = cross_loss.MyLoss()
        opt = torch.optim.Adam(net.parameters(), lr=1e-4)

        def arms(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # as train_vh.py: afa = 5, dime = 19
            rows = 19 // 5
            special = torch.cat([p[:, :, 0:rows], p[:, :, 19 - rows:19]], 1)
            mid, half = 19 // 2, round(5 / 2)
            return p[:, :, mid - half:mid + half], special

        def step() -> Any:
            vx, hx, out = net(x[..., :20], x[..., 20:])
            vc, vs = arms(vx.t().reshape(batch, 64, 19))
            hc, hs = arms(hx.t().reshape(batch, 64, 19))
            loss = my_loss(vc, vs, hc, hs, out, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            return loss

    params = sum(p.numel() for p in net.parameters())
    return StepBench(step, batch, {"params": params})


def _official_folder(path: str) -> str | None:
    """A temporary folder with the official ``modules/HV_net.py`` and ``CrossLoss.py`` (from a clone or mirror)."""
    repo = Path(path)
    out = Path(tempfile.mkdtemp(prefix="crossover-official-"))
    for name in ("HV_net", "CrossLoss"):
        src = repo / "modules" / f"{name}.py"
        if src.is_file():
            text = src.read_text(encoding="utf-8-sig")
        elif repo.is_dir() and shutil.which("git"):
            res = subprocess.run(["git", "-C", str(repo), "show", f"HEAD:modules/{name}.py"], capture_output=True)
            if res.returncode:
                return None
            text = res.stdout.decode("utf-8-sig")
        else:
            return None
        (out / f"{name}.py").write_text(text, encoding="utf-8")
    return str(out)


def render(meta: dict[str, Any], dense: list[dict[str, Any]], train: list[dict[str, Any]],
           results: dict[str, Any], official: str | None) -> str:
    s = meta["settings"]
    lines = section_header(
        "Crossover-Net (dense inference vs U-Net; training step vs the official code)", meta,
        f"{s['warmup']} warm-up + {s['iters']} timed steps per repeat, {s['repeats']} interleaved repeat(s), "
        f"median; torch threads {s['threads']}")
    lines += [
        "Dense inference: a step labels one image, every pixel classified from its own patch "
        "(`CrossoverSegmenter.segment`, chunks of 4096 centres, argmax, no post-processing) or the U-Net baseline's "
        "forward + argmax (`medlearn.tasks.Segmenter`, `configs/crossover/demo_unet.yaml`, smallcnn encoder) on the "
        "same random image; eval mode, `torch.no_grad`, no Trainer, no data loading. Pixels/s = classified pixels "
        "per second; the ratio to read is the time per classified pixel, crossover / U-Net.", ""]
    rows = []
    for r in dense:
        mi, pi = results[r["method"]]["info"], results[r["peer"]]["info"]
        per_px = (r["method_ms"] / mi["pixels"]) / (r["peer_ms"] / pi["pixels"])
        per_rep = [m["ms_per_step"] / mi["pixels"] / (p["ms_per_step"] / pi["pixels"])
                   for m, p in zip(results[r["method"]]["repeats"], results[r["peer"]]["repeats"])]
        spread = f" ({min(per_rep):.0f}-{max(per_rep):.0f})" if len(per_rep) > 1 else ""
        rows.append([r["title"], f"{mi['pixels']:,}", f"{r['method_ms']:.0f}", f"{r['method_images_per_s']:,.0f}",
                     f"{pi['pixels']:,}", f"{r['peer_ms']:.1f}", f"{r['peer_images_per_s']:,.0f}",
                     f"**{per_px:.0f}**{spread}", f"{mi['params'] / 1e6:.3f} M / {pi['params'] / 1e6:.3f} M"])
    lines.append(markdown_table(["image", "crossover pixels", "crossover ms/step", "crossover pixels/s",
                                 "U-Net pixels", "U-Net ms/step", "U-Net pixels/s",
                                 "time per pixel, crossover / U-Net", "parameters crossover / U-Net"], rows,
                                "lrrrrrrrl"))
    lines += ["", "One forward per pixel (two strips each) against one forward per image: per-pixel patch "
                  "classification is orders of magnitude slower, which is what the paper's method costs at inference "
                  "(`eval_stride` 2 or 3 divides it by 4 or 9 for quick checks)."]
    if train:
        r = train[0]
        lines += ["", "Training step against the official implementation (repository: "
                      f"`{official}`): one Adam step on the same 200 packed 100 x 40 patches, same threads; medlearn: "
                      "`CrossoverNet(\"hv100x20\")` + `CrossoverLoss(\"code\")`; official: `hvCNN` + `MyLoss` "
                      "with `train_vh.py`'s profile flattening and slicing, its debug `print` calls silenced. Both "
                      f"nets have {results[r['method']]['info']['params']:,} parameters.", "",
                  markdown_table(["comparison", "medlearn ms/step", "official ms/step", "patches/s medlearn",
                                  "patches/s official", "time ratio medlearn/official"],
                                 [[r["title"], f"{r['method_ms']:.0f}", f"{r['peer_ms']:.0f}",
                                   f"{r['method_images_per_s']:.0f}", f"{r['peer_images_per_s']:.0f}",
                                   f"**{r['ratio']:.2f}** (per-repeat median "
                                   f"{statistics.median(r['ratio_per_repeat']):.2f})"]], "lrrrrl"),
                  "", "Same network, same arithmetic (the logits agree to 1e-5 with the official weights loaded, and "
                      "the loss to 1e-5: tests/methods/test_crossover_model.py); medlearn's profiles are the "
                      "branches' real ones, where the official flattening reinterprets their memory."]
    else:
        lines += ["", "Training step against the official implementation: not measured (its repository was not "
                      "found; pass `--official PATH`)."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = bench_parser(__doc__, "crossover", "smoke: 1 repeat of 1 + 1 steps")
    p.add_argument("--official", default=OFFICIAL, help="clone or bare mirror of Qianyu1226/Crossover-Net")
    p.add_argument("--no-paper", action="store_true", help="skip the 100 x 20 net at 192 px")
    args = p.parse_args(argv)
    budget = Budget(args)
    warmup, iters, repeats = budget.pick("warmup", 1, 1), budget.pick("iters", 1, 3), budget.pick("repeats", 1, 3)
    threads = budget.threads
    cmd = command_line("benchmarks/bench_crossover.py", argv)
    t0 = time.perf_counter()
    machine = machine_info()
    dense_cfgs = [BenchConfig("demo-crossover", make_dense, {"kind": "crossover", "scale": "demo", "size": 96},
                              threads=threads),
                  BenchConfig("demo-unet", make_dense, {"kind": "unet", "size": 96}, threads=threads)]
    dense_cmp = [Comparison("96 x 96, small net (48 x 8 strips), every pixel", "demo-crossover", "demo-unet")]
    if not args.no_paper:
        paper = {"kind": "crossover", "scale": "paper", "size": 192, "stride": 4}
        dense_cfgs += [BenchConfig("paper-crossover", make_dense, paper, threads=threads),
                       BenchConfig("paper-unet", make_dense, {"kind": "unet", "size": 192}, threads=threads)]
        dense_cmp.append(Comparison("192 x 192, official 100 x 20 net, every 4th row and column", "paper-crossover",
                                    "paper-unet"))
    results = run_interleaved(dense_cfgs, warmup, iters, repeats, preload=PRELOAD)
    dense = compare(results, dense_cmp)
    folder = _official_folder(args.official)
    train: list[dict[str, Any]] = []
    if folder:
        cfgs = [BenchConfig("train-medlearn", make_train_step, {"impl": "medlearn"}, threads=threads),
                BenchConfig("train-official", make_train_step, {"impl": "official", "folder": folder},
                            threads=threads)]
        res = run_interleaved(cfgs, warmup + 1, iters + 2, repeats, preload=PRELOAD)
        train = compare(res, [Comparison("hv100x20, batch 200", "train-medlearn", "train-official")])
        results.update(res)
    meta = run_meta(cmd, t0, machine, budget)
    body = render(meta, dense, train, results, args.official if folder else None)
    return finish(budget, SECTION, meta, body, {"configs": results, "dense": dense, "train": train})


if __name__ == "__main__":
    sys.exit(main())
