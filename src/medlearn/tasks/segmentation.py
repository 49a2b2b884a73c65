"""Segmentation in 2D and 3D with a U-Net on a (pretrained) factory encoder; metrics per region.

:class:`Segmenter` is the dense-prediction task several methods share: a U-Net (Ronneberger et al.,
MICCAI 2015; 3D U-Net: Çiçek et al., MICCAI 2016) whose encoder is the factory backbone
(:class:`medlearn.nn.unet.BackboneUNet`), for images (``spatial_dims=2``) and volumes (``3``). The
encoder may come from a pretraining checkpoint (a Rubik's cube encoder judged on dense
prediction): :func:`medlearn.engine.checkpoint.load_encoder` finds the encoder the checkpoint
declares and refuses partial loads.

Labels: the stored label values (BraTS: 0 background, 1 necrotic / non-enhancing core, 2 oedema,
4 enhancing tumour; fundus masks: 0 / 1 rim / 2 cup) are mapped to class indices
``0..num_classes-1`` by their position in ``label_values``; the network predicts the classes
(softmax), the loss is MONAI's ``DiceCELoss``.

Evaluation scores the regions of a :class:`~medlearn.metrics.segmentation.RegionSet`, given as data
(``regions: brats`` = WT / TC / ET; ``regions: disc_cup``; ``regions: labels`` = one per label; or a
``{name: [values]}`` mapping): Dice per region every validation epoch, plus HD95 and mean surface
distance at test time (:class:`~medlearn.metrics.segmentation.SegmentationMetrics`). Validation and
test run on whole images, or with MONAI's sliding-window inference (``roi_size``) for inputs larger
than the training patches.

Patch training: :class:`RandomPatch` is a ``train_transform`` for the DataModules that crops one
random patch per item and epoch, centred on foreground with probability ``pos_ratio`` (MONAI
``RandCropByPosNegLabeld``). From a YAML config (``medlearn fit``, LightningCLI / jsonargparse)::

    data:
      class_path: medlearn.data.volumes.VolumeDataModule
      init_args:
        train_transform:
          class_path: medlearn.tasks.segmentation.RandomPatch
          init_args: {size: [128, 128, 128], pos_ratio: 0.5}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from monai.losses import DiceCELoss
from monai.transforms import Compose, EnsureTyped, RandCropByPosNegLabeld, RandSpatialCropd, SpatialPadd

from medlearn.engine.checkpoint import load_encoder
from medlearn.engine.module import MethodModule
from medlearn.engine.report import Section, save_figure
from medlearn.metrics.segmentation import (
    BRATS,
    RegionSet,
    SegmentationMetrics,
    classes_to_labels,
    labels_to_classes,
    region_set,
)
from medlearn.nn.inference import argmax_labels, sliding_window_labels
from medlearn.nn.unet import BackboneUNet
from medlearn.tasks.segmentation_writer import LabelMapWriter

__all__ = ["RandomPatch", "Segmenter", "random_patch"]


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
        """One random patch of ``item`` (padded first where smaller than ``size``)."""
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


class Segmenter(MethodModule):
    """U-Net segmentation of images (2D) or volumes (3D) on a factory encoder, optionally pretrained.

    Args:
        backbone: encoder name (``smallcnn``, ``plaincnn``, ``resnet10..152``; see
            :mod:`medlearn.nn.unet`).
        spatial_dims: 2 (images) or 3 (volumes).
        in_channels: image channels (BraTS: 4 contrasts; colour fundus: 3).
        num_classes: classes, background included (BraTS: 4).
        label_values: the stored label value of each class, in class order, background first
            (default BraTS 0/1/2/4).
        class_names: names of the classes; default: the region set's label names where it has
            them, else ``label_<value>``.
        regions: what is scored: ``"brats"`` (WT / TC / ET), ``"disc_cup"`` (optic disc and cup),
            ``"labels"`` (each non-background label) or a ``{name: [label values]}`` mapping.
        pretrained: checkpoint to initialise the encoder from (``None``: random init).
        pretrained_prefix: the encoder's key prefix in it, or ``"auto"`` (the prefix the checkpoint
            declares: C2L, Rubik, classifier and segmenter checkpoints all do).
        freeze_encoder_epochs: keep the encoder frozen (weights and BatchNorm statistics) for this
            many first epochs while the decoder warms up; then train everything. Under DDP use
            ``strategy=ddp_find_unused_parameters_true`` when this is > 0.
        decoder_channels: decoder widths, deepest first (default: symmetric U-Net).
        optimizer: ``"adam"`` (default), ``"adamw"`` or ``"sgd"``.
        lr: learning rate.
        weight_decay: weight decay.
        schedule: ``"cosine"``, ``"step"`` or ``"constant"`` (epoch-stepped).
        roi_size: sliding-window size for validation / test / predict (multiples of the encoder's
            total stride); ``None``: whole images (sizes must be multiples of the total stride).
        sw_batch_size: windows per forward pass.
        sw_overlap: window overlap (0.25).
        sw_mode: window blending, ``"constant"`` or ``"gaussian"`` (MONAI).
        sw_accumulate: precision of the blended class probabilities of ``predict`` with
            ``roi_size``: ``"float16"`` (default; about half the memory on large volumes, see
            :func:`~medlearn.nn.inference.sliding_window_labels`) or ``"float32"``.
        background_value: image value used to pad windows beyond the image (normalised background).
        flip_prob: training mirroring: each spatial axis of each sample flipped with this
            probability (image and mask together).
        distance_metrics: when to compute HD95 and mean surface distance (in pixels / voxels):
            ``"test"`` (default), ``"all"`` (validation too) or ``"none"``.

    Batches: ``{"image": (B, C, *spatial) float, "seg": (B, 1, *spatial) int}`` with stored label
    values (:class:`~medlearn.data.volumes.VolumeDataModule` with ``task="segmentation"``, or the 2D
    image + mask DataModule). ``predict`` returns ``{"name", "seg"}``: predicted label values
    ``(B, 1, *spatial)`` in the smallest integer type that holds them (``uint8`` for BraTS), within
    the memory bound of :func:`~medlearn.nn.inference.sliding_window_labels` (:meth:`predict_labels`).
    ``load_from_checkpoint`` re-runs ``__init__``, which re-reads ``pretrained``; pass
    ``pretrained=None`` when that file is no longer there (the checkpoint's weights win anyway).

    ``medlearn predict`` writes one label map per input on the input's own grid
    (:class:`~medlearn.tasks.segmentation_writer.LabelMapWriter`): a volume as NIfTI with the
    input's shape and affine (the preprocessing's resampling, reorientation, crops and pads undone
    by nearest neighbour), an image as a PNG of its size with the values its masks store; the
    label values are ``label_values``, in the smallest integer type that holds them. Files go to
    ``<run>/labels/`` under the inputs' names, with ``predictions.csv`` (name, input, label map,
    voxels per value), all written batch by batch.
    """

    encoder_prefix = "net.backbone."

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
        regions: str | dict[str, list[int]] = "brats",
        pretrained: str | None = None,
        pretrained_prefix: str = "auto",
        freeze_encoder_epochs: int = 0,
        decoder_channels: tuple[int, ...] | None = None,
        optimizer: str = "adam",
        lr: float = 1e-3,
        weight_decay: float = 1e-5,
        schedule: str = "cosine",
        roi_size: tuple[int, ...] | None = None,
        sw_batch_size: int = 4,
        sw_overlap: float = 0.25,
        sw_mode: str = "constant",
        sw_accumulate: str = "float16",
        background_value: float = -1.0,
        flip_prob: float = 0.0,
        distance_metrics: str = "test",
    ) -> None:
        super().__init__()
        if label_values is None:
            label_values = [v for v, _ in BRATS.label_names]
        label_values = [int(v) for v in label_values]
        if len(label_values) != num_classes or len(set(label_values)) != num_classes or min(label_values) < 0:
            raise ValueError(f"label_values must be {num_classes} distinct non-negative values, got {label_values}")
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if roi_size is not None and len(roi_size) != spatial_dims:
            raise ValueError(f"roi_size needs {spatial_dims} values, got {roi_size!r}")
        if freeze_encoder_epochs < 0:
            raise ValueError(f"freeze_encoder_epochs must be >= 0, got {freeze_encoder_epochs}")
        if sw_accumulate not in ("float16", "float32"):
            raise ValueError(f"sw_accumulate must be 'float16' or 'float32', got {sw_accumulate!r}")
        if distance_metrics not in ("test", "all", "none"):
            raise ValueError(f"distance_metrics must be 'test', 'all' or 'none', got {distance_metrics!r}")
        self.save_hyperparameters()
        self.hparams.label_values = label_values
        named = dict(region_set(regions, label_values).label_names) if isinstance(regions, str) and \
            regions != "labels" else {}
        if class_names is None:
            class_names = ([named[v] for v in label_values] if set(label_values) <= set(named)
                           else [f"label_{v}" for v in label_values])
        if len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class_names for num_classes={num_classes}")
        self.class_names = list(class_names)
        self.regions: RegionSet = region_set(regions, label_values, self.class_names)
        self.region_names = self.regions.names
        self.net = BackboneUNet(backbone, spatial_dims, in_channels, num_classes, decoder_channels)
        self.loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
        self.load_report: str | None = None
        side = [2 * self.net.total_stride] * spatial_dims
        self.example_input_array = torch.zeros(1, in_channels, *(roi_size or side))
        if pretrained:
            self.load_encoder(pretrained, pretrained_prefix)
        self._encoder_frozen = False
        self._set_encoder_frozen(freeze_encoder_epochs > 0)
        self._example: dict[str, Any] | None = None

    # --- weights ---

    def load_encoder(self, checkpoint: str | Path, prefix: str = "auto") -> str:
        """Load the encoder from a pretraining checkpoint (see :func:`load_encoder`)."""
        self.load_report = load_encoder(self, checkpoint, "net.backbone.", prefix)
        return self.load_report

    def _set_encoder_frozen(self, frozen: bool) -> None:
        self._encoder_frozen = frozen
        for p in self.net.backbone.parameters():
            p.requires_grad_(not frozen)
        if frozen:
            self.net.backbone.eval()
        elif self.training:
            self.net.backbone.train()

    def train(self, mode: bool = True) -> Segmenter:
        """Set the mode; a frozen encoder stays in evaluation mode (BatchNorm statistics too)."""
        super().train(mode)
        if mode and getattr(self, "_encoder_frozen", False):
            self.net.backbone.eval()  # frozen encoder: BatchNorm statistics too
        return self

    def on_train_epoch_start(self) -> None:
        """Freeze or unfreeze the encoder for this epoch (``freeze_encoder_epochs``)."""
        self._set_encoder_frozen(self.current_epoch < self.hparams.freeze_encoder_epochs)

    # --- forward ---

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes, *spatial)``."""
        return self.net(x)

    def infer(self, x: torch.Tensor) -> torch.Tensor:
        """Evaluation logits: sliding-window (``roi_size``) or whole-image."""
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
        """Dice + cross-entropy on the (mirrored) batch."""
        x, y = self._flip(batch["image"].float(), self._targets(batch["seg"]))
        loss = self.loss_fn(self(x).float(), y)
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=x.shape[0], sync_dist=True)
        return loss

    def evaluation_step(self, batch: dict[str, Any], batch_idx: int, stage: str) -> None:
        """Loss and predicted label maps into the stage's region metrics."""
        x, seg = batch["image"].float(), batch["seg"]
        seg = seg if seg.ndim == x.ndim else seg.unsqueeze(1)
        y = self._targets(seg)
        logits = self.infer(x).float()
        self.log(f"{stage}/loss", self.loss_fn(logits, y), on_epoch=True, batch_size=x.shape[0], sync_dist=True)
        pred = classes_to_labels(logits.argmax(1, keepdim=True), self.hparams.label_values)
        true = classes_to_labels(y, self.hparams.label_values)  # canonical values
        mode = self.hparams.distance_metrics
        distances = mode == "all" or (mode == "test" and stage == "test")
        self.stage_state(stage, lambda: SegmentationMetrics(self.regions, distances=distances)).update(pred, true)
        # the report's example: the first case of this epoch's test run, else of the latest validation
        if batch_idx == 0 and (stage == "test" or self._example is None or self._example["stage"] != "test"):
            self._keep_example(x, true, pred, batch.get("name"), stage)

    def _keep_example(self, x: torch.Tensor, true: torch.Tensor, pred: torch.Tensor, names: Any,
                      stage: str) -> None:
        """The first case (3D: its axial slice, last axis, through the foreground centre), for the report."""
        img, gt, pr = x[0, 0].float().cpu().numpy(), true[0, 0].cpu().numpy(), pred[0, 0].cpu().numpy()
        if img.ndim == 3:
            fg = np.flatnonzero((gt > 0).any(axis=(0, 1)))
            k = int(round(float(fg.mean()))) if fg.size else img.shape[2] // 2
            img, gt, pr = img[..., k], gt[..., k], pr[..., k]
        name = names[0] if isinstance(names, (list, tuple)) and names else ""
        self._example = {"stage": stage, "image": img, "true": gt, "pred": pr, "name": str(name)}

    def evaluation_end(self, stage: str) -> dict[str, Any] | None:
        """Dice per region and their mean (with distances: HD95 and mean surface distance too)."""
        m: SegmentationMetrics | None = self.pop_stage_state(stage)
        if m is None or m.count == 0:
            return None
        values = m.compute()
        dice = [values[f"dice/{n}"] for n in self.region_names]
        return {"dice_mean": float(np.mean(dice)), **{f"dice/{n}": v for n, v in zip(self.region_names, dice)},
                **{k: v for k, v in values.items() if not k.startswith("dice")}}

    def predict_labels(self, x: torch.Tensor) -> torch.Tensor:
        """Predicted label values ``(B, 1, *spatial)`` (:func:`~medlearn.nn.inference.label_dtype`) of images.

        With ``roi_size``: MONAI's sliding window, blending class probabilities in ``sw_accumulate``
        precision; memory above the input at most
        :func:`~medlearn.nn.inference.sliding_window_memory` (13 bytes per voxel for one input
        channel and four classes in ``float16``: 1.48 GB for a 512 x 512 x 400 volume). Without:
        one forward pass over the whole images (their logits are held in ``float32``).
        """
        h = self.hparams
        if h.roi_size is None:
            return argmax_labels(self(x.float()).float(), h.label_values)
        return sliding_window_labels(x, self, tuple(h.roi_size), h.label_values, h.sw_batch_size, h.sw_overlap,
                                     h.sw_mode, h.background_value, h.sw_accumulate)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """Predicted label values ``(B, 1, *spatial)`` of the batch (:meth:`predict_labels`), with the names."""
        return {"name": batch.get("name"), "seg": self.predict_labels(batch["image"]).cpu()}

    def prediction_writer(self, run_dir: Path) -> LabelMapWriter:
        """What ``medlearn predict`` writes: label maps on the inputs' grids and ``predictions.csv``."""
        return LabelMapWriter(run_dir, self.hparams.label_values, self.hparams.spatial_dims)

    # --- report ---

    def report_sections(self, run_dir: Path, stage: str) -> list[Section]:
        """A case of the evaluated split (3D: an axial slice) with ground truth and prediction; Dice bars."""
        stage = "val" if stage in ("fit", "validate") else stage
        if stage not in self.results:
            return []
        import matplotlib.pyplot as plt
        from matplotlib.colors import ListedColormap
        from matplotlib.patches import Patch

        r = self.results[stage]
        figures: list[Path] = []
        ex = self._example
        if ex is not None and ex["stage"] == stage:
            values = list(self.hparams.label_values)
            lut = np.zeros(max(values) + 1, dtype=np.int64)
            lut[values] = np.arange(len(values))
            palette = ["#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#46f0f0"]
            cmap = ListedColormap([(0.0, 0.0, 0.0, 0.0)] + [palette[i % len(palette)] for i in range(len(values) - 1)])
            volume = self.hparams.spatial_dims == 3

            def overlay(ax: Any, lab: np.ndarray | None, title: str) -> None:
                img = ex["image"].T if volume else ex["image"]
                ax.imshow(img, cmap="gray", origin="lower" if volume else "upper")
                if lab is not None:
                    shown = np.ma.masked_equal(lut[lab], 0)
                    ax.imshow(shown.T if volume else shown, cmap=cmap, vmin=0, vmax=len(values) - 1, alpha=0.55,
                              origin="lower" if volume else "upper", interpolation="nearest")
                ax.set_title(title)
                ax.axis("off")

            fig, axes = plt.subplots(1, 3, figsize=(9.5, 3.4))
            overlay(axes[0], None, f"{ex['name']} (channel 0)")
            overlay(axes[1], ex["true"], "ground truth")
            overlay(axes[2], ex["pred"], "prediction")
            handles = [Patch(color=cmap(i), label=f"{values[i]} {self.class_names[i]}") for i in range(1, len(values))]
            fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, fontsize=8)
            figures.append(save_figure(fig, Path(run_dir) / "figures" / f"{stage}_example_slice.png"))
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
            "; evaluation: whole images")
        rows = [[n, r[f"dice/{n}"]] + ([r.get(f"hd95/{n}"), r.get(f"asd/{n}")] if "hd95_mean" in r else [])
                for n in names]
        rows.append(["mean", r["dice_mean"]] + ([r["hd95_mean"], r["asd_mean"]] if "hd95_mean" in r else []))
        header = ["region", "Dice"] + (["HD95 (px)", "mean surface distance (px)"] if "hd95_mean" in r else [])
        return [Section(f"{stage} segmentation", text, figures, table=(header, rows))]
