"""Crossover-Net module: dense inference equal to classifying each pixel alone (every arm, chunked, strided),
post-processing, seeded patch training, evaluation on hand-made predictions, fit + predict writing full masks."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import seed_everything
from PIL import Image

from medlearn.cli import main
from medlearn.data.info import DataInfo
from medlearn.data.segmentation2d import ImageMaskDataModule
from medlearn.methods.crossover.inference import dense_logits, nearest_grid_index, postprocess_labels
from medlearn.methods.crossover.module import CrossoverSegmenter, MaskPredictionWriter
from medlearn.registry import config_dir
from medlearn.synth.rings import write_rings


@pytest.fixture(scope="module")
def rings(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_rings(tmp_path_factory.mktemp("rings") / "rings", n_images=12, n_test=3, seed=2)


def _batch(root: Path, n: int = 4, size: int = 96) -> dict:
    dm = ImageMaskDataModule(str(root), image_size=size, channels=1, label_values=[0, 1], batch_size=n,
                             val_fraction=0.0)
    dm.setup("fit")
    return next(iter(dm.train_dataloader()))


@pytest.mark.parametrize("patch", ["cross", "strip", "square"])
def test_dense_inference_equals_classifying_each_pixel_alone(patch):
    torch.manual_seed(0)
    model = CrossoverSegmenter(patch=patch, long=12, short=4, embed=8, widths=(4, 6, 6)).eval()
    images = torch.rand(2, 1, 9, 7)
    full = dense_logits(model.patch_logits, images, stride=1, chunk=10)
    assert full.shape == (2, 2, 9, 7)
    with torch.no_grad():
        for b in range(2):
            for y in range(9):
                for x in range(7):  # every pixel, borders included, one forward each
                    alone = model.patch_logits(images, torch.tensor([[b, y, x]]))[0]
                    torch.testing.assert_close(full[b, :, y, x], alone, atol=1e-5, rtol=1e-5)
    for chunk in (1, 7, 1000):  # the chunking changes nothing
        torch.testing.assert_close(dense_logits(model.patch_logits, images, 1, chunk), full, atol=1e-5, rtol=1e-5)


def test_strided_inference_copies_the_nearest_grid_point():
    calls: list[int] = []

    def fake(images, centres):
        calls.append(len(centres))
        return torch.stack([centres[:, 1].float(), centres[:, 2].float()], dim=1)  # logits = the centre's (row, col)

    out = dense_logits(fake, torch.zeros(1, 1, 8, 11), stride=3, chunk=5)
    assert sum(calls) == 3 * 4  # rows 0, 3, 6; columns 0, 3, 6, 9
    for y in range(8):
        for x in range(11):
            gy, gx = min(round(y / 3 + 1e-9), 2) * 3, min(math.floor(x / 3 + 0.5), 3) * 3
            assert (out[0, 0, y, x], out[0, 1, y, x]) == (gy, gx)
    assert nearest_grid_index(7, 2).tolist() == [0, 1, 1, 2, 2, 3, 3]  # ties go up
    assert nearest_grid_index(5, 1).tolist() == [0, 1, 2, 3, 4]


def test_postprocess_close_fill_largest():
    lab = np.zeros((30, 30), dtype=np.int64)
    lab[5:15, 5:15] = 1
    lab[9:11, 9:11] = 0  # a hole
    lab[6:14, 10] = 0  # a 1-px crack inside the square, closed by the disk
    lab[25:27, 25:27] = 1  # a small second component
    out = postprocess_labels(lab, ("close", "fill", "largest"), radius=3)
    want = np.zeros_like(lab)
    want[5:15, 5:15] = 1
    assert (out == want).all()
    assert (postprocess_labels(lab, ()) == lab).all()
    only_largest = postprocess_labels(lab, ("largest",))
    assert only_largest[25, 25] == 0 and only_largest[5, 5] == 1 and only_largest[9, 9] == 0
    with pytest.raises(ValueError):
        postprocess_labels(lab, ("open",))


def test_training_draws_are_seeded_per_epoch_and_batch(rings):
    model = CrossoverSegmenter(centres_per_image=30)
    batch = _batch(rings, 2)
    x1, t1, c1 = model.draw_patches(batch, 0)
    x2, t2, c2 = model.draw_patches(batch, 0)
    x3, _, c3 = model.draw_patches(batch, 1)
    assert torch.equal(c1, c2) and torch.equal(x1, x2) and torch.equal(t1, t2) and not torch.equal(c1, c3)
    assert x1.shape == (60, 1, 48, 16) and set(t1.tolist()) == {0, 1}
    other = CrossoverSegmenter(centres_per_image=30, sample_seed=1)
    assert not torch.equal(other.draw_patches(batch, 0)[2], c1)
    assert int((t1 == 1).sum()) >= 20  # a third inside, and about half of the band is inside too


def test_one_epoch_steps_once_per_patch_batch(rings, tmp_path):
    from medlearn.engine.config import load_config
    from medlearn.engine.run import fit_from_config

    cfg = load_config(config_dir("crossover") / "demo.yaml", {
        "data.init_args.root": str(rings), "data.init_args.batch_size": 4, "data.init_args.val_fraction": 0.0,
        "trainer.max_epochs": 1, "model.init_args.centres_per_image": 50, "model.init_args.patch_batch": 64,
        "model.init_args.eval_stride": 4})
    res = fit_from_config(cfg, tmp_path / "run", progress="none")
    trainer_steps = res.model.trainer.global_step
    assert trainer_steps == 2 * math.ceil(200 / 64) + 1  # 9 training images: batches of 4, 4, 1 -> 200, 200, 50 patches
    assert 0.0 <= res.test["test/dice_mean"] <= 1.0 and "test/tpf_mean" in res.test and "test/hd95_mean" in res.test


def test_evaluation_of_a_perfect_and_an_empty_prediction(rings):
    model = CrossoverSegmenter(eval_stride=1)
    batch = _batch(rings, 3)
    truth = batch["seg"]

    def perfect(images, centres):
        y = truth[centres[:, 0], 0, centres[:, 1], centres[:, 2]]
        return torch.nn.functional.one_hot(y, 2).float()

    model.patch_logits = perfect  # type: ignore[method-assign]
    model.evaluation_step(batch, 0, "test")
    rec = model.evaluation_end("test")
    assert rec["dice_mean"] == 1.0 and rec["tpf_mean"] == 1.0 and rec["cd_mean"] == 0.0 and rec["hd95_mean"] == 0.0
    assert [r["name"] for r in rec["per_image"]] == list(batch["name"])
    assert all(r["dice/label_1"] == 1.0 for r in rec["per_image"])
    model.patch_logits = lambda images, c: torch.tensor([[1.0, 0.0]]).expand(len(c), 2)  # type: ignore[method-assign]
    model.evaluation_step(batch, 0, "val")
    rec = model.evaluation_end("val")
    assert rec["dice_mean"] == 0.0 and rec["tpf_mean"] == 0.0 and math.isnan(rec["cd_mean"])
    assert rec["cd_undefined"] == 3.0 and "hd95_mean" not in rec  # distances only at test time


def test_receive_data_refuses_unknown_labels_and_channels():
    model = CrossoverSegmenter()
    with pytest.raises(ValueError, match="label values"):
        model.receive_data(DataInfo(num_classes=3, label_values=[0, 1, 2], in_channels=1))
    with pytest.raises(ValueError, match="channels"):
        model.receive_data(DataInfo(num_classes=2, label_values=[0, 1], in_channels=3))
    with pytest.raises(ValueError, match="patch"):
        CrossoverSegmenter(patch="circle")
    with pytest.raises(ValueError, match="takes 100 x 20"):
        CrossoverSegmenter(arch="hv100x20", long=48, short=8)


def test_mask_writer_paths():
    assert MaskPredictionWriter.mask_path("images/a.png") == Path("images/a.png")
    assert MaskPredictionWriter.mask_path("case_00001/slice_0004") == Path("case_00001/slice_0004.png")
    assert MaskPredictionWriter.mask_path("/abs/x.dcm") == Path("x.png")
    assert MaskPredictionWriter.mask_path("../up.png") == Path("up.png")


def test_fit_then_predict_writes_full_masks_at_the_input_size(rings, tmp_path, capsys):
    run = tmp_path / "run"
    common = ["--data.init_args.root", str(rings), "--data.init_args.image_size", "64", "--trainer.max_epochs", "1",
              "--model.init_args.centres_per_image", "40", "--model.init_args.eval_stride", "4"]
    assert main(["fit", "--config", str(config_dir("crossover") / "demo.yaml"), *common,
                 "--trainer.default_root_dir", str(run)]) == 0
    assert (run / "report.html").is_file() and (run / "val_per_image.csv").is_file()
    capsys.readouterr()
    assert main(["predict", "--config", str(config_dir("crossover") / "demo.yaml"), *common,
                 "--ckpt_path", str(run / "checkpoints" / "last.ckpt"), "--trainer.default_root_dir", str(run)]) == 0
    assert "wrote 3 masks" in capsys.readouterr().out
    pred = run / "predict"
    table = (pred / "predictions.csv").read_text().splitlines()
    assert table[0] == "name,mask,height,width,foreground_pixels" and len(table) == 4
    for line in table[1:]:
        name, mask, h, w, _ = line.split(",")
        arr = np.array(Image.open(pred / mask))
        assert arr.shape == (96, 96) == (int(h), int(w)) and set(np.unique(arr)) <= {0, 1}  # stored size, not 64
        assert Image.open(rings / name).size == (96, 96)
    # a folder of images without masks (nested, another size): predict_root, masks at each image's size
    folder = tmp_path / "unlabelled"
    (folder / "scanner-b").mkdir(parents=True)
    src = np.array(Image.open(rings / table[1].split(",")[0]))
    Image.fromarray(src).save(folder / "a.png")
    Image.fromarray(np.array(Image.fromarray(src).resize((120, 80)))).save(folder / "scanner-b" / "b.png")
    capsys.readouterr()
    assert main(["predict", "--config", str(config_dir("crossover") / "demo.yaml"), *common,
                 "--data.init_args.predict_root", str(folder), "--ckpt_path", str(run / "checkpoints" / "last.ckpt"),
                 "--trainer.default_root_dir", str(run)]) == 0
    assert "wrote 2 masks" in capsys.readouterr().out
    rows = (run / "predict-2" / "predictions.csv").read_text().splitlines()[1:]
    assert sorted(r.split(",")[0] for r in rows) == ["a.png", "scanner-b/b.png"]
    assert np.array(Image.open(run / "predict-2" / "masks" / "scanner-b" / "b.png")).shape == (80, 120)
    # an empty or missing folder is a clear error naming it
    (tmp_path / "empty").mkdir()
    for bad in (tmp_path / "empty", tmp_path / "missing"):
        assert main(["predict", "--config", str(config_dir("crossover") / "demo.yaml"), *common,
                     "--data.init_args.predict_root", str(bad), "--ckpt_path", str(run / "checkpoints" / "last.ckpt"),
                     "--trainer.default_root_dir", str(run)]) != 0
        assert str(bad) in capsys.readouterr().err


def test_paper_scale_forward_of_the_official_nets():
    seed_everything(0)
    for arch, shape in (("hv100x20", (1, 1, 100, 40)), ("inbreast340x68", (1, 1, 340, 136))):
        model = CrossoverSegmenter(arch=arch, loss="code").eval()
        assert tuple(model.example_input_array.shape) == shape
        with torch.no_grad():
            assert model(torch.rand(shape)).shape == (1, 2)
        assert model.loss_fn.overlap == [7, 8, 9, 10] if arch == "hv100x20" else len(model.loss_fn.nonoverlap) == 14


@pytest.mark.parametrize("config,synth,params,profile", [
    ("kits19.yaml", "kits19", 364_458, 19), ("acdc.yaml", "acdc", 364_458, 19),
    ("inbreast.yaml", "inbreast", 705_098, 35)])
def test_paper_scale_configs_build_the_official_nets_on_their_layouts(config, synth, params, profile, tmp_path):
    from medlearn.engine.config import instantiate_class, load_config
    from medlearn.engine.contract import training_step_problems
    from medlearn.synth import get_synth

    small = {"kits19": dict(n_cases=3, n_unlabelled=0, size=48), "acdc": dict(n_patients=3, size=48),
             "inbreast": dict(n_images=6, p_mass=1.0)}[synth]
    root = get_synth(synth)(tmp_path / synth, seed=0, **small)
    cfg = load_config(config_dir("crossover") / config, {
        "data.init_args.root": str(root), "data.init_args.image_size": 40, "data.init_args.batch_size": 2,
        "data.init_args.num_workers": 0, "model.init_args.centres_per_image": 6, "model.init_args.eval_stride": 8})
    cfg["data"]["init_args"]["layout_options"]["roi_size"] = 64
    cfg["data"]["init_args"]["layout_options"].pop("roi_margin", None)
    model, dm = instantiate_class(cfg["model"]), instantiate_class(cfg["data"])
    assert sum(p.numel() for p in model.parameters()) == params and model.net.profile_length == profile
    assert model.hparams.loss == "code" and model.hparams.lr == 1e-4 and model.hparams.patch_batch == 200
    dm.setup("fit")
    model.receive_data(dm.data_info())
    batch = next(iter(dm.train_dataloader()))
    assert not training_step_problems(model, batch)
    model.eval()
    seg = model.segment(batch["image"][:1])
    assert seg.shape == (1, 1, 40, 40)


def test_reproduction_table_readings_come_from_the_rows():
    from medlearn.methods.crossover.recipe import ARMS, table_from_results

    dice = {"sq": [0.50, 0.60, 0.55], "strip": [0.62, 0.58, 0.60], "cross": [0.70, 0.66, 0.59],
            "cross_loss": [0.75, 0.70, 0.59], "unet": [0.90, 0.88, 0.91]}
    rows = [{"arm": arm, "seed": s, "dice": d, "tpf": d + 0.1, "cd": 3.0 - d, "hd95": 10 - d, "seconds": 30.0}
            for arm, ds in dice.items() for s, d in enumerate(ds)]
    md = table_from_results({"rows": rows, "seeds": [0, 1, 2], "arms": list(ARMS), "n_train": 30, "n_test": 8,
                             "epochs": 6, "unet_epochs": 40, "eval_stride": 2, "seconds": 600.0, "threads": 2})
    assert "| cross_loss − sq | +0.130 (3/3) |" in md
    assert "square patch of equal pixel count (Dice): mean +0.130, 3/3 seeds -> reproduced." in md
    assert "mean +0.050, 2/3 seeds -> same direction, within noise." in md  # cross - strip: +0.08, +0.08, -0.01
    assert "| cross_loss − unet | -0.217 (0/3) | -0.217 (0/3) | +0.217 (0/3) |" in md  # CD: lower is better
    assert "0.550 ± 0.050 [0.500, 0.600, 0.550]" in md and "total wall time 10.0 min" in md
    # the U-Net claim is not reproduced: its reason quotes Crossover-Net's TPF and both arms' HD95 from the rows
    assert "(TPF 0.780)" in md and "(HD95 9.3 px vs the U-Net's 9.1 px)" in md
    better = [{**r, "dice": 0.95} if r["arm"] == "cross_loss" else r for r in rows]
    md = table_from_results({"rows": better, "seeds": [0, 1, 2], "arms": list(ARMS), "n_train": 30, "n_test": 8,
                             "epochs": 6, "unet_epochs": 40, "eval_stride": 2, "seconds": 600.0, "threads": 2})
    assert "U-Net (Dice; the paper reports it ahead of U-Net on its data): mean +0.053, 3/3 seeds" in md
    assert "Why we believe" not in md


@pytest.mark.slow
def test_demo(tmp_path):
    from medlearn.registry import get_method

    res = get_method("crossover").demo(out_dir=tmp_path / "demo", n_images=24, n_test=4, epochs=2)
    assert (tmp_path / "demo" / "report.html").is_file()
    assert (tmp_path / "demo" / "figures" / "test_masks.png").is_file()
    assert len(list((tmp_path / "demo" / "predict" / "masks").rglob("*.png"))) == 4
    assert set(res.metrics) >= {"cross_loss_dice", "sq_dice", "unet_dice", "cross_loss_tpf"}


@pytest.mark.slow
def test_reproduce_resumes(tmp_path):
    from medlearn.methods.crossover.recipe import reproduce

    kw = dict(seeds=(0,), arms=("sq", "cross_loss"), n_train=6, n_test=2, epochs=1, unet_epochs=1,
              results_md=tmp_path / "results.md")
    reproduce(tmp_path / "rep", **kw)
    first = (tmp_path / "rep" / "results.json").read_text()
    md = reproduce(tmp_path / "rep", resume=True, **kw)  # nothing reruns: the rows are kept
    assert '"arm": "cross_loss"' in first and "<!-- crossover:start -->" in (tmp_path / "results.md").read_text()
    assert "| cross_loss − sq |" in md
