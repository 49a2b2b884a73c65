"""Run reports: ``report.html`` with PNG figures, written into the run folder.

A report is a list of :class:`Section` (heading, text, a table, figures). A run's report is made of
parts, one per stage that ran in the folder (``fit``, then any ``validate`` / ``test``): each part
is stored in ``report.json`` beside ``report.html``, so an evaluation run later (``medlearn test``
on the run folder) adds its part and the page shows training and evaluation together.
:class:`ReportCallback` writes a part when a stage ends: the curves of the stage's
``metrics.csv``, the module's ``report_sections(run_dir, stage)`` (sample grids, per-class bars),
the stage's metrics and the checkpoints. Figures are embedded in the page (PNG, base64; the files
stay in ``figures/``), so ``report.html`` is one self-contained file that opens offline wherever it
is moved or mailed; relative paths of other reports in a section's text become links.
:func:`write_runs_index` writes ``index.html`` listing every run under a folder. Figures use
matplotlib's non-interactive Agg backend.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from lightning.pytorch import Callback  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from medlearn.engine.runlock import held_briefly  # noqa: E402
from medlearn.io import atomic_write_text  # noqa: E402

__all__ = ["Section", "write_report", "plot_metric_curves", "ReportCallback", "save_figure", "update_run_report",
           "write_runs_index", "REPORT_PARTS", "figure_caption", "unlabelled_axes"]

#: Order of the parts of a run report.
REPORT_PARTS = ("fit", "validate", "test")


@dataclass
class Section:
    """One block of a report.

    Attributes:
        heading: the section title.
        text: a paragraph under it.
        figures: PNG files (anywhere under the run folder).
        table: ``(header, rows)``.
    """

    heading: str
    text: str = ""
    figures: list[Path] = field(default_factory=list)
    table: tuple[Sequence[str], Sequence[Sequence[Any]]] | None = None

    def to_json(self, base: Path) -> dict[str, Any]:
        """A JSON-safe dict, figure paths relative to ``base``."""
        table = None
        if self.table is not None:
            header, rows = self.table
            table = [[str(h) for h in header], [[_jsonable(v) for v in r] for r in rows]]
        return {"heading": self.heading, "text": self.text, "table": table,
                "figures": [_relative(Path(f), base) for f in self.figures]}

    @classmethod
    def from_json(cls, d: Mapping[str, Any], base: Path) -> Section:
        """Inverse of :meth:`to_json`."""
        table = None
        if d.get("table") is not None:
            header, rows = d["table"]
            table = (list(header), [list(r) for r in rows])
        return cls(str(d.get("heading", "")), str(d.get("text", "")), [base / f for f in d.get("figures", [])], table)


def _jsonable(v: Any) -> Any:
    if isinstance(v, (str, int, bool)) or v is None:
        return v
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return None if math.isnan(f) else f


def _relative(path: Path, base: Path) -> str:
    """``path`` relative to ``base`` (both resolved against the working directory first)."""
    return Path(os.path.relpath(path.resolve(), base.resolve())).as_posix()


#: PNG text keys :func:`save_figure` writes and the report reads back.
CAPTION_KEY, UNLABELLED_KEY = "Title", "medlearn-unlabelled-axes"


def figure_caption(fig: Any) -> str:
    """The caption of a figure: its ``suptitle``, else its axes' titles joined."""
    sup = getattr(fig, "_suptitle", None)
    if sup is not None and sup.get_text().strip():
        return " ".join(sup.get_text().split())
    titles = [" ".join(ax.get_title().split()) for ax in fig.axes if ax.get_title().strip()]
    return "; ".join(dict.fromkeys(titles))


def _named(ax: Any, axis: str) -> bool:
    """Whether ``ax``'s ``x`` or ``y`` axis says what it shows: a label (its own or a shared
    sibling's), or category names as tick labels (a bar chart's arms).
    """
    label = ax.get_xlabel() if axis == "x" else ax.get_ylabel()
    if label.strip():
        return True
    shared = ax.get_shared_x_axes() if axis == "x" else ax.get_shared_y_axes()
    for other in shared.get_siblings(ax):
        if (other.get_xlabel() if axis == "x" else other.get_ylabel()).strip():
            return True
    ticks = ax.get_xticklabels() if axis == "x" else ax.get_yticklabels()
    texts = [t.get_text().replace("\u2212", "-").strip() for t in ticks]
    for t in texts:
        if t:
            try:
                float(t)
            except ValueError:
                return True
    return False


