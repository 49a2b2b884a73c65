"""LT-Net: one-shot atlas segmentation by forward-backward (reversible) atlas-to-image correspondence.

Wang et al., "LT-Net: Label Transfer by Learning Reversible Voxel-wise Correspondence for One-shot
Medical Image Segmentation", CVPR 2020. One labelled atlas ``l`` (image) and ``l_s`` (labels), many
unlabelled images ``u``; a generator ``G`` (VoxelMorph-style U-Net) gives the forward field
``dF = G(l, u)``: the warped atlas ``l~ = warp(l, dF)`` should look like ``u``, and the atlas labels
warped the same way label ``u``. The backward pass ``dB = G(l~, l)`` maps the warped atlas back, and
the cycle closes in three spaces: image ``|warp(l~, dB) - l|``, transformation
``||dB + dF(p + dB)||^2`` and anatomy ``1 - Dice(warp(warp(l_s, dF), dB), l_s)``.

Arms in one code path (``backward=False`` and zero cycle weights is the VoxelMorph-style baseline;
each cycle weight at zero is an ablation). Formulas and defaults: methods/oneshot_seg.md 2.2; the
paper's own weights could not be verified, and the spec's toy runs collapsed to the identity map
without a warm-up, so the cycle weights ramp in linearly between ``warmup`` steps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medlearn.data.info import DataInfo
from medlearn.engine.module import MethodModule
from medlearn.engine.report import Section, save_figure
from medlearn.losses.registration import (
    anatomy_cycle_loss,
    gradient_smoothness,
    image_cycle_loss,
    lncc_loss,
    mse,
    transformation_cycle_loss,
    warmup_ramp,
)
from medlearn.metrics.registration import dice_per_label, folding_fraction, inverse_consistency_error, mean_dice
from medlearn.nn.registration import RegistrationUNet, warp

__all__ = ["LTNet", "SIMILARITIES", "one_hot_labels"]

SIMILARITIES = ("mse", "lncc")


def one_hot_labels(labels: torch.Tensor, values: Sequence[int]) -> torch.Tensor:
    """``(B, *S)`` integer label maps -> ``(B, C, *S)`` float one-hot over ``values``.

    Voxels with a value not in ``values`` count as the first value (background).
    """
    idx = torch.zeros_like(labels, dtype=torch.long)
    for k, v in enumerate(values):
        idx[labels == v] = k
    return F.one_hot(idx, len(values)).movedim(-1, 1).float()


class LTNet(MethodModule):
    """Atlas-to-image registration with forward-backward cycle consistency; labels by warping the atlas's.

    Batches (of :class:`medlearn.data.oneshot.OneShotDataModule`): ``atlas`` and ``image``
    ``(B, 1, *S)`` on the atlas grid in [0, 1], ``atlas_labels`` ``(B, *S)`` integer, ``name``, and for
    labelled evaluation images ``labels`` ``(B, *S)`` (on the atlas grid).

    Args:
        spatial_dims: 2 or 3.
        backward: run the backward pass (LT-Net); ``False`` with zero cycle weights: VoxelMorph-style.
        share_weights: one generator for both passes (else a second one for the backward pass).
        similarity: ``"mse"`` or ``"lncc"`` (window ``window``).
        window: LNCC window.
        w_smooth: weight of the gradient smoothness of each field.
        w_cyc: image-cycle weight (L1).
        w_trans: transformation-cycle weight.
        w_acc: anatomy-cycle weight (soft Dice of the reconstructed atlas labels).
        w_back_sim: weight of the optional backward similarity ``sim(warp(u, dB), l)`` (spec: off).
        warmup: ``[start, end]`` optimiser steps: the cycle weights ramp from 0 (before ``start``) to
            full (after ``end``).
        encoder_channels: generator encoder widths (VoxelMorph: 16, 32, 32, 32).
        decoder_channels: generator decoder widths (default: VoxelMorph's rule).
        int_steps: scaling-and-squaring steps (0: plain displacement fields, as LT-Net is recalled).
        label_transfer: ``"linear"`` (warp the one-hot labels trilinearly, then argmax) or ``"nearest"``.
        label_values: the atlas's label values (background first); ``None``: from the data.
        optimizer: optimiser name.
        lr: learning rate.
        weight_decay: weight decay.
        schedule: learning-rate schedule.
    """

    #: ``precision: auto`` keeps fp32: under bf16 autocast the LT-Net demo's fields stayed at the
    #: identity (test Dice 0.786 = no registration, fp32 0.854; the VoxelMorph-style arm was
    #: unaffected, 0.857 vs 0.860; ``docs/benchmarks.md``, "Precision"). Not diagnosed further; our
    #: reading is that the cycle terms' gradients on near-zero displacements vanish at bf16's 8-bit
    #: mantissa.
    bf16_autocast = False

    @property
    def monitor(self) -> tuple[str, str]:
        """``best.ckpt`` on the validation registration loss (no labels are needed)."""
        return ("val/loss", "min")

    @property
    def console_metrics(self) -> tuple[str, ...]:
        """One line per epoch: loss, Dice when evaluation labels exist, folding."""
        return ("val/loss", "val/dice", "val/folding")

    def __init__(self, spatial_dims: int = 2, backward: bool = True, share_weights: bool = True,
                 similarity: str = "mse", window: int = 9, w_smooth: float = 0.01, w_cyc: float = 0.05,
                 w_trans: float = 0.005, w_acc: float = 0.05, w_back_sim: float = 0.0,
                 warmup: list[int] | None = None, encoder_channels: list[int] | None = None,
                 decoder_channels: list[int] | None = None, int_steps: int = 0, label_transfer: str = "linear",
                 label_values: list[int] | None = None, image_size: list[int] | None = None,
                 optimizer: str = "adam", lr: float = 1e-3, weight_decay: float = 0.0,
                 schedule: str = "constant") -> None:
        super().__init__()
        if similarity not in SIMILARITIES:
            raise ValueError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}")
        if label_transfer not in ("linear", "nearest"):
            raise ValueError(f"label_transfer must be 'linear' or 'nearest', got {label_transfer!r}")
        warmup = list(warmup or [300, 600])
        encoder_channels = list(encoder_channels or [8, 16, 16, 16])
        self.save_hyperparameters()
        net = dict(spatial_dims=spatial_dims, encoder_channels=encoder_channels, decoder_channels=decoder_channels,
                   int_steps=int_steps)
        self.generator = RegistrationUNet(**net)  # type: ignore[arg-type]
        self.backward_generator = None if (share_weights or not backward) else RegistrationUNet(**net)  # type: ignore[arg-type]
        self.label_values: list[int] = list(label_values or [])
        size = list(image_size or ([64] * spatial_dims))
        self.example_input_array = (torch.zeros(1, 1, *size), torch.zeros(1, 1, *size))
        self._samples: dict[str, torch.Tensor] | None = None
        self._per_label: dict[int, list[float]] = {}

    def receive_data(self, info: DataInfo) -> None:
        """The atlas's label values (unless configured)."""
        if not self.label_values and info.label_values:
            self.label_values = list(info.label_values)
            self.hparams["label_values"] = self.label_values

    # --- fields -----------------------------------------------------------------------------------
    def forward(self, atlas: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """The forward field ``dF`` (voxels, channel ``d`` displaces axis ``d``) warping the atlas onto ``image``."""
        return self.generator(atlas, image)

    def backward_field(self, warped: torch.Tensor, atlas: torch.Tensor) -> torch.Tensor:
        """The backward field ``dB`` warping the warped atlas back onto the atlas."""
        g = self.backward_generator if self.backward_generator is not None else self.generator
        return g(warped, atlas)

    def _sim(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self.hparams.similarity == "lncc":
            return lncc_loss(a, b, self.hparams.window)
        return mse(a, b)

    def transfer(self, atlas_labels: torch.Tensor, ddf: torch.Tensor) -> torch.Tensor:
        """Atlas labels warped by ``ddf``, as label values ``(B, *S)`` (``label_transfer`` rule)."""
        values = self._values(atlas_labels)
        if self.hparams.label_transfer == "nearest":
            return warp(atlas_labels[:, None].float(), ddf, mode="nearest")[:, 0].round().long()
        probs = warp(one_hot_labels(atlas_labels, values), ddf)
        table = torch.as_tensor(values, device=probs.device)
        return table[probs.argmax(1)]

    def _values(self, atlas_labels: torch.Tensor) -> list[int]:
        if not self.label_values:
            self.label_values = sorted(int(v) for v in torch.unique(atlas_labels).tolist())
        return self.label_values

    # --- training ---------------------------------------------------------------------------------
    def losses(self, atlas: torch.Tensor, atlas_labels: torch.Tensor, image: torch.Tensor,
               ramp: float = 1.0) -> dict[str, torch.Tensor]:
        """Every loss term of one batch (``total`` is what is optimised) and the fields."""
        h = self.hparams
        d_f = self(atlas, image)
        warped = warp(atlas, d_f)
        out = {"sim": self._sim(warped, image), "smooth": gradient_smoothness(d_f), "dF": d_f}
        total = out["sim"] + h.w_smooth * out["smooth"]
        if h.backward:
            d_b = self.backward_field(warped, atlas)
            out["dB"] = d_b
            out["smooth_b"] = gradient_smoothness(d_b)
            total = total + h.w_smooth * out["smooth_b"]
            if h.w_cyc:
                out["cyc"] = image_cycle_loss(warp(warped, d_b), atlas)
                total = total + ramp * h.w_cyc * out["cyc"]
            if h.w_trans:
                out["trans"] = transformation_cycle_loss(d_f, d_b)
                total = total + ramp * h.w_trans * out["trans"]
            if h.w_acc:
                onehot = one_hot_labels(atlas_labels, self._values(atlas_labels))
                out["acc"] = anatomy_cycle_loss(warp(warp(onehot, d_f), d_b), onehot)
                total = total + ramp * h.w_acc * out["acc"]
            if h.w_back_sim:
                out["back_sim"] = self._sim(warp(image, d_b), atlas)
                total = total + h.w_back_sim * out["back_sim"]
        out["total"] = total
        return out

    def ramp(self) -> float:
        """The cycle weights' factor at the current optimiser step."""
        start, end = self.hparams.warmup
        return warmup_ramp(self.global_step, start, end)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """All terms on the batch's (atlas, image) pairs."""
        parts = self.losses(batch["atlas"].float(), batch["atlas_labels"], batch["image"].float(), self.ramp())
        n = batch["image"].shape[0]
        for k, v in parts.items():
            if k not in ("dF", "dB"):
                self.log(f"train/{'loss' if k == 'total' else 'loss_' + k}", v.detach(), on_step=False,
                         on_epoch=True, batch_size=n)
        if self._samples is None:
            self._samples = {k: batch[k][:1].detach().cpu() for k in ("atlas", "image", "atlas_labels")}
        return parts["total"]

    # --- evaluation -------------------------------------------------------------------------------
    def evaluation_step(self, batch: dict[str, Any], batch_idx: int, stage: str) -> None:
        """Registration loss, folding, inverse consistency and (with labels) Dice per structure."""
        atlas, image = batch["atlas"].float(), batch["image"].float()
        parts = self.losses(atlas, batch["atlas_labels"], image, 1.0)
        st = self.stage_state(stage, lambda: {"loss": [], "sim": [], "folding": [], "ice": [], "dice": [],
                                              "per_label": {}})
        n = image.shape[0]
        st["loss"].append(float(parts["total"]) * n)
        st["sim"].append(float(parts["sim"]) * n)
        d_f = parts["dF"].detach().cpu().numpy()
        st["folding"] += [folding_fraction(d_f[i:i + 1]) for i in range(n)]
        # the backward field also for the VoxelMorph-style arm (its generator applied to the reverse pair), so
        # inverse consistency compares arms on equal terms
        d_b_t = parts["dB"] if "dB" in parts else self.backward_field(warp(atlas, parts["dF"]), atlas)
        d_b = d_b_t.detach().cpu().numpy()
        st["ice"] += [inverse_consistency_error(d_f[i:i + 1], d_b[i:i + 1]) for i in range(n)]
        if "labels" in batch:
            pred = self.transfer(batch["atlas_labels"], parts["dF"]).cpu().numpy()
            true = batch["labels"].cpu().numpy()
            fg = [v for v in self._values(batch["atlas_labels"]) if v != 0]
            for i in range(n):
                if (true[i] < 0).all():  # an unlabelled item in a mixed batch
                    continue
                d = dice_per_label(pred[i], true[i], fg)
                st["dice"].append(mean_dice(d))
                for k, v in d.items():
                    st["per_label"].setdefault(k, []).append(v)

    def evaluation_end(self, stage: str) -> dict[str, Any] | None:
        """Mean loss, folding fraction, inverse-consistency error, Dice (mean over structures, then images)."""
        st = self.pop_stage_state(stage)
        if st is None:
            return None
        n = len(st["folding"])
        rec: dict[str, Any] = {"loss": sum(st["loss"]) / n, "loss_sim": sum(st["sim"]) / n,
                               "folding": float(np.mean(st["folding"]))}
        if st["ice"]:
            rec["inverse_consistency"] = float(np.mean(st["ice"]))
        if st["dice"]:
            rec["dice"] = float(np.nanmean(st["dice"]))
            rec["dice_sd"] = float(np.nanstd(st["dice"]))
            for k, v in sorted(st["per_label"].items()):
                rec[f"dice/{k}"] = float(np.nanmean(v))
            self._per_label = st["per_label"]
        return rec

    # --- prediction -------------------------------------------------------------------------------
    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """Transferred labels on the atlas grid, the forward fields' folding, per item."""
        d_f = self(batch["atlas"].float(), batch["image"].float())
        labels = self.transfer(batch["atlas_labels"], d_f)
        return {"name": list(batch["name"]), "labels": labels.cpu(),
                "folding": [folding_fraction(d_f[i:i + 1].detach().cpu().numpy()) for i in range(d_f.shape[0])]}

    def prediction_writer(self, run_dir: str | Path) -> Any:
        """Label maps on each image's own grid, named as the image (``<run>/labels/``)."""
        from medlearn.methods.ltnet.predict import OneShotLabelWriter

        return OneShotLabelWriter(run_dir)

    # --- report -----------------------------------------------------------------------------------
    def report_sections(self, run_dir: Path, stage: str) -> list[Section]:
        """Atlas, image, warped atlas, label overlays and the Jacobian determinant of one pair."""
        if self._samples is None or stage != "fit":
            return []
        png = registration_figure(self, self._samples, Path(run_dir) / "figures" / "registration.png")
        return [Section("Atlas to image", "One training pair: the atlas, the image, the atlas warped onto the "
                        "image with its labels transferred (outlines), the forward field's Jacobian determinant "
                        "(values <= 0: folding) and, for LT-Net, the atlas reconstructed by the backward pass.",
                        [png])]


def _slice(x: np.ndarray) -> np.ndarray:
    """The middle axial slice of a 3D array, a 2D array unchanged."""
    return x[x.shape[0] // 2] if x.ndim == 3 else x


@torch.no_grad()
def registration_figure(model: LTNet, sample: dict[str, torch.Tensor], out_png: Path,
                        labels: torch.Tensor | None = None) -> Path:
    """Atlas | image + transferred outlines | warped atlas | Jacobian determinant | reconstructed atlas."""
    import matplotlib.pyplot as plt

    from medlearn.metrics.registration import jacobian_determinant

    was = model.training
    model.eval()
    atlas, image, alab = sample["atlas"].float(), sample["image"].float(), sample["atlas_labels"]
    d_f = model(atlas, image)
    warped = warp(atlas, d_f)
    moved = model.transfer(alab, d_f)
    jac = jacobian_determinant(d_f.cpu().numpy())[0]
    recon = warp(warped, model.backward_field(warped, atlas)) if model.hparams.backward else None
    model.train(was)
    panels: list[tuple[str, np.ndarray, Any]] = [
        ("atlas + its labels", _slice(atlas[0, 0].numpy()), _slice(alab[0].numpy())),
        ("image + transferred labels", _slice(image[0, 0].numpy()), _slice(moved[0].numpy())),
        ("atlas warped onto image", _slice(warped[0, 0].numpy()), None),
    ]
    if labels is not None:
        panels.append(("image + reference labels", _slice(image[0, 0].numpy()), _slice(labels[0].numpy())))
    n = len(panels) + 1 + (recon is not None)
    fig, axes = plt.subplots(1, n, figsize=(2.7 * n, 3.0))
    for ax, (title, img, lab) in zip(axes, panels):
        ax.imshow(img, cmap="gray", vmin=0, vmax=1)
        if lab is not None:
            for v in np.unique(lab):
                if v != 0:
                    ax.contour(lab == v, levels=[0.5], linewidths=0.8, colors=[plt.cm.tab10(int(v) % 10)])
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    ax = axes[len(panels)]
    im = ax.imshow(_slice(jac), cmap="RdBu", vmin=0, vmax=2)
    ax.set_title(f"Jacobian det. (folding {float((jac <= 0).mean()):.2%})", fontsize=8)
    ax.axis("off")
    fig.colorbar(im, ax=ax, fraction=0.046)
    if recon is not None:
        axes[-1].imshow(_slice(recon[0, 0].numpy()), cmap="gray", vmin=0, vmax=1)
        axes[-1].set_title("atlas reconstructed (backward)", fontsize=8)
        axes[-1].axis("off")
    fig.tight_layout()
    return save_figure(fig, out_png)


def identity_dice(atlas_labels: np.ndarray, labels: np.ndarray, values: Sequence[int]) -> float:
    """Mean foreground Dice of the atlas labels taken as they are (the no-registration baseline)."""
    d = dice_per_label(atlas_labels, labels, [v for v in values if v != 0])
    return mean_dice(d) if d else math.nan
