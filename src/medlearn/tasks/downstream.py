"""Downstream segmentation on images held in memory: the instrument that judges generated images.

Image-to-image methods are judged by what a segmenter does with their output. MGAN feeds its
synthesised contrasts, with the real T2, to a whole-tumour segmenter trained on real images only
(Xin et al., ISBI 2020, the "downstream test"); VideoGAN translates endoscopy frames so that a polyp
segmenter trained at one centre works at another, in both directions (Chen et al., AAAI 2020:
test a source-trained segmenter on target frames translated to the source style, or train on source
frames translated to the target style and test on real target frames). Both protocols train the
foundation :class:`~medlearn.tasks.segmentation.Segmenter` (2D U-Net on a factory encoder, Dice +
cross-entropy) on tensors already in memory and score binary masks image by image.

- :func:`fit_binary_segmenter` trains one in a run folder (``checkpoints/last.ckpt``, ``metrics.csv``)
  and, with ``reuse=True``, loads the finished one instead of training again (recipes reuse their
  instruments across arms and resumed runs);
- :func:`segment` predicts masks; :func:`binary_scores` gives the per-image Dice and IoU with +1
  smoothing (MGAN's official ``dice_score``: an empty prediction on an empty mask scores 1), and
  :func:`score_segmenter` their means.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from medlearn.engine.seed import seed_everything
from medlearn.tasks.segmentation import Segmenter

__all__ = ["binary_scores", "fit_binary_segmenter", "score_segmenter", "segment"]


class _Pairs(Dataset):
    def __init__(self, images: torch.Tensor, masks: torch.Tensor) -> None:
        self.images, self.masks = images, masks

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": self.images[i], "seg": self.masks[i]}


def _check(images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    images, masks = torch.as_tensor(images).float(), torch.as_tensor(masks)
    if images.ndim != 4 or masks.ndim != 4 or masks.shape[1] != 1:
        raise ValueError(f"images must be (N, C, H, W) and masks (N, 1, H, W), got {tuple(images.shape)} and "
                         f"{tuple(masks.shape)}")
    if images.shape[0] != masks.shape[0] or images.shape[2:] != masks.shape[2:]:
        raise ValueError(f"images {tuple(images.shape)} and masks {tuple(masks.shape)} do not match")
    if not bool(torch.isfinite(images).all()):
        raise ValueError("images hold NaN or infinite values")
    return images, (masks > 0.5).long()


def fit_binary_segmenter(images: torch.Tensor, masks: torch.Tensor, run_dir: str | Path, *, epochs: int = 20,
                         seed: int = 0, batch_size: int = 32, lr: float = 1e-3, backbone: str = "smallcnn",
                         flip_prob: float = 0.5, prefix: str = "", reuse: bool = False) -> Segmenter:
    """Train a 2D binary :class:`Segmenter` on ``images (N, C, H, W)`` and ``masks (N, 1, H, W)``.

    Args:
        images: float images (any fixed scaling; the same at test time); sides multiples of the
            encoder's total stride (8 for ``smallcnn``).
        masks: binary masks (values > 0.5 are foreground).
        run_dir: the run folder (``checkpoints/last.ckpt``).
        epochs: training epochs (no validation: a fixed budget, as the protocols prescribe).
        seed: seeds the weights, the batch order and the mirroring.
        batch_size: images per batch.
        lr: Adam learning rate (cosine schedule).
        backbone: the U-Net's encoder.
        flip_prob: mirroring probability per axis.
        prefix: text before each epoch line.
        reuse: load ``run_dir``'s finished checkpoint instead of training when it exists.
    """
    from medlearn.engine.trainer import make_trainer, open_run_folder

    images, masks = _check(images, masks)
    run = Path(run_dir)
    last = run / "checkpoints" / "last.ckpt"
    if reuse and last.is_file():
        model = Segmenter.load_from_checkpoint(last, map_location="cpu", weights_only=True)
        return model.eval()
    folder = open_run_folder(run, "fit", overwrite=True)
    seed_everything(seed, verbose=False)
    model = Segmenter(backbone, spatial_dims=2, in_channels=int(images.shape[1]), num_classes=2, label_values=[0, 1],
                      class_names=["background", "foreground"], regions="labels", lr=lr, flip_prob=flip_prob)
    loader = DataLoader(_Pairs(images, masks), batch_size=batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    trainer = make_trainer(folder, max_epochs=epochs, progress="line" if prefix else "none", prefix=prefix,
                           report=False, accelerator="cpu" if not torch.cuda.is_available() else "auto", devices=1)
    with warnings.catch_warnings():  # a fixed budget without validation, into a folder it may overwrite
        warnings.filterwarnings("ignore", message=r".*validation_step.* but have no `val_dataloader`")
        warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
        trainer.fit(model, train_dataloaders=loader)
    return model.eval()


@torch.no_grad()
def segment(model: Segmenter, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Predicted binary masks ``(N, 1, H, W)`` uint8 of ``images``."""
    model = model.eval()
    device = next(model.parameters()).device
    out = [model(torch.as_tensor(images[i:i + batch_size]).float().to(device)).argmax(1, keepdim=True).cpu()
           for i in range(0, int(images.shape[0]), batch_size)]
    return torch.cat(out).to(torch.uint8) if out else torch.zeros(0, 1, *images.shape[2:], dtype=torch.uint8)


def binary_scores(pred: torch.Tensor | np.ndarray, true: torch.Tensor | np.ndarray, smooth: float = 1.0
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Per-image Dice ``(2|P∩T| + s) / (|P| + |T| + s)`` and IoU ``(|P∩T| + s) / (|P∪T| + s)``."""
    p = torch.as_tensor(np.asarray(pred) if not isinstance(pred, torch.Tensor) else pred) > 0.5
    t = torch.as_tensor(np.asarray(true) if not isinstance(true, torch.Tensor) else true) > 0.5
    if p.shape != t.shape:
        raise ValueError(f"prediction {tuple(p.shape)} and truth {tuple(t.shape)} differ")
    p, t = p.flatten(1).double(), t.flatten(1).double()
    inter = (p * t).sum(1)
    dice = (2 * inter + smooth) / (p.sum(1) + t.sum(1) + smooth)
    iou = (inter + smooth) / (p.sum(1) + t.sum(1) - inter + smooth)
    return dice.numpy(), iou.numpy()


def score_segmenter(model: Segmenter, images: torch.Tensor, masks: torch.Tensor, positive_only: bool = False
                    ) -> dict[str, Any]:
    """Mean per-image Dice and IoU of ``model`` on ``images`` (``positive_only``: images with foreground).

    Returns ``{"dice", "iou", "n"}`` (NaN and 0 when no image qualifies).
    """
    images, masks = _check(images, masks)
    if positive_only:
        keep = masks.flatten(1).sum(1) > 0
        images, masks = images[keep], masks[keep]
    if images.shape[0] == 0:
        return {"dice": float("nan"), "iou": float("nan"), "n": 0}
    dice, iou = binary_scores(segment(model, images), masks)
    return {"dice": float(dice.mean()), "iou": float(iou.mean()), "n": int(images.shape[0])}
