"""Self-contained reports (figures inline, sub-run links) and the runs index."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import matplotlib.pyplot as plt

from medlearn.cli import main
from medlearn.engine.report import SUMMARY_FILE, Section, save_figure, write_report, write_runs_index


def _report(run: Path, title: str) -> Path:
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    png = save_figure(fig, run / "figures" / "curve.png")
    return write_report(run, title, [Section("Curves", "details: sub/report.html", [png]),
                                     Section("Gone", "", [run / "figures" / "missing.png"])])


def test_a_report_is_one_file_that_opens_anywhere(tmp_path: Path) -> None:
    page = _report(tmp_path / "run", "a run")
    text = page.read_text()
    data = base64.b64encode((tmp_path / "run" / "figures" / "curve.png").read_bytes()).decode()
    assert f"src='data:image/png;base64,{data}'" in text  # inline: no file link to break
    assert "<a href='sub/report.html'>sub/report.html</a>" in text
    assert "figure not found: missing.png" in text
    moved = tmp_path / "elsewhere" / "copy.html"
    moved.parent.mkdir()
    shutil.copy(page, moved)
    shutil.rmtree(tmp_path / "run" / "figures")
    assert data in moved.read_text()


def test_the_runs_index_lists_every_report_with_its_summary(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    _report(root / "demo" / "c2l", "medlearn demo: C2L")
    (root / "demo" / "c2l" / SUMMARY_FILE).write_text(json.dumps({"method": "c2l", "headline": "AUC 0.85 vs 0.81"}))
    _report(root / "demo" / "c2l" / "finetune", "finetune run")
    (root / "demo" / "c2l" / "finetune" / "config.yaml").write_text(
        "model:\n  class_path: medlearn.tasks.classification.ImageClassifier\n")
    page = write_runs_index(root).read_text()
    assert "2 run report(s)" in page
    assert "AUC 0.85 vs 0.81" in page and ">c2l<" in page and ">ImageClassifier<" in page
    assert "href='demo/c2l/report.html'" in page and "href='demo/c2l/finetune/report.html'" in page
    assert main(["index", str(root)]) == 0 and (root / "index.html").is_file()
    assert main(["index", str(tmp_path / "nowhere")]) == 2


def test_figures_carry_a_caption_and_unlabelled_plots_are_marked(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt
    import numpy as np

    from medlearn.engine.report import figure_caption, unlabelled_axes

    fig, (a, b, c) = plt.subplots(1, 3)
    fig.suptitle("Training curves")
    a.plot([0, 1], [1, 0])
    a.set_title("loss")
    a.set_xlabel("epoch")
    a.set_ylabel("loss")
    b.plot([0, 1], [0, 1])
    b.set_title("accuracy")  # no axis labels: flagged
    im = c.imshow(np.zeros((4, 4)))
    c.axis("off")
    fig.colorbar(im, ax=c)  # an image panel and its colour bar need no labels
    assert figure_caption(fig) == "Training curves"
    assert unlabelled_axes(fig) == ["accuracy"]
    png = save_figure(fig, tmp_path / "figures" / "curves.png")
    page = write_report(tmp_path, "run", [Section("Curves", figures=[png])]).read_text()
    assert "<figcaption>Training curves</figcaption>" in page
    assert "data-unlabelled-axes='[&quot;accuracy&quot;]'" in page

    fig, ax = plt.subplots()
    ax.set_title("per-class Dice")
    ax.bar([0, 1], [0.5, 0.7])
    ax.set_xlabel("class")
    ax.set_ylabel("Dice")
    bars = save_figure(fig, tmp_path / "bars.png")
    page = write_report(tmp_path, "run", [Section("Bars", figures=[bars])]).read_text()
    assert "<figcaption>per-class Dice</figcaption>" in page and "data-unlabelled-axes" not in page


def test_category_ticks_and_shared_axes_name_an_axis_and_overlays_are_captioned_by_name(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt
    import numpy as np
    from PIL import Image

    from medlearn.engine.report import unlabelled_axes

    fig, (a, b) = plt.subplots(1, 2, sharey=True)
    for ax in (a, b):
        ax.bar([0, 1], [0.5, 0.7])
        ax.set_xticks([0, 1], ["U-Net", "Crossover-Net"])  # the arms name the x axis
    a.set_ylabel("Dice")  # and b shares it
    assert unlabelled_axes(fig) == []
    fig, ax = plt.subplots()
    ax.bar([0, 1], [0.5, 0.7])
    ax.set_ylabel("Dice")
    assert unlabelled_axes(fig) == ["axes 1"]  # numeric ticks say nothing
    plt.close("all")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "T0001_01.png")  # an overlay, not a plot
    page = write_report(tmp_path, "run", [Section("Overlays", figures=[tmp_path / "T0001_01.png"])]).read_text()
    assert "<figcaption>T0001 01</figcaption>" in page