def unlabelled_axes(fig: Any) -> list[str]:
    """Plots (axes showing lines, markers or bars with their axis drawn) whose x or y axis says nothing.

    An axis is named by its label (or a shared sibling's) or by category tick labels. Image
    panels (axis off) and colour bars need none. Each entry names the axes by its title.
    """
    out = []
    for i, ax in enumerate(fig.axes):
        if not ax.axison or hasattr(ax, "_colorbar") or ax.get_label() == "<colorbar>":
            continue
        if not (ax.lines or ax.collections or ax.patches):
            continue
        if not (_named(ax, "x") and _named(ax, "y")):
            out.append(ax.get_title().strip() or f"axes {i + 1}")
    return out


def save_figure(fig: Any, path: str | Path) -> Path:
    """Save a matplotlib figure as PNG and close it.

    The PNG carries its caption (:func:`figure_caption`) and the plots that lack axis labels
    (:func:`unlabelled_axes`) as text chunks; the report shows the caption under the figure and
    marks the image, so a reader (and the browser test) sees both.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {CAPTION_KEY: figure_caption(fig), UNLABELLED_KEY: json.dumps(unlabelled_axes(fig))}
    fig.savefig(path, dpi=110, bbox_inches="tight", metadata=meta)
    plt.close(fig)
    return path


def _figure_meta(fig: Path) -> tuple[str, list[str]]:
    """Caption and unlabelled plots stored in a PNG by :func:`save_figure` (empty for other PNGs)."""
    from PIL import Image

    try:
        with Image.open(fig) as im:
            text = dict(getattr(im, "text", {}) or {})
    except OSError:
        return "", []
    try:
        unlabelled = [str(x) for x in json.loads(text.get(UNLABELLED_KEY, "[]"))]
    except ValueError:
        unlabelled = []
    if CAPTION_KEY not in text and UNLABELLED_KEY not in text:
        # an image file that is not a plot (a prediction overlay): its name is its caption
        return fig.stem.replace("_", " "), unlabelled
    return str(text.get(CAPTION_KEY, "")), unlabelled


def _fmt(v: Any) -> str:
    if v is None:
        return "nan"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return html.escape(str(v))


_STYLE = ("<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
          "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}"
          "th{background:#eee}img{max-width:100%;margin:.5em 0;border:1px solid #ddd}figure{margin:1em 0}"
          "figcaption{font-size:.9em;color:#444;max-width:100%}table{max-width:100%;overflow-x:auto;display:block}"
          "pre{background:#f6f6f6;padding:.6em;overflow-x:auto}h2.part{border-top:2px solid #888;padding-top:.5em}"
          "td.l{text-align:left}.missing{color:#a00}"
          "</style>")


def _render_sections(sections: Sequence[Section], run_dir: Path) -> list[str]:
    parts: list[str] = []
    for s in sections:
        parts.append(f"<h2>{html.escape(s.heading)}</h2>")
        if s.text:
            parts.append(f"<p>{_paragraph(s.text)}</p>")
        if s.table is not None:
            header, rows = s.table
            parts.append("<table><tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>")
            for r in rows:
                parts.append("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in r) + "</tr>")
            parts.append("</table>")
        for fig in s.figures:
            parts.append(_figure(Path(fig)))
    return parts


_LINK = re.compile(r"(?<![\w/.])([\w./-]+\.html)\b")


def _paragraph(text: str) -> str:
    """Escaped text in which relative ``*.html`` paths (sub-run reports) become links."""
    return _LINK.sub(lambda m: f"<a href='{m.group(1)}'>{m.group(1)}</a>", html.escape(text))


def _figure(fig: Path) -> str:
    """The PNG embedded in the page (a self-contained report: it opens anywhere, offline, moved or mailed),
    with its caption; a plot without axis labels is marked (``data-unlabelled-axes``).
    """
    try:
        data = base64.b64encode(fig.read_bytes()).decode("ascii")
    except OSError:
        return f"<p class='missing'>figure not found: {html.escape(fig.name)}</p>"
    caption, unlabelled = _figure_meta(fig)
    alt = html.escape(caption or fig.stem.replace("_", " "), quote=True)
    mark = f" data-unlabelled-axes='{html.escape(json.dumps(unlabelled), quote=True)}'" if unlabelled else ""
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    name = html.escape(fig.name, quote=True)  # the file in the run's figures/ folder
    return f"<figure><img src='data:image/png;base64,{data}' alt='{alt}' data-file='{name}'{mark}>{cap}</figure>"


def _page(title: str, run_dir: Path, body: Sequence[str]) -> str:
    return "\n".join([
        "<!doctype html><html><head><meta charset='utf-8'>", f"<title>{html.escape(title)}</title>", _STYLE,
        "</head><body>", f"<h1>{html.escape(title)}</h1>",
        f"<p><small>written {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} "
        f"in {html.escape(str(run_dir.resolve()))}</small></p>", *body, "</body></html>"])


def write_report(run_dir: str | Path, title: str, sections: Sequence[Section], name: str = "report.html") -> Path:
    """Write ``run_dir/report.html`` (figure links relative to ``run_dir``, atomically)."""
    run_dir = Path(run_dir)
    out = run_dir / name
    atomic_write_text(out, _page(title, run_dir, _render_sections(sections, run_dir)))
    return out


def update_run_report(run_dir: str | Path, part: str, title: str, sections: Sequence[Section],
                      note: str = "") -> Path:
    """Store ``part`` (``"fit"``, ``"validate"``, ``"test"``) of a run's report and rewrite ``report.html``
    with every stored part (the others are kept as they were).

    Args:
        run_dir: the run folder (``report.html`` and ``report.json`` go here).
        part: the stage the sections belong to.
        title: the page title (the ``fit`` part's wins).
        sections: this part's sections.
        note: a line under the part's banner (e.g. where its records are).
    """
    run_dir = Path(run_dir)
    with held_briefly(run_dir / REPORT_LOCK):  # a training run and an evaluation of it may both update it
        return _update_run_report(run_dir, part, title, sections, note)


#: The lock file that serialises updates of a run's report.
REPORT_LOCK = ".medlearn.report.lock"


def _update_run_report(run_dir: Path, part: str, title: str, sections: Sequence[Section], note: str) -> Path:
    store = run_dir / "report.json"
    parts: dict[str, Any] = {}
    if store.is_file():
        try:
            parts = dict(json.loads(store.read_text(encoding="utf-8")).get("parts", {}))
        except (ValueError, AttributeError):
            parts = {}  # an unreadable store is rebuilt from this part
    parts[part] = {"title": title, "note": note, "sections": [s.to_json(run_dir) for s in sections]}
    atomic_write_text(store, json.dumps({"parts": parts}, indent=1))
    order = [p for p in REPORT_PARTS if p in parts] + sorted(p for p in parts if p not in REPORT_PARTS)
    body: list[str] = []
    for p in order:
        entry = parts[p]
        if p != "fit" or len(order) > 1:
            body.append(f"<h2 class='part'>{html.escape(_PART_NAMES.get(p, p))}</h2>")
            if entry.get("note"):
                body.append(f"<p><small>{html.escape(entry['note'])}</small></p>")
        body += _render_sections([Section.from_json(d, run_dir) for d in entry.get("sections", [])], run_dir)
    title = parts.get("fit", parts[order[0]]).get("title", title)
    out = run_dir / "report.html"
    atomic_write_text(out, _page(title, run_dir, body))
    return out


_PART_NAMES = {"fit": "Training", "validate": "Validation run", "test": "Test run"}

#: What a run may leave beside its report for the index: ``{"method", "headline"}``.
SUMMARY_FILE = "summary.json"


def _run_row(report: Path, root: Path) -> list[str]:
    run = report.parent
    title = ""
    m = re.search(r"<title>(.*?)</title>", report.read_text(encoding="utf-8", errors="replace")[:4000], re.S)
    if m:
        title = html.unescape(m.group(1)).strip()
    method, headline = "", ""
    summary = run / SUMMARY_FILE
    if summary.is_file():
        try:
            d = json.loads(summary.read_text(encoding="utf-8"))
            method, headline = str(d.get("method", "")), str(d.get("headline", ""))
        except (ValueError, AttributeError):
            pass
    if not method and (run / "config.yaml").is_file():
        cm = re.search(r"class_path:\s*(\S+)", (run / "config.yaml").read_text(encoding="utf-8", errors="replace"))
        method = cm.group(1).rsplit(".", 1)[-1] if cm else ""
    date = datetime.fromtimestamp(report.stat().st_mtime, timezone.utc).strftime("%Y-%m-%d %H:%M")
    return [_relative(run, root), method, date, headline or title, _relative(report, root)]


def write_runs_index(root: str | Path, max_depth: int = 4) -> Path:
    """Write ``root/index.html``: every ``report.html`` under ``root`` (up to ``max_depth`` folders deep)
    with its run folder, method, date, headline (``summary.json``, else the report's title) and a link.
    """
    root = Path(root)
    reports = sorted(p for p in root.rglob("report.html")
                     if len(p.relative_to(root).parts) - 1 <= max_depth)
    rows = [_run_row(p, root) for p in reports]
    body = [f"<p>{len(rows)} run report(s) under {html.escape(str(root.resolve()))}.</p>", "<table><tr>"
            + "".join(f"<th>{h}</th>" for h in ("run", "method", "written (UTC)", "headline", "report")) + "</tr>"]
    for run, method, date, headline, link in rows:
        body.append(f"<tr><td class='l'>{html.escape(run)}</td><td class='l'>{html.escape(method)}</td>"
                    f"<td>{date}</td><td class='l'>{html.escape(headline)}</td>"
                    f"<td><a href='{html.escape(link)}'>report</a></td></tr>")
    body.append("</table>")
    out = root / "index.html"
    atomic_write_text(out, _page("medlearn runs", root, body))
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
    # per-class values (``stage/auc/class``) nor the counts of cases a metric left out
    # (``stage/hd95_undefined``: bookkeeping, in metrics.csv).
    cols = [c for c in df.columns
            if c not in ("epoch", "step") and c.count("/") == 1 and not c.endswith("_undefined")
            and df[c].notna().any()][:12]
    if not cols or "epoch" not in df:
        return None
    n = len(cols)
    ncol = min(3, n)
    nrow = math.ceil(n / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.0 * nrow), squeeze=False)
    for ax, c in zip(axes.flat, cols):
        d = df[["epoch", c]].dropna().groupby("epoch")[c].mean()
        ax.plot(d.index + 1, d.values, marker="o" if len(d) < 30 else None, ms=3)  # epochs 1..N, as printed
        ax.set_title(c, fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel(c.split("/", 1)[1], fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(title or "Logged metrics per epoch (train/: training steps, val/: validation)")
    fig.tight_layout()
    return save_figure(fig, out_png)


class ReportCallback(Callback):
    """Write this stage's part of the run's ``report.html`` when ``fit``, ``validate`` or ``test`` ends.

    Args:
        run_dir: the run folder (where ``report.html`` is).
        records: where this stage's ``metrics.csv`` and figures go (``run_dir`` for a training run;
            a subfolder for an evaluation of a finished run). Default: ``run_dir``.
        title: page title (default: ``"<Module> run"``).
    """

    def __init__(self, run_dir: str | Path, records: str | Path | None = None, title: str | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.records = Path(records) if records is not None else self.run_dir
        self.title = title

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        """Write the report's ``fit`` part."""
        if trainer.is_global_zero:
            write_run_report(trainer, pl_module, "fit", self.run_dir, self.records, self.title)

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        """Write the report's ``validate`` part (``medlearn validate``; not the validations inside ``fit``)."""
        if trainer.is_global_zero and trainer.state.fn == "validate":
            write_run_report(trainer, pl_module, "validate", self.run_dir, self.records, self.title)

    def on_test_end(self, trainer: Any, pl_module: Any) -> None:
        """Write the report's ``test`` part."""
        if trainer.is_global_zero:
            write_run_report(trainer, pl_module, "test", self.run_dir, self.records, self.title)


def _stage_metrics(trainer: Any, stage: str) -> list[list[Any]]:
    prefix = {"validate": "val/", "test": "test/"}[stage]
    rows = []
    for k, v in sorted(trainer.callback_metrics.items()):
        if k.startswith(prefix) and k.count("/") == 1 and getattr(v, "numel", lambda: 1)() == 1:
            rows.append([k, float(v)])
    return rows


def write_run_report(trainer: Any, pl_module: Any, stage: str = "fit", run_dir: str | Path | None = None,
                     records: str | Path | None = None, title: str | None = None) -> Path:
    """The ``stage`` part of a run's report (see :class:`ReportCallback`)."""
    run_dir = Path(run_dir if run_dir is not None else trainer.default_root_dir)
    records = Path(records) if records is not None else run_dir
    sections: list[Section] = []
    csv = records / "metrics.csv"
    if stage == "fit":
        png = plot_metric_curves(csv, records / "figures" / "curves.png")
        if png is not None:
            sections.append(Section("Training curves", f"from {_relative(csv, run_dir)}", [png]))
    else:
        rows = _stage_metrics(trainer, stage)
        if rows:
            sections.append(Section(f"{stage} metrics", table=(["metric", "value"], rows)))
    extra = getattr(pl_module, "report_sections", None)
    if callable(extra):
        sections.extend(extra(records, stage))
    if stage == "fit":
        ckpt_dir = run_dir / "checkpoints"
        ckpts = sorted(p.name for p in ckpt_dir.glob("*.ckpt")) if ckpt_dir.is_dir() else []
        if ckpts:
            sections.append(Section("Checkpoints", ", ".join(ckpts)))
    note = "" if records == run_dir else f"records: {_relative(records, run_dir)}/"
    return update_run_report(run_dir, stage, title or f"{type(pl_module).__name__} run", sections, note)
