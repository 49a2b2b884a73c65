"""CCL-Net: the CCL block, its losses (oracles against PyTorch and naive loops), the classifier in
every soft-label mode, class weights, distillation from a checkpoint, the report and the recipe helpers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medlearn.engine.config import instantiate_class, load_config
from medlearn.engine.run import fit_from_config
from medlearn.methods.ccl.losses import (
    CCLLoss,
    geo_loss,
    kd_loss,
    smoothed_targets,
    soft_kl,
    soft_target_cross_entropy,
)
from medlearn.methods.ccl.model import CCLHead, soft_labels_from_correlation
from medlearn.methods.ccl.module import CCLClassifier
from medlearn.methods.ccl.recipe import correlation_structure, table_from_results, write_contract_data
from medlearn.registry import config_dir, get_method


@pytest.mark.parametrize("k,d,b", [(7, 4, 5), (3, 2, 8), (10, 16, 3)])
def test_head_shapes_soft_labels_and_correlation(k, d, b):
    torch.manual_seed(0)
    head = CCLHead(12, k, emb_dim=d, scale=10.0, soft_temp=3.0)
    y = torch.randint(0, k, (b,))
    out = head(torch.randn(b, 12), y)
    assert out.v.shape == (b, d) and out.e.shape == (k, d) and out.logits.shape == (b, k)
    torch.testing.assert_close(out.v.norm(dim=1), torch.ones(b))
    torch.testing.assert_close(out.corr.diagonal(), torch.ones(k))
    torch.testing.assert_close(out.corr, out.corr.t())
    e = head.class_emb.detach() / head.class_emb.detach().norm(dim=1, keepdim=True)
    for i in range(k):  # naive: q_y(j) = exp(t cos(e_y, e_j)) / sum_l exp(t cos(e_y, e_l))
        num = [math.exp(3.0 * float(e[i] @ e[j])) for j in range(k)]
        torch.testing.assert_close(head.soft_label_matrix()[i], torch.tensor(num) / sum(num))
    torch.testing.assert_close(out.q, head.soft_label_matrix()[y])
    assert not out.q.requires_grad  # the soft labels are a constant target
    # metric logits: -s (1 - cos)
    torch.testing.assert_close(out.logits, -10.0 * (1 - out.v @ e.t()))


def test_mlp_projection_option():
    head = CCLHead(12, 5, emb_dim=3, proj_hidden=16)
    out = head(torch.randn(4, 12), torch.tensor([0, 1, 2, 3]))
    assert out.v.shape == (4, 3) and isinstance(head.proj, torch.nn.Sequential)


def test_posterior_soft_label_source_is_the_running_class_mean():
    torch.manual_seed(0)
    head = CCLHead(6, 3, emb_dim=2, soft_source="posterior", posterior_momentum=0.5)
    expected = head.soft_label_matrix().clone()  # starts at the correlation soft labels
    for _ in range(3):
        h, y = torch.randn(8, 6), torch.tensor([0, 0, 1, 1, 1, 0, 0, 1])  # class 2 absent
        out = head(h, y)
        p = torch.softmax(out.logits.detach(), dim=1)
        for k in (0, 1):  # naive per-class mean, then the EMA
            expected[k] = 0.5 * expected[k] + 0.5 * p[y == k].mean(0)
        torch.testing.assert_close(out.q, expected[y])
    torch.testing.assert_close(head.soft_label_matrix(), expected)
    assert "class_posterior" in head.state_dict()
    head.eval()
    frozen = head.soft_label_matrix()
    head(torch.randn(4, 6), torch.tensor([0, 1, 2, 2]))
    torch.testing.assert_close(head.soft_label_matrix(), frozen)  # no update outside training
    with pytest.raises(ValueError):
        CCLHead(6, 3, soft_source="mean")


def test_relu_soft_labels_and_unrelated_classes():
    c = torch.tensor([[1.0, 0.5, -0.2], [0.5, 1.0, 0.0], [-0.2, 0.0, 1.0]])
    q = soft_labels_from_correlation(c, form="relu")
    torch.testing.assert_close(q[0], torch.tensor([1 / 1.5, 0.5 / 1.5, 0.0]))
    # the spec's note: with C = 0 off the diagonal, t = 4 gives q_y(y) ~ 0.9 for K = 7
    q7 = soft_labels_from_correlation(torch.eye(7), temperature=4.0)
    assert 0.89 < float(q7[0, 0]) < 0.91
    with pytest.raises(ValueError):
        soft_labels_from_correlation(c, form="nope")


def test_detached_input_keeps_metric_gradients_off_the_backbone():
    torch.manual_seed(0)
    h = torch.randn(6, 8, requires_grad=True)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    for detach, expect in ((True, False), (False, True)):
        head = CCLHead(8, 3, detach_input=detach)
        out = head(h, y)
        loss = F.cross_entropy(out.logits, y) + geo_loss(out, y)
        grads = torch.autograd.grad(loss, [h, head.class_emb], allow_unused=True)
        assert (grads[0] is not None) == expect and grads[1] is not None


@pytest.mark.parametrize("seed", [0, 1])
def test_soft_target_cross_entropy_matches_pytorch(seed):
    g = torch.Generator().manual_seed(seed)
    logits, y = torch.randn(9, 5, generator=g), torch.randint(0, 5, (9,), generator=g)
    w = torch.rand(5, generator=g) + 0.1
    onehot = F.one_hot(y, 5).float()
    torch.testing.assert_close(soft_target_cross_entropy(logits, onehot), F.cross_entropy(logits, y))
    torch.testing.assert_close(soft_target_cross_entropy(logits, onehot, w[y]), F.cross_entropy(logits, y, weight=w))
    torch.testing.assert_close(soft_target_cross_entropy(logits, smoothed_targets(y, 5, 0.1)),
                               F.cross_entropy(logits, y, label_smoothing=0.1))
    q = torch.softmax(torch.randn(9, 5, generator=g), 1)
    p = torch.softmax(logits, 1)
    naive = sum(float((q[i] * (q[i] / p[i]).log()).sum()) for i in range(9)) / 9
    assert float(soft_kl(logits, q)) == pytest.approx(naive, rel=1e-5)
    torch.testing.assert_close(soft_kl(logits, q), F.kl_div(F.log_softmax(logits, 1), q, reduction="batchmean"))


def test_geo_loss_matches_naive_loop():
    torch.manual_seed(3)
    head = CCLHead(6, 4, emb_dim=3)
    y = torch.tensor([0, 1, 3, 3, 2])
    out = head(torch.randn(5, 6), y)
    v, e = out.v.detach(), out.e.detach()
    naive = 0.0
    for i in range(5):
        for j in range(4):
            if j != int(y[i]):
                naive += max(0.0, float(v[i] @ e[j]) - float(e[y[i]] @ e[j]))
    assert float(geo_loss(out, y)) == pytest.approx(naive / 5, rel=1e-5)
    centre = sum(1 - float(v[i] @ e[y[i]]) for i in range(5)) / 5
    assert float(geo_loss(out, y, "centre")) == pytest.approx(centre, rel=1e-5)


def test_geo_loss_gradient_pulls_class_towards_the_class_its_samples_drift_to():
    head = CCLHead(2, 3, emb_dim=2, detach_input=False)
    with torch.no_grad():
        head.class_emb.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]))
    # a class-0 sample embedded close to class 1
    v = F.normalize(torch.tensor([[0.2, 1.0]]), dim=1)
    e = head.class_embeddings()
    from medlearn.methods.ccl.model import CCLOutput

    out = CCLOutput(v, e, -16 * (1 - v @ e.t()), e @ e.t(), None)
    loss = geo_loss(out, torch.tensor([0]))
    loss.backward()
    step = -head.class_emb.grad[0]  # gradient-descent direction of e_0
    assert float(step @ torch.tensor([0.0, 1.0])) > 0  # towards e_1: C[0, 1] grows


def test_kd_loss_matches_hinton_formula():
    g = torch.Generator().manual_seed(0)
    s, t, y = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g), torch.randint(0, 4, (6,), generator=g)
    ref = 0.4 * F.cross_entropy(s, y) + 0.6 * 9 * F.kl_div(F.log_softmax(s / 3, 1), F.softmax(t / 3, 1),
                                                             reduction="batchmean")
    torch.testing.assert_close(kd_loss(s, t, y, temperature=3.0, alpha=0.6), ref)


def test_ccl_loss_total_and_switches():
    torch.manual_seed(1)
    head = CCLHead(8, 4)
    y = torch.tensor([0, 1, 2, 3])
    out = head(torch.randn(4, 8), y)
    logits = torch.randn(4, 4)
    total, parts = CCLLoss(1.0, 0.5, 2.0)(logits, out, y)
    assert float(total) == pytest.approx(float(parts["ce"] + parts["soft"] + 0.5 * parts["dml"] + 2 * parts["geo"]),
                                         rel=1e-6)
    total, parts = CCLLoss(1.0, 1.0, 0.0)(logits, out, y, lambda_soft=0.0)
    assert float(parts["geo"]) == 0 and float(parts["soft"]) == 0
    assert float(total) == pytest.approx(float(parts["ce"] + parts["dml"]), rel=1e-6)
    with pytest.raises(ValueError):
        CCLLoss()(logits, head(torch.randn(4, 8)), y)


# --- the classifier ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def isic_root(tmp_path_factory):
    return write_contract_data(tmp_path_factory.mktemp("ccl"))


def _cfg(root: Path, **over):
    return load_config(config_dir("ccl") / "demo.yaml", {"data.init_args.root": str(root),
                                                          "data.init_args.batch_size": 16, **over})


@pytest.mark.parametrize("mode", ["hard", "smoothing", "ccl"])
def test_one_step_per_mode_and_only_ccl_has_the_block(isic_root, mode):
    cfg = _cfg(isic_root, **{"model.init_args.soft_labels": mode})
    torch.manual_seed(0)
    model = instantiate_class(cfg["model"])
    dm = instantiate_class(cfg["data"])
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    loss = model.training_step(batch, 0)
    assert torch.isfinite(loss)
    assert (model.ccl is not None) == (mode == "ccl")
    assert (model.correlation_matrix() is not None) == (mode == "ccl")
    assert (model.soft_label_matrix() is not None) == (mode != "hard")
    # same backbone and head parameters in every mode: only the CCL block is added
    n_base = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("ccl."))
    assert n_base == sum(p.numel() for p in instantiate_class(_cfg(isic_root, **{
        "model.init_args.soft_labels": "hard"})["model"]).parameters())


def test_balanced_class_weights_kd_teacher_and_report(isic_root, tmp_path):
    common = {"trainer.max_epochs": 1, "data.init_args.val_fraction": 0.2}
    r = fit_from_config(_cfg(isic_root, **common, **{"model.init_args.soft_labels": "hard",
                                                     "model.init_args.class_weights": "balanced"}),
                        tmp_path / "hard", progress="none")
    counts = r.datamodule.class_counts.float()
    torch.testing.assert_close(r.model.class_weight, counts.sum() / (7 * counts))
    for k in ("test/bal_acc", "test/f1", "test/kappa", "test/nll", "test/ece"):
        assert math.isfinite(r.test[k])
    teacher = r.best_ckpt or r.last_ckpt
    kd = fit_from_config(_cfg(isic_root, **common, **{"model.init_args.soft_labels": "kd",
                                                      "model.init_args.teacher": str(teacher)}),
                         tmp_path / "kd", progress="none")
    assert "_teacher" not in dict(kd.model.named_modules())  # the teacher is not part of the student
    assert not any(k.startswith("_teacher") for k in kd.model.state_dict())
    assert math.isfinite(kd.test["test/nll"])
    fit_from_config(_cfg(isic_root, **common), tmp_path / "ccl", progress="none")
    html = (tmp_path / "ccl" / "report.html").read_text()
    assert "Learned inter-class correlations" in html and "ccl_correlation.png" in html
    assert (tmp_path / "ccl" / "figures" / "ccl_correlation.png").is_file()
    assert (tmp_path / "ccl" / "figures" / "test_confusion.png").is_file()
    corr = np.loadtxt(tmp_path / "ccl" / "ccl_correlation.csv", delimiter=",", skiprows=1, usecols=range(1, 8))
    np.testing.assert_allclose(np.diag(corr), 1.0, atol=1e-5)
    assert (tmp_path / "ccl" / "test_confusion.csv").read_text().startswith(",MEL,NV,BCC")
    with pytest.raises(ValueError, match="teacher"):
        CCLClassifier(soft_labels="kd")


def test_config_errors():
    with pytest.raises(ValueError, match="soft_labels"):
        CCLClassifier(soft_labels="mixup")
    with pytest.raises(ValueError, match="class_weights"):
        CCLClassifier(class_weights="inverse")
    with pytest.raises(ValueError, match="normalisation"):
        CCLClassifier(in_channels=3, norm_mean=[0.5, 0.5])
    with pytest.raises(ValueError, match="single-label"):
        CCLClassifier(multilabel=True)


@pytest.mark.parametrize("name", ["isic2018.yaml", "isic2018_densenet121.yaml", "isic2018_efficientnet_b0.yaml"])
def test_paper_scale_configs_build(name):
    cfg = load_config(config_dir("ccl") / name)
    model = instantiate_class(cfg["model"])
    assert model.hparams.num_classes == 7 and model.hparams.soft_labels == "ccl" and model.hparams.in_channels == 3
    assert cfg["data"]["init_args"]["layout"] == "isic2018"


# --- recipe helpers ---------------------------------------------------------------------------
def test_correlation_structure_on_planted_matrices():
    c = np.eye(7)
    for i, j in ((0, 1), (0, 2), (1, 2), (3, 4)):
        c[i, j] = c[j, i] = 0.8
    s = correlation_structure(c)
    assert s == {"group_gap": pytest.approx(0.8), "top_hits": 4.0, "top_pair_related": 1.0}
    c2 = np.eye(7)
    c2[5, 6] = c2[6, 5] = 0.9
    s2 = correlation_structure(c2)
    assert s2["top_pair_related"] == 0.0 and s2["group_gap"] < 0


def test_table_from_results_reads_paired_rows():
    rows = []
    for seed in range(3):
        for arm, acc in (("hard", 0.7), ("smoothing", 0.72), ("ccl", 0.75)):
            r = {"arm": arm, "seed": seed, "seconds": 10.0, "acc": acc + 0.01 * seed, "bal_acc": acc + 0.01 * seed,
                 "f1": acc, "kappa": acc, "nll": 1.0 - acc, "ece": 0.1}
            if arm == "ccl":
                c = np.eye(7)
                c[0, 1] = c[1, 0] = 0.5
                r.update({"corr": c.tolist(), **correlation_structure(c)})
            rows.append(r)
    md = table_from_results({"rows": rows, "seeds": [0, 1, 2], "arms": ["hard", "smoothing", "ccl"], "epochs": 30,
                             "seconds": 90.0})
    assert "| ccl − hard | +0.050 (3/3)" in md and "| ccl − smoothing | +0.030 (3/3)" in md
    assert "CCL soft labels beat hard labels (balanced accuracy): mean +0.050, 3/3 seeds -> reproduced" in md
    assert "MEL-NV +0.50" in md


def test_registered():
    spec = get_method("ccl")
    assert spec.contract_configs == ["demo.yaml"] and spec.reproduce is not None


@pytest.mark.slow
def test_demo_writes_report_and_compares_arms(tmp_path):
    from medlearn.methods.ccl.recipe import demo

    r = demo(tmp_path / "demo", epochs=3)
    assert r.method == "ccl" and "CCL" in r.headline and "hard labels" in r.headline
    assert {"hard_bal_acc", "ccl_bal_acc", "ccl_nll"} <= set(r.metrics)
    html = (tmp_path / "demo" / "report.html").read_text()
    assert "arms.png" in html and "ccl_correlation.png" in html
