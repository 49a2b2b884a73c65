"""Export for deployment: ONNX / TorchScript files that match PyTorch at any batch size, with their info JSON."""

from __future__ import annotations

import json
from pathlib import Path

import lightning
import pytest
import torch

from medlearn.cli import main
from medlearn.engine.checkpoint import CheckpointError
from medlearn.engine.export import export_checkpoint, load_exported
from medlearn.methods.mgan.module import MGAN
from medlearn.methods.videogan.module import VideoGAN
from medlearn.tasks.segmentation import Segmenter


def _checkpoint(model: torch.nn.Module, path: Path) -> Path:
    ck = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams),
          "pytorch-lightning_version": lightning.__version__,
          "datamodule_hyper_parameters": {"image_size": 32, "scaling": "slice_max"}}
    model.on_save_checkpoint(ck)
    torch.save(ck, path)
    return path


MODELS = {
    "segmenter": lambda: Segmenter("smallcnn", spatial_dims=2, in_channels=3, num_classes=2, label_values=[0, 1],
                                   regions="labels", roi_size=(32, 32)),
    "mgan": lambda: MGAN(image_size=32, num_downs=4, ngf=8, d_channels=8, d_layers=2),
    "videogan": lambda: VideoGAN(image_size=16, ngf=4, n_blocks=1, d_channels=4, d_layers=1),
}


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_exported_models_match_pytorch_at_another_batch_size(tmp_path: Path, name: str, fmt: str) -> None:
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = MODELS[name]().eval()
    ckpt = _checkpoint(model, tmp_path / "last.ckpt")
    path, info_path = export_checkpoint(ckpt, fmt)
    assert path == ckpt.with_suffix(".onnx" if fmt == "onnx" else ".pt") and path.is_file()
    run, info = load_exported(path)
    assert info == json.loads(info_path.read_text()) and info["parity"]["max_abs_diff"] <= 1e-4
    assert info["preprocessing"] == {"image_size": 32, "scaling": "slice_max"}
    ex = model.example_input_array
    ex = tuple(ex) if isinstance(ex, tuple) else (ex,)
    xs = tuple(torch.rand(5, *t.shape[1:]) * 2 - 1 if t.shape[1:] != (3,) else torch.eye(3)[[0, 1, 2, 0, 1]]
               for t in ex)
    assert [i["shape"][0] for i in info["inputs"]] == ["batch"] * len(xs)
    with torch.no_grad():
        want = model(*xs)
    want = want if isinstance(want, tuple) else (want,)
    got = run(*xs)
    assert len(got) == len(want)
    for a, b in zip(want, got):
        assert a.shape == b.shape and float((a - b).abs().max()) <= 1e-4


def test_bad_checkpoints_and_formats_are_refused(tmp_path: Path) -> None:
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.ckpt")
    with pytest.raises(CheckpointError, match="not a medlearn training checkpoint"):
        export_checkpoint(tmp_path / "foreign.ckpt", "torchscript")
    with pytest.raises(ValueError, match="format must be"):
        export_checkpoint(tmp_path / "foreign.ckpt", "tflite")
    assert main(["export", "--ckpt", str(tmp_path / "missing.ckpt"), "--format", "torchscript"]) == 2
    assert not list(tmp_path.glob("*.pt"))
