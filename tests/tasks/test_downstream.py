"""The downstream segmentation instrument: scores by hand, a learnable toy task, reuse, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medlearn.tasks.downstream import binary_scores, fit_binary_segmenter, score_segmenter, segment


def test_binary_scores_by_hand() -> None:
    pred = torch.zeros(3, 1, 4, 4)
    true = torch.zeros(3, 1, 4, 4)
    pred[0, 0, :2, :2] = 1  # 4 predicted
    true[0, 0, :2, :3] = 1  # 6 true, 4 shared
    true[1, 0, 0, 0] = 1  # missed entirely
    # image 2: both empty
    dice, iou = binary_scores(pred, true)
    assert dice == pytest.approx([(2 * 4 + 1) / (4 + 6 + 1), 1 / 2, 1.0])
    assert iou == pytest.approx([(4 + 1) / (6 + 1), 1 / 2, 1.0])
    d0, i0 = binary_scores(pred, true, smooth=0.0)
    assert d0[0] == pytest.approx(0.8) and i0[0] == pytest.approx(4 / 6) and d0[1] == 0.0
    with pytest.raises(ValueError, match="differ"):
        binary_scores(pred, true[:2])


def _squares(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy images with one bright square each; the mask is the square."""
    g = torch.Generator().manual_seed(seed)
    x = 0.3 * torch.randn(n, 2, 16, 16, generator=g)
    y = torch.zeros(n, 1, 16, 16, dtype=torch.long)
    for i in range(n):
        r, c = (int(v) for v in torch.randint(0, 11, (2,), generator=g))
        x[i, :, r:r + 5, c:c + 5] += 1.5
        y[i, 0, r:r + 5, c:c + 5] = 1
    return x, y


def test_a_segmenter_learns_a_toy_task_and_is_reused(tmp_path) -> None:
    x, y = _squares(64, 0)
    xt, yt = _squares(16, 1)
    model = fit_binary_segmenter(x, y, tmp_path / "seg", epochs=8, seed=0, batch_size=16, lr=3e-3)
    scores = score_segmenter(model, xt, yt)
    assert scores["n"] == 16 and scores["dice"] > 0.8 and scores["iou"] > 0.6, scores
    assert segment(model, xt).shape == (16, 1, 16, 16) and segment(model, xt).dtype == torch.uint8
    again = fit_binary_segmenter(x, y, tmp_path / "seg", epochs=8, seed=0, reuse=True)  # loaded, not trained
    assert torch.equal(segment(again, xt), segment(model, xt))
    # background images only: positive_only leaves nothing to score
    empty = score_segmenter(model, xt[:2], torch.zeros_like(yt[:2]), positive_only=True)
    assert empty["n"] == 0 and np.isnan(empty["dice"])


def test_bad_inputs_are_refused(tmp_path) -> None:
    x, y = _squares(4, 0)
    with pytest.raises(ValueError, match="do not match"):
        fit_binary_segmenter(x, y[:3], tmp_path / "a")
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        fit_binary_segmenter(x[0], y[0], tmp_path / "b")
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        fit_binary_segmenter(bad, y, tmp_path / "c")
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()
