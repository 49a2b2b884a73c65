"""VideoGAN module: video pairing at inference, evaluation readings by hand, the baselines' code path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from lightning.pytorch import Callback, seed_everything

from medlearn.engine.config import instantiate_class, load_config
from medlearn.engine.trainer import make_trainer
from medlearn.methods.videogan.model import XShapeGenerator
from medlearn.methods.videogan.module import VideoGAN, wasserstein_1d
from medlearn.methods.videogan.recipe import write_contract_data
from medlearn.registry import config_dir


class _Spy(XShapeGenerator):
    """An X-shape generator that returns its inputs and records the pairs it saw."""

    def __init__(self) -> None:
        super().__init__(ngf=2, n_blocks=0)
        self.pairs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, x_i: torch.Tensor, x_j: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        x_j = x_i if x_j is None else x_j
        self.pairs.append((x_i.clone(), x_j.clone()))
        return x_i.clone(), x_j.clone()


def _model(**kw: object) -> VideoGAN:
    return VideoGAN(image_size=8, ngf=2, n_blocks=0, d_channels=2, d_layers=1, **kw)  # type: ignore[arg-type]


def test_middle_pairing_never_pairs_a_frame_with_itself() -> None:
    m = _model()
    spy = _Spy()
    m.g_ab = spy
    clip = torch.arange(5.0).view(5, 1, 1, 1).expand(5, 3, 8, 8).contiguous()
    y = m.translate_clip(clip, "ab")
    assert torch.equal(y, clip)
    x_i, x_j = spy.pairs[0]
    assert x_i[:, 0, 0, 0].tolist() == [0, 1, 2, 3, 4] and x_j[:, 0, 0, 0].tolist() == [2, 2, 1, 2, 2]


def test_sliding_pairing_averages_the_two_outputs_of_inner_frames() -> None:
    m = _model(inference_pairing="sliding")
    spy = _Spy()
    m.g_ab = spy
    clip = torch.rand(4, 3, 8, 8)
    assert torch.allclose(m.translate_clip(clip, "ab"), clip)  # each output is its own frame: the mean too
    x_i, x_j = spy.pairs[0]
    assert torch.equal(x_i, clip[:-1]) and torch.equal(x_j, clip[1:])


def test_evaluation_of_the_identity_by_hand() -> None:
    m = _model()
    m.g_ab, m.g_ba = _Spy(), _Spy()
    torch.manual_seed(0)
    a = torch.rand(3, 3, 8, 8) * 2 - 1
    b = torch.rand(2, 3, 8, 8) * 0.5
    ref = torch.rand(3, 3, 8, 8) * 2 - 1
    border_a, border_b = torch.ones(3, 1, 8, 8), torch.ones(2, 1, 8, 8)
    border_a[:, :, 0] = 0.0
    batch = {"frames_a": a[None], "border_a": border_a[None], "reference_a": ref[None], "masks_a": torch.zeros(1, 0),
             "frames_b": b[None], "border_b": border_b[None], "reference_b": torch.zeros(1, 0),
             "masks_b": torch.zeros(1, 0)}
    m.evaluation_step(batch, 0, "val")
    rec = m.evaluation_end("val")
    assert rec is not None
    pa = ((a + 1) / 2).permute(0, 2, 3, 1)[:, 1:].reshape(-1, 3).numpy()  # border row dropped
    pb = ((b + 1) / 2).permute(0, 2, 3, 1).reshape(-1, 3).numpy()
    w1 = np.mean([wasserstein_1d(pa[:, c], pb[:, c]) for c in range(3)])
    assert rec["w1_ab"] == pytest.approx(w1) and rec["w1_identity_ab"] == pytest.approx(w1)
    assert rec["flicker_ab"] == pytest.approx(0.0, abs=1e-7) and rec["flicker_ba"] == pytest.approx(0.0, abs=1e-7)
    y01, r01 = (a + 1) / 2, (ref + 1) / 2
    psnr = np.mean([10 * np.log10(1 / float(((y01[t] - r01[t]) ** 2).mean())) for t in range(3)])
    assert rec["psnr_ab"] == pytest.approx(psnr, rel=1e-5) and "psnr_ba" not in rec
    assert rec["psnr_identity_ab"] == pytest.approx(psnr, rel=1e-5)  # the identity translates nothing
    offsets = (y01 - r01).mean(dim=(2, 3)).numpy()
    assert rec["drift_ab"] == pytest.approx(offsets.std(0).mean(), rel=1e-5)


def test_wasserstein_by_hand() -> None:
    assert wasserstein_1d(np.array([0.0, 1.0]), np.array([0.5, 1.5])) == pytest.approx(0.5)


@pytest.mark.parametrize("kw", [dict(generator="resnet", lambda_hist=0.0), dict(xshape=False), dict(lambda_hist=0.0)])
def test_every_baseline_runs_the_same_training_step(kw: dict[str, object]) -> None:
    torch.manual_seed(0)
    m = _model(**kw)
    batch = {k: torch.rand(2, 3, 8, 8) * 2 - 1 for k in ("a_i", "a_j", "b_i", "b_j")}
    batch.update({f"border_{k}": torch.ones(2, 1, 8, 8) for k in ("a_i", "a_j", "b_i", "b_j")})
    losses = m.contract_step(batch)
    assert [c.name for c in losses] == ["generator", "discriminator"]
    assert all(torch.isfinite(c.loss) for c in losses)
    g_parts = m._g_loss(m._fakes(batch))[1]
    assert ("hist" in g_parts) == bool(m.hparams.lambda_hist)


class _Kill(Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        if trainer.current_epoch == self.epoch:
            raise RuntimeError("simulated kill")


def _run(cfg: dict[str, Any], run_dir: Path, callbacks: tuple[Callback, ...] = (), ckpt_path: str | None = None
         ) -> tuple[Any, Any]:
    seed_everything(0, workers=True)
    model = instantiate_class(cfg["model"])
    dm = instantiate_class(cfg["data"])
    trainer = make_trainer(run_dir, max_epochs=3, progress="none", report=False, callbacks=list(callbacks),
                           deterministic=True, accelerator="cpu", devices=1, limit_val_batches=1)
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    return model, trainer


def test_killed_and_resumed_matches_uninterrupted(tmp_path: Path) -> None:
    # two optimisers, two image pools (buffers filled lazily), partner frames drawn from torch's RNG
    root = write_contract_data(tmp_path / "data")
    cfg = load_config(config_dir("videogan") / "demo.yaml", {
        "data.init_args.root": str(root), "data.init_args.image_size": 16, "model.init_args.image_size": 16,
        "model.init_args.n_blocks": 1, "model.init_args.pool_size": 3, "data.init_args.batch_size": 2})
    full, _ = _run(cfg, tmp_path / "full")
    with pytest.raises(RuntimeError, match="simulated kill"):
        _run(cfg, tmp_path / "killed", (_Kill(2),))
    last = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    resumed, trainer = _run(cfg, tmp_path / "killed", ckpt_path=str(last))
    assert trainer.current_epoch == 3
    a, b = full.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys() and a["pool_a.images"].shape[0] == 3
    diff = [k for k in a if not torch.equal(a[k], b[k])]
    assert not diff, f"resumed run differs in {diff[:5]}"


def test_predict_writes_videos_and_frames_at_their_own_size_count_and_rate(tmp_path: Path) -> None:
    pytest.importorskip("av")
    from medlearn.data.video_frames import decode_video, write_video
    from medlearn.engine.run import fit_from_config, predict_from_config
    from medlearn.io import read_image, write_image

    root = write_contract_data(tmp_path / "data")
    cfg = load_config(config_dir("videogan") / "demo.yaml", {
        "data.init_args.root": str(root), "trainer.max_epochs": 1, "trainer.limit_train_batches": 1,
        "trainer.limit_val_batches": 1})
    res = fit_from_config(cfg, tmp_path / "run", test=False, progress="none")
    new = tmp_path / "new"
    write_video(new / "case.mp4", np.full((5, 30, 41, 3), 120, np.uint8), fps=7.5)
    for i in range(3):
        write_image(new / "clip" / f"frame{i + 1}.png", np.full((3, 20, 26), 90, np.uint8))
    pcfg = load_config(config_dir("videogan") / "demo_predict.yaml", {"data.init_args.predict_root": str(new)})
    out = predict_from_config(pcfg, tmp_path / "pred", ckpt_path=res.last_ckpt)
    frames, fps = decode_video(Path(out) / "case.mp4")
    assert frames.shape == (5, 30, 41, 3) and fps == pytest.approx(7.5)
    written = sorted(p.name for p in (Path(out) / "clip").iterdir())
    assert written == ["frame1.png", "frame2.png", "frame3.png"]
    assert read_image(Path(out) / "clip" / "frame2.png")[0].shape == (3, 20, 26)
    assert (Path(out) / "translations.csv").read_text().count("\n") == 3


def test_paper_scale_config_builds_the_cyclegan_networks() -> None:
    cfg = load_config(config_dir("videogan") / "cvc_etis.yaml")
    m = instantiate_class(cfg["model"])
    assert m.hparams.schedule == "linear" and list(m.hparams.milestones) == [100]
    assert len([b for b in m.g_ab.fuse if type(b).__name__ == "ResBlock"]) == 9
    assert cfg["data"]["init_args"]["image_size"] == 256 and cfg["trainer"]["max_epochs"] == 200


class _Identity:
    """A translator that changes nothing: both protocol directions must then equal no adaptation."""

    def eval(self) -> _Identity:
        return self

    def translate_clip(self, frames: torch.Tensor, direction: str = "ab") -> torch.Tensor:
        return frames.clone()


def test_segmentation_protocol_with_the_identity_equals_no_adaptation(tmp_path: Path) -> None:
    from medlearn.data.video_pairs import VideoPairDataModule
    from medlearn.io.errors import DataError
    from medlearn.methods.videogan.segmentation import polyp_segmentation

    root = write_contract_data(tmp_path / "data")
    dm = VideoPairDataModule(root, image_size=16, test_fraction=0.25)
    row = polyp_segmentation(_Identity(), dm, tmp_path / "seg", seed=0, epochs=2, tag="-id")
    assert set(row) == {f"{m}_{k}" for m in ("dice", "iou") for k in ("none", "target", "b2a", "a2b")}
    assert all(0.0 <= v <= 1.0 for v in row.values())
    assert row["dice_b2a"] == row["dice_none"]  # the same segmenter on the same frames
    assert row["dice_a2b"] == pytest.approx(row["dice_none"], abs=1e-9)  # same frames, masks and seed: same weights
    assert (tmp_path / "seg" / "seg-source-s0" / "checkpoints" / "last.ckpt").is_file()
    refs = polyp_segmentation(None, dm, tmp_path / "seg", seed=0, epochs=2)  # references only, reused segmenters
    assert refs == {k: row[k] for k in ("dice_none", "iou_none", "dice_target", "iou_target")}
    for v in dm.videos("b", "test"):
        v.masks = None
    with pytest.raises(DataError, match="without polyp masks"):
        polyp_segmentation(_Identity(), dm, tmp_path / "seg2", seed=0, epochs=1)
