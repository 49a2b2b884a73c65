"""Tracing QC: phantoms, labels from (traced, corrected) pairs, blocks, baseline, reader errors, predict outputs."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile

import medlearn.data.neurons as neurons
from medlearn.data.layouts import detect_layout
from medlearn.data.neurons import close_on_tree, label_nodes, node_blocks, read_neurons
from medlearn.data.sampling import EpochBalancedSampler
from medlearn.data.trace_raster import tube_mean_intensity
from medlearn.io.blocks import BlockReader
from medlearn.io.errors import DataError
from medlearn.io.swc import SWCTree, read_swc, resample_swc, write_swc
from medlearn.metrics.neuron_qc import pooled_qc_scores, qc_scores
from medlearn.synth.neurons import write_neurons


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_neurons(tmp_path_factory.mktemp("nq") / "neurons", n_neurons=6, size_xy=64, size_z=32,
                         error_fraction=1.0, seed=3)


def test_layout_detected_and_read(phantoms: Path) -> None:
    assert detect_layout(phantoms, "neuron").name == "neurons"
    cases = read_neurons(phantoms, require_corrected=True)
    assert len(cases) == 6 and all(c.corrected is not None for c in cases)
    assert sum(len(c.errors) for c in cases) >= 6  # every neuron got at least one planted error


def test_labels_from_pairs_find_the_planted_errors(phantoms: Path) -> None:
    planted = wrong_planted = labelled_wrong = 0
    for case in read_neurons(phantoms, require_corrected=True):
        traced, corrected = read_swc(case.traced), read_swc(case.corrected)
        lab = label_nodes(traced, corrected, step=None)  # the synthetic traces are already at step 2
        pos = {int(i): k for k, i in enumerate(traced.id)}
        err = np.zeros(len(traced), bool)
        for _, ids in case.errors:
            err[[pos[i] for i in ids]] = True
        planted += err.sum()
        wrong_planted += (lab.wrong & err).sum()
        labelled_wrong += lab.wrong.sum()
        assert not (lab.wrong & ~err).any(), "a node of the true tree was labelled wrong"
    # the first nodes of a drift or a jump's bridge lie within tau of the truth: most, not all, are wrong
    assert wrong_planted / planted > 0.7 and labelled_wrong == wrong_planted


def test_closing_fills_short_gaps_only() -> None:
    parent = np.arange(-1, 11)  # a chain 0-1-...-11
    wrong = np.zeros(12, bool)
    wrong[[2, 5, 9]] = True  # gaps of 2 (3, 4) and 3 (6, 7, 8)
    out = close_on_tree(parent, wrong, gap=2)
    assert out[[2, 3, 4, 5]].all() and not out[[6, 7, 8]].any() and out[9]


def test_blocks_drawn_whole_equal_blocks_drawn_one_by_one(phantoms: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    case = read_neurons(phantoms)[0]
    tree = resample_swc(read_swc(case.traced), 2.0)
    with BlockReader(case.image) as reader:
        whole = node_blocks(reader, tree, (8, 16, 16), centre_path=True)
        monkeypatch.setattr(neurons, "FULL_RASTER_VOXELS", 0)
        single = node_blocks(reader, tree, (8, 16, 16), centre_path=True)
    assert whole.shape == (len(tree), 3, 8, 16, 16)
    np.testing.assert_array_equal(whole, single)
    assert whole[:, 1, 4, 8, 8].all(), "the trace channel covers each block's centre node"
    assert (whole[:, 2].sum(axis=(1, 2, 3)) <= whole[:, 1].sum(axis=(1, 2, 3))).all()


def test_intensity_baseline_equals_whole_volume_reading(phantoms: Path) -> None:
    from medlearn.methods.neuron_qc.baseline import intensity_scores

    case = read_neurons(phantoms)[1]
    tree = resample_swc(read_swc(case.traced), 2.0)
    with BlockReader(case.image) as reader:
        got = intensity_scores(reader, tree)
    vol = tifffile.imread(case.image).astype(np.float32)
    par, xyz = tree.parent_index(), tree.xyz
    m = np.array([tube_mean_intensity(vol, xyz[p if p >= 0 else i], xyz[i], 2.0) for i, p in enumerate(par)])
    np.testing.assert_allclose(got, 1 - m / np.nanmedian(m), rtol=1e-6)


def test_reader_lists_every_problem(phantoms: Path, tmp_path: Path) -> None:
    root = tmp_path / "bad"
    shutil.copytree(phantoms, root)
    (root / "traced" / "neuron_000.swc").unlink()  # image without a trace
    (root / "corrected" / "neuron_001.swc").unlink()  # no corrected tree
    t = read_swc(root / "traced" / "neuron_002.swc")
    t.xyz[:3] += 500  # nodes outside the image
    write_swc(root / "traced" / "neuron_002.swc", t, overwrite=True)
    (root / "traced" / "neuron_003.swc").write_text("1 1 0 0 0 1 -1\n2 3 1 x 0 1 1\n")
    shutil.copy(root / "traced" / "neuron_004.swc", root / "traced" / "orphan.swc")  # trace without an image
    with pytest.raises(DataError) as exc:
        read_neurons(root, require_corrected=True)
    msg = str(exc.value)
    assert "5 problem(s)" in msg
    for part in ("images/neuron_000.tif: no traced", "no corrected/neuron_001.swc", "3 of",
                 "neuron_003.swc", "non-numeric", "traced/orphan.swc: no image"):
        assert part in msg


def test_sampler_fractions() -> None:
    labels = [0] * 90 + [1] * 10
    s = EpochBalancedSampler(labels, seed=0, num_samples=20000, fractions=[0.75, 0.25])
    drawn = np.asarray(labels)[list(iter(s))]
    assert abs(drawn.mean() - 0.25) < 0.02
    with pytest.raises(ValueError):
        EpochBalancedSampler(labels, fractions=[1.0])


def test_pooled_scores_count_errors_across_neurons() -> None:
    parent = np.array([-1, 0, 1, 2, 3, 4])
    a = (parent, np.array([0, 0, 1, 1, 0, 0], bool), np.array([0, 0, 1, 0, 0, 0], bool), {2: "jump"})
    b = (parent, np.array([0, 0, 0, 0, 1, 1], bool), np.array([0, 1, 0, 0, 0, 0], bool), {4: "drift"})
    pooled = pooled_qc_scores([a, b])
    assert pooled["n_errors"] == 2 and pooled["detection_rate"] == 0.5
    assert pooled["detection_rate/jump"] == 1.0 and pooled["detection_rate/drift"] == 0.0
    assert pooled["false_alert_rate"] == pytest.approx(1 / 8)
    assert qc_scores(*a[:3])["detection_rate"] == 1.0


def test_max_projection_equals_full_read(phantoms: Path) -> None:
    case = read_neurons(phantoms)[0]
    vol = tifffile.imread(case.image)
    with BlockReader(case.image) as r:
        np.testing.assert_array_equal(r.max_projection(chunk=5), vol.max(0))
        np.testing.assert_array_equal(r.max_projection((3, 2, 1), (20, 30, 40)), vol[3:20, 2:30, 1:40].max(0))


def test_predict_writes_scored_reconstructions(phantoms: Path, tmp_path: Path) -> None:
    from medlearn.engine.config import load_config
    from medlearn.engine.run import fit_from_config, predict_from_config
    from medlearn.registry import config_dir

    over = {"data.init_args.root": str(phantoms), "data.init_args.n_folds": 3, "trainer.max_epochs": 1,
            "trainer.limit_train_batches": 2, "data.init_args.batch_size": 32}
    cfg = load_config(config_dir("neuron_qc") / "demo.yaml", over)
    r = fit_from_config(cfg, tmp_path / "run", progress="none")
    assert 0.0 <= r.test["test/auc"] <= 1.0 and r.test["test/false_alert_rate"] <= 1.0
    user = tmp_path / "user"  # what a user brings: images and traced reconstructions only
    shutil.copytree(phantoms / "images", user / "images")
    shutil.copytree(phantoms / "traced", user / "traced")
    pred = predict_from_config(load_config(config_dir("neuron_qc") / "demo.yaml", {**over, "data.init_args.root":
                                                                                      str(user)}),
                               tmp_path / "pred", ckpt_path=r.last_ckpt)
    qc = pred / "qc"
    out = read_swc(qc / "neuron_001.qc.eswc")
    src = read_swc(phantoms / "traced" / "neuron_001.swc")
    np.testing.assert_array_equal(out.id, src.id)
    np.testing.assert_allclose(out.xyz, src.xyz)
    assert out.extra_names[-2:] == ["qc_score", "qc_flag"]
    scores = np.array([float(e[-2]) for e in out.extra])
    assert ((scores >= 0) & (scores <= 1)).all()
    rows = (qc / "neuron_001.qc.csv").read_text().splitlines()
    assert rows[0] == "id,x,y,z,score,flagged,error_start" and len(rows) == len(src) + 1
    assert (qc / "neuron_001_mip.png").stat().st_size > 1000
    assert (qc / "qc_summary.csv").read_text().count("\n") == 7
    assert (qc / "error_starts.csv").is_file()


def test_identical_pair_has_no_wrong_node_and_far_branch_is_wrong() -> None:
    xyz = np.array([[0, 0, 0], [2, 0, 0], [4, 0, 0], [6, 0, 0]], float)
    t = SWCTree(np.arange(1, 5), np.array([1, 3, 3, 3]), xyz, np.ones(4), np.array([-1, 1, 2, 3]))
    assert not label_nodes(t, t, step=None).wrong.any()
    moved = SWCTree(t.id, t.type, xyz + [[0, 0, 0], [0, 0, 0], [0, 5, 0], [0, 9, 0]], t.radius, t.parent)
    np.testing.assert_array_equal(label_nodes(moved, t, step=None, closing=0).wrong, [False, False, True, True])


def test_paper_scale_classifier_is_a_3d_resnet_with_a_linear_head():
    import torch

    from medlearn.methods.neuron_qc.model import NodeBackboneNet, build_node_classifier

    net = build_node_classifier("resnet18", 3, (16, 32, 32))
    assert isinstance(net, NodeBackboneNet)
    x = torch.randn(2, 3, 16, 32, 32)
    logits = net(x)
    assert logits.shape == (2, 2)
    logits.sum().backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)
    with pytest.raises(ValueError, match="resnet18"):
        build_node_classifier("resnet", 3, (16,))
