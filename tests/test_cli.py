"""The `medlearn` command: list, synth, and LightningCLI fit/test with medlearn's run folder."""

from __future__ import annotations

import pytest

from medlearn.cli import main
from medlearn.registry import config_dir


def test_list(capsys):
    assert main(["list"]) == 0
    assert "c2l" in capsys.readouterr().out


def test_synth_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "cxr"
    assert main(["synth", "chestxray", "--out", str(out), "--n-images", "20", "--size", "32"]) == 0
    assert (out / "Data_Entry_2017.csv").is_file()
    assert main(["synth", "chestxray", "--out", str(out), "--n-images", "20"]) == 2
    assert "overwrite" in capsys.readouterr().err


def test_fit_then_finetune_then_test_through_lightning_cli(tmp_path, capsys):
    data = tmp_path / "cxr"
    main(["synth", "chestxray", "--out", str(data), "--n-images", "60", "--size", "32", "--seed", "3"])
    pre = tmp_path / "pre"
    main(["fit", "--config", str(config_dir("c2l") / "demo.yaml"), "--data.init_args.root", str(data),
          "--data.init_args.batch_size", "8", "--model.init_args.queue_size", "32",
          "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(pre)])
    for f in ("config.yaml", "metrics.csv", "report.html", "checkpoints/last.ckpt", "checkpoints/best.ckpt"):
        assert (pre / f).is_file(), f
    ft = tmp_path / "ft"
    common = ["--config", str(config_dir("c2l") / "demo_finetune.yaml"), "--data.init_args.root", str(data),
              "--data.init_args.num_train", "20", "--trainer.default_root_dir", str(ft)]
    main(["fit", *common, "--model.init_args.pretrained", str(pre / "checkpoints/last.ckpt"),
          "--trainer.max_epochs", "2"])
    assert (ft / "checkpoints/best.ckpt").is_file() and (ft / "figures").is_dir()
    trained = (ft / "metrics.csv").read_text()
    trained_config = (ft / "config.yaml").read_text()
    capsys.readouterr()
    main(["test", *common, "--ckpt_path", str(ft / "checkpoints/best.ckpt")])
    out = capsys.readouterr().out
    assert "test/auc_mean" in out and str(ft / "test") in out
    # evaluation writes beside the training records, never over them; the report shows both
    assert (ft / "metrics.csv").read_text() == trained and (ft / "config.yaml").read_text() == trained_config
    assert "test/auc_mean" in (ft / "test" / "metrics.csv").read_text() and (ft / "test" / "config.yaml").is_file()
    html = (ft / "report.html").read_text()
    assert "Training curves" in html and "Test run" in html and "test/auc_mean" in html
    assert "<figcaption>test AUC per class" in html and (ft / "test" / "figures" / "test_auc_per_class.png").is_file()
    main(["predict", *common, "--ckpt_path", str(ft / "checkpoints/best.ckpt")])
    assert (ft / "metrics.csv").read_text() == trained
    lines = (ft / "predict" / "predictions.csv").read_text().splitlines()
    assert lines[0] == "name,Cardiomegaly,Effusion,Nodule,Consolidation"
    assert len(lines) == 1 + 15 and lines[1].endswith(tuple("0123456789"))  # 60 images, 25% test


def test_print_config_shows_the_defaults(capsys):
    with pytest.raises(SystemExit) as e:
        main(["fit", "--config", str(config_dir("c2l") / "chestxray14.yaml"), "--print_config"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "queue_size: 16384" in out and "medlearn.methods.c2l.module.C2L" in out


def test_bad_data_root_is_a_clear_error_not_a_traceback(tmp_path, capsys):
    code = main(["fit", "--config", str(config_dir("c2l") / "demo.yaml"), "--data.init_args.root",
                 str(tmp_path / "nope"), "--trainer.default_root_dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "nope" in err and "does not exist" in err


def test_fit_refuses_to_overwrite_a_finished_run(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"precious")
    code = main(["fit", "--config", str(config_dir("c2l") / "demo.yaml"), "--data.init_args.root", str(tmp_path),
                 "--trainer.default_root_dir", str(run)])
    assert code == 2 and "already holds" in capsys.readouterr().err
    assert (run / "checkpoints" / "last.ckpt").read_bytes() == b"precious"


def test_a_recipe_checkpoint_is_evaluated_through_the_cli(tmp_path, capsys):
    """Checkpoints of demos and reproductions (models built without LightningCLI) load in `medlearn test`."""
    from medlearn.engine.config import load_config
    from medlearn.engine.run import fit_from_config

    data = tmp_path / "cxr"
    main(["synth", "chestxray", "--out", str(data), "--n-images", "60", "--size", "32", "--seed", "3"])
    over = {"data.init_args.root": str(data), "data.init_args.num_train": 20, "trainer.max_epochs": 1}
    run = tmp_path / "recipe-run"
    fit_from_config(load_config(config_dir("c2l") / "demo_finetune.yaml", over), run, test=False, progress="none")
    ckpt = run / "checkpoints" / "best.ckpt"
    capsys.readouterr()
    assert main(["test", "--config", str(config_dir("c2l") / "demo_finetune.yaml"), "--data.init_args.root",
                 str(data), "--data.init_args.num_train", "20", "--ckpt_path", str(ckpt)]) in (0, None)
    assert "test/auc_mean" in capsys.readouterr().out


@pytest.mark.slow
def test_every_shipped_config_parses(capsys):
    """Every YAML under configs/ is a valid `medlearn fit` config (keys, types, class paths)."""
    root = config_dir("c2l").parent
    bad = []
    for cfg in sorted(root.glob("*/*.yaml")):
        with pytest.raises(SystemExit) as e:
            main(["fit", "--config", str(cfg), "--print_config"])
        if e.value.code != 0:
            bad.append(f"{cfg.parent.name}/{cfg.name}: {capsys.readouterr().err[-300:]}")
        capsys.readouterr()
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("argv", [["demo", "c2l", "nosuchmethod"], ["reproduce", "nosuchmethod"]])
def test_an_unknown_method_name_is_one_line_and_nothing_is_written(argv, tmp_path, capsys):
    out = tmp_path / "out"
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("medlearn: unknown method 'nosuchmethod'; registered: ")
    assert "c2l" in err and not out.exists()
