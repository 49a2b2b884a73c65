"""The Crossover-Net LightningModule: patch training from full images, dense evaluation, full-mask prediction.

Crossover-Net (Qian Yu, Yinghuan Shi, Yefeng Zheng, Yang Gao, Jianbing Zhu, Yakang Dai,
"Crossover-Net: Leveraging the Vertical-Horizontal Crossover Relation for Robust Segmentation",
arXiv:2004.01397, 2020; Pattern Recognition 2021) segments non-elongated structures by classifying
every pixel from its crossover patch. :class:`CrossoverSegmenter` trains and evaluates it, and its two
patch baselines, as arms of one module (``patch``):

- ``"cross"``: the crossover patch through :class:`~medlearn.methods.crossover.model.CrossoverNet`
  with the crossover loss (``loss``: ``"code"``, ``"capped"`` or ``"none"``);
- ``"strip"``: the vertical strip alone (:class:`~medlearn.methods.crossover.model.StripNet`);
- ``"square"``: a square patch of the cross's pixel count
  (:class:`~medlearn.methods.crossover.model.SquareNet`).

Data path: the shared 2D one (:class:`~medlearn.data.segmentation2d.ImageMaskDataModule` batches of
full images and masks, whatever layout they come from). Each training batch of images is turned into
patches here: ``centres_per_image`` centres per image drawn by the inside / outside / boundary-band
sampler (:func:`~medlearn.methods.crossover.patches.sample_centres`) from a generator seeded by
``(sample_seed, epoch, batch index, rank)`` (a resumed run draws the same patches), shuffled and cut
into patch mini-batches of ``patch_batch``; each mini-batch is one optimiser step (manual
optimisation), as the official code steps on batches of 200 patches.

Evaluation (validation and test): dense inference on the full images
(:func:`~medlearn.methods.crossover.inference.dense_logits`: every pixel, or a ``eval_stride`` grid,
in chunks of ``eval_chunk`` centres), optional post-processing, then per image Dice (and HD95 at test
time) from :class:`~medlearn.metrics.segmentation.SegmentationMetrics` and the true-positive fraction
and centroid distance from :class:`~medlearn.metrics.segmentation.TPFCentroidMetrics`, per region
(``regions: labels``: one per foreground label); the record keeps the per-image values. ``predict``
writes full masks (:class:`MaskPredictionWriter`: PNG label images at the input's own size).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from medlearn.console import say
from medlearn.engine.module import ContractLoss, MethodModule
from medlearn.engine.report import Section, save_figure
from medlearn.methods.crossover.inference import POSTPROCESS_STEPS, dense_logits, postprocess_labels
from medlearn.methods.crossover.losses import (
    LOSS_MODES,
    CrossoverLoss,
    CrossoverLossParts,
    nonoverlap_positions,
    overlap_positions,
)
from medlearn.methods.crossover.model import ARCH_SIZES, CrossoverNet, SquareNet, StripNet
from medlearn.methods.crossover.patches import (
    PAD_MODES,
    cross_patches,
    equal_area_side,
    pack_cross,
    sample_centres,
    square_patches,
    strip_patches,
    unpack_cross,
)
from medlearn.metrics.segmentation import (
    RegionSet,
    SegmentationMetrics,
    TPFCentroidMetrics,
    classes_to_labels,
    labels_to_classes,
    region_set,
    segmentation_per_case,
)

__all__ = ["PATCHES", "CrossoverSegmenter", "MaskPredictionWriter"]

#: Patch arms.
PATCHES = ("cross", "strip", "square")


class CrossoverSegmenter(MethodModule):
    """Pixel classification from crossover patches (or the strip / square baselines) on full 2D images.

    Args:
        patch: ``"cross"`` (Crossover-Net), ``"strip"`` (vertical strip only) or ``"square"`` (square
            patch of the cross's pixel count).
        arch: branch architecture: ``"small"`` (the spec's CPU net), ``"hv100x20"`` (official, 100 x 20
            strips) or ``"inbreast340x68"`` (official, 340 x 68). The square arm always uses the small
            net's depth with 3x3 kernels.
        long: strip length in pixels (``None``: the official architecture's, else 48).
        short: strip width (``None``: the official architecture's, else 8).
        square_side: the square arm's side (``None``: the equal-pixel-count side).
        shared_branches: one set of weights for both arms of the cross (the official code); the paper's
            figure draws two branches without saying whether they share weights.
        in_channels: image channels (1: gray).
        num_classes: classes, background included (2 in the released code).
        label_values: the stored label value of each class, background first (default ``0 ..
            num_classes - 1``).
        class_names: names of the classes (default ``label_<value>``).
        regions: what is scored (``"labels"``: each foreground label; or a ``{name: [values]}`` mapping).
        loss: ``"code"`` (official: batch-axis distances, min-max normalised, weights 1), ``"capped"``
            (per-sample distances, ``min(L_div, div_cap)``) or ``"none"`` (cross-entropy only).
        lambda_con: weight of the overlap consistency term (``None``: the mode's default).
        lambda_div: weight of the non-overlap diversity term (``None``: the mode's default).
        div_cap: cap of the diversity term in ``"capped"`` mode (``None``: 5).
        overlap: profile positions of the overlap (the central ``overlap``).
        nonoverlap: profile positions of the non-overlap at each end (``None``: ``T // 5`` for the
            official nets, as the official code, ``T // 4`` for the small one, as the spec's pilot).
        centres_per_image: training centres drawn per image and batch.
        sample_fractions: shares of centres inside the object, outside it, and on the boundary band.
        band: boundary-band window side (pixels within ``band // 2`` of a label change).
        patch_batch: patches per optimiser step.
        pad_mode: what a patch sees beyond the image: ``"reflect"``, ``"edge"`` or ``"zeros"``.
        sample_seed: seed of the centre draws.
        optimizer: ``"adam"`` (official), ``"adamw"`` or ``"sgd"``.
        lr: learning rate (official: 1e-4 constant; the spec's CPU experiment: 1e-3).
        weight_decay: weight decay.
        schedule: ``"constant"`` (official), ``"step"`` or ``"cosine"``.
        eval_stride: classify every ``eval_stride``-th row and column at evaluation and prediction,
            nearest-neighbour for the rest (1: every pixel).
        eval_chunk: centres per forward pass of the dense inference.
        postprocess: post-processing steps after the argmax (subset of ``close``, ``fill``,
            ``largest``; empty: none), Crossbar-Net's.
        postprocess_radius: closing disk radius.
        distance_metrics: HD95 at ``"test"`` (default), ``"all"`` evaluations, or ``"none"``.
        embed: embedding size of the small branch (the strip and square arms use twice this).
        widths: convolution widths of the small nets.
    """

    @property
    def monitor(self) -> tuple[str, str]:
        """Metric and mode for ``best.ckpt``."""
        return ("val/dice_mean", "max")

    def __init__(
        self,
        patch: str = "cross",
        arch: str = "small",
        long: int | None = None,
        short: int | None = None,
        square_side: int | None = None,
        shared_branches: bool = True,
        in_channels: int = 1,
        num_classes: int = 2,
        label_values: list[int] | None = None,
        class_names: list[str] | None = None,
        regions: str | dict[str, list[int]] = "labels",
        loss: str = "capped",
        lambda_con: float | None = None,
        lambda_div: float | None = None,
        div_cap: float | None = None,
        overlap: int = 4,
        nonoverlap: int | None = None,
        centres_per_image: int = 300,
        sample_fractions: Sequence[float] = (1 / 3, 1 / 3, 1 / 3),
        band: int = 5,
        patch_batch: int = 128,
        pad_mode: str = "reflect",
        sample_seed: int = 0,
        optimizer: str = "adam",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        schedule: str = "constant",
        eval_stride: int = 1,
        eval_chunk: int = 4096,
        postprocess: list[str] | None = None,
        postprocess_radius: int = 3,
        distance_metrics: str = "test",
        embed: int = 64,
        widths: Sequence[int] = (16, 32, 32),
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        if patch not in PATCHES:
            raise ValueError(f"patch must be one of {PATCHES}, got {patch!r}")
        if loss not in LOSS_MODES:
            raise ValueError(f"loss must be one of {LOSS_MODES}, got {loss!r}")
        if pad_mode not in PAD_MODES:
            raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
        if distance_metrics not in ("test", "all", "none"):
            raise ValueError(f"distance_metrics must be 'test', 'all' or 'none', got {distance_metrics!r}")
        if set(postprocess or []) - set(POSTPROCESS_STEPS):
            raise ValueError(f"postprocess steps must be among {POSTPROCESS_STEPS}, got {postprocess}")
        if min(centres_per_image, patch_batch, eval_stride, eval_chunk) < 1:
            raise ValueError("centres_per_image, patch_batch, eval_stride and eval_chunk must be >= 1")
        default_long, default_short = ARCH_SIZES.get(arch, (48, 8))
        long = int(long or default_long)
        short = int(short or default_short)
        if label_values is None:
            label_values = list(range(num_classes))
        label_values = [int(v) for v in label_values]
        if len(label_values) != num_classes or len(set(label_values)) != num_classes or min(label_values) < 0:
            raise ValueError(f"label_values must be {num_classes} distinct non-negative values, got {label_values}")
        self.save_hyperparameters()
        self.hparams.update(long=long, short=short, label_values=label_values,
                            sample_fractions=[float(f) for f in sample_fractions], widths=[int(w) for w in widths])
        self.class_names = list(class_names) if class_names is not None else [f"label_{v}" for v in label_values]
        if len(self.class_names) != num_classes:
            raise ValueError(f"{len(self.class_names)} class_names for num_classes={num_classes}")
        self.regions: RegionSet = region_set(regions, label_values, self.class_names)
        self.side = int(square_side or equal_area_side(long, short))
        if patch == "cross":
            self.net: torch.nn.Module = CrossoverNet(arch, in_channels, num_classes, long, short, shared_branches,
                                                     embed, widths)
            t = self.net.profile_length
            ends = nonoverlap if nonoverlap is not None else (t // 5 if arch in ARCH_SIZES else t // 4)
            self.loss_fn = CrossoverLoss(overlap_positions(t, overlap), nonoverlap_positions(t, max(1, ends)), loss,
                                         lambda_con, lambda_div, div_cap)
            self.example_input_array = torch.zeros(1, in_channels, long, 2 * short)
        elif patch == "strip":
            self.net = StripNet(arch, in_channels, num_classes, long, short, 2 * embed, widths)
            self.loss_fn = CrossoverLoss([0], [], "none")
            self.example_input_array = torch.zeros(1, in_channels, long, short)
        else:
            self.net = SquareNet(in_channels, num_classes, self.side, SquareNet.grid_for(long), 2 * embed, widths)
            self.loss_fn = CrossoverLoss([0], [], "none")
            self.example_input_array = torch.zeros(1, in_channels, self.side, self.side)
        self._example: dict[str, Any] | None = None

    # --- data ---

    def receive_data(self, info: Any) -> None:
        """Check that the data's label values and channels are the model's.

        Raises:
            ValueError: the masks hold label values the model does not know, or the channels differ.
        """
        super().receive_data(info)
        if info.label_values is not None and set(info.label_values) - set(self.hparams.label_values):
            raise ValueError(f"the data's label values {info.label_values} are not all in the model's label_values "
                             f"{self.hparams.label_values}: set model.label_values / num_classes, or map the masks "
                             "with the data's value_map")
        if info.in_channels is not None and info.in_channels != self.hparams.in_channels:
            raise ValueError(f"the data has {info.in_channels} channels, the model in_channels="
                             f"{self.hparams.in_channels}")

    # --- patches and forward ---

    def extract(self, images: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
        """The arm's network input for each centre: packed cross ``(N, C, L, 2S)``, strip ``(N, C, L, S)`` or
        square ``(N, C, Q, Q)``.
        """
        h = self.hparams
        if h.patch == "cross":
            return pack_cross(*cross_patches(images, centres, h.long, h.short, h.pad_mode))
        if h.patch == "strip":
            return strip_patches(images, centres, h.long, h.short, h.pad_mode)
        return square_patches(images, centres, self.side, h.pad_mode)

    def forward_parts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """``(logits, profile_v, profile_h)`` of network inputs from :meth:`extract` (profiles: cross only)."""
        if self.hparams.patch == "cross":
            v, ht = unpack_cross(x)
            return self.net(v, ht)
        return self.net(x), None, None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_classes)`` of network inputs from :meth:`extract`."""
        return self.forward_parts(x)[0]

    def patch_logits(self, images: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
        """Logits of the pixels ``centres`` (rows ``(batch index, row, column)``) of ``images``."""
        return self(self.extract(images, centres))

    def segment(self, images: torch.Tensor) -> torch.Tensor:
        """Class indices ``(B, 1, H, W)`` of full images: dense inference, argmax, post-processing."""
        h = self.hparams
        logits = dense_logits(self.patch_logits, images.float(), h.eval_stride, h.eval_chunk)
        classes = logits.argmax(1, keepdim=True)
        if h.postprocess:
            pp = [postprocess_labels(c[0], h.postprocess, h.postprocess_radius) for c in classes.cpu()]
            classes = torch.from_numpy(np.stack(pp))[:, None].to(images.device)
        return classes

    # --- training ---

    def _draw_seed(self, batch_idx: int) -> int:
        ss = np.random.SeedSequence([int(self.hparams.sample_seed), int(self.current_epoch), int(batch_idx),
                                     int(self.global_rank)])
        return int(ss.generate_state(1, dtype=np.uint64)[0] % (2**63 - 1))

    def draw_patches(self, batch: dict[str, Any], batch_idx: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The batch's training patches, shuffled: ``(network inputs, targets, centres)``."""
        h = self.hparams
        images = batch["image"].float()
        seg = batch["seg"] if batch["seg"].ndim == 4 else batch["seg"].unsqueeze(1)
        classes = labels_to_classes(seg, h.label_values)
        g = torch.Generator().manual_seed(self._draw_seed(batch_idx))
        centres, targets = sample_centres(classes, h.centres_per_image, h.sample_fractions, h.band, g)
        order = torch.randperm(len(centres), generator=g)
        centres, targets = centres[order], targets[order]
        return self.extract(images, centres), targets.to(images.device), centres

    def patch_loss(self, x: torch.Tensor, targets: torch.Tensor) -> tuple[CrossoverLossParts, torch.Tensor]:
        """The loss of a patch mini-batch, and its logits."""
        logits, pv, ph = self.forward_parts(x)
        return self.loss_fn(logits.float(), targets, pv, ph), logits

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """Sample patches from the batch's images; one optimiser step per ``patch_batch`` patches."""
        x, targets, _ = self.draw_patches(batch, batch_idx)
        sums = {"loss": 0.0, "ce": 0.0, "con": 0.0, "div": 0.0, "acc": 0.0}
        n = 0
        for part in torch.arange(len(targets)).split(self.hparams.patch_batch):
            parts, logits = self.patch_loss(x[part], targets[part])
            self.manual_step("main", parts.total)
            k = len(part)
            n += k
            sums["loss"] += float(parts.total.detach()) * k
            sums["ce"] += float(parts.ce.detach()) * k
            sums["con"] += float(parts.con.detach()) * k
            sums["div"] += float(parts.div.detach()) * k
            sums["acc"] += float((logits.argmax(1) == targets[part]).float().sum())
        for key, total in sums.items():
            self.log(f"train/{key}", total / max(n, 1), on_step=False, on_epoch=True, batch_size=n, sync_dist=True,
                     prog_bar=key == "loss")
        return torch.tensor(sums["loss"] / max(n, 1))

    def contract_step(self, batch: Any) -> list[ContractLoss]:
        """The loss of the batch's first patch mini-batch, without an optimiser step."""
        x, targets, _ = self.draw_patches(batch, 0)
        part = slice(0, self.hparams.patch_batch)
        parts, _ = self.patch_loss(x[part], targets[part])
        return [ContractLoss("loss", parts.total, [(n, p) for n, p in self.named_trainable_parameters()
                                                   if p.requires_grad])]

    # --- evaluation ---

    def evaluation_step(self, batch: dict[str, Any], batch_idx: int, stage: str) -> None:
        """Dense inference on the batch's full images, scored per image."""
        h = self.hparams
        x = batch["image"].float()
        seg = batch["seg"] if batch["seg"].ndim == 4 else batch["seg"].unsqueeze(1)
        true = classes_to_labels(labels_to_classes(seg, h.label_values), h.label_values)
        pred_cls = self.segment(x)
        pred = classes_to_labels(pred_cls, h.label_values)
        distances = h.distance_metrics == "all" or (h.distance_metrics == "test" and stage == "test")

        def fresh() -> dict[str, Any]:
            return {"seg": SegmentationMetrics(self.regions, distances=distances),
                    "tpf": TPFCentroidMetrics(self.regions), "names": []}

        state = self.stage_state(stage, fresh)
        state["seg"].update(pred, true)
        state["tpf"].update(pred, true)
        names = batch.get("name")
        state["names"].extend(list(names) if isinstance(names, (list, tuple)) else
                              [f"{stage}_{batch_idx}_{i}" for i in range(x.shape[0])])
        if batch_idx == 0 and (stage == "test" or self._example is None or self._example["stage"] != "test"):
            self._example = {"stage": stage, "image": x[0, 0].cpu().numpy(), "true": true[0, 0].cpu().numpy(),
                             "pred": pred[0, 0].cpu().numpy(), "name": str(state["names"][-x.shape[0]])}

    def evaluation_end(self, stage: str) -> dict[str, Any] | None:
        """Means over images (Dice, TPF, CD, and HD95 when computed) per region and over regions, plus the
        per-image values under ``"per_image"``.
        """
        state = self.pop_stage_state(stage)
        if state is None or state["seg"].count == 0:
            return None
        seg, tpf = state["seg"], state["tpf"]
        record: dict[str, Any] = {**seg.compute(), **tpf.compute()}
        per = {**segmentation_per_case(seg), **tpf.per_case()}
        rows = []
        for i, name in enumerate(state["names"]):
            row: dict[str, Any] = {"name": name}
            for key, values in per.items():
                if key == "asd":
                    continue
                for r, region in enumerate(self.regions.names):
                    row[f"{key}/{region}"] = float(values[i, r])
            rows.append(row)
        record["per_image"] = rows
        return record

    # --- prediction ---

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """Predicted label values ``(B, 1, H, W)`` of full images, with their names and stored sizes."""
        pred = classes_to_labels(self.segment(batch["image"].float()), self.hparams.label_values)
        return {"name": batch.get("name"), "seg": pred.cpu(), "orig_hw": batch.get("orig_hw")}

    def prediction_writer(self, run_dir: str | Path) -> BasePredictionWriter:
        """``medlearn predict`` writes full masks: :class:`MaskPredictionWriter`."""
        return MaskPredictionWriter(run_dir)

    # --- report ---

    def report_sections(self, run_dir: Path, stage: str) -> list[Section]:
        """An image with its truth and prediction, and the per-image scores (also written as a CSV)."""
        stage = "val" if stage in ("fit", "validate") else stage
        if stage not in self.results:
            return []
        import matplotlib.pyplot as plt

        r = self.results[stage]
        figures: list[Path] = []
        ex = self._example
        if ex is not None and ex["stage"] == stage:
            fig, axes = plt.subplots(1, 3, figsize=(9.6, 3.5))
            for ax, (lab, title) in zip(axes, ((None, ex["name"]), (ex["true"], "ground truth"),
                                               (ex["pred"], "prediction"))):
                ax.imshow(ex["image"], cmap="gray")
                if lab is not None:
                    ax.contour(lab > 0, levels=[0.5], colors=["#ff4040"], linewidths=1.2)
                ax.set_title(title, fontsize=10)
                ax.axis("off")
            fig.suptitle(f"{stage}: {self.hparams.patch} patches (red: foreground outline)", fontsize=10)
            figures.append(save_figure(fig, Path(run_dir) / "figures" / f"{stage}_example.png"))
        rows = r.get("per_image", [])
        csv_path = Path(run_dir) / f"{stage}_per_image.csv"
        if rows:
            csv_path.parent.mkdir(parents=True, exist_ok=True)
            with csv_path.open("w", newline="", encoding="utf-8") as f:
                w = csv.DictWriter(f, fieldnames=list(rows[0]))
                w.writeheader()
                w.writerows(rows)
        keys = [k for k in ("dice", "tpf", "cd", "hd95") if f"{k}_mean" in r]
        header = ["region", *[{"dice": "Dice", "tpf": "TPF", "cd": "centroid dist. (px)", "hd95": "HD95 (px)"}[k]
                              for k in keys]]
        table = [[n, *[r.get(f"{k}/{n}") for k in keys]] for n in self.regions.names]
        table.append(["mean over regions", *[r.get(f"{k}_mean") for k in keys]])
        h = self.hparams
        text = (f"{h.patch} patches ({h.long} x {h.short} strips" + (f", square {self.side} px" if h.patch == "square"
                                                                     else "") +
                f"), dense inference on every {'' if h.eval_stride == 1 else str(h.eval_stride) + '-th '}pixel"
                + (f", post-processing {list(h.postprocess)}" if h.postprocess else "")
                + f"; means over {len(rows)} images (per image: {csv_path.name}).")
        return [Section(f"{stage} segmentation", text, figures, table=(header, table))]


class MaskPredictionWriter(BasePredictionWriter):
    """Write each predicted mask as a PNG label image at its input's stored size.

    Files: ``<out>/masks/<name>.png`` (the name's folders kept; its suffix replaced; 8-bit, or 16-bit
    when a label exceeds 255), resized back by nearest neighbour from the model's input size to the
    stored size the batch gives (``size``, ``(B, 2)`` rows ``(H, W)``), and ``<out>/predictions.csv``
    (``name,mask,height,width,foreground_pixels``). Files are written atomically as each batch ends.
    """

    def __init__(self, out_dir: str | Path) -> None:
        super().__init__(write_interval="batch")
        self.out_dir = Path(out_dir)
        self._rows: list[list[Any]] = []

    @staticmethod
    def mask_path(name: str) -> Path:
        """Where the mask of an input named ``name`` goes, relative to ``masks/``."""
        p = Path(str(name))
        if p.is_absolute() or ".." in p.parts or not p.parts:
            p = Path(p.name or "image")
        return p.with_suffix(".png") if p.suffix else p.with_name(p.name + ".png")

    def write_on_batch_end(self, trainer: Any, pl_module: Any, prediction: Any, batch_indices: Any, batch: Any,
                           batch_idx: int, dataloader_idx: int = 0) -> None:
        """Write the batch's masks."""
        from medlearn.data.decode import resize_mask
        from medlearn.io import write_image

        seg = prediction["seg"]
        names = prediction.get("name") or [f"image_{batch_idx}_{i}" for i in range(seg.shape[0])]
        sizes = prediction.get("orig_hw")
        for i, name in enumerate(names):
            mask = seg[i, 0]
            if sizes is not None:
                hw = (int(sizes[i][0]), int(sizes[i][1]))
                mask = resize_mask(mask.numpy(), hw)[0]
            arr = mask.numpy()
            dtype = "uint8" if arr.max(initial=0) <= 255 else "uint16"
            rel = self.mask_path(str(name))
            path = self.out_dir / "masks" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            write_image(path, arr.astype(dtype)[None], overwrite=True)
            self._rows.append([name, f"masks/{rel.as_posix()}", arr.shape[0], arr.shape[1], int((arr != 0).sum())])

    def on_predict_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        """Write ``predictions.csv``."""
        from medlearn.io import atomic_write_text

        text = io.StringIO()
        w = csv.writer(text, lineterminator="\n")
        w.writerow(["name", "mask", "height", "width", "foreground_pixels"])
        w.writerows(self._rows)
        suffix = f".rank{trainer.global_rank}" if trainer.world_size > 1 else ""
        atomic_write_text(self.out_dir / f"predictions{suffix}.csv", text.getvalue())
        say(f"wrote {len(self._rows)} masks to {self.out_dir / 'masks'}")
        self._rows = []
