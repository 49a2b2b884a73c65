"""The ``medlearn`` command.

::

    medlearn list                              registered methods
    medlearn demo [NAME ...]                   built-in demos on synthetic data, summary table
    medlearn reproduce NAME [--out DIR --resume]
                                               CPU-scale reproduction; table to docs/results.md
    medlearn synth NAME --out DIR [...]        synthetic data in a public dataset layout
    medlearn check-data ROOT [--layout NAME] [--json] [--strict] [--quick] [--quiet]
                                               every problem of a dataset, grouped and counted;
                                               exit 1 on errors (on warnings too with --strict)
    medlearn index [ROOT]                      ROOT/index.html: every run report under ROOT (default runs)
    medlearn export --ckpt CKPT --format onnx|torchscript [--out FILE]
                                               a deployable model + its preprocessing JSON, parity-checked
    medlearn corrupt-masks --masks DIR|CSV --out DIR [--fraction 0.5 --seed 0 ...]
                                               a copy of a disc / cup mask set with label noise
    medlearn fit|validate|test|predict --config FILE [--section.key value ...]
                                               LightningCLI over any medlearn model and datamodule

Every command takes ``--quiet``: no progress bars, no per-run or per-epoch lines, no Lightning
progress, only the command's results and real warnings (also ``MEDLEARN_QUIET=1``, which child
processes inherit). Without it, long commands show their progress: bars with counts and the time
left on a terminal (``medlearn.console``), one line per run, demo or epoch in a log or a pipe.

``fit`` and friends are Lightning's own CLI (``--print_config``, dotted overrides,
``--trainer.devices``, ``--trainer.strategy ddp``, ``--trainer.precision bf16-mixed``) with
medlearn's defaults added: run folder = ``trainer.default_root_dir``, CSV + TensorBoard loggers,
last + best checkpoints (atomic, weights-only loading), RNG state in checkpoints, report.html.
``fit`` first runs the cheap part of ``check-data`` (tables and files, no pixel read) on the
data's root and stops with its listing when the dataset has errors.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medlearn.console import Countdown, lightning_progress, say
from medlearn.runtime import default_threads

__all__ = ["main"]

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")


def _lightning_cli(argv: list[str], from_command_line: bool = False) -> None:
    from lightning.pytorch import LightningDataModule, LightningModule, Trainer
    from lightning.pytorch.cli import LightningCLI
    from lightning.pytorch.utilities import rank_zero_only

    from medlearn.data.check import check_before_fit
    from medlearn.engine.checkpoint import check_checkpoint, remove_partial_writes, safe_load
    from medlearn.engine.config import link_input_size
    from medlearn.engine.predict import uncached_data
    from medlearn.engine.runlock import RunLock
    from medlearn.engine.trainer import (
        TRAINER_DEFAULTS,
        AutoPrecisionTrainer,
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

        def before_fit(self) -> None:
            check_before_fit(self.datamodule)  # the cheap dataset checks: stop with the listing on errors

        def before_instantiate_classes(self) -> None:
            sub = self.config.get(str(self.subcommand), self.config)
            if sub.get("model") is not None and sub.get("data") is not None:
                link_input_size(sub["model"], sub["data"])
            if self.subcommand == "predict" and sub.get("data") is not None:
                uncached_data(sub["data"])  # each input is read once: no cache to grow

        def predict(self, **kwargs: Any) -> None:
            # the prediction writers write every batch as it ends; Lightning keeps no outputs
            kwargs["return_predictions"] = False
            self.trainer.predict(**kwargs)

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
            progress = lightning_progress("rich" if sys.stdout.isatty() else "line")
            args = trainer_arguments(folder, self.model, progress=progress,
                                     callbacks=user_cbs if isinstance(user_cbs, list) else [user_cbs],
                                     plugins=config.get("plugins"), logger=config.get("logger"),
                                     precision=config.get("precision"), accelerator=config.get("accelerator"))
            config.update(args)
            opened.append(folder)
            if folder.records != folder.root:
                print(f"medlearn: {self.subcommand} records go to {folder.records} "
                      f"(the training records in {folder.root} are kept)", flush=True)
            return super()._instantiate_trainer(config, callbacks)

    import medlearn.methods  # noqa: F401  (registers the methods' importers of released weights)

    opened: list[Any] = []
    locks: list[RunLock] = []
    set_cpu_threads(None)
    quiet_console(verbose=True)
    try:
        MedlearnCLI(LightningModule, LightningDataModule, trainer_class=AutoPrecisionTrainer,
                    subclass_mode_model=True, subclass_mode_data=True,
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


PRECISION_CHOICES = ("auto", "32-true", "bf16-mixed")


def _precision_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--precision", choices=PRECISION_CHOICES, default=None,
                        help="numeric precision of every run: auto (default: bf16-mixed where the CPU or GPU computes "
                             "bfloat16 natively and the method allows it, else fp32), 32-true (fp32 everywhere) or "
                             "bf16-mixed; same as setting MEDLEARN_PRECISION")


def _apply_precision(args: argparse.Namespace) -> None:
    """``--precision`` reaches every run of the command (and its child processes) through the environment."""
    from medlearn.runtime import PRECISION_ENV

    if getattr(args, "precision", None):
        _set_env(PRECISION_ENV, args.precision)


def _quiet_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bars or progress lines, only results and warnings (same as MEDLEARN_QUIET=1)")


def _apply_quiet(quiet: bool) -> None:
    """``--quiet`` reaches the whole command (and its child processes) through the environment."""
    from medlearn.console import QUIET_ENV

    if quiet:
        _set_env(QUIET_ENV, "1")


def _set_env(key: str, value: str) -> None:
    _saved_env.setdefault(key, os.environ.get(key))
    os.environ[key] = value


_saved_env: dict[str, str | None] = {}


def _restore_env() -> None:
    """A ``main([...])`` call from Python leaves the process environment as it found it."""
    for key, value in _saved_env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    _saved_env.clear()


def _cmd_check_data(args: argparse.Namespace) -> int:
    import yaml

    from medlearn.data.check import check_dataset, dataset_roots

    options: dict[str, Any] = {}
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep or not key:
            print(f"medlearn: --option needs KEY=VALUE, got {item!r}", file=sys.stderr)
            return 2
        options[key.strip()] = yaml.safe_load(value)
    root = Path(args.root)
    targets: list[tuple[Path, str | None]] = [(root, args.layout)]
    if args.layout in (None, "auto") and args.kind is None:
        # detected once here: the root, or each dataset a folder of several holds, in its own layout
        found = dataset_roots(root, **options)
        if found:
            targets = [(r, f"{lay.kind}/{lay.name}") for r, lay in found]
    several = [r for r, _ in targets] != [root]
    if several and not args.json:
        names = ", ".join(f"{r.name} ({layout})" for r, layout in targets)
        print(f"{args.root} holds {len(targets)} dataset(s), each checked in its own layout: {names}\n")
    reports = [check_dataset(r, layout=layout, kind=args.kind, pixels=not args.quick, options=options)
               for r, layout in targets]
    ok = all(report.ok(args.strict) for report in reports)
    if args.json:
        dicts = [{**report.to_dict(), "ok": report.ok(args.strict), "strict": args.strict} for report in reports]
        print(json.dumps({"root": str(args.root), "ok": ok, "datasets": dicts} if several else dicts[0], indent=2))
    else:
        print("\n\n".join(report.format(limit=None if args.all else 20) for report in reports))
    return 0 if ok else 1


def _check_data_parser(sub: Any) -> None:
    c = sub.add_parser(
        "check-data", help="check a dataset in any registered layout and list every problem, grouped and counted",
        description="Check a dataset in any registered layout (detected unless --layout) and list every problem at "
                    "once, grouped by kind and counted: missing or unreadable files, image / mask shape, spacing or "
                    "affine mismatches, mask values outside the layout's label set, empty masks, duplicated ids, a "
                    "patient in two splits, non-finite or constant images, CT not in Hounsfield units, table rows "
                    "naming absent files and files no row names. Exit status 0 when there are no errors (warnings "
                    "allowed unless --strict), 1 otherwise.")
    c.add_argument("root", help="the dataset root (as given to the DataModule's root)")
    c.add_argument("--layout", default=None, help="layout name (e.g. brats, isic2018; KIND/NAME for a name several "
                                                  "kinds use, e.g. volume/folder); default: detected")
    c.add_argument("--kind", default=None, help="layout kind (radiograph, labelled2d, volume, segmentation2d ...): "
                                                "detect among its layouts only")
    c.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="a reader option, as in the config's data section (e.g. table=train.csv); repeatable")
    c.add_argument("--json", action="store_true", help="print a machine-readable summary (JSON) instead")
    c.add_argument("--strict", action="store_true", help="warnings fail too (exit 1)")
    c.add_argument("--quick", action="store_true", help="only the cheap checks (tables and files, no pixel read), "
                                                        "as `medlearn fit` runs them")
    c.add_argument("--all", action="store_true", help="list every problem (default: 20 per kind, the rest counted)")
    _quiet_flag(c)


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

    clock = Countdown(len(specs), noun="demo")
    for spec in specs:
        k = clock.next()
        say(clock.line(k, spec.name, "started"))
        t0 = time.perf_counter()
        r = spec.demo(out_dir=out / spec.name)
        clock.timed(time.perf_counter() - t0)
        say(clock.line(k, spec.name, "done", seconds=time.perf_counter() - t0))
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
    say(f"wrote {out}")
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
                  epochs=args.epochs, seed=args.seed, eval_labels=args.eval_labels, progress="auto")
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
    _quiet_flag(o)


def _synth_parser(sub: Any) -> None:
    from medlearn.synth import get_synth, list_synth

    p = sub.add_parser("synth", help="write synthetic data in a public dataset layout")
    ss = p.add_subparsers(dest="synth_name", required=True)
    for name, help_text in list_synth().items():
        fn = get_synth(name)
        sp = ss.add_parser(name, help=help_text, description=help_text)
        _quiet_flag(sp)
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
    say(f"wrote {args.synth_name} data to {out}")
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
    say(f"wrote {len(flags)} masks to {out} ({flags.count('1')} corrupted); which and how: {out / 'corruption.csv'}")
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
    _quiet_flag(c)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="medlearn", description=__doc__.split("\n\n")[0] if __doc__ else None)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="registered methods")
    d = sub.add_parser("demo", help="run built-in demos on synthetic data")
    d.add_argument("names", nargs="*", help="methods (default: all)")
    d.add_argument("--out", default=None, help="output folder (default runs/demo/<timestamp>)")
    d.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")
    _precision_flag(d)
    _quiet_flag(d)
    r = sub.add_parser("reproduce", help="CPU-scale reproduction of a paper's claim")
    r.add_argument("name")
    r.add_argument("--out", default=None, help="output folder (default runs/reproduce/<timestamp>)")
    r.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")
    r.add_argument("--resume", action="store_true",
                   help="continue an interrupted reproduction in --out, keeping its finished runs (results.json)")
    r.add_argument("--seeds", type=int, nargs="+")
    r.add_argument("--results", default="docs/results.md", help="markdown file to update ('' for none)")
    _precision_flag(r)
    _quiet_flag(r)
    ex = sub.add_parser("export", help="export a checkpoint's network as ONNX or TorchScript (+ a JSON of its inputs)")
    ex.add_argument("--ckpt", required=True, help="a medlearn checkpoint")
    ex.add_argument("--format", choices=["onnx", "torchscript"], default="onnx")
    ex.add_argument("--out", default=None, help="model file (default: beside the checkpoint)")
    _quiet_flag(ex)
    ix = sub.add_parser("index", help="write ROOT/index.html listing every run report under ROOT")
    ix.add_argument("root", nargs="?", default="runs", help="folder of runs (default runs)")
    _quiet_flag(ix)
    _synth_parser(sub)
    _check_data_parser(sub)
    _corrupt_parser(sub)
    _oneshot_parser(sub)
    for c in LIGHTNING_COMMANDS:
        sub.add_parser(c, help=f"Lightning {c} with a config (see `medlearn {c} --help`; --quiet: no progress "
                               "bar, no epoch lines)", add_help=False)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``medlearn`` with ``argv`` (default: the process arguments); returns the exit status."""
    from_command_line = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    default_threads()  # a malformed MEDLEARN_THREADS fails here, before any data is written
    from medlearn.console import show_log
    from medlearn.engine.checkpoint import CheckpointError, CheckpointWriteError
    from medlearn.engine.runlock import RunLockedError
    from medlearn.io.errors import DataError
    from medlearn.registry import UnknownMethodError

    try:
        if argv and argv[0] in LIGHTNING_COMMANDS:
            if "--quiet" in argv:  # medlearn's flag, not Lightning's: taken out before LightningCLI parses
                argv = [a for a in argv if a != "--quiet"]
                _apply_quiet(True)
                if from_command_line:
                    sys.argv[1:] = argv
            show_log()
            _lightning_cli(argv, from_command_line)
            return 0
        args = build_parser().parse_args(argv)
        _apply_precision(args)
        _apply_quiet(getattr(args, "quiet", False))
        show_log()
        return {"list": _cmd_list, "demo": _cmd_demo, "reproduce": _cmd_reproduce, "synth": _cmd_synth,
                "corrupt-masks": _cmd_corrupt_masks, "index": _cmd_index, "export": _cmd_export,
                "check-data": _cmd_check_data,
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
    except UnknownMethodError as exc:
        print(f"medlearn: {exc}", file=sys.stderr)
        return 2
    finally:
        _restore_env()


if __name__ == "__main__":
    raise SystemExit(main())
