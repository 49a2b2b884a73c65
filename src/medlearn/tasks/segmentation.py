"""Volume segmentation with a U-Net on a (pretrained) factory encoder; Dice per BraTS region.

The downstream task that judges a self-supervised 3D encoder (Rubik's cube, Zhuang et al., MICCAI
2019) on dense prediction: a U-Net (Ronneberger et al., MICCAI 2015; 3D U-Net: Çiçek et al., MICCAI
2016) whose encoder is the factory backbone (:class:`medlearn.nn.unet.BackboneUNet`), initialised
from a pretraining checkpoint through :func:`medlearn.engine.checkpoint.load_pretrained` (the
``octad.encoder.`` keys of a Rubik checkpoint -> ``net.backbone.``; refuses partial loads).

Labels: the stored label values (BraTS: 0 background, 1 necrotic / non-enhancing core, 2 oedema,
4 enhancing tumour) are mapped to class indices ``0..num_classes-1`` by their position in
``label_values``; the network predicts the classes (softmax), the loss is MONAI's ``DiceCELoss``.

Evaluation: BraTS scores the nested regions, not the labels (Menze et al., "The Multimodal Brain
Tumor Image Segmentation Benchmark (BRATS)", IEEE TMI 2015): whole tumour WT = {1, 2, 4}, tumour
core TC = {1, 4}, enhancing tumour ET = {4} (:func:`medlearn.data.volumes.brats_regions`). Dice
per region is MONAI's ``DiceMetric`` accumulated over the epoch (per-case Dice, averaged over
cases; DDP-gathered). A case whose ground truth region is empty scores 1 if the prediction is
empty too, else 0 (the BraTS challenge convention; MONAI ``ignore_empty=False``). ``regions=
"labels"`` reports Dice per label instead (any label set). Validation and test run on whole
volumes, or with MONAI's sliding-window inference (``roi_size``, overlap 0.25) for volumes larger
than the training patches.

Patch training: :func:`random_patch` builds a ``train_transform`` for
:class:`medlearn.data.volumes.VolumeDataModule` that crops one random patch per volume and epoch,
centred on tumour with probability ``pos_ratio`` (MONAI ``RandCropByPosNegLabeld``).
From a YAML config (``medlearn fit``, LightningCLI / jsonargparse)::

    data:
      class_path: medlearn.data.volumes.VolumeDataModule
      init_args:
        train_transform:
          class_path: medlearn.tasks.segmentation.RandomPatch
          init_args: {size: [128, 128, 128], pos_ratio: 0.5}

(:func:`medlearn.engine.config.instantiate_class`, used by the recipes, does not build nested
``class_path`` values; there, pass ``train_transform=random_patch(...)`` in Python.)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from monai.inferers import sliding_window_inference
from monai.losses import DiceCELoss
from monai.metrics import DiceMetric
from monai.transforms import Compose, EnsureTyped, RandCropByPosNegLabeld, RandSpatialCropd, SpatialPadd

from medlearn.data.brats import BRATS_LABEL_NAMES, BRATS_LABELS, BRATS_REGIONS, brats_regions
from medlearn.engine.checkpoint import PRETRAINED_PREFIXES, load_encoder
from medlearn.engine.report import Section, save_figure
from medlearn.nn.unet import BackboneUNet
from medlearn.optim import build_scheduler

__all__ = ["RandomPatch", "RegionDice", "SEGMENTER_PREFIXES", "VolumeSegmenter", "classes_to_labels",
           "labels_to_classes", "random_patch", "region_masks"]

#: Encoder prefixes tried for ``pretrained_prefix="auto"``: the classifier's, then a segmenter's own.
SEGMENTER_PREFIXES: tuple[str, ...] = PRETRAINED_PREFIXES


# ------------------------------------------------------------------------------ label helpers


def labels_to_classes(seg: torch.Tensor, label_values: Sequence[int]) -> torch.Tensor:
    """Stored label values -> class indices (the position of each value in ``label_values``).

    Args:
        seg: integer label map, any shape (e.g. ``(B, 1, D, H, W)`` with BraTS values 0/1/2/4).
        label_values: the label values in class order (``[0, 1, 2, 4]`` -> classes 0..3).

    Returns:
        ``int64`` class indices, same shape.

    Raises:
        ValueError: ``seg`` holds a value not in ``label_values``.
    """
    values = torch.as_tensor(list(label_values), dtype=torch.long, device=seg.device)
    lut = torch.full((int(values.max()) + 1,), -1, dtype=torch.long, device=seg.device)
    lut[values] = torch.arange(len(values), device=seg.device)
    s = seg.long()
    outside = (s < 0) | (s >= lut.numel())
    out = lut[s.clamp(0, lut.numel() - 1)]
    bad = outside | (out < 0)
    if bool(bad.any()):
        found = sorted(int(v) for v in torch.unique(s[bad]).tolist())[:10]
        raise ValueError(f"label values {found} are not in label_values {list(label_values)}")
    return out


def classes_to_labels(classes: torch.Tensor, label_values: Sequence[int]) -> torch.Tensor:
    """Class indices -> stored label values (inverse of :func:`labels_to_classes`)."""
    return torch.as_tensor(list(label_values), dtype=torch.long, device=classes.device)[classes.long()]


def region_masks(labels: torch.Tensor, regions: str, label_values: Sequence[int]) -> torch.Tensor:
    """Evaluated regions as channels, with a background channel first.

    Args:
        labels: ``(B, 1, ...)`` stored label values.
        regions: ``"brats"`` (channels background, WT, TC, ET; Menze et al. 2015) or ``"labels"``
            (one-hot of the classes of ``label_values``, background = class 0).
        label_values: the label values in class order.

    Returns:
        ``(B, 1 + R, ...)`` float32 masks (``DiceMetric(include_background=False)`` drops channel 0).
    """
    if regions == "brats":
        r = brats_regions(labels)
        return torch.cat([1.0 - r[:, :1], r], dim=1)
    if regions == "labels":
        classes = labels_to_classes(labels, label_values)[:, 0]
        return F.one_hot(classes, len(label_values)).movedim(-1, 1).to(torch.float32)
    raise ValueError(f"regions must be 'brats' or 'labels', got {regions!r}")


class RegionDice:
    """Per-region Dice over an epoch: MONAI ``DiceMetric`` on :func:`region_masks`.

    ``update`` takes predicted and true *label values* ``(B, 1, ...)``; ``compute`` returns
    ``{region: mean Dice over cases}`` (NaN-free: an empty ground-truth region scores 1 when the
    prediction is empty, else 0, as BraTS scores it). DDP: MONAI gathers the per-case values of
    every process in ``aggregate``.

    Args:
        names: region names (the channels after the background).
        regions: ``"brats"`` or ``"labels"``.
        label_values: the label values in class order.
    """

    def __init__(self, names: Sequence[str], regions: str, label_values: Sequence[int]) -> None:
        self.names = list(names)
        self.regions = regions
        self.label_values = list(label_values)
        self.metric = DiceMetric(include_background=False, reduction="mean_batch", ignore_empty=False)
        self.count = 0

    def update(self, pred_labels: torch.Tensor, true_labels: torch.Tensor) -> None:
        p = region_masks(pred_labels, self.regions, self.label_values)
        t = region_masks(true_labels, self.regions, self.label_values)
        self.metric(y_pred=p, y=t)
        self.count += int(p.shape[0])

    def compute(self) -> dict[str, float]:
        vals = self.metric.aggregate()
        assert isinstance(vals, torch.Tensor)
        return {n: float(v) for n, v in zip(self.names, vals.float().cpu().tolist())}

    def reset(self) -> None:
        self.metric.reset()
        self.count = 0


# ------------------------------------------------------------------------------ patch sampling


class RandomPatch:
    """Random patch of a training item: a ``train_transform`` for ``VolumeDataModule``.

    Pads the image (with ``pad_value``) and the mask (with 0) up to ``size`` where smaller, then
    crops one ``size`` patch of ``image`` and ``seg``: centred on a foreground (``seg > 0``) voxel
    with probability ``pos_ratio``, on a background voxel otherwise (MONAI
    ``RandCropByPosNegLabeld``; the nnU-Net-style oversampling of the tumour). ``label_key=None``
    crops uniformly at random (``RandSpatialCropd``, e.g. for unlabeled volumes). Random draws are
    seeded from the torch RNG on every call, so seeded runs (and data-loader workers, seeded by
    PyTorch) draw the same patches. Picklable (a class, for worker processes).

    Args:
        size: patch size ``(D, H, W)``.
        pos_ratio: probability of a foreground-centred patch, in [0, 1].
        image_key: the image key.
        label_key: the mask key (``None``: uniform crop of ``image_key`` only).
        pad_value: image padding value (the normalised background: -1 for ``mr`` / ``ct``).
    """

    def __init__(self, size: tuple[int, ...], pos_ratio: float = 0.5, image_key: str = "image",
                 label_key: str | None = "seg", pad_value: float = -1.0) -> None:
        size = tuple(int(s) for s in size)
        if len(size) not in (2, 3) or min(size) < 1:
            raise ValueError(f"size must be 2 or 3 positive ints, got {size!r}")
        if not 0.0 <= float(pos_ratio) <= 1.0:
            raise ValueError(f"pos_ratio must be in [0, 1], got {pos_ratio}")
        self.size = size
        self.pos_ratio = float(pos_ratio)
        keys = [image_key] + ([label_key] if label_key else [])
        steps: list[Any] = [SpatialPadd(image_key, spatial_size=size, mode="constant", value=float(pad_value))]
        if label_key:
            steps.append(SpatialPadd(label_key, spatial_size=size, mode="constant", value=0))
        self.pad = Compose(steps, log_stats=False)
        if label_key:
            self.crop: RandCropByPosNegLabeld | RandSpatialCropd = RandCropByPosNegLabeld(
                keys, label_key=label_key, spatial_size=size, pos=self.pos_ratio, neg=1.0 - self.pos_ratio,
                num_samples=1)
        else:
            self.crop = RandSpatialCropd(keys, roi_size=size, random_size=False)
        self.to_plain = EnsureTyped(keys, track_meta=False)

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        self.crop.set_random_state(seed=int(torch.randint(0, 2**31 - 1, (1,)).item()))
        out = self.crop(self.pad(dict(item)))
        if isinstance(out, list):
            out = out[0]
        return {str(k): v for k, v in self.to_plain(out).items()}

    def __repr__(self) -> str:
        return f"RandomPatch(size={self.size}, pos_ratio={self.pos_ratio})"


def random_patch(size: tuple[int, ...], pos_ratio: float = 0.5) -> RandomPatch:
    """A ``train_transform`` cropping one random patch per volume (see :class:`RandomPatch`).

    Examples:
        >>> from medlearn.data.volumes import VolumeDataModule
        >>> dm = VolumeDataModule("data/brats", layout="brats", task="segmentation",  # doctest: +SKIP
        ...                       spatial_size=(160, 192, 160), train_transform=random_patch((128, 128, 128)))
    """
    return RandomPatch(size, pos_ratio)


# ---------------------------------------------------------------------------------- the module


class VolumeSegmenter(LightningModule):
    """U-Net segmentation of volumes (or images) on a factory encoder, optionally pretrained.

    Args:
        backbone: encoder name (``smallcnn``, ``plaincnn``, ``resnet10..152``; see
            :mod:`medlearn.nn.unet`).
        spatial_dims: 3 (volumes) or 2.
        in_channels: image channels (BraTS: 4 contrasts).
        num_classes: classes, background included (BraTS: 4).
        label_values: the stored label value of each class, in class order (BraTS 0/1/2/4).
        class_names: names of the classes (``regions="labels"``); default BraTS names for the BraTS
            values, else ``label_<value>``.
        regions: ``"brats"`` (Dice per WT / TC / ET; needs ``label_values`` 0/1/2/4) or
            ``"labels"`` (Dice per non-background class).
        pretrained: checkpoint to initialise the encoder from (``None``: random init).
        pretrained_prefix: the encoder's key prefix in it, or ``"auto"`` (tries
            :data:`SEGMENTER_PREFIXES`: C2L, Rubik, classifier, segmenter checkpoints).
        freeze_encoder_epochs: keep the encoder frozen (weights and BatchNorm statistics) for this
            many first epochs while the decoder warms up; then train everything. Under DDP use
            ``strategy=ddp_find_unused_parameters_true`` when this is > 0.
        decoder_channels: decoder widths, deepest first (default: symmetric U-Net).
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        schedule: ``"cosine"``, ``"step"`` or ``"constant"`` (epoch-stepped).
        roi_size: sliding-window size for validation / test / predict (multiples of the encoder's
            total stride); ``None``: whole volumes (sizes must be multiples of the total stride).
        sw_batch_size: windows per forward pass.
        sw_overlap: window overlap (0.25).
        sw_mode: window blending, ``"constant"`` or ``"gaussian"`` (MONAI).
        background_value: image value used to pad windows beyond the volume (normalised background).
        flip_prob: training mirroring: each spatial axis of each sample flipped with this
            probability (image and mask together).

    Batches: ``{"image": (B, C, *spatial) float, "seg": (B, 1, *spatial) int}`` with stored label
    values (:class:`~medlearn.data.volumes.VolumeDataModule` with ``task="segmentation"``).
    ``predict`` returns ``{"name", "seg"}``: predicted label values ``(B, 1, *spatial)``.
    ``load_from_checkpoint`` re-runs ``__init__``, which re-reads ``pretrained``; pass
    ``pretrained=None`` when that file is no longer there (the checkpoint's weights win anyway).
    """

    @property
    def monitor(self) -> tuple[str, str]:
        """Metric and mode for ``best.ckpt``."""
        return ("val/dice_mean", "max")

    def __init__(
        self,
        backbone: str = "smallcnn",
        spatial_dims: int = 3,
        in_channels: int = 4,
        num_classes: int = 4,
        label_values: list[int] | None = None,
        class_names: list[str] | None = None,
        regions: str = "brats",
        pretrained: str | None = None,
        pretrained_prefix: str = "auto",
        freeze_encoder_epochs: int = 0,
        decoder_channels: tuple[int, ...] | None = None,
        lr: float = 1e-3,
        weight_decay: float = 1e-5,
        schedule: str = "cosine",
        roi_size: tuple[int, ...] | None = None,
        sw_batch_size: int = 4,
        sw_overlap: float = 0.25,
        sw_mode: str = "constant",
        background_value: float = -1.0,
        flip_prob: float = 0.0,
    ) -> None:
        super().__init__()
        if label_values is None:
            label_values = list(BRATS_LABELS)
        label_values = [int(v) for v in label_values]
        if len(label_values) != num_classes or len(set(label_values)) != num_classes or min(label_values) < 0:
            raise ValueError(f"label_values must be {num_classes} distinct non-negative values, got {label_values}")
        if regions not in ("brats", "labels"):
            raise ValueError(f"regions must be 'brats' or 'labels', got {regions!r}")
        if regions == "brats" and sorted(label_values) != list(BRATS_LABELS):
            raise ValueError(f"regions='brats' needs label_values {list(BRATS_LABELS)} (got {label_values}); "
                             f"use regions='labels' for other label sets")
        if roi_size is not None and len(roi_size) != spatial_dims:
            raise ValueError(f"roi_size needs {spatial_dims} values, got {roi_size!r}")
        if freeze_encoder_epochs < 0:
            raise ValueError(f"freeze_encoder_epochs must be >= 0, got {freeze_encoder_epochs}")
        self.save_hyperparameters()
        self.hparams.label_values = label_values
        if class_names is None:
            class_names = (list(BRATS_LABEL_NAMES) if label_values == list(BRATS_LABELS)
                           else [f"label_{v}" for v in label_values])
        if len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class_names for num_classes={num_classes}")
        self.class_names = list(class_names)
        self.region_names = list(BRATS_REGIONS) if regions == "brats" else self.class_names[1:]
        self.net = BackboneUNet(backbone, spatial_dims, in_channels, num_classes, decoder_channels)
        self.loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
        self.load_report: str | None = None
        side = [2 * self.net.total_stride] * spatial_dims
        self.example_input_array = torch.zeros(1, in_channels, *(roi_size or side))
        if pretrained:
            self.load_encoder(pretrained, pretrained_prefix)
        self._encoder_frozen = False
        self._set_encoder_frozen(freeze_encoder_epochs > 0)
        self._dice: dict[str, RegionDice] = {}
        self._example: dict[str, Any] | None = None
        self.results: dict[str, dict[str, float]] = {}

    # --- weights ---

    def load_encoder(self, checkpoint: str | Path, prefix: str = "auto") -> str:
        """Load the encoder from a pretraining checkpoint (see :func:`load_pretrained`)."""
        self.load_report = load_encoder(self, checkpoint, "net.backbone.", prefix, SEGMENTER_PREFIXES)
        return self.load_report

    def _set_encoder_frozen(self, frozen: bool) -> None:
        self._encoder_frozen = frozen
        for p in self.net.backbone.parameters():
            p.requires_grad_(not frozen)
        if frozen:
            self.net.backbone.eval()
        elif self.training:
            self.net.backbone.train()

    def train(self, mode: bool = True) -> VolumeSegmenter:  # type: ignore[override]
        super().train(mode)
        if mode and getattr(self, "_encoder_frozen", False):
            self.net.backbone.eval()  # frozen encoder: BatchNorm statistics too
        return self

    def on_train_epoch_start(self) -> None:
        self._set_encoder_frozen(self.current_epoch < self.hparams.freeze_encoder_epochs)

    # --- forward ---

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes, *spatial)``."""
        return self.net(x)

    def infer(self, x: torch.Tensor) -> torch.Tensor:
        """Evaluation logits: sliding-window (``roi_size``) or whole-volume."""
        h = self.hparams
        if h.roi_size is None:
            return self(x)
        out = sliding_window_inference(x, tuple(h.roi_size), h.sw_batch_size, self, overlap=h.sw_overlap,
                                       mode=h.sw_mode, cval=h.background_value)
        assert isinstance(out, torch.Tensor)
        return out

    def _targets(self, seg: torch.Tensor) -> torch.Tensor:
        if seg.ndim == self.hparams.spatial_dims + 1:
            seg = seg.unsqueeze(1)
        return labels_to_classes(seg, self.hparams.label_values)

    def _flip(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.hparams.flip_prob
        if p <= 0:
            return x, y
        for axis in range(2, x.ndim):
            f = (torch.rand(x.shape[0], device=x.device) < p).view(-1, *([1] * (x.ndim - 1)))
            x = torch.where(f, x.flip(axis), x)
            y = torch.where(f, y.flip(axis), y)
        return x, y

    # --- steps ---

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        x, y = self._flip(batch["image"].float(), self._targets(batch["seg"]))
        loss = self.loss_fn(self(x).float(), y)
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=x.shape[0], sync_dist=True)
        return loss

    def _eval_step(self, batch: dict[str, Any], batch_idx: int, stage: str) -> None:
        x, seg = batch["image"].float(), batch["seg"]
        seg = seg if seg.ndim == x.ndim else seg.unsqueeze(1)
        y = self._targets(seg)
        logits = self.infer(x).float()
        self.log(f"{stage}/loss", self.loss_fn(logits, y), on_epoch=True, batch_size=x.shape[0], sync_dist=True)
        pred = classes_to_labels(logits.argmax(1, keepdim=True), self.hparams.label_values)
        true = classes_to_labels(y, self.hparams.label_values)  # canonical values
        metric = self._dice.setdefault(stage, RegionDice(self.region_names, self.hparams.regions,
                                                         self.hparams.label_values))
        metric.update(pred, true)
        # the report's example: the first case of this epoch's test run, else of the latest validation
        if batch_idx == 0 and (stage == "test" or self._example is None or self._example["stage"] != "test"):
            self._keep_example(x, true, pred, batch.get("name"), stage)

    def _keep_example(self, x: torch.Tensor, true: torch.Tensor, pred: torch.Tensor, names: Any,
                      stage: str) -> None:
        """The first case's axial slice (last axis) through the tumour centre, for the report."""
        img, gt, pr = x[0, 0].float().cpu().numpy(), true[0, 0].cpu().numpy(), pred[0, 0].cpu().numpy()
        if img.ndim == 3:
            fg = np.flatnonzero((gt > 0).any(axis=(0, 1)))
            k = int(round(float(fg.mean()))) if fg.size else img.shape[2] // 2
            img, gt, pr = img[..., k], gt[..., k], pr[..., k]
        name = names[0] if isinstance(names, (list, tuple)) and names else ""
        self._example = {"stage": stage, "image": img, "true": gt, "pred": pr, "name": str(name)}

    def _eval_end(self, stage: str) -> None:
        m = self._dice.pop(stage, None)
        if m is None or m.count == 0:
            return
        per = m.compute()
        mean = float(np.mean(list(per.values())))
        self.log(f"{stage}/dice_mean", mean, sync_dist=False)
        for name, v in per.items():
            self.log(f"{stage}/dice/{name}", v, sync_dist=False)
        self.results[stage] = {"dice_mean": mean, **{f"dice/{k}": v for k, v in per.items()}}

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "val")

    def on_validation_epoch_end(self) -> None:
        self._eval_end("val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "test")

    def on_test_epoch_end(self) -> None:
        self._eval_end("test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        logits = self.infer(batch["image"].float()).float()
        pred = classes_to_labels(logits.argmax(1, keepdim=True), self.hparams.label_values)
        return {"name": batch.get("name"), "seg": pred.cpu()}

    def configure_optimizers(self) -> Any:
        h = self.hparams
        # every parameter (a frozen encoder gets no gradient, so Adam skips it until it is unfrozen)
        opt = torch.optim.Adam(self.parameters(), lr=h.lr, weight_decay=h.weight_decay)
        epochs = int(self.trainer.max_epochs or 1)
        sched = build_scheduler(opt, h.schedule, epochs, [int(epochs * 0.7)])
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}

    # --- report ---

    def report_sections(self, run_dir: Path) -> list[Section]:
        """A test (else validation) case's axial slice with ground truth and prediction; Dice bars."""
        stage = "test" if "test" in self.results else "val" if "val" in self.results else None
        if stage is None:
            return []
        import matplotlib.pyplot as plt
        from matplotlib.colors import ListedColormap
        from matplotlib.patches import Patch

        r = self.results[stage]
        figures: list[Path] = []
        ex = self._example
        if ex is not None:
            values = list(self.hparams.label_values)
            lut = np.zeros(max(values) + 1, dtype=np.int64)
            lut[values] = np.arange(len(values))
            palette = ["#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#46f0f0"]
            cmap = ListedColormap([(0.0, 0.0, 0.0, 0.0)] + [palette[i % len(palette)] for i in range(len(values) - 1)])

            def overlay(ax: Any, lab: np.ndarray | None, title: str) -> None:
                ax.imshow(ex["image"].T, cmap="gray", origin="lower")
                if lab is not None:
                    ax.imshow(np.ma.masked_equal(lut[lab], 0).T, cmap=cmap, vmin=0, vmax=len(values) - 1,
                              alpha=0.55, origin="lower", interpolation="nearest")
                ax.set_title(title)
                ax.axis("off")

            fig, axes = plt.subplots(1, 3, figsize=(9.5, 3.4))
            overlay(axes[0], None, f"{ex['name']} (channel 0)")
            overlay(axes[1], ex["true"], "ground truth")
            overlay(axes[2], ex["pred"], "prediction")
            handles = [Patch(color=cmap(i), label=f"{values[i]} {self.class_names[i]}") for i in range(1, len(values))]
            fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, fontsize=8)
            figures.append(save_figure(fig, Path(run_dir) / "figures" / f"{ex['stage']}_example_slice.png"))
        names = list(self.region_names)
        vals = [r[f"dice/{n}"] for n in names]
        fig, ax = plt.subplots(figsize=(max(3.5, 0.8 * len(names) + 2), 3.2))
        ax.bar(names, vals, color="#4477aa")
        ax.set_ylim(0.0, 1.0)
        ax.set_ylabel("Dice")
        ax.set_title(f"{stage} Dice per region (mean {r['dice_mean']:.3f})")
        figures.append(save_figure(fig, Path(run_dir) / "figures" / f"{stage}_dice_per_region.png"))
        text = (self.load_report or "encoder: random initialisation") + (
            f"; evaluation: sliding window {tuple(self.hparams.roi_size)}" if self.hparams.roi_size else
            "; evaluation: whole volumes")
        rows = [[n, r[f"dice/{n}"]] for n in names] + [["mean", r["dice_mean"]]]
        return [Section(f"{stage} Dice", text, figures, table=(["region", "Dice"], rows))]
