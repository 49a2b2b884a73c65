"""Cross-denoising: oracle tests of the losses and selection rules against naive references, the peer (not
the own) small-loss set, the arms, per-domain evaluation, `medlearn predict` on a real fundus photo, configs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import seed_everything
from PIL import Image

from medlearn.data.roi import DiscROI
from medlearn.data.two_domain import TwoDomainDataModule
from medlearn.engine.config import instantiate_class, load_config
from medlearn.engine.run import fit_from_config, predict_from_config
from medlearn.methods.cross_denoise import losses as L
from medlearn.methods.cross_denoise.module import ARMS, CrossDenoise
from medlearn.methods.cross_denoise.predict import refuge_encode
from medlearn.registry import config_dir
from medlearn.synth.fundus import write_refuge


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_refuge(tmp_path_factory.mktemp("cdn") / "fundus", n_train=16, n_target=8, n_test=8, n_source_test=4,
                        seed=1)


def _batch(root: Path, n: int = 8) -> dict:
    dm = TwoDomainDataModule(str(root), image_size=48, label_values=[0, 1, 2], batch_size=n,
                             source_test="clean/source_test.csv", noise_table="clean/corruption.csv")
    dm.setup("fit")
    return next(iter(dm.train_dataloader()))


# --- naive references ----------------------------------------------------------------------------
def naive_dice_loss(logits: torch.Tensor, y: torch.Tensor, eps: float = 1e-5) -> list[float]:
    p = logits.softmax(1)
    out = []
    for b in range(p.shape[0]):
        terms = []
        for c in range(1, p.shape[1]):
            pc, yc = p[b, c], (y[b] == c).float()
            terms.append(float((2 * (pc * yc).sum() + eps) / (pc.sum() + yc.sum() + eps)))
        out.append(1 - sum(terms) / len(terms))
    return out


def naive_ce(logits: torch.Tensor, y: torch.Tensor, b: int, i: int, j: int) -> float:
    z = logits[b, :, i, j].double()
    return float(torch.logsumexp(z, 0) - z[int(y[b, i, j])])


@pytest.mark.parametrize("seed", range(3))
def test_per_image_and_noise_tolerant_losses_match_naive_sums(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 3, 5, 6, generator=g)
    y = torch.randint(0, 3, (3, 5, 6), generator=g)
    keep = torch.rand(3, 5, 6, generator=g) > 0.3
    w = torch.rand(3, 5, 6, generator=g)
    dice = naive_dice_loss(logits, y)
    for b in range(3):
        ce = [naive_ce(logits, y, b, i, j) for i in range(5) for j in range(6)]
        assert float(L.per_image_loss(logits, y)[b]) == pytest.approx(np.mean(ce) + dice[b], rel=1e-5)
        kept = [(naive_ce(logits, y, b, i, j), float(w[b, i, j])) for i in range(5) for j in range(6) if keep[b, i, j]]
        want = sum(c * wi for c, wi in kept) / sum(wi for _, wi in kept) + dice[b]
        assert float(L.noise_tolerant_loss(logits, y, keep, w)[b]) == pytest.approx(want, rel=1e-5)
    assert L.soft_dice_loss(logits, y).tolist() == pytest.approx(dice, rel=1e-5)


def test_tau_ramp_and_keep_counts() -> None:
    for t in range(0, 25):
        assert L.tau_schedule(t, 0.25, 10) == pytest.approx(0.25 * min(1.0, t / 10))
    assert L.tau_schedule(0, 0.4, 0) == 0.4
    assert [L.keep_count(8, t) for t in (0.0, 0.125, 0.25, 0.5, 0.99)] == [8, 7, 6, 4, 1]
    model = CrossDenoise(arm="coteach", tau_max=0.3, t_k=4)
    assert [model.tau(e) for e in (0, 2, 4, 9)] == pytest.approx([0.0, 0.15, 0.3, 0.3])
    assert CrossDenoise(arm="indep").tau(9) == 0.0


@pytest.mark.parametrize("seed", range(4))
def test_small_loss_set_matches_a_naive_sort(seed: int) -> None:
    losses = torch.rand(9, generator=torch.Generator().manual_seed(seed))
    for keep in (1, 4, 9):
        want = sorted(range(9), key=lambda i: float(losses[i]))[:keep]
        assert L.small_loss_indices(losses, keep).tolist() == want


def test_peer_selection_keeps_the_peer_small_loss_set() -> None:
    """Network A trains on the images network B finds easy (and vice versa), not on its own easy ones."""
    model = CrossDenoise(arm="coteach", tau_max=0.5, t_k=0)
    y = torch.zeros(6, 4, 4, dtype=torch.long)
    y[:, 1:3, 1:3] = 1
    onehot = F.one_hot(y, 3).permute(0, 3, 1, 2).float()
    quality_a = torch.tensor([5.0, 4.0, 3.0, 0.0, -1.0, -2.0])  # A is right on images 0-2
    quality_b = torch.tensor([-2.0, -1.0, 0.0, 3.0, 4.0, 5.0])  # B is right on images 3-5
    logits_a = onehot * quality_a.view(-1, 1, 1, 1)
    logits_b = onehot * quality_b.view(-1, 1, 1, 1)
    _, chosen_a = model._supervised(logits_a, logits_b, y, model.tau(10))
    _, chosen_b = model._supervised(logits_b, logits_a, y, model.tau(10))
    peer_b = L.per_image_loss(logits_b, y)
    want_a = sorted(range(6), key=lambda i: float(peer_b[i]))[:3]
    assert torch.nonzero(chosen_a).squeeze(1).tolist() == sorted(want_a) == [3, 4, 5]
    assert torch.nonzero(chosen_b).squeeze(1).tolist() == [0, 1, 2]


def test_pixel_selection_truncation_and_peer_filter_against_loops() -> None:
    g = torch.Generator().manual_seed(0)
    loss = torch.rand(2, 4, 5, generator=g)
    valid = torch.rand(2, 4, 5, generator=g) > 0.2
    keep = L.pixel_keep_mask(loss, 0.25, valid)
    trunc = L.truncation_keep_mask(loss, 0.2, valid)
    for b in range(2):
        vals = sorted((float(loss[b, i, j]), i * 5 + j) for i in range(4) for j in range(5) if valid[b, i, j])
        k = L.keep_count(len(vals), 0.25)
        assert sorted(torch.nonzero(keep[b].flatten()).squeeze(1).tolist()) == sorted(f for _, f in vals[:k])
        n_flag = math.floor(0.2 * len(vals))
        kept = sorted(f for _, f in vals[:len(vals) - n_flag])
        assert sorted(torch.nonzero(trunc[b].flatten()).squeeze(1).tolist()) == kept
    peer = torch.tensor([[[[4.0, 0.0]], [[0.0, 0.1]], [[0.0, 0.0]]]])  # (1, 3, 1, 2): pixel 0 sure class 0
    y = torch.tensor([[[1, 1]]])
    assert L.peer_agreement_mask(peer, y, 0.9).tolist() == [[[False, True]]]  # pixel 1: peer unsure


def test_boundary_weights_match_a_brute_force_distance() -> None:
    y = torch.zeros(1, 9, 9, dtype=torch.long)
    y[0, 2:7, 3:8] = 1
    y[0, 4, 5] = 2
    w = L.boundary_weights(y, 2.0)[0]
    for i in range(9):
        for j in range(9):
            d = min(math.hypot(i - a, j - b) for a in range(9) for b in range(9) if y[0, a, b] != y[0, i, j])
            assert float(w[i, j]) == pytest.approx(1 - math.exp(-d * d / 8.0), abs=1e-6)


@pytest.mark.parametrize("p", [0.2, 0.5, [0.1, 0.5, 1.0]])
def test_class_balanced_pseudo_labels_per_class_quantiles(p: float | list[float]) -> None:
    g = torch.Generator().manual_seed(3)
    probs = torch.softmax(torch.randn(2, 3, 6, 7, generator=g) * 2, 1)
    probs[:, 2] *= 0.3  # a rare class: class-agnostic thresholds would drop it
    probs = probs / probs.sum(1, keepdim=True)
    pl = L.class_balanced_pseudo_labels(probs, p)
    conf, pred = probs.max(1)
    ps = [p] * 3 if isinstance(p, float) else p
    for c in range(3):
        cand = sorted(((float(conf.flatten()[i]), i) for i in range(conf.numel()) if int(pred.flatten()[i]) == c),
                      key=lambda t: (-t[0], t[1]))
        m = max(1, min(len(cand), round(ps[c] * len(cand)))) if cand else 0
        want = sorted(i for _, i in cand[:m])
        got = torch.nonzero(pl.flatten() == c).squeeze(1).tolist()
        assert got == want
    assert ((pl == -1) | (pl == pred)).all()
    if isinstance(p, float):
        assert (pl == 2).any()  # the rare class keeps pseudo-labels


def test_pseudo_label_loss_ignores_unlabelled_pixels() -> None:
    logits = torch.randn(2, 3, 4, 4)
    pl = torch.full((2, 4, 4), -1, dtype=torch.long)
    assert float(L.pseudo_label_loss(logits, pl)) == 0.0
    pl[0, 0, 0], pl[1, 2, 3] = 2, 0
    y = pl.clamp(min=0)
    want = (naive_ce(logits, y, 0, 0, 0) + naive_ce(logits, y, 1, 2, 3)) / 2
    assert float(L.pseudo_label_loss(logits, pl)) == pytest.approx(want, rel=1e-5)


# --- the module ----------------------------------------------------------------------------------
@pytest.mark.parametrize("arm", sorted(ARMS))
def test_every_arm_trains_in_the_same_code_path(arm: str, phantoms: Path) -> None:
    seed_everything(0)
    model = CrossDenoise(arm=arm, t_k=0, pl_start_epoch=0, tau_max=0.25)
    two, sel, nt, pl = ARMS[arm]
    assert (model.net_b is not None) == two and model.selection == sel and model.nt == nt and model.pl == pl
    assert [p.name for p in model.optimizer_plans()] == (["net_a", "net_b"] if two else ["net_a"])
    out = model.training_losses(_batch(phantoms))
    for k in model.nets:
        model.zero_grad()
        out[k].backward(retain_graph=True)
        other = "b" if k == "a" else "a"
        assert all(p.grad is not None for p in model.nets[k].parameters())
        if two:  # each loss reaches only its own network
            assert all(p.grad is None or float(p.grad.abs().sum()) == 0 for p in model.nets[other].parameters())
    assert ("_pl_frac" in out) == pl
    if sel == "image":
        assert float(out["_drop_a"]) == 2.0  # 8 - keep_count(8, 0.25)


def test_pseudo_labels_change_the_loss_and_start_on_time(phantoms: Path) -> None:
    batch = _batch(phantoms)
    seed_everything(0)
    a = CrossDenoise(arm="cdn", t_k=0, pl_start_epoch=0, flip_prob=0.0)
    seed_everything(0)
    b = CrossDenoise(arm="cdn_no_pl", t_k=0, flip_prob=0.0)
    la, lb = a.training_losses(batch), b.training_losses(batch)
    assert float(la["a"].detach()) > float(lb["a"].detach())  # same weights, same batch: + lambda_u * L_cross
    late = CrossDenoise(arm="cdn", t_k=5)
    late._max_epochs = lambda: 25  # type: ignore[method-assign]  # the trainer's max_epochs
    assert late.pl_start() == 5 and late.pl_fraction(4) == 0.0
    assert [late.pl_fraction(e) for e in (5, 14.5, 24, 30)] == pytest.approx([0.2, 0.35, 0.5, 0.5])


def test_peer_parts_need_two_networks() -> None:
    with pytest.raises(ValueError, match="two_networks"):
        CrossDenoise(arm="cdn", two_networks=False)
    with pytest.raises(ValueError, match="arm"):
        CrossDenoise(arm="coteaching")
    m = CrossDenoise(arm="single", noise_tolerant=True)  # the truncated loss needs no peer
    assert m.nt and m.net_b is None


def test_evaluation_per_domain_and_output(phantoms: Path) -> None:
    dm = TwoDomainDataModule(str(phantoms), image_size=48, label_values=[0, 1, 2], batch_size=16,
                             source_test="clean/source_test.csv")
    dm.setup("test")
    model = CrossDenoise(arm="cdn")
    model.eval()
    batch = next(iter(dm.test_dataloader()))
    y = batch["seg"][:, 0]

    class Oracle(torch.nn.Module):  # right on the target images, background everywhere on the source ones
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            logits = F.one_hot(y, 3).permute(0, 3, 1, 2).float() * 10
            src = torch.tensor([r == "source" for r in batch["role"]])
            logits[src] = 0
            logits[src, 0] = 10
            return logits

    model.net_a = Oracle()
    model.net_b = Oracle()
    model.evaluation_step(batch, 0, "test")
    rec = model.evaluation_end("test")
    assert rec is not None
    for out in ("a", "b", "ens", "mean"):
        assert rec[f"target/{out}/dice_disc"] == 1.0 and rec[f"target/{out}/vcdr_err"] == 0.0
        assert rec[f"source/{out}/dice_disc"] == 0.0
    assert rec["target_dice_mean"] == 1.0 and math.isnan(rec["source_vcdr_err"])  # no predicted disc


# --- runs: fit + predict on a real fundus photo --------------------------------------------------
def test_fit_then_predict_writes_refuge_masks_on_a_real_photo(phantoms: Path, tmp_path: Path) -> None:
    skdata = pytest.importorskip("skimage.data")
    cfg = load_config(config_dir("cross_denoise") / "demo.yaml", {
        "data.init_args.root": str(phantoms), "trainer.max_epochs": 2, "model.init_args.t_k": 1})
    res = fit_from_config(cfg, tmp_path / "run", progress="none")
    assert {"test/target_dice_disc", "test/source_dice_cup", "test/target/ens/vcdr_err"} <= set(res.test)
    assert (tmp_path / "run" / "figures" / "test_target_examples.png").is_file()
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(np.asarray(skdata.retina())).save(photos / "retina.jpg", quality=95)  # 1411 x 1411, CC0
    Image.fromarray(np.asarray(skdata.retina())[100:1300, :1200]).save(photos / "crop.png")
    pcfg = load_config(config_dir("cross_denoise") / "demo_predict.yaml", {
        "data.init_args.predict_root": str(photos),
        "data.init_args.roi": {"class_path": "medlearn.data.roi.DiscROI", "init_args": {"fraction": 0.3}}})
    out = predict_from_config(pcfg, tmp_path / "run", ckpt_path=res.last_ckpt)
    assert out == tmp_path / "run" / "predict"
    for name, size in (("retina", (1411, 1411)), ("crop", (1200, 1200))):
        mask = np.asarray(Image.open(out / "masks" / f"{name}.bmp"))
        assert mask.shape == size and set(np.unique(mask)) <= {0, 128, 255}
        assert Image.open(out / "overlays" / f"{name}.png").size[0] <= 1024
    rows = (out / "predictions.csv").read_text().splitlines()
    assert rows[0].startswith("name,vcdr") and len(rows) == 3
    box = [int(v) for v in rows[2].split(",")[4:]]  # retina.jpg: the detector's box, 0.3 x 1411 px
    assert box[2] - box[0] == 423 and 400 < (box[0] + box[2]) / 2 < 900 and (box[1] + box[3]) / 2 < 500
    assert refuge_encode(np.array([0, 1, 2])).tolist() == [255, 128, 0]


@pytest.mark.parametrize("name", ["refuge.yaml", "drishti.yaml"])
def test_paper_scale_configs_build(name: str) -> None:
    cfg = load_config(config_dir("cross_denoise") / name)
    model = instantiate_class(cfg["model"])
    assert isinstance(model, CrossDenoise) and model.hparams.arm == "cdn" and model.net_b is not None
    dm = instantiate_class(cfg["data"])
    assert isinstance(dm, TwoDomainDataModule) and isinstance(dm.roi, DiscROI) and dm.roi.eval_centre == "detector"
    assert cfg["data"]["init_args"]["image_size"] == cfg["model"]["init_args"]["image_size"] == 512
