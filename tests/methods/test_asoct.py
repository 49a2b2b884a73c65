"""AS-OCT method: the localiser's training and evaluation paths, the closure classifier's binary metrics,
`medlearn fit` + `medlearn predict` to an AGE submission with overlays, the paper-scale configs."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import seed_everything

from medlearn.cli import main
from medlearn.data.age_asoct import ASOCTDataModule
from medlearn.engine.config import instantiate_class, load_config
from medlearn.methods.asoct.module import SpurLocalizer
from medlearn.methods.asoct.submission import score_submission
from medlearn.nn.heatmaps import gaussian_heatmap
from medlearn.registry import config_dir
from medlearn.synth.asoct import write_age
from medlearn.tasks.classification import ImageClassifier


@pytest.fixture(scope="module")
def age(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_age(tmp_path_factory.mktemp("age") / "age", n_scans=32, images_per_patient=4, p_missing=0.1, seed=4)


def _batch(root: Path, size: int, n: int = 8) -> dict:
    dm = ASOCTDataModule(str(root), image_size=size, batch_size=n)
    dm.setup("fit")
    return next(iter(dm.train_dataloader()))


@pytest.mark.parametrize("head,lam,augment", [("regression", 0.0, False), ("heatmap", 0.0, True),
                                              ("heatmap", 1.0, True)])
def test_training_step_of_every_arm(age, head, lam, augment):
    seed_everything(0)
    model = SpurLocalizer(head=head, image_size=32, ppm_bins=[1, 2], lambda_loc=lam, augment=augment,
                          loc_warmup_epochs=0)
    batch = _batch(age, 48)  # the model resizes 48 -> 32 and moves the points along
    loss = model.training_step(batch, 0)
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert model._samples is not None and model._samples["x"].shape[-1] == 32


def test_evaluation_maps_predictions_back_to_the_original_scan(age, monkeypatch):
    """A network that outputs the true heatmap gives ~0 px error in original-scan pixels: the view (mirror,
    resize 96 -> 48 by the data, 48 -> 32 by the model) is undone exactly."""
    model = SpurLocalizer(head="heatmap", image_size=32, ppm_bins=None, sigma=1.5)
    batch = _batch(age, 48, n=16)
    truth = (batch["point"].float() + 0.5) * (32 / 48) - 0.5

    def perfect(x):
        return gaussian_heatmap(torch.nan_to_num(truth), (32, 32), 1.5).double()

    monkeypatch.setattr(model, "forward", perfect)
    model.evaluation_step(batch, 0, "val")
    res = model.pop_stage_state("val").compute()
    assert res.n == int(batch["has_point"].sum()) > 0
    assert res.aed < 2e-3 and res.within[3.0] == 1.0


def test_classifier_binary_metrics_and_class_weights(age):
    seed_everything(0)
    model = ImageClassifier(backbone="smallcnn", num_classes=2, multilabel=False, image_size=32, hflip=0.0,
                            positive_class=1, class_weights=[1.0, 3.0])
    assert model.monitor == ("val/auc", "max")
    batch = _batch(age, 32, n=16)
    logits = model(model._prep(batch["image"], False))
    want = F.cross_entropy(logits, batch["label"], weight=torch.tensor([1.0, 3.0]))
    assert float(model._loss(logits, batch["label"])) == pytest.approx(float(want))
    model.evaluation_step(batch, 0, "val")
    m = model.pop_stage_state("val")["binary"].compute()
    assert m.n_positive == int((batch["label"] == 1).sum())
    with pytest.raises(ValueError, match="multi-class"):
        ImageClassifier(num_classes=2, multilabel=True, positive_class=1)
    with pytest.raises(ValueError, match="class_weights"):
        ImageClassifier(num_classes=2, multilabel=False, class_weights=[1.0])


def test_fit_then_predict_writes_the_age_submission(age, tmp_path, capsys):
    common = ["--data.init_args.root", str(age), "--trainer.max_epochs", "1", "--data.init_args.batch_size", "16"]
    loc, cls = tmp_path / "loc", tmp_path / "cls"
    assert main(["fit", "--config", str(config_dir("asoct") / "demo_localize.yaml"), *common,
                 "--trainer.default_root_dir", str(loc)]) == 0
    assert main(["fit", "--config", str(config_dir("asoct") / "demo_classify.yaml"), *common,
                 "--trainer.default_root_dir", str(cls)]) == 0
    for run in (loc, cls):
        assert (run / "checkpoints" / "best.ckpt").is_file() and (run / "report.html").is_file()
    new = write_age(tmp_path / "new", n_scans=5, seed=99)
    out = tmp_path / "pred"
    capsys.readouterr()
    assert main(["predict", "--config", str(config_dir("asoct") / "demo_predict.yaml"),
                 "--model.init_args.classifier", str(cls / "checkpoints" / "best.ckpt"),
                 "--model.init_args.localizer", str(loc / "checkpoints" / "best.ckpt"),
                 "--model.init_args.localization_columns", "[Name, LX, LY, RX, RY]",
                 "--data.init_args.predict_root", str(new), "--trainer.default_root_dir", str(out)]) == 0
    assert "wrote predictions for 5 scans" in capsys.readouterr().out
    cls_csv = pd.read_csv(out / "Classification_Results.csv")
    loc_csv = pd.read_csv(out / "Localization_Results.csv")
    assert list(cls_csv.columns) == ["ASOCT_Name", "Left_Label", "Right_Label"]
    assert list(loc_csv.columns) == ["Name", "LX", "LY", "RX", "RY"]
    assert len(cls_csv) == 5 and cls_csv[["Left_Label", "Right_Label"]].stack().between(0, 1).all()
    assert (loc_csv.LX < 96).all() and (loc_csv.RX >= 96).all()  # full-scan pixels, each in its half
    assert sorted(zipfile.ZipFile(out / "submission.zip").namelist()) == ["Classification_Results.csv",
                                                                          "Localization_Results.csv"]
    assert len(list((out / "overlays").glob("*.png"))) == 5
    scores = score_submission(out, new, localization_columns=("Name", "LX", "LY", "RX", "RY"))
    assert scores["n_angles"] == 10 and scores["n_points"] <= 10 and 0 <= scores["aed"] < 100
    # the localiser alone: medlearn predict with its own config and checkpoint -> localisation only
    alone = tmp_path / "alone"
    assert main(["predict", "--config", str(config_dir("asoct") / "demo_localize.yaml"),
                 "--ckpt_path", str(loc / "checkpoints" / "best.ckpt"), "--data.init_args.root", "null",
                 "--data.init_args.predict_root", str(new), "--trainer.default_root_dir", str(alone)]) == 0
    assert not (alone / "Classification_Results.csv").exists()
    assert pd.read_csv(alone / "Localization_Results.csv").shape == (5, 5)
    assert len(list((alone / "overlays").glob("*.png"))) == 5


def test_score_submission_is_exact_for_the_truth(age, tmp_path):
    from medlearn.data.age_asoct import read_age
    from medlearn.methods.asoct.submission import write_submission

    recs = read_age(age)
    scans = {r.name: {side: (float(r.labels[k]), *(r.points[k] or (0.0, 0.0)))
                      for k, side in enumerate(("left", "right"))} for r in recs}
    write_submission(scans, tmp_path)
    s = score_submission(tmp_path, age)
    assert s["auc"] == 1.0 and s["sensitivity"] == 1.0 and s["specificity"] == 1.0
    assert s["aed"] < 0.005 and s["within3"] == 1.0  # written with 2 decimals
    (tmp_path / "Localization_Results.csv").write_text("ASOCT_Name,X1\n")
    from medlearn.io.errors import DataError

    with pytest.raises(DataError, match="missing columns"):
        score_submission(tmp_path, age)


def test_paper_scale_configs_build_the_paper_networks():
    cfg = load_config(config_dir("asoct") / "age_localize.yaml")
    assert cfg["data"]["init_args"]["expected_size"] == [2130, 998]
    model = instantiate_class(cfg["model"])
    assert model.net.backbone.name == "efficientnet-b3" and model.net.ppm is not None
    assert model.net.ppm.bins == (1, 2, 3, 6) and model.hparams.image_size == 512
    model.eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 1, 128, 128)).shape == (1, 1, 128, 128)
    cls = load_config(config_dir("asoct") / "age_classify.yaml")["model"]["init_args"]
    assert cls["backbone"] == "resnet152" and cls["dropout"] == 0.5 and cls["positive_class"] == 1


@pytest.mark.slow
def test_paper_scale_step_on_full_size_scans(tmp_path):
    """Two synthetic scans at the AGE size (2130 x 998) through the paper configs: one training step each."""
    root = write_age(tmp_path / "Training100", n_scans=4, width=2130, height=998, images_per_patient=1, seed=0)
    for name in ("age_localize.yaml", "age_classify.yaml"):
        cfg = load_config(config_dir("asoct") / name, {"data.init_args.root": str(root), "data.init_args.batch_size": 2,
                                                       "data.init_args.num_workers": 0,
                                                       "data.init_args.val_fraction": 0.0,
                                                       "data.init_args.test_fraction": 0.0})
        seed_everything(0)
        model, dm = instantiate_class(cfg["model"]), instantiate_class(cfg["data"])
        dm.setup("fit")
        batch = next(iter(dm.train_dataloader()))
        assert batch["image"].shape[-1] == cfg["data"]["init_args"]["image_size"]
        model.train()
        loss = model.training_step(batch, 0)
        assert torch.isfinite(loss)
        loss.backward()


@pytest.mark.slow
def test_demo(tmp_path):
    from medlearn.registry import get_method

    res = get_method("asoct").demo(out_dir=tmp_path / "demo")
    assert res.passed, res.headline
    assert (tmp_path / "demo" / "report.html").is_file()
    assert (tmp_path / "demo" / "predict" / "submission.zip").is_file()
