"""The ``medlearn`` command.

::

    medlearn list                              registered methods
    medlearn demo [NAME ...]                   built-in demos on synthetic data, summary table
    medlearn reproduce NAME [--out DIR --resume]
                                               CPU-scale reproduction; table to docs/results.md
    medlearn synth NAME --out DIR [...]        synthetic data in a public dataset layout
    medlearn index [ROOT]                      ROOT/index.html: every run report under ROOT (default runs)
    medlearn export --ckpt CKPT --format onnx|torchscript [--out FILE]
                                               a deployable model + its preprocessing JSON, parity-checked
    medlearn corrupt-masks --masks DIR|CSV --out DIR [--fraction 0.5 --seed 0 ...]
                                               a copy of a disc / cup mask set with label noise
    medlearn fit|validate|test|predict --config FILE [--section.key value ...]
                                               LightningCLI over any medlearn model and datamodule

``fit`` and friends are Lightning's own CLI (``--print_config``, dotted overrides,
``--trainer.devices``, ``--trainer.strategy ddp``, ``--trainer.precision bf16-mixed``) with
medlearn's defaults added: run folder = ``trainer.default_root_dir``, CSV + TensorBoard loggers,
last + best checkpoints (atomic, weights-only loading), RNG state in checkpoints, report.html.
"""

from __future__ import annotations

import argparse
import inspect
import json
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medlearn.runtime import default_threads

__all__ = ["main"]

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")


def _lightning_cli(argv: list[str], from_command_line: bool = False) -> None:
    from lightning.pytorch import LightningDataModule, LightningModule, Trainer
    from lightning.pytorch.cli import LightningCLI
    from lightning.pytorch.utilities import rank_zero_only

    from medlearn.engine.checkpoint import check_checkpoint, remove_partial_writes, safe_load
    from medlearn.engine.config import link_input_size
    from medlearn.engine.runlock import RunLock
    from medlearn.engine.trainer import (
        TRAINER_DEFAULTS,
        open_run_folder,
        quiet_console,
        set_cpu_threads,
        trainer_arguments,
    )

    class MedlearnCLI(LightningCLI):
        def add_arguments_to_parser(self, parser: Any) -> None:
            parser.add_argument("--overwrite", type=bool, default=False,
                                help="allow `fit` to write into a run folder that already holds checkpoints")
            parser.set_defaults({f"trainer.{k}": v for k, v in TRAINER_DEFAULTS.items()})

        def before_instantiate_classes(self) -> None:
            sub = self.config.get(str(self.subcommand), self.config)
            if sub.get("model") is not None and sub.get("data") is not None:
                link_input_size(sub["model"], sub["data"])

        def _parse_ckpt_path(self) -> None:
            # LightningCLI reads the model's hyper-parameters from --ckpt_path (and imports the class it
            # names); read it the safe way first: weights only, a medlearn module, the configured one.
            sub = self.config.get(self.config.get("subcommand") or "", None)
            ckpt_path = sub.get("ckpt_path") if sub is not None else None
            if not ckpt_path:
                return
            ckpt = safe_load(ckpt_path)
            model = sub.get("model")
            configured = model.get("class_path") if model is not None and hasattr(model, "get") else None
            check_checkpoint(ckpt, ckpt_path, module=str(configured) if configured else None)
            hparams = dict(ckpt.get("hyper_parameters") or {})
            hparams.pop("_instantiator", None)
            if not hparams:
                return
            if "_class_path" in hparams:
                hparams = {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
            self.config = self.parser.parse_object({self.config.subcommand: {"model": hparams}}, self.config)

        def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Any]) -> Trainer:
            sub = self.config.get(str(self.subcommand), self.config)
            folder = open_run_folder(config.get("default_root_dir"), str(self.subcommand),
                                     resume=bool(sub.get("ckpt_path")), overwrite=bool(sub.get("overwrite")),
                                     lock=getattr(rank_zero_only, "rank", 0) == 0)  # one claim per run, on rank 0
            lock = folder.lock
            if lock is not None:
                locks.append(lock)
                for note in (lock.describe_takeover(), lock.unsupported and f"{lock.unsupported}; running unlocked"):
                    if note:
                        print(f"medlearn: {note}", flush=True)
                for p in remove_partial_writes(folder.checkpoints) if lock.held else []:  # no writer but us
                    print(f"medlearn: removed {p}, an unfinished checkpoint write of an interrupted run", flush=True)
            user_cbs = config.get("callbacks") or []
            args = trainer_arguments(folder, self.model, progress="rich" if sys.stdout.isatty() else "line",
                                     callbacks=user_cbs if isinstance(user_cbs, list) else [user_cbs],
                                     plugins=config.get("plugins"), logger=config.get("logger"))
            config.update(args)
            opened.append(folder)
            if folder.records != folder.root:
                print(f"medlearn: {self.subcommand} records go to {folder.records} "
                      f"(the training records in {folder.root} are kept)", flush=True)
            return super()._instantiate_trainer(config, callbacks)

    opened: list[Any] = []
    locks: list[RunLock] = []
    set_cpu_threads(None)
    quiet_console(verbose=True)
    try:
        MedlearnCLI(LightningModule, LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                    args=None if from_command_line else argv, save_config_kwargs={"overwrite": True},
                    seed_everything_default=0)
    except BaseException:
        for folder in opened:  # an evaluation that failed before writing results leaves no empty folder
            written = [p for p in folder.records.rglob("*")
                       if p.is_file() and p.suffix != ".yaml" and "tb" not in p.relative_to(folder.records).parts]
            if folder.records != folder.root and not written:
                shutil.rmtree(folder.records, ignore_errors=True)
        raise
    finally:
        for lock in locks:
            lock.release()


