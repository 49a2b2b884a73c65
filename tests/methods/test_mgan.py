"""MGAN / TC-MGAN: loss oracles (official formulas written out here), the networks' shapes, the BraTS
slice data (case split, slice filter, scaling, malformed cases), the training arms, `medlearn predict`
to NIfTI on the input grid, and a GAN run killed and resumed ending with the same weights."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import Callback, seed_everything

from medlearn.data.mr_slices import BRATS_MIN_BRAIN_FRACTION, MRSliceDataModule, scale_slices
from medlearn.engine.config import instantiate_class, load_config
from medlearn.engine.run import fit_from_config, predict_from_config
from medlearn.engine.trainer import make_trainer
from medlearn.io import read_image
from medlearn.io.errors import DataError
from medlearn.methods.mgan.losses import reconstruction_l1, soft_dice_loss, target_classification_loss
from medlearn.methods.mgan.model import ConditionalSegmentor, StarGANCritic
from medlearn.methods.mgan.module import MGAN, dice_per_slice
from medlearn.registry import config_dir
from medlearn.synth.brats import write_brats


@pytest.fixture(scope="module")
def brats(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_brats(tmp_path_factory.mktemp("brats") / "brats", n_cases=8, size=32, seed=3)


# --- losses: the official code's formulas, written out naively -------------------------------------
def _official_dice_loss(p, t):
    n = p.shape[0]
    scores = []
    for b in range(n):
        inter = float((p[b] * t[b]).sum())
        scores.append((2 * inter + 1) / (float(p[b].sum()) + float(t[b].sum()) + 1))
    return 1 - sum(scores) / n


@pytest.mark.parametrize("b,size", [(1, 8), (4, 16)])
def test_soft_dice_loss_matches_official_formula(b, size):
    g = torch.Generator().manual_seed(b)
    p = torch.rand(b, 1, size, size, generator=g)
    t = (torch.rand(b, 1, size, size, generator=g) > 0.7).float()
    t[0] = 0  # an empty mask: the +1 smoothing gives (1) / (sum p + 1)
    assert soft_dice_loss(p, t).item() == pytest.approx(_official_dice_loss(p, t), rel=1e-5)


def test_classification_and_l1_match_naive():
    g = torch.Generator().manual_seed(0)
    logits, code = torch.randn(5, 3, generator=g), torch.eye(3)[[0, 1, 2, 0, 2]]
    naive = 0.0
    for i in range(5):
        for k in range(3):
            p = 1 / (1 + math.exp(-float(logits[i, k])))
            naive -= float(code[i, k]) * math.log(p) + (1 - float(code[i, k])) * math.log(1 - p)
    assert target_classification_loss(logits, code).item() == pytest.approx(naive / 5, rel=1e-5)
    a, b = torch.rand(2, 1, 4, 4, generator=g), torch.rand(2, 1, 4, 4, generator=g)
    per = [float((a[i] - b[i]).abs().sum()) for i in range(2)]
    assert reconstruction_l1(a, b, "sum").item() == pytest.approx(sum(per) / 2, rel=1e-5)
    assert reconstruction_l1(a, b, "mean").item() == pytest.approx(sum(per) / 2 / 16, rel=1e-5)
    with pytest.raises(ValueError):
        reconstruction_l1(a, b, "max")


def test_dice_per_slice_hand_case():
    p = torch.tensor([[[[0.9, 0.9], [0.1, 0.1]]], [[[0.0, 0.0], [0.0, 0.0]]]])
    t = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]], [[[0.0, 0.0], [0.0, 0.0]]]])
    assert dice_per_slice(p, t).tolist() == pytest.approx([(2 * 1 + 1) / (2 + 1 + 1), 1.0])


# --- networks --------------------------------------------------------------------------------------
def test_networks_have_the_official_shapes():
    d = StarGANCritic(128, 2, 64, 3, 5)
    src, cls = d(torch.rand(2, 1, 128, 128), torch.rand(2, 1, 128, 128))
    assert src.shape == (2, 1, 4, 4) and cls.shape == (2, 3)
    # official netD: 5 convs 2->64->...->1024 (4x4, bias) + src 3x3 (1024->1) + cls 4x4 (1024->3), no bias
    convs = [(2, 64), (64, 128), (128, 256), (256, 512), (512, 1024)]
    want = sum(i * o * 16 + o for i, o in convs) + 1024 * 9 + 1024 * 3 * 16
    assert sum(p.numel() for p in d.parameters()) == want
    s = ConditionalSegmentor(1, 3, 64)
    out = s(torch.rand(2, 1, 128, 128), torch.eye(3)[:2])
    assert out.shape == (2, 1, 128, 128) and 0 <= float(out.detach().min()) and float(out.detach().max()) <= 1
    with pytest.raises(ValueError, match="divisible"):
        StarGANCritic(100)


# --- data ------------------------------------------------------------------------------------------
def test_slices_split_by_case_filter_and_scale(brats):
    dm = MRSliceDataModule(str(brats), image_size=16, batch_size=4, val_fraction=0.2, test_fraction=0.25)
    dm.setup("fit")
    dm.setup("test")
    cases = {k: {r.case for r in v} for k, v in dm.splits.items()}
    assert not (cases["train"] & cases["test"]) and not (cases["train"] & cases["val"])
    assert sum(len(v) for v in cases.values()) == 8
    # the slice filter by hand for one training case: every contrast > fraction * 32 * 32 non-zero voxels
    case = sorted(cases["train"])[0]
    vols = {m: read_image(brats / case / f"{case}_{m}.nii.gz")[0][0] for m in ("t2", "flair", "t1ce", "t1")}
    keep = [z for z in range(32) if all((v[:, :, z] > 0).sum() > BRATS_MIN_BRAIN_FRACTION * 32 * 32
                                        for v in vols.values())]
    ds = dm.train_set
    assert [s for c, s in zip(ds.cases, ds.slices) if c == case] == keep
    item = ds[ds.cases.index(case)]
    assert item["targets"].shape == (3, 16, 16) and item["source"].min() >= -1 and item["source"].max() <= 1
    # targets in code order: FLAIR first; per-slice max scaling then area resize (a 2x2 mean)
    z = keep[0]
    flair = vols["flair"][:, :, z] / vols["flair"][:, :, z].max()
    want = flair.reshape(16, 2, 16, 2).mean((1, 3)) * 2 - 1
    assert np.allclose(item["targets"][0].numpy(), want, atol=1e-5)
    seg = read_image(brats / case / f"{case}_seg.nii.gz")[0][0][:, :, z] != 0
    assert np.array_equal(item["mask"][0].numpy() > 0.5, seg.reshape(16, 2, 16, 2).mean((1, 3)) > 0.5)
    assert dm.data_info().input_size == (16, 16) and dm.data_info().n_train == len(ds)


def test_scalings_by_hand():
    v = np.zeros((2, 3, 3), dtype=np.float32)
    v[0, 1, 1], v[0, 0, 0] = 4.0, 2.0
    s = scale_slices(v, "slice_max")
    assert s[0, 1, 1] == 1.0 and s[0, 0, 0] == 0.5 and (s[1] == 0).all()
    w = np.arange(1, 201, dtype=np.float32).reshape(2, 10, 10)
    p = scale_slices(w, "volume_percentile", (0.0, 100.0))
    assert p.min() == 0.0 and p.max() == 1.0 and p[0, 0, 1] == pytest.approx(1 / 199)
    with pytest.raises(ValueError):
        scale_slices(w, "zscore")


def test_malformed_cases_listed_and_bad_options(brats, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(brats, bad)
    (bad / "BraTS_0001" / "BraTS_0001_flair.nii.gz").unlink()
    (bad / "BraTS_0004" / "BraTS_0004_seg.nii.gz").write_bytes(b"not a nifti")
    dm = MRSliceDataModule(str(bad), image_size=16)
    with pytest.raises(DataError) as err:
        dm.setup("fit")
    text = str(err.value) + " ".join(err.value.problems)
    assert "BraTS_0001" in text and "flair" in text and "BraTS_0004" in text
    with pytest.raises(ValueError, match="targets"):
        MRSliceDataModule(str(brats), targets=("t2", "flair"))
    with pytest.raises(ValueError, match="scaling"):
        MRSliceDataModule(str(brats), scaling="zscore")


# --- module ----------------------------------------------------------------------------------------
def test_random_target_draw_picks_the_code_s_channel(brats):
    dm = MRSliceDataModule(str(brats), image_size=16, batch_size=16)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    m = MGAN(synthesise=["t1", "flair"], num_downs=3, ngf=4, discriminator="patchgan", d_channels=4, d_layers=1,
             lambda_cls=0.0, image_size=16)
    torch.manual_seed(0)
    x, real, code, mask = m._draw(batch)
    for i in range(16):
        k = int(code[i].argmax())
        want = {0: 2, 1: 0}[k]  # synthesise order t1, flair -> data channels 2, 0
        assert torch.equal(real[i, 0], batch["targets"][i, want])
    with pytest.raises(ValueError, match="exactly one"):
        MGAN(conditional=False)
    with pytest.raises(ValueError, match="lambda_cls"):
        MGAN(discriminator="patchgan", lambda_cls=1.0)


def test_generator_steps_every_n_critic(brats, tmp_path):
    cfg = load_config(config_dir("mgan") / "demo.yaml", {
        "data.init_args.root": str(brats), "data.init_args.image_size": 16, "model.init_args.lambda_tc": 0.0,
        "model.init_args.n_critic": 3, "data.init_args.batch_size": 8, "trainer.max_epochs": 1,
        "trainer.limit_val_batches": 0})
    model = instantiate_class(cfg["model"])
    steps: dict[str, int] = {"generator": 0, "discriminator": 0}
    original = model.manual_step

    def counting(name, loss):
        steps[name] += 1
        original(name, loss)

    model.manual_step = counting
    fit_from_config(cfg, tmp_path / "run", test=False, progress="none", model=model)
    d = steps["discriminator"]
    assert d >= 6 and steps["generator"] == d // 3 and int(model.gan_step) == d


def test_predict_writes_missing_contrasts_on_the_input_grid(brats, tmp_path):
    import shutil

    cfg = load_config(config_dir("mgan") / "demo.yaml", {
        "data.init_args.root": str(brats), "trainer.max_epochs": 1, "trainer.limit_train_batches": 2,
        "trainer.limit_val_batches": 1, "data.init_args.batch_size": 8})
    run = fit_from_config(cfg, tmp_path / "run", test=False, progress="none")
    cases = tmp_path / "new"
    write_brats(cases, n_cases=2, size=32, seed=9)
    for f in (cases / "BraTS_0000").iterdir():
        if not f.name.endswith(("_t2.nii.gz", "_flair.nii.gz")):
            f.unlink()
    for f in (cases / "BraTS_0001").iterdir():
        if not f.name.endswith("_t2.nii.gz"):
            f.unlink()
    pcfg = load_config(config_dir("mgan") / "demo_predict.yaml", {"data.init_args.predict_root": str(cases)})
    out = predict_from_config(pcfg, tmp_path / "pred", ckpt_path=run.last_ckpt)
    for case, synthesised in (("BraTS_0000", ("t1ce", "t1")), ("BraTS_0001", ("flair", "t1ce", "t1"))):
        t2, meta = read_image(cases / case / f"{case}_t2.nii.gz")
        assert sorted(p.name for p in (out / case).iterdir() if "flair" in p.name) == [f"{case}_flair.nii.gz"]
        for c in synthesised:
            arr, m2 = read_image(out / case / f"{case}_{c}.nii.gz")
            assert arr.shape == t2.shape and np.allclose(m2["affine"], meta["affine"])
            assert arr.min() >= 0 and arr.max() <= 1 and (arr[t2 == 0] == 0).all() and arr.max() > 0
    # the case's own FLAIR is copied, not synthesised
    assert (out / "BraTS_0000" / "BraTS_0000_flair.nii.gz").read_bytes() == \
        (cases / "BraTS_0000" / "BraTS_0000_flair.nii.gz").read_bytes()
    rows = (out / "synthesis.csv").read_text().splitlines()
    assert rows[1].startswith("BraTS_0000,t1 t1ce,flair t2") and rows[2].startswith("BraTS_0001,flair t1 t1ce,t2")
    shutil.rmtree(tmp_path / "run")


# --- kill and resume -------------------------------------------------------------------------------
class Kill(Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            raise RuntimeError("simulated kill")


def _run(cfg, run_dir, callbacks=(), ckpt_path=None):
    seed_everything(0, workers=True)
    model = instantiate_class(cfg["model"])
    dm = instantiate_class(cfg["data"])
    trainer = make_trainer(run_dir, max_epochs=4, progress="none", report=False, callbacks=list(callbacks),
                           deterministic=True, accelerator="cpu", devices=1)
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    return model, trainer


def test_tcmgan_killed_and_resumed_matches_uninterrupted(brats, tmp_path):
    # three optimisers, the segmentor's pre-training epoch, random targets per batch, the n_critic counter
    cfg = load_config(config_dir("mgan") / "demo.yaml", {
        "data.init_args.root": str(brats), "data.init_args.image_size": 16, "data.init_args.batch_size": 16,
        "model.init_args.num_downs": 3, "model.init_args.n_critic": 2, "model.init_args.schedule": "step",
        "model.init_args.milestones": [2], "model.init_args.g_ema": 0.9})
    full, _ = _run(cfg, tmp_path / "full")
    with pytest.raises(RuntimeError, match="simulated kill"):
        _run(cfg, tmp_path / "killed", [Kill(2)])
    last = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    assert last.is_file()
    resumed, trainer = _run(cfg, tmp_path / "killed", ckpt_path=str(last))
    assert trainer.current_epoch == 4
    a, b = full.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys() and any(k.startswith("generator_ema.") for k in a)
    diff = [k for k in a if not torch.equal(a[k], b[k])]
    assert not diff, f"resumed run differs in {diff[:5]}"
    opt_full = [o.state_dict() for o in full.trainer.optimizers] if full._trainer else []
    assert len(resumed.trainer.optimizers) == 3 and (not opt_full or len(opt_full) == 3)


# --- the paper-scale path: StarGAN critic, WGAN-GP, class head; bf16 autocast ----------------------
@pytest.mark.parametrize("bf16", [False, True])
def test_stargan_wgan_gp_step_reaches_every_network(brats, bf16):
    from medlearn.engine.contract import training_step_problems

    dm = MRSliceDataModule(str(brats), image_size=32, batch_size=6)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    seed_everything(0)
    m = MGAN(num_downs=5, ngf=4, discriminator="stargan", d_channels=4, d_layers=3, gan_loss="wgan",
             patch_reduction="sum", lambda_gp=10.0, lambda_cls=1.0, lambda_rec=0.1, rec_reduction="sum",
             lambda_tc=1.0, seg_channels=4, image_size=32)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        assert not training_step_problems(m, batch)
        losses = {c.name: c.loss for c in m.contract_step(batch)}
    assert set(losses) == {"discriminator", "generator", "segmentor"}
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())


@pytest.mark.parametrize("config,params", [("brats_tcmgan.yaml", 41_822_593), ("brats_pix2pix.yaml", 41_822_849)])
def test_paper_scale_configs_build(config, params):
    cfg = load_config(config_dir("mgan") / config)
    model = instantiate_class(cfg["model"])
    assert sum(p.numel() for p in model.generator.parameters()) == params
    assert cfg["data"]["init_args"]["image_size"] == 128
    if config == "brats_tcmgan.yaml":
        assert isinstance(model.critic, StarGANCritic) and model.segmentor is not None
        assert [p.name for p in model.optimizer_plans()] == ["discriminator", "generator", "segmentor"]


def test_downstream_with_perfect_synthesis_equals_all_four_real(brats, tmp_path):
    from medlearn.data.mr_slices import MRSliceDataModule
    from medlearn.methods.mgan.recipe import CONTRASTS, Downstream

    ds = Downstream(tmp_path, brats, epochs=1)
    assert ds.all4.hparams.in_channels == 4 and ds.t2.hparams.in_channels == 1
    dm = MRSliceDataModule(str(brats), image_size=32, test_fraction=0.25, val_fraction=0.0)
    dm.setup("test")
    test = dm.test_set.tensors
    perfect = {c: test["targets"][:, i:i + 1] for i, c in enumerate(CONTRASTS)}
    row = ds.scores(test, perfect)
    assert row["seg_dice"] == row["seg_dice_real"] and row["seg_iou"] == row["seg_iou_real"]
    # a segmenter trained on T2 + "synthesised" contrasts that are the real ones, with the real one's seed,
    # is the real one
    real_train = {c: ds.train["targets"][:, i:i + 1] for i, c in enumerate(CONTRASTS)}
    own = ds.scores(test, perfect, lambda c, x: real_train[c], tag="oracle", seed=0)
    assert own["seg_dice_synth"] == pytest.approx(own["seg_dice_real"], abs=1e-9)
    blank = {c: torch.full_like(v, -1.0) for c, v in perfect.items()}
    assert set(ds.scores(test, blank)) == set(row)
    assert all(0.0 <= v <= 1.0 for v in row.values())
    again = Downstream(tmp_path, brats, epochs=1)  # reused from the run folders, not retrained
    assert torch.equal(next(again.all4.parameters()), next(ds.all4.parameters()))
