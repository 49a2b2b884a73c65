"""Tree-level QC readings by hand: error runs and starts, threshold at a false-alert rate, smoothing, scores."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medlearn.metrics.neuron_qc import (
    error_runs,
    predicted_starts,
    qc_scores,
    smooth_on_tree,
    threshold_at_false_alert_rate,
    tree_distances,
)

#        0
#        |
#        1
#       / \
#      2   5
#      |   |
#      3   6
#      |   |
#      4   7        and a second root 8 -> 9
PARENT = np.array([-1, 0, 1, 2, 3, 1, 5, 6, -1, 8])


def test_error_runs_start_where_the_parent_is_correct() -> None:
    wrong = np.zeros(10, bool)
    wrong[[3, 4, 6, 7, 8, 9]] = True
    runs = error_runs(PARENT, wrong)
    assert [(r.start, r.nodes) for r in runs] == [(3, (3, 4)), (6, (6, 7)), (8, (8, 9))]
    # a wrong branch point: one run, one start, breadth-first
    w2 = np.zeros(10, bool)
    w2[[1, 2, 5, 6]] = True
    assert [(r.start, r.nodes) for r in error_runs(PARENT, w2)] == [(1, (1, 2, 5, 6))]
    assert predicted_starts(PARENT, w2) == [1]
    with pytest.raises(ValueError, match="self-loops"):
        error_runs([0, 0], [True, False])


def test_threshold_at_false_alert_rate() -> None:
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 0.95])
    wrong = np.array([0] * 10 + [1], bool)
    t = threshold_at_false_alert_rate(scores, wrong, 0.1)  # 1 of 10 correct nodes may score above t
    assert t == pytest.approx(0.9) and ((scores[~wrong] > t).mean()) <= 0.1
    assert threshold_at_false_alert_rate(scores, wrong, 0.0) == pytest.approx(1.0)
    assert threshold_at_false_alert_rate(scores, wrong, 1.0) == -math.inf


def test_smoothing_and_distances_on_the_tree() -> None:
    s = np.zeros(10)
    s[4] = 3.0
    sm = smooth_on_tree(s, PARENT, radius=1)
    assert sm[4] == pytest.approx(1.5) and sm[3] == pytest.approx(1.0) and sm[2] == 0.0
    assert np.array_equal(smooth_on_tree(s, PARENT, 0), s)
    d = tree_distances(PARENT, [4])
    assert d[4] == 0 and d[1] == 3 and d[7] == 6 and d[9] == np.inf


def test_qc_scores_by_hand() -> None:
    wrong = np.zeros(10, bool)
    wrong[[3, 4, 6, 7]] = True  # two errors, starts 3 and 6
    flagged = np.zeros(10, bool)
    flagged[[4, 9]] = True  # hits error 3 at its second node; one false alert (9) of 6 correct nodes
    r = qc_scores(PARENT, wrong, flagged, first_k=2, error_types={3: "jump", 6: "spur"})
    assert r["n_errors"] == 2 and r["detection_rate"] == 0.5 and r["detection_rate_any"] == 0.5
    assert r["false_alert_rate"] == pytest.approx(1 / 6)
    assert r["alert_false_rate"] == pytest.approx(0.5)  # predicted starts 4 (true) and 9 (false)
    assert r["detection_rate/jump"] == 1.0 and r["detection_rate/spur"] == 0.0
    # true starts 3 and 6 to predicted starts {4, 9}: 1 and 5 edges -> median 3
    assert r["start_distance"] == pytest.approx(3.0)
    assert qc_scores(PARENT, wrong, flagged, first_k=1)["detection_rate"] == 0.0
