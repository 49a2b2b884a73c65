"""AS-OCT method modules: the scleral-spur localiser and the two-network predictor for new scans.

Yuan, Bian et al., "Identification of primary angle-closure on AS-OCT images with Convolutional
Neural Networks", arXiv:1910.10414 (AGE challenge, MICCAI 2019). Two networks, trained on their own:

- angle-closure classification: :class:`medlearn.tasks.ImageClassifier` (a factory backbone, ResNet-152
  at paper scale, dropout + FC(2), cross-entropy; ``positive_class=1`` logs AUC / sensitivity /
  specificity of closure);
- spur localisation: :class:`SpurLocalizer` here, heatmap U-Net + PPM trained with the keypoint
  registration loss, or the direct-regression baseline (same code path, ``head="regression"``).

:class:`ASOCTPredictor` loads one checkpoint of each and writes the AGE submission (two CSVs and a
ZIP) with overlay PNGs for a folder of new scans (``medlearn predict``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medlearn.data.augment import AugmentParams, ViewAugment, affine_points
from medlearn.data.image_view import views_to_source
from medlearn.engine.module import MethodModule
from medlearn.engine.report import Section, save_figure
from medlearn.losses.keypoint import KeypointRegistrationLoss
from medlearn.methods.asoct.model import HEADS, build_localizer
from medlearn.metrics.keypoints import KeypointDistance
from medlearn.nn.heatmaps import DECODERS, decode_heatmap
from medlearn.tasks.classification import ImageClassifier

__all__ = ["ASOCTPredictor", "SpurLocalizer"]


class SpurLocalizer(MethodModule):
    """Scleral-spur localisation on side-normalised angle views (one keypoint per image).

    Batches are those of :class:`medlearn.data.age_asoct.ASOCTDataModule`: ``image (B, 1, S, S)`` in
    [0, 1], ``point`` (view pixels, NaN when the spur is undetermined), ``has_point``, and for
    evaluation ``view`` and ``point_image`` (full-image pixels). Errors are measured in pixels of the
    original image: predictions go back through the view (crop, mirror, resize undone).

    Args:
        head: ``"heatmap"`` (U-Net + PPM, one map at the input resolution) or ``"regression"``
            (pooled features -> FC(2) -> sigmoid; L1 loss on coordinates as fractions of the view).
        encoder: backbone factory name (``smallcnn-w16`` on CPU; ``efficientnet-b3`` at paper scale).
        in_channels: input channels.
        image_size: network input side; inputs of another size are resized and the predictions
            mapped back to the input's pixels. ``None``: the data's ``image_size`` in a config (the
            run builder links them), 64 for a model built on its own.
        ppm_bins: pyramid pooling grid sizes at the bottleneck (``None``: no PPM).
        decoder_channels: U-Net decoder widths, deepest first (default: the skip widths).
        sigma: target Gaussian's standard deviation in heatmap pixels.
        lambda_loc: weight of the keypoint registration loss's location term (0: heatmap MSE only).
        beta: soft-argmax sharpness of the location term.
        fg_weight: foreground weight ``alpha`` of the intensity term (0: plain MSE).
        loc_warmup_epochs: epochs trained with the intensity term only (soft-argmax is noisy at init).
        decode: heatmap decoding (:data:`medlearn.nn.heatmaps.DECODERS`).
        radii: "fraction within" radii in original-image pixels for the metrics.
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        schedule: ``"cosine"``, ``"step"`` or ``"constant"``.
        augment: random rotation / scale / shift (keypoint moved along) and brightness / contrast.
        rotation: augmentation rotation, degrees.
        crop_scale: augmentation crop area range (zoom).
        norm_mean: intensity normalisation mean.
        norm_std: intensity normalisation std.
    """

    @property
    def monitor(self) -> tuple[str, str]:
        """``best.ckpt`` on the validation average Euclidean distance."""
        return ("val/aed", "min")

    def __init__(
        self,
        head: str = "heatmap",
        encoder: str = "smallcnn-w16",
        in_channels: int = 1,
        image_size: int | None = None,
        ppm_bins: list[int] | None = None,
        decoder_channels: list[int] | None = None,
        sigma: float = 2.0,
        lambda_loc: float = 1.0,
        beta: float = 20.0,
        fg_weight: float = 0.0,
        loc_warmup_epochs: int = 1,
        decode: str = "log_quadratic",
        radii: tuple[float, ...] = (3.0, 5.0),
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        schedule: str = "constant",
        augment: bool = False,
        rotation: float = 10.0,
        crop_scale: tuple[float, float] = (0.8, 1.0),
        norm_mean: float = 0.3,
        norm_std: float = 0.3,
    ) -> None:
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        if decode not in DECODERS:
            raise ValueError(f"decode must be one of {DECODERS}, got {decode!r}")
        image_size = 64 if image_size is None else int(image_size)
        self.save_hyperparameters()
        self.net = build_localizer(head, encoder, in_channels, ppm_bins, decoder_channels)
        self.kr_loss = KeypointRegistrationLoss(sigma, beta, lambda_loc, fg_weight)
        self.augmenter = ViewAugment(AugmentParams(
            out_size=image_size, crop_scale=crop_scale, crop_ratio=(1.0, 1.0), rotation=rotation, hflip=0.0,
            brightness=0.1, contrast=0.1, cutout_holes=0, mean=norm_mean, std=norm_std)) if augment else None
        self.example_input_array = torch.zeros(2, in_channels, image_size, image_size)
        self._samples: dict[str, torch.Tensor] | None = None
        self._distances: np.ndarray | None = None  # per-angle errors of the last evaluation (report)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Heatmaps ``(B, 1, S, S)`` or coordinates ``(B, 2)`` in (0, 1) of normalised inputs ``(B, C, S, S)``."""
        return self.net(x)

    # --- coordinates ---------------------------------------------------------------------------
    def _to_points(self, out: torch.Tensor) -> torch.Tensor:
        """Network output -> ``(x, y)`` in network-input pixels."""
        s = self.hparams.image_size
        if self.hparams.head == "regression":
            return out.float() * s - 0.5
        return decode_heatmap(out, self.hparams.decode, self.hparams.beta)

    def _resized(self, images: torch.Tensor) -> tuple[torch.Tensor, float]:
        """Square ``images`` at the network input size (antialiased bilinear, ``align_corners=False``) and
        the factor ``input side / network side``.
        """
        s = self.hparams.image_size
        factor = images.shape[-1] / s
        if factor != 1:
            images = F.interpolate(images.float(), size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        return images.float(), factor

    @staticmethod
    def _rescale(points: torch.Tensor, factor: float) -> torch.Tensor:
        """Pixel coordinates in an image ``factor`` times larger (pixel edges kept aligned)."""
        return (points + 0.5) * factor - 0.5

    def _prep(self, images: torch.Tensor) -> tuple[torch.Tensor, float]:
        """Normalised network input and the input-pixels-per-network-pixel factor."""
        x, factor = self._resized(images)
        return (x - self.hparams.norm_mean) / self.hparams.norm_std, factor

    @torch.no_grad()
    def predict_points(self, images: torch.Tensor) -> torch.Tensor:
        """Spur ``(x, y)`` in pixels of ``images (B, C, H, W)`` (square, in [0, 1], any side)."""
        x, factor = self._prep(images)
        return self._rescale(self._to_points(self(x)), factor)

    # --- training --------------------------------------------------------------------------------
    def _loss(self, out: torch.Tensor, points: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, dict]:
        h = self.hparams
        if h.head == "regression":
            ok = valid & torch.isfinite(points).all(1)
            if not bool(ok.any()):
                return out.sum() * 0.0, {}
            target = (points[ok].float() + 0.5) / h.image_size
            loss = F.l1_loss(out[ok].float(), target)
            return loss, {"l1": loss.detach()}
        warm = self.current_epoch < h.loc_warmup_epochs
        return self.kr_loss(out.float(), points, valid, loc_scale=0.0 if warm else 1.0)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """Heatmap (or regression) loss on the batch's views, augmented with their keypoints if enabled."""
        h = self.hparams
        size = (h.image_size, h.image_size)
        images, factor = self._resized(batch["image"])
        points = self._rescale(batch["point"].float(), 1 / factor)  # network-input pixels
        valid = batch["has_point"].bool()
        if self.augmenter is not None:
            theta = self.augmenter.affine(images.shape[0], images.device)
            x = self.augmenter(images, theta)
            points = affine_points(theta, torch.nan_to_num(points), size, size)
            valid = valid & ((points > -0.5) & (points < h.image_size - 0.5)).all(1)  # still in view
        else:
            x = (images - h.norm_mean) / h.norm_std
        if self._samples is None:
            self._samples = {"x": x[:8].detach().cpu(), "point": points[:8].detach().cpu()}
        loss, parts = self._loss(self(x), points, valid)
        self.log("train/loss", loss.detach(), on_step=False, on_epoch=True, batch_size=x.shape[0], sync_dist=True)
        for k, v in parts.items():
            self.log(f"train/loss_{k}", v, on_step=False, on_epoch=True, batch_size=x.shape[0], sync_dist=True)
        return loss

    # --- evaluation ------------------------------------------------------------------------------
    def evaluation_step(self, batch: dict[str, Any], batch_idx: int, stage: str) -> None:
        """Loss and spur distances in original-image pixels (predictions mapped back through the view)."""
        x, factor = self._prep(batch["image"])
        out = self(x)
        loss, _ = self._loss(out, self._rescale(batch["point"].float(), 1 / factor), batch["has_point"].bool())
        self.log(f"{stage}/loss", loss, on_epoch=True, batch_size=x.shape[0], sync_dist=True)
        pred_image = views_to_source(self._rescale(self._to_points(out), factor), batch["view"])
        target = batch["point_image"].to(torch.float64)
        self.stage_state(stage, lambda: KeypointDistance(self.hparams.radii)).update(pred_image, target)

    def evaluation_end(self, stage: str) -> dict[str, Any] | None:
        """Distances in original-image pixels: mean (AED), median, p95, fractions within the radii;
        NaN when no angle of the split has a spur (checkpointing copes).
        """
        m: KeypointDistance | None = self.pop_stage_state(stage)
        if m is None:
            return None
        res = m.compute()
        self._distances = m.distances()
        return {**res.as_dict(), "n": float(res.n)}

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """Spur positions in full-image pixels of the batch's angles."""
        pred = self.predict_points(batch["image"])
        return {"name": list(batch["name"]), "side": [int(s) for s in batch["side"]], "path": list(batch["path"]),
                "point": views_to_source(pred, batch["view"]).cpu()}

    def prediction_writer(self, run_dir: str | Path) -> Any:
        """``medlearn predict`` with a localiser alone: ``Localization_Results.csv`` and overlays."""
        from medlearn.methods.asoct.submission import AGESubmissionWriter

        return AGESubmissionWriter(run_dir)

    def report_sections(self, run_dir: Path, stage: str) -> list[Section]:
        """Training views with their (augmented) spur (after ``fit``), and the error distribution of the
        evaluated split.
        """
        import matplotlib.pyplot as plt

        sections: list[Section] = []
        if self._samples is not None and stage == "fit":
            xs, ps = self._samples["x"], self._samples["point"]
            fig, axes = plt.subplots(1, len(xs), figsize=(1.6 * len(xs), 1.9), squeeze=False)
            for ax, img, p in zip(axes[0], xs, ps):
                ax.imshow(img[0].numpy(), cmap="gray")
                if torch.isfinite(p).all():
                    ax.plot([float(p[0])], [float(p[1])], "r+", ms=8)
                ax.axis("off")
            fig.suptitle("Training views with the target spur (red +)", fontsize=9)
            png = save_figure(fig, Path(run_dir) / "figures" / "train_views.png")
            sections.append(Section("Training views", "Network inputs of the first training batch (normalised, "
                                    "augmented if enabled) with the target spur (red).", [png]))
        stage = "val" if stage in ("fit", "validate") else stage
        d = self._distances
        if stage in self.results and d is not None and np.isfinite(d).any():
            r = self.results[stage]
            fig, ax = plt.subplots(figsize=(4.5, 3))
            ax.hist(d[np.isfinite(d)], bins=30, color="#4477aa")
            ax.axvline(r["aed"], color="k", ls="--", lw=1, label=f"AED {r['aed']:.2f} px")
            ax.axvline(r["p95"], color="r", ls=":", lw=1, label=f"p95 {r['p95']:.2f} px")
            ax.set_xlabel("error, original-image px")
            ax.set_ylabel("angles")
            ax.set_title(f"{stage} spur localisation error", fontsize=9)
            ax.legend(fontsize=8)
            png = save_figure(fig, Path(run_dir) / "figures" / f"{stage}_errors.png")
            rows = [[k, v] for k, v in r.items()]
            sections.append(Section(f"{stage} localisation error", "Euclidean distance between predicted and "
                                    "annotated spur in pixels of the original scan.", [png],
                                    table=(["metric", "value"], rows)))
        return sections


class ASOCTPredictor(MethodModule):
    """Closure probability and spur position for every angle of new scans, from two trained checkpoints.

    For ``medlearn predict``: give the checkpoints of an :class:`~medlearn.tasks.ImageClassifier`
    (two classes, closure = ``positive_class``) and of a :class:`SpurLocalizer`, and an
    :class:`~medlearn.data.age_asoct.ASOCTDataModule` with ``predict_root``. Each network resizes the
    angle view to its own input size. The checkpoints are read in :meth:`setup` (or :meth:`load`).
    The run folder receives the AGE submission
    (:class:`~medlearn.methods.asoct.submission.AGESubmissionWriter`): ``Classification_Results.csv``,
    ``Localization_Results.csv`` (full-image pixels), ``submission.zip`` and ``overlays/*.png``.

    Args:
        classifier: classifier checkpoint.
        localizer: localiser checkpoint.
        positive_class: the classifier's closure class index.
        label_output: ``"probability"`` (P(closure), as AUC needs) or ``"label"`` (0 / 1 at 0.5) in the
            classification CSV.
        classification_columns: header of the classification CSV (name, left, right); the AGE
            headers are not verified, so they are configurable.
        localization_columns: header of the localisation CSV (name, x1, y1, x2, y2).
        overlays: write one overlay PNG per scan.
    """

    def __init__(
        self,
        classifier: str,
        localizer: str,
        positive_class: int = 1,
        label_output: str = "probability",
        classification_columns: Sequence[str] = ("ASOCT_Name", "Left_Label", "Right_Label"),
        localization_columns: Sequence[str] = ("ASOCT_Name", "X1", "Y1", "X2", "Y2"),
        overlays: bool = True,
    ) -> None:
        super().__init__()
        if label_output not in ("probability", "label"):
            raise ValueError(f"label_output must be 'probability' or 'label', got {label_output!r}")
        if len(classification_columns) != 3 or len(localization_columns) != 5:
            raise ValueError("classification_columns needs 3 names and localization_columns 5")
        self.save_hyperparameters()
        self.classifier: ImageClassifier | None = None
        self.localizer: SpurLocalizer | None = None

    def load(self) -> None:
        """Load both checkpoints (weights only), once.

        Called by ``setup`` rather than ``__init__``: LightningCLI builds this module inside a context
        that hands *its* arguments to every ``save_hyperparameters`` call, which would give the two
        nested modules the predictor's hyper-parameters.
        """
        if self.classifier is not None and self.localizer is not None:
            return
        h = self.hparams
        self.classifier = ImageClassifier.load_from_checkpoint(h.classifier, map_location="cpu", weights_only=True,
                                                               pretrained=None)
        self.localizer = SpurLocalizer.load_from_checkpoint(h.localizer, map_location="cpu", weights_only=True)
        self.classifier.eval()
        self.localizer.eval()

    def setup(self, stage: str) -> None:
        """Load both checkpoints before the stage runs."""
        self.load()

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(P(closure) (B,), spur (B, 2) in view pixels)`` of angle views ``(B, 1, S, S)`` in [0, 1]."""
        self.load()
        assert self.classifier is not None and self.localizer is not None
        images = images.to(self.device)
        probs = self.classifier.predict_probs(images)[:, self.hparams.positive_class]
        return probs, self.localizer.predict_points(images)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """Closure probability and spur position (full-image pixels) of the batch's angles."""
        probs, points = self(batch["image"])
        return {"name": list(batch["name"]), "side": [int(s) for s in batch["side"]], "path": list(batch["path"]),
                "p_closed": probs.cpu(), "point": views_to_source(points, batch["view"]).cpu()}

    def prediction_writer(self, run_dir: str | Path) -> Any:
        """The writer ``medlearn predict`` attaches (see :func:`medlearn.engine.predict.prediction_writer`)."""
        from medlearn.methods.asoct.submission import AGESubmissionWriter

        h = self.hparams
        return AGESubmissionWriter(run_dir, label_output=h.label_output,
                                   classification_columns=h.classification_columns,
                                   localization_columns=h.localization_columns, overlays=h.overlays)
