"""Run reports: ``report.html`` with PNG figures, written into the run folder.

A report is a list of :class:`Section` (heading, text, tables, figures). Methods add their own
sections (sample grids, per-class bars) through ``report_sections(run_dir)`` on their
LightningModule; :class:`ReportCallback` writes the loss curves from the run's metrics CSV and the
method's sections when ``fit`` ends. Figures use matplotlib's non-interactive Agg backend.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from lightning.pytorch import Callback  # noqa: E402

__all__ = ["Section", "write_report", "plot_metric_curves", "ReportCallback", "save_figure"]


@dataclass
class Section:
    """One block of a report."""

    heading: str
    text: str = ""
    figures: list[Path] = field(default_factory=list)
    table: tuple[Sequence[str], Sequence[Sequence[Any]]] | None = None


def save_figure(fig: Any, path: str | Path) -> Path:
    """Save a matplotlib figure as PNG and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return html.escape(str(v))


def write_report(run_dir: str | Path, title: str, sections: Sequence[Section], name: str = "report.html") -> Path:
    """Write ``run_dir/report.html`` (figure paths are made relative to ``run_dir``)."""
    run_dir = Path(run_dir)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}"
        "th{background:#eee}img{max-width:100%;margin:.5em 0;border:1px solid #ddd}"
        "pre{background:#f6f6f6;padding:.6em;overflow-x:auto}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p><small>written {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} "
        f"in {html.escape(str(run_dir))}</small></p>",
    ]
    for s in sections:
        parts.append(f"<h2>{html.escape(s.heading)}</h2>")
        if s.text:
            parts.append(f"<p>{html.escape(s.text)}</p>")
        if s.table is not None:
            header, rows = s.table
            parts.append("<table><tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>")
            for r in rows:
                parts.append("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in r) + "</tr>")
            parts.append("</table>")
        for fig in s.figures:
            fig = Path(fig)
            rel = fig.relative_to(run_dir) if fig.is_absolute() and fig.is_relative_to(run_dir) else fig
            parts.append(f"<div><img src='{html.escape(str(rel))}' alt='{html.escape(fig.stem)}'></div>")
    parts.append("</body></html>")
    out = run_dir / name
    out.write_text("\n".join(parts), encoding="utf-8")
    return out


def plot_metric_curves(metrics_csv: str | Path, out_png: str | Path, title: str = "") -> Path | None:
    """Plot every logged scalar of a Lightning ``metrics.csv`` against the epoch (one panel each).

    Per-step columns are averaged per epoch. Returns ``None`` if the file has no scalar columns.
    """
    metrics_csv = Path(metrics_csv)
    if not metrics_csv.is_file():
        return None
    df = pd.read_csv(metrics_csv)
    # The curves a reader looks at first: losses, accuracies, mean metrics (``stage/name``), not
    # per-class values (``stage/auc/class``).
    cols = [c for c in df.columns
            if c not in ("epoch", "step") and c.count("/") == 1 and df[c].notna().any()][:12]
    if not cols or "epoch" not in df:
        return None
    n = len(cols)
    ncol = min(3, n)
    nrow = math.ceil(n / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.0 * nrow), squeeze=False)
    for ax, c in zip(axes.flat, cols):
        d = df[["epoch", c]].dropna().groupby("epoch")[c].mean()
        ax.plot(d.index, d.values, marker="o" if len(d) < 30 else None, ms=3)
        ax.set_title(c, fontsize=9)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, out_png)


class ReportCallback(Callback):
    """Write ``report.html`` (curves + the module's ``report_sections``) when ``fit`` ends."""

    def __init__(self, title: str | None = None) -> None:
        self.title = title

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        if not trainer.is_global_zero:
            return
        write_run_report(trainer, pl_module, self.title)


def write_run_report(trainer: Any, pl_module: Any, title: str | None = None) -> Path:
    """Report for a finished Lightning run, in ``trainer.default_root_dir``."""
    run_dir = Path(trainer.default_root_dir)
    sections: list[Section] = []
    csv = next((Path(lg.log_dir) / "metrics.csv" for lg in trainer.loggers if type(lg).__name__ == "CSVLogger"),
               None)
    if csv is not None:
        png = plot_metric_curves(csv, run_dir / "figures" / "curves.png")
        if png is not None:
            sections.append(Section("Training curves", f"from {csv.name}", [png]))
    extra = getattr(pl_module, "report_sections", None)
    if callable(extra):
        sections.extend(extra(run_dir))
    ckpt_dir = run_dir / "checkpoints"
    ckpts = sorted(p.name for p in ckpt_dir.glob("*.ckpt")) if ckpt_dir.is_dir() else []
    if ckpts:
        sections.append(Section("Checkpoints", ", ".join(ckpts)))
    return write_report(run_dir, title or f"{type(pl_module).__name__} run", sections)
