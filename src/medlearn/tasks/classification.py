"""Image classification on top of a factory backbone: fine-tuning and linear probing.

Self-supervised methods (C2L, Rubik's cube) are judged by how well their encoder transfers: a new
linear head on the pretrained backbone, trained end to end (fine-tune) or alone on frozen features
(linear probe). ``ImageClassifier`` is that downstream model for 2D and 3D, multi-label (sigmoid +
BCE, per-class ROC-AUC, ChestX-ray14 style) or multi-class (softmax + CE, accuracy). With
``positive_class`` a multi-class head is also scored as a binary detector of that class (AUC,
sensitivity, specificity: AS-OCT angle closure, screening tasks).

Pretrained weights come in through :func:`medlearn.engine.checkpoint.load_encoder`: the checkpoint
declares where its encoder is (``student.backbone.`` in a C2L checkpoint), the keys are mapped to
``backbone.`` and a partial load is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medlearn.data.augment import AugmentParams, ViewAugment, center_view
from medlearn.engine.checkpoint import load_encoder
from medlearn.engine.module import MethodModule
from medlearn.engine.report import Section, save_figure
from medlearn.metrics import BinaryMetric, MultiLabelAUC
from medlearn.nn import build_backbone

__all__ = ["ImageClassifier"]

#: network input side of 2D models built on their own (configs link it to the data's ``image_size``)
DEFAULT_IMAGE_SIZE = 224


class ImageClassifier(MethodModule):
    """Backbone + linear head, optionally initialised from a pretraining checkpoint.

    Args:
        backbone: factory name.
        spatial_dims: 2 or 3.
        in_channels: input channels.
        num_classes: outputs.
        class_names: names for metrics and reports (default ``class_0..``).
        multilabel: sigmoid/BCE with per-class AUC (``True``) or softmax/CE with accuracy and
            one-vs-rest per-class AUC.
        pretrained: checkpoint to initialise the backbone from (``None``: random init, "scratch").
        pretrained_prefix: the backbone's key prefix in that checkpoint, or ``"auto"`` (the prefix
            the checkpoint declares).
        freeze_backbone: linear probe: backbone frozen (BatchNorm statistics too), head trained.
        optimizer: ``"adam"`` or ``"sgd"``.
        lr: learning rate.
        weight_decay: weight decay.
        schedule: ``"cosine"``, ``"step"`` or ``"constant"``.
        image_size: network input side (2D); ``None``: the data's ``image_size`` in a config (the run
            builder links them), 224 for a model built on its own.
        crop_scale: training random-resized-crop area range (light augmentation).
        rotation: training rotation, degrees.
        hflip: training horizontal flip probability (volumes: left-right flip).
        flip_axis: volumes' left-right spatial axis (default 0 = x of NIfTI in RAS/LAS voxel order).
        norm_mean: intensity mean used for normalisation (must match pretraining).
        norm_std: intensity std.
        dropout: dropout before the head.
        head_norm: standardise the pooled features before the head (non-affine BatchNorm); the
            usual choice for linear probes.
        class_weights: multi-class only: cross-entropy weight per class (e.g. up-weighting a
            minority class); ``None``: unweighted.
        positive_class: multi-class only: also log ``{stage}/auc``, ``{stage}/sensitivity`` and
            ``{stage}/specificity`` of this class against the rest (its softmax probability as the
            score, positive at ``>= threshold``), and select ``best.ckpt`` on ``val/auc``.
        threshold: decision threshold of those binary rates.
    """

    class_weights: torch.Tensor | None

    encoder_prefix = "backbone."

    @property
    def monitor(self) -> tuple[str, str]:
        """Metric and mode for ``best.ckpt``."""
        if self.hparams.multilabel:
            return ("val/auc_mean", "max")
        return ("val/auc", "max") if self.hparams.positive_class is not None else ("val/acc", "max")

    def __init__(
        self,
        backbone: str = "resnet18",
        spatial_dims: int = 2,
        in_channels: int = 1,
        num_classes: int = 14,
        class_names: list[str] | None = None,
        multilabel: bool = True,
        pretrained: str | None = None,
        pretrained_prefix: str = "auto",
        freeze_backbone: bool = False,
        optimizer: str = "adam",
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        schedule: str = "cosine",
        image_size: int | None = None,
        crop_scale: tuple[float, float] = (0.7, 1.0),
        rotation: float = 5.0,
        hflip: float = 0.5,
        flip_axis: int | None = None,
        norm_mean: float = 0.449,
        norm_std: float = 0.226,
        dropout: float = 0.0,
        head_norm: bool = False,
        class_weights: list[float] | None = None,
        positive_class: int | None = None,
        threshold: float = 0.5,
    ) -> None:
        super().__init__()
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class_names for num_classes={num_classes}")
        if multilabel and (class_weights is not None or positive_class is not None):
            raise ValueError("class_weights and positive_class are for multi-class heads (multilabel=False)")
        if class_weights is not None and len(class_weights) != num_classes:
            raise ValueError(f"{len(class_weights)} class_weights for num_classes={num_classes}")
        if positive_class is not None and not 0 <= positive_class < num_classes:
            raise ValueError(f"positive_class must be in [0, {num_classes}), got {positive_class}")
        if optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
        image_size = DEFAULT_IMAGE_SIZE if image_size is None else int(image_size)
        self.save_hyperparameters()
        self.hparams.image_size = image_size
        self.class_names = list(class_names) if class_names else [f"class_{i}" for i in range(num_classes)]
        self.backbone = build_backbone(backbone, spatial_dims, in_channels)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        # head_norm: standardise the features before the linear head (BatchNorm without affine, as MAE's
        # linear probe does); frozen small encoders give features of very different scales.
        self.feature_norm = nn.BatchNorm1d(self.backbone.out_features, affine=False) if head_norm else nn.Identity()
        self.head = nn.Linear(self.backbone.out_features, num_classes)
        self.train_augment = ViewAugment(AugmentParams(
            out_size=image_size, crop_scale=crop_scale, rotation=rotation, hflip=hflip, brightness=0.1,
            contrast=0.1, cutout_holes=0, mean=norm_mean, std=norm_std)) if spatial_dims == 2 else None
        self.load_report: str | None = None
        self.example_input_array = torch.zeros(2, in_channels, *([image_size] * spatial_dims))
        if pretrained:
            self.load_backbone(pretrained, pretrained_prefix)
        if freeze_backbone:
            for p in self.backbone.parameters():
                p.requires_grad_(False)
        weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights is not None else None
        self.register_buffer("class_weights", weights, persistent=False)

    def load_backbone(self, checkpoint: str | Path, prefix: str = "auto") -> str:
        """Load backbone weights from a pretraining checkpoint (see :func:`load_pretrained`)."""
        self.load_report = load_encoder(self, checkpoint, "backbone.", prefix)
        return self.load_report

    def train(self, mode: bool = True) -> ImageClassifier:
        """Set the mode; a linear probe keeps its frozen backbone (BatchNorm statistics too) in evaluation mode."""
        super().train(mode)
        if self.hparams.freeze_backbone:
            self.backbone.eval()  # linear probe: frozen BatchNorm statistics too
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)`` of normalised inputs ``(B, C, *spatial)``."""
        return self.head(self.dropout(self.feature_norm(self.backbone(x))))

    def _prep(self, x: torch.Tensor, train: bool) -> torch.Tensor:
        h = self.hparams
        if h.spatial_dims != 2:
            x = (x.float() - h.norm_mean) / h.norm_std
            if train and h.hflip > 0:  # volumes: left-right flip per sample
                axis = 2 + (0 if h.flip_axis is None else h.flip_axis)
                flip = torch.rand(x.shape[0], device=x.device) < h.hflip
                x = torch.where(flip.view(-1, *([1] * (x.ndim - 1))), x.flip(axis), x)
            return x
        if train and self.train_augment is not None:
            return self.train_augment(x)
        return center_view(x, h.image_size, h.norm_mean, h.norm_std)

    def _loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.hparams.multilabel:
            return F.binary_cross_entropy_with_logits(logits.float(), y.float())
        return F.cross_entropy(logits.float(), y.long().view(-1), weight=self.class_weights)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """Cross-entropy (or BCE for multi-label) on augmented views."""
        x, y = batch["image"], batch["label"]
        loss = self._loss(self(self._prep(x, True)), y)
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=x.shape[0], sync_dist=True)
        return loss

    def evaluation_step(self, batch: dict[str, Any], batch_idx: int, stage: str) -> None:
        """Loss, accuracy and probabilities into the stage's AUC (and binary) metrics."""
        x, y = batch["image"], batch["label"]
        logits = self(self._prep(x, False))
        self.log(f"{stage}/loss", self._loss(logits, y), on_epoch=True, batch_size=x.shape[0], sync_dist=True)
        auc = self.stage_state(stage, lambda: {"auc": MultiLabelAUC(self.class_names), "binary": None})
        if self.hparams.multilabel:
            auc["auc"].update(torch.sigmoid(logits), y)
        else:
            acc = (logits.argmax(1) == y.long().view(-1)).float().mean()
            self.log(f"{stage}/acc", acc, on_epoch=True, batch_size=x.shape[0], sync_dist=True)
            # one-vs-rest ROC-AUC per class, macro mean
            onehot = F.one_hot(y.long().view(-1), self.hparams.num_classes).float()
            probs = torch.softmax(logits.float(), 1)
            auc["auc"].update(probs, onehot)
            k = self.hparams.positive_class
            if k is not None:
                if auc["binary"] is None:
                    auc["binary"] = BinaryMetric(self.hparams.threshold)
                auc["binary"].update(probs[:, k], onehot[:, k])

    def evaluation_end(self, stage: str) -> dict[str, Any] | None:
        """Mean and per-class ROC-AUC (+ the positive class's sensitivity / specificity)."""
        state = self.pop_stage_state(stage)
        if state is None:
            return None
        res = state["auc"].compute()
        record: dict[str, Any] = {"auc_mean": res.mean, **{f"auc/{k}": v for k, v in res.per_class.items()}}
        if state["binary"] is not None:  # accuracy is logged per batch already
            record.update({k: v for k, v in state["binary"].compute().as_dict().items() if k != "accuracy"})
        return record

    @torch.no_grad()
    def predict_probs(self, images: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``(B, num_classes)`` (sigmoid if multi-label, else softmax) of raw images
        (evaluation preprocessing: resized to ``image_size`` and normalised).
        """
        logits = self(self._prep(images, False)).float()
        return torch.sigmoid(logits) if self.hparams.multilabel else torch.softmax(logits, 1)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """Class probabilities of the batch, with the image names."""
        return {"name": batch.get("name"), "probs": self.predict_probs(batch["image"]).cpu()}

    def report_sections(self, run_dir: Path, stage: str) -> list[Section]:
        """Per-class AUC bars of the evaluated split (validation at the end of ``fit``)."""
        stage = "val" if stage in ("fit", "validate") else stage
        if stage not in self.results:
            return []
        import matplotlib.pyplot as plt

        r = self.results[stage]
        names = [n for n in self.class_names if not np.isnan(r.get(f"auc/{n}", np.nan))]
        vals = [r[f"auc/{n}"] for n in names]
        fig, ax = plt.subplots(figsize=(max(4, 0.6 * len(names) + 2), 3.2))
        ax.bar(names, vals, color="#4477aa")
        ax.axhline(0.5, color="gray", ls=":", lw=1)  # chance
        ax.set_ylim(0.0, 1.0)
        ax.set_ylabel("ROC-AUC (dotted: chance)")
        ax.set_title(f"{stage} AUC per class (mean {r['auc_mean']:.3f})")
        ax.tick_params(axis="x", rotation=45)
        png = save_figure(fig, Path(run_dir) / "figures" / f"{stage}_auc_per_class.png")
        rows = [[n, r[f"auc/{n}"]] for n in self.class_names]
        header = ["class", "AUC"]
        if "sensitivity" in r:  # positive_class: the binary rates of that class
            k = self.class_names[self.hparams.positive_class]
            rows = [[f"AUC {n}", v] for n, v in rows]
            rows += [[f"sensitivity {k}", r["sensitivity"]], [f"specificity {k}", r["specificity"]]]
            header = ["metric", "value"]
        return [Section(f"{stage} ROC-AUC", self.load_report or "random initialisation", [png],
                        table=(header, rows))]


