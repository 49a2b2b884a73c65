"""The ``medlearn`` command.

::

    medlearn list                              registered methods
    medlearn demo [NAME ...]                   built-in demos on synthetic data, summary table
    medlearn reproduce NAME                    CPU-scale reproduction; table to docs/results.md
    medlearn synth NAME --out DIR [...]        synthetic data in a public dataset layout
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
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medlearn.runtime import default_threads

__all__ = ["main"]

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")


def _lightning_cli(argv: list[str]) -> None:
    from lightning.pytorch import LightningDataModule, LightningModule, Trainer
    from lightning.pytorch.cli import LightningCLI

    from medlearn.engine.checkpoint import AtomicCheckpointIO
    from medlearn.engine.trainer import set_cpu_threads, trainer_callbacks
    from medlearn.io.errors import DataError

    class MedlearnCLI(LightningCLI):
        def add_arguments_to_parser(self, parser: Any) -> None:
            parser.add_argument("--overwrite", type=bool, default=False,
                                help="allow `fit` to write into a run folder that already holds checkpoints")

        def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Any]) -> Trainer:
            from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

            run_dir = Path(config.get("default_root_dir") or f"runs/{time.strftime('%Y%m%d-%H%M%S')}")
            config["default_root_dir"] = str(run_dir)
            sub = self.config.get(str(self.subcommand), self.config)
            existing = sorted((run_dir / "checkpoints").glob("*.ckpt")) if (run_dir / "checkpoints").is_dir() else []
            if self.subcommand == "fit" and existing and not sub.get("ckpt_path") and not sub.get("overwrite"):
                raise DataError(run_dir, f"this run folder already holds {len(existing)} checkpoint(s); resume "
                                         "with --ckpt_path <run>/checkpoints/last.ckpt, choose another "
                                         "--trainer.default_root_dir, or pass --overwrite true")
            if config.get("logger") in (None, True):
                config["logger"] = [CSVLogger(save_dir=str(run_dir), name="", version=""),
                                    TensorBoardLogger(save_dir=str(run_dir), name="tb", version="",
                                                      default_hp_metric=False)]
            monitor, mode = getattr(self.model, "monitor", (None, "max"))
            progress = "rich" if sys.stdout.isatty() else "line"
            config["callbacks"] = list(config.get("callbacks") or []) + trainer_callbacks(
                run_dir, monitor, mode, progress=progress, report=self.subcommand == "fit")
            if progress == "line":
                config["enable_progress_bar"] = False
            if self.subcommand == "predict":
                from medlearn.engine.predict import prediction_writer

                config["callbacks"].append(prediction_writer(self.model, run_dir))
            plugins = config.get("plugins") or []
            plugins = plugins if isinstance(plugins, list) else [plugins]
            if not any(type(p).__name__.endswith("CheckpointIO") for p in plugins):
                plugins.append(AtomicCheckpointIO())
            config["plugins"] = plugins
            return super()._instantiate_trainer(config, callbacks)

    set_cpu_threads(None)
    MedlearnCLI(LightningModule, LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                args=argv, save_config_kwargs={"overwrite": True}, seed_everything_default=0)


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
    for spec in specs:
        print(f"== medlearn demo {spec.name} ==", flush=True)
        results.append(spec.demo(out_dir=out / spec.name))
    table = Table(title="medlearn demo summary")
    for col in ("method", "result", "beats baseline", "time", "run folder"):
        table.add_column(col, overflow="fold")
    for r in results:
        table.add_row(r.method, r.headline, "yes" if r.passed else "NO", f"{r.seconds / 60:.1f} min",
                      str(r.run_dir / "report.html"))
    Console(width=160).print(table)
    return 0


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from medlearn.registry import get_method

    spec = get_method(args.name)
    if spec.reproduce is None:
        print(f"{args.name} has no reproduction recipe", file=sys.stderr)
        return 2
    out = _fresh_out(args.out, "reproduce", args.overwrite)
    kwargs: dict[str, Any] = {"out_dir": out / spec.name, "results_md": args.results or None}
    if args.seeds:
        kwargs["seeds"] = tuple(args.seeds)
    print(spec.reproduce(**kwargs))
    return 0


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
    r.add_argument("--seeds", type=int, nargs="+")
    r.add_argument("--results", default="docs/results.md", help="markdown file to update ('' for none)")
    _synth_parser(sub)
    for c in LIGHTNING_COMMANDS:
        sub.add_parser(c, help=f"Lightning {c} with a config (see `medlearn {c} --help`)", add_help=False)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    default_threads()  # a malformed MEDLEARN_THREADS fails here, before any data is written
    from medlearn.io.errors import DataError

    try:
        if argv and argv[0] in LIGHTNING_COMMANDS:
            _lightning_cli(argv)
            return 0
        args = build_parser().parse_args(argv)
        return {"list": _cmd_list, "demo": _cmd_demo, "reproduce": _cmd_reproduce, "synth": _cmd_synth}[
            args.command](args)
    except DataError as exc:
        print(f"medlearn: data error: {exc}", file=sys.stderr)
        return 2
    except FileExistsError as exc:
        print(f"medlearn: {exc} (pass --overwrite to replace it)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
