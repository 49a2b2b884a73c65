"""Training curves of report.html: the scalars a reader looks at, not bookkeeping columns."""

from __future__ import annotations

import pandas as pd
import pytest

from medlearn.engine import report


def test_curves_leave_out_per_class_values_and_left_out_counts(tmp_path, monkeypatch):
    csv = tmp_path / "metrics.csv"
    pd.DataFrame({"epoch": [0, 0, 1, 1], "step": [1, 2, 3, 4],
                  "train/loss": [1.0, 0.9, 0.7, 0.6], "val/dice": [None, 0.4, None, 0.5],
                  "val/dice/tumour": [None, 0.4, None, 0.5], "val/hd95_undefined": [None, 0.0, None, 0.0]}
                 ).to_csv(csv, index=False)
    titles: list[str] = []
    real_save = report.save_figure

    def spy(fig, out):
        titles.extend(ax.get_title() for ax in fig.axes if ax.get_title())
        return real_save(fig, out)

    monkeypatch.setattr(report, "save_figure", spy)
    assert report.plot_metric_curves(csv, tmp_path / "curves.png") is not None
    assert titles == ["train/loss", "val/dice"]
    assert (tmp_path / "curves.png").is_file()


def test_no_scalar_columns_no_figure(tmp_path):
    csv = tmp_path / "metrics.csv"
    pd.DataFrame({"epoch": [0], "step": [1]}).to_csv(csv, index=False)
    assert report.plot_metric_curves(csv, tmp_path / "c.png") is None
    assert report.plot_metric_curves(tmp_path / "missing.csv", tmp_path / "c.png") is None


@pytest.mark.parametrize("col", ["val/vcdr_undefined", "test/hd95_undefined"])
def test_undefined_counts_alone_give_no_figure(tmp_path, col):
    csv = tmp_path / "metrics.csv"
    pd.DataFrame({"epoch": [0], "step": [1], col: [2.0]}).to_csv(csv, index=False)
    assert report.plot_metric_curves(csv, tmp_path / "c.png") is None