def _fresh_out(out: str | None, kind: str, overwrite: bool) -> Path:
    """``runs/<kind>/<timestamp>`` by default; an explicit non-empty folder needs ``--overwrite``."""
    if out is None:
        return Path("runs") / kind / time.strftime("%Y%m%d-%H%M%S")
    path = Path(out)
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise FileExistsError(f"{path} is not empty")
    return path


def _cmd_list(_: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from medlearn.registry import list_methods

    table = Table(title="medlearn methods")
    for col in ("name", "paper", "what it does"):
        table.add_column(col, overflow="fold")
    for m in list_methods():
        table.add_row(m.name, m.paper, m.summary)
    Console(width=160).print(table)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from medlearn.registry import get_method, list_methods

    specs = [get_method(n) for n in args.names] if args.names else list_methods()
    out = _fresh_out(args.out, "demo", args.overwrite)
    results = []
    from medlearn.engine.report import SUMMARY_FILE, write_runs_index
    from medlearn.io import atomic_write_text

    for spec in specs:
        print(f"== medlearn demo {spec.name} ==", flush=True)
        r = spec.demo(out_dir=out / spec.name)
        results.append(r)
        atomic_write_text(Path(r.run_dir) / SUMMARY_FILE, json.dumps(
            {"method": r.method, "headline": r.headline, "passed": r.passed, "seconds": round(r.seconds, 1)}))
    index = write_runs_index(out)
    table = Table(title="medlearn demo summary")
    for col in ("method", "result", "beats baseline", "time", "run folder"):
        table.add_column(col, overflow="fold")
    for r in results:
        table.add_row(r.method, r.headline, "yes" if r.passed else "NO", f"{r.seconds / 60:.1f} min",
                      str(r.run_dir / "report.html"))
    Console(width=160).print(table)
    print(f"every report of this demo: {index}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from medlearn.engine.checkpoint import CheckpointError
    from medlearn.engine.export import export_checkpoint

    try:
        model, info = export_checkpoint(args.ckpt, args.format, args.out)
    except (CheckpointError, ValueError, ImportError) as exc:
        print(f"medlearn: export failed: {exc}", file=sys.stderr)
        return 2
    parity = json.loads(info.read_text())["parity"]["max_abs_diff"]
    print(f"wrote {model} and {info} (max |difference| to PyTorch on a check batch: {parity:.2g})")
    return 0


def _cmd_index(args: argparse.Namespace) -> int:
    from medlearn.engine.report import write_runs_index

    root = Path(args.root)
    if not root.is_dir():
        print(f"medlearn: {root} is not a folder", file=sys.stderr)
        return 2
    out = write_runs_index(root)
    print(f"wrote {out}")
    return 0


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from medlearn.registry import get_method

    spec = get_method(args.name)
    if spec.reproduce is None:
        print(f"{args.name} has no reproduction recipe", file=sys.stderr)
        return 2
    if args.resume and not args.out:
        print("medlearn: --resume needs the --out folder of the interrupted reproduction", file=sys.stderr)
        return 2
    out = Path(args.out) if args.resume else _fresh_out(args.out, "reproduce", args.overwrite)
    kwargs: dict[str, Any] = {"out_dir": out / spec.name, "results_md": args.results or None, "resume": args.resume}
    if args.seeds:
        kwargs["seeds"] = tuple(args.seeds)
    print(spec.reproduce(**kwargs))
    return 0


def _cmd_oneshot(args: argparse.Namespace) -> int:
    from medlearn.methods.ltnet.recipe import oneshot

    for flag, path in (("--atlas", args.atlas), ("--atlas-labels", args.atlas_labels), ("--images", args.images)):
        if not Path(path).exists():
            print(f"medlearn: {flag} {path} does not exist", file=sys.stderr)
            return 2
    out = Path(args.out)
    if out.is_dir() and any(out.iterdir()) and not args.overwrite:
        raise FileExistsError(f"{out} is not empty")
    res = oneshot(args.atlas, args.atlas_labels, args.images, out, arm=args.arm, config=args.config,
                  epochs=args.epochs, seed=args.seed, eval_labels=args.eval_labels)
    if "dice" in res:
        print(f"Dice against --eval-labels (mean over structures and images): {res['dice']:.4f}")
    return 0


def _oneshot_parser(sub: Any) -> None:
    o = sub.add_parser("oneshot", help="label a folder of images from one labelled atlas (LT-Net): trains on the "
                                       "images, writes one label map per image")
    o.add_argument("--atlas", required=True, help="atlas image (NIfTI or FreeSurfer .mgz)")
    o.add_argument("--atlas-labels", required=True, help="the atlas's integer label map, same grid")
    o.add_argument("--images", required=True, help="folder of images to label (or a CSV with an 'image' column)")
    o.add_argument("--out", required=True, help="where the label maps (the images' file names) and run/ go")
    o.add_argument("--arm", choices=["ltnet", "voxelmorph"], default="ltnet")
    o.add_argument("--config", default=None, help="config to start from (default configs/ltnet/oneshot.yaml)")
    o.add_argument("--epochs", type=int, default=None)
    o.add_argument("--seed", type=int, default=0)
    o.add_argument("--eval-labels", default=None, help="optional folder of reference label maps: those images are "
                                                       "held out of training and their Dice is reported")
    o.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")


def _synth_parser(sub: Any) -> None:
    from medlearn.synth import get_synth, list_synth

    p = sub.add_parser("synth", help="write synthetic data in a public dataset layout")
    ss = p.add_subparsers(dest="synth_name", required=True)
    for name, help_text in list_synth().items():
        fn = get_synth(name)
        sp = ss.add_parser(name, help=help_text, description=help_text)
        for pname, par in inspect.signature(fn).parameters.items():
            if pname == "out":
                sp.add_argument("--out", required=True, help="output folder")
                continue
            if par.kind not in (par.POSITIONAL_OR_KEYWORD, par.KEYWORD_ONLY):
                continue
            flag = "--" + pname.replace("_", "-")
            default = par.default if par.default is not inspect.Parameter.empty else None
            if isinstance(default, bool):
                sp.add_argument(flag, dest=pname, action="store_true", default=default, help=f"(default {default})")
            else:
                typ = type(default) if default is not None and not isinstance(default, (list, tuple)) else str
                ann = str(par.annotation)
                if default is None and "int" in ann:
                    typ = int
                elif default is None and "float" in ann:
                    typ = float
                sp.add_argument(flag, dest=pname, type=typ, default=default, help=f"(default {default})")


def _cmd_synth(args: argparse.Namespace) -> int:
    from medlearn.synth import get_synth

    fn = get_synth(args.synth_name)
    names = set(inspect.signature(fn).parameters)
    kwargs = {k: v for k, v in vars(args).items() if k in names}
    out = fn(**kwargs)
    print(f"wrote {args.synth_name} data to {out}")
    return 0


def _cmd_corrupt_masks(args: argparse.Namespace) -> int:
    from medlearn.synth.corrupt import corrupt_masks

    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    try:
        out = corrupt_masks(args.masks, args.out, fraction=args.fraction, seed=args.seed, kinds=kinds,
                            radius=tuple(args.radius), shift=tuple(args.shift), encoding=args.encoding,
                            overwrite=args.overwrite)
    except ValueError as exc:
        if type(exc) is not ValueError:  # DataError: reported by main
            raise
        print(f"medlearn: {exc}", file=sys.stderr)
        return 2
    with (out / "corruption.csv").open(encoding="utf-8") as f:
        flags = [line.split(",")[1] for line in f.read().splitlines()[1:]]
    print(f"wrote {len(flags)} masks to {out} ({flags.count('1')} corrupted); which and how: {out / 'corruption.csv'}")
    return 0


def _corrupt_parser(sub: Any) -> None:
    from medlearn.synth.corrupt import CORRUPTIONS, ENCODINGS

    c = sub.add_parser("corrupt-masks", help="write a copy of a disc / cup mask set with a fraction of the masks "
                                             "corrupted (the input is never modified)")
    c.add_argument("--masks", required=True, help="a folder of masks (BMP / PNG / TIFF, recursive) or a CSV with a "
                                                  "mask column")
    c.add_argument("--out", required=True, help="output folder (masks at their relative paths + corruption.csv)")
    c.add_argument("--fraction", type=float, default=0.5, help="share of the masks corrupted (default 0.5)")
    c.add_argument("--seed", type=int, default=0, help="seed of the choice and of every parameter (default 0)")
    c.add_argument("--kinds", default=",".join(CORRUPTIONS), help=f"comma-separated, from {', '.join(CORRUPTIONS)}")
    c.add_argument("--radius", type=int, nargs=2, default=(3, 5), metavar=("MIN", "MAX"),
                   help="disc dilation / erosion radius (cup: one less) and elastic displacement, pixels (3 5)")
    c.add_argument("--shift", type=int, nargs=2, default=(2, 5), metavar=("MIN", "MAX"),
                   help="shift per axis, pixels (2 5)")
    c.add_argument("--encoding", choices=ENCODINGS, default="auto",
                   help="refuge (255 / 128 / 0), labels (0 / 1 / 2) or auto (from the values)")
    c.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="medlearn", description=__doc__.split("\n\n")[0] if __doc__ else None)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="registered methods")
    d = sub.add_parser("demo", help="run built-in demos on synthetic data")
    d.add_argument("names", nargs="*", help="methods (default: all)")
    d.add_argument("--out", default=None, help="output folder (default runs/demo/<timestamp>)")
    d.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")
    r = sub.add_parser("reproduce", help="CPU-scale reproduction of a paper's claim")
    r.add_argument("name")
    r.add_argument("--out", default=None, help="output folder (default runs/reproduce/<timestamp>)")
    r.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")
    r.add_argument("--resume", action="store_true",
                   help="continue an interrupted reproduction in --out, keeping its finished runs (results.json)")
    r.add_argument("--seeds", type=int, nargs="+")
    r.add_argument("--results", default="docs/results.md", help="markdown file to update ('' for none)")
    ex = sub.add_parser("export", help="export a checkpoint's network as ONNX or TorchScript (+ a JSON of its inputs)")
    ex.add_argument("--ckpt", required=True, help="a medlearn checkpoint")
    ex.add_argument("--format", choices=["onnx", "torchscript"], default="onnx")
    ex.add_argument("--out", default=None, help="model file (default: beside the checkpoint)")
    ix = sub.add_parser("index", help="write ROOT/index.html listing every run report under ROOT")
    ix.add_argument("root", nargs="?", default="runs", help="folder of runs (default runs)")
    _synth_parser(sub)
    _corrupt_parser(sub)
    _oneshot_parser(sub)
    for c in LIGHTNING_COMMANDS:
        sub.add_parser(c, help=f"Lightning {c} with a config (see `medlearn {c} --help`)", add_help=False)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``medlearn`` with ``argv`` (default: the process arguments); returns the exit status."""
    from_command_line = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    default_threads()  # a malformed MEDLEARN_THREADS fails here, before any data is written
    from medlearn.engine.checkpoint import CheckpointError, CheckpointWriteError
    from medlearn.engine.runlock import RunLockedError
    from medlearn.io.errors import DataError

    try:
        if argv and argv[0] in LIGHTNING_COMMANDS:
            _lightning_cli(argv, from_command_line)
            return 0
        args = build_parser().parse_args(argv)
        return {"list": _cmd_list, "demo": _cmd_demo, "reproduce": _cmd_reproduce, "synth": _cmd_synth,
                "corrupt-masks": _cmd_corrupt_masks, "index": _cmd_index, "export": _cmd_export,
                "oneshot": _cmd_oneshot}[args.command](args)
    except CheckpointError as exc:
        print(f"medlearn: checkpoint refused: {exc}", file=sys.stderr)
        return 2
    except RunLockedError as exc:
        print(f"medlearn: run folder busy: {exc}", file=sys.stderr)
        return 2
    except DataError as exc:
        print(f"medlearn: data error: {exc}", file=sys.stderr)
        return 2
    except CheckpointWriteError as exc:
        print(f"medlearn: checkpoint not saved: {exc}", file=sys.stderr)
        return 1
    except FileExistsError as exc:
        print(f"medlearn: {exc} (pass --overwrite to replace it)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
