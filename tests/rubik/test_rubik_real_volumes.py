"""Smoke: Rubik's-cube pretraining on real head MR volumes that ship in installed packages."""

from __future__ import annotations

import importlib.util
import shutil
from importlib import resources
from pathlib import Path

import nibabel
import pytest
import torch

from medlearn.engine.config import load_config
from medlearn.engine.run import fit_from_config
from medlearn.registry import config_dir


def test_pretrains_a_few_steps_on_real_mr_volumes(tmp_path, request):
    folder = tmp_path / "mr"
    folder.mkdir()
    shutil.copy(Path(nibabel.__file__).parent / "tests/data/anatomical.nii", folder / "anatomical.nii")
    n = 1
    try:  # ITK's example T1 head, when tools/fetch-test-data (or apt) put it here
        itk = request.getfixturevalue("itk_example_data")
        shutil.copy(itk / "KmeansTest_T1UCharRaw.nii.gz", folder / "itk_t1.nii.gz")
        n += 1
    except pytest.skip.Exception:
        pass
    if importlib.util.find_spec("nilearn") is not None:
        mni = resources.files("nilearn") / "datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
        if mni.is_file():
            shutil.copy(str(mni), folder / "mni152_t1.nii.gz")
            n += 1
    cfg = load_config(config_dir("rubik") / "demo.yaml", {
        "data.init_args.root": str(folder), "data.init_args.layout": "folder", "data.init_args.normalisation": "mr",
        "data.init_args.fit": "resize", "data.init_args.batch_size": n, "data.init_args.val_fraction": 0.0,
        "data.init_args.test_fraction": 0.0, "trainer.max_epochs": 2})
    res = fit_from_config(cfg, tmp_path / "run", test=False, progress="none")
    ck = torch.load(res.last_ckpt, weights_only=True)
    assert ck["global_step"] == 2
    assert torch.isfinite(torch.tensor(float(res.model.trainer.callback_metrics["train/loss"])))
    assert (tmp_path / "run" / "figures" / "cubes.png").is_file()


@pytest.mark.slow
def test_demo_rubik_beats_random_init(tmp_path):
    """The built-in demo (about 2 min on 2 cores): the linear probe on Rubik features beats random init."""
    from medlearn.methods.rubik.recipe import demo

    res = demo(out_dir=tmp_path / "demo")
    assert res.passed, res.headline
    assert (tmp_path / "demo" / "figures" / "probe_accuracy_vs_labels.png").is_file()
