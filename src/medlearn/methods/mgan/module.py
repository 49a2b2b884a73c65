"""MGAN / TC-MGAN and the pix2pix baseline in one module, and the independent tumour evaluator.

Xin, Hu, Zheng, Liao, "Multi-modality Generative Adversarial Networks with Tumor Consistency Loss
for Brain MR Image Synthesis", ISBI 2020, arXiv:2005.00925.

:class:`MGAN` (a :class:`~medlearn.engine.gan.GANModule`) trains one generator G(x_T2, c) for the
contrasts in ``synthesise``; per sample and iteration it draws one target at random (official
code). The three arms of the paper are three settings of the same code path:

- **MGAN**: ``conditional=True``, three targets, ``lambda_tc=0``;
- **TC-MGAN**: the same with ``lambda_tc > 0``: a segmentor S, pre-trained on real target slices for
  ``seg_pretrain_epochs`` epochs, gives the tumour-consistency loss Dice(S(G(x, c), c), M) to G and
  is co-trained on ``seg_fake_weight`` x Dice on fakes + (1 - it) x Dice on real slices (0.7 / 0.3;
  ``freeze_segmentor`` keeps it fixed after pre-training, the ablation the spec asks for);
- **pix2pix**: ``conditional=False`` and one target per model (three models for three contrasts).

Per batch: the critic step (adversarial loss on real vs detached fake, + ``lambda_cls`` x target
classification with the StarGAN critic, + WGAN-GP when ``lambda_gp`` > 0), then, on every
``n_critic``-th batch, the generator step (adversarial + ``lambda_cls`` x classification of its
fakes + ``lambda_rec`` x L1 + ``lambda_tc`` x tumour consistency), then the segmentor step on a
fresh fake (official order).

Evaluation synthesises every target of every slice (three generator calls with the three codes)
and reports PSNR / SSIM / MAE / NMSE on [0, 1]-scaled slices: whole slice, brain mask and tumour
mask (:class:`~medlearn.metrics.synthesis.SynthesisMetrics`); with an ``evaluator`` checkpoint
(:class:`TumourEvaluator`, trained on real slices only) also its whole-tumour Dice on the
synthesised slice, on the real slice of that contrast and on T2 alone, on tumour-bearing slices.
``medlearn predict`` writes the missing contrasts of T2-only cases as NIfTI volumes
(:class:`~medlearn.methods.mgan.predict.SynthesisWriter`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medlearn.engine.gan import GANModule, sample_grid
from medlearn.engine.module import ContractLoss, MethodModule
from medlearn.engine.report import Section
from medlearn.methods.mgan.losses import reconstruction_l1, soft_dice_loss, target_classification_loss
from medlearn.methods.mgan.model import ConditionalSegmentor, StarGANCritic
from medlearn.metrics.synthesis import SYNTHESIS_METRICS, SynthesisMetrics
from medlearn.nn.gan import PatchGAN, UNetGenerator

__all__ = ["MGAN", "TumourEvaluator", "dice_per_slice"]

CONTRAST_NAMES = {"flair": "FLAIR", "t1ce": "T1ce", "t1": "T1", "t2": "T2"}


def dice_per_slice(prob: torch.Tensor, mask: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Hard Dice per slice with +1 smoothing (official ``dice_score``): ``(B,)`` float64."""
    p = (prob.detach() > threshold).double().flatten(1)
    t = (mask.detach() > 0.5).double().flatten(1)
    return (2 * (p * t).sum(1) + 1) / (p.sum(1) + t.sum(1) + 1)


def _one_hot(idx: torch.Tensor, n: int) -> torch.Tensor:
    return F.one_hot(idx.long(), n).float()


class MGAN(GANModule):
    """MGAN, TC-MGAN or pix2pix (see the module docstring).

    Args:
        contrasts: the data's target contrasts in batch order (``MRSliceDataModule.targets``).
        synthesise: the contrasts this model synthesises (default: all; pix2pix: one), in code order.
        conditional: feed the one-hot code of the target to G (and S); ``False`` needs one target.
        image_size: slice side (the data's, linked by the config).
        num_downs: U-Net levels (7 = unet_128).
        ngf: generator width.
        g_norm: generator normalisation (``"instance"`` MGAN, ``"batch"`` pix2pix).
        g_dropout: pix2pix decoder dropout.
        discriminator: ``"stargan"`` (MGAN's critic with class head) or ``"patchgan"`` (pix2pix).
        d_channels: discriminator width.
        d_layers: discriminator stride-2 layers (StarGAN: 5; PatchGAN: 3 = 70x70).
        d_norm: PatchGAN normalisation.
        gan_loss: ``"wgan"`` (MGAN), ``"vanilla"`` (pix2pix) or ``"lsgan"``.
        patch_reduction: per-sample ``"sum"`` (official MGAN critic) or ``"mean"`` over patches.
        d_weight: factor of the discriminator's adversarial loss (pix2pix: 0.5).
        lambda_gp: gradient-penalty weight (WGAN-GP; 0: none).
        n_critic: discriminator steps per generator step.
        lambda_cls: weight of the target classification (StarGAN critic only).
        lambda_rec: weight of the L1 reconstruction.
        rec_reduction: L1 per-sample ``"mean"`` or ``"sum"`` over pixels.
        lambda_tc: weight of the tumour-consistency loss (0: MGAN / pix2pix; no segmentor).
        seg_channels: segmentor width.
        seg_fake_weight: share of the fake-image Dice in the segmentor's loss (0.7).
        seg_pretrain_epochs: epochs at the start that train only S on real target slices.
        freeze_segmentor: keep S fixed after pre-training (ablation).
        lr: Adam learning rate of every player.
        lr_segmentor: the segmentor's learning rate (default ``lr``).
        betas: Adam betas.
        schedule: learning-rate schedule (``"step"``: x ``gamma`` at ``milestones``).
        milestones: epochs of the step schedule.
        gamma: step factor.
        g_ema: generator EMA momentum (0: none); evaluation and prediction then use the EMA.
        evaluator: checkpoint of a :class:`TumourEvaluator` for the Dice readings (optional).
        n_samples: slices in the report's sample grid.
    """

    def __init__(
        self,
        contrasts: Sequence[str] = ("flair", "t1ce", "t1"),
        synthesise: Sequence[str] | None = None,
        conditional: bool = True,
        image_size: int | None = None,
        num_downs: int = 7,
        ngf: int = 64,
        g_norm: str = "instance",
        g_dropout: bool = False,
        discriminator: str = "stargan",
        d_channels: int = 64,
        d_layers: int = 5,
        d_norm: str = "batch",
        gan_loss: str = "wgan",
        patch_reduction: str = "sum",
        d_weight: float = 1.0,
        lambda_gp: float = 10.0,
        n_critic: int = 1,
        lambda_cls: float = 1.0,
        lambda_rec: float = 100.0,
        rec_reduction: str = "mean",
        lambda_tc: float = 0.0,
        seg_channels: int = 64,
        seg_fake_weight: float = 0.7,
        seg_pretrain_epochs: int = 0,
        freeze_segmentor: bool = False,
        lr: float = 2e-4,
        lr_segmentor: float | None = None,
        betas: tuple[float, float] = (0.9, 0.999),
        schedule: str = "constant",
        milestones: list[int] | None = None,
        gamma: float = 0.5,
        g_ema: float = 0.0,
        evaluator: str | None = None,
        n_samples: int = 4,
    ) -> None:
        super().__init__()
        contrasts = [str(c) for c in contrasts]
        synthesise = list(contrasts) if synthesise is None else [str(c) for c in synthesise]
        unknown = [c for c in synthesise if c not in contrasts]
        if unknown or not synthesise:
            raise ValueError(f"synthesise must name some of {contrasts}, got {synthesise}")
        if not conditional and len(synthesise) != 1:
            raise ValueError("an unconditional generator (pix2pix) synthesises exactly one contrast")
        if discriminator not in ("stargan", "patchgan"):
            raise ValueError(f"discriminator must be 'stargan' or 'patchgan', got {discriminator!r}")
        if discriminator == "patchgan" and lambda_cls:
            raise ValueError("lambda_cls needs the StarGAN critic's class head (discriminator: stargan)")
        image_size = 128 if image_size is None else int(image_size)
        self.save_hyperparameters()
        self.synth_index = [contrasts.index(c) for c in synthesise]
        n = len(synthesise)
        code_dim = n if conditional else 0
        self.generator = UNetGenerator(2, 1, 1, num_downs, ngf, g_norm, g_dropout, code_dim)
        if discriminator == "stargan":
            self.critic: torch.nn.Module = StarGANCritic(image_size, 2, d_channels, n, d_layers)
        else:
            self.critic = PatchGAN(2, 2, d_channels, d_layers, d_norm)
        self.segmentor = ConditionalSegmentor(1, code_dim, seg_channels) if lambda_tc > 0 else None
        self.add_generator_ema("generator")
        self.example_input_array: Any = (torch.zeros(2, 1, image_size, image_size), torch.eye(n)[[0] * 2]) \
            if conditional else torch.zeros(2, 1, image_size, image_size)
        self._samples: dict[str, torch.Tensor] | None = None
        self._dice: dict[str, list[np.ndarray]] = {}

    # --- networks ------------------------------------------------------------------------------
    def players(self) -> dict[str, list[str]]:
        """Critic, generator and (TC-MGAN) segmentor optimisers."""
        p = {"discriminator": ["critic"], "generator": ["generator"]}
        if self.segmentor is not None:
            p["segmentor"] = ["segmentor"]
        return p

    def forward(self, source: torch.Tensor, code: torch.Tensor | None = None) -> torch.Tensor:
        """Synthesised slices in [-1, 1] of T2 slices ``(B, 1, S, S)`` for one-hot targets ``code (B, n)``."""
        return self.generator(source, code if self.hparams.conditional else None)

    @torch.no_grad()
    def synthesise(self, source: torch.Tensor, target: str, batch: int = 64) -> torch.Tensor:
        """Slices of contrast ``target`` from T2 slices in [-1, 1] (the EMA generator if there is one)."""
        g = self.inference_generator("generator")
        n = len(self.hparams.synthesise)
        k = list(self.hparams.synthesise).index(target)
        outs = []
        for i in range(0, source.shape[0], batch):
            x = source[i:i + batch].to(self.device, torch.float32)
            code = _one_hot(torch.full((x.shape[0],), k, device=x.device), n) if self.hparams.conditional else None
            outs.append(g(x, code).float())
        return torch.cat(outs) if outs else source.new_zeros(source.shape)

    def _critic(self, y: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if isinstance(self.critic, StarGANCritic):
            src, cls = self.critic(y, x)
            return src, cls
        return self.critic(torch.cat([y, x], 1)), None

    def _draw(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Source, one random target per sample (real slice), its code and the tumour mask."""
        x, ys, mask = batch["source"].float(), batch["targets"].float(), batch["mask"].float()
        n = len(self.synth_index)
        k = torch.randint(n, (x.shape[0],), device=x.device)
        channels = torch.tensor(self.synth_index, device=x.device)[k]
        real = ys.gather(1, channels.view(-1, 1, 1, 1).expand(-1, 1, *ys.shape[2:]))
        return x, real, _one_hot(k, n), mask

    def _seg_code(self, code: torch.Tensor) -> torch.Tensor | None:
        return code if self.hparams.conditional else None

    # --- losses --------------------------------------------------------------------------------
    def _d_loss(self, x: torch.Tensor, real: torch.Tensor, fake: torch.Tensor, code: torch.Tensor
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        h = self.hparams
        r_src, r_cls = self._critic(real, x)
        f_src, _ = self._critic(fake.detach(), x)
        adv = h.d_weight * self.adversarial.discriminator(r_src, f_src)
        parts = {"adv": adv}
        loss = adv
        if r_cls is not None and h.lambda_cls:
            parts["cls"] = target_classification_loss(r_cls, code)
            loss = loss + h.lambda_cls * parts["cls"]
        if h.lambda_gp:
            parts["gp"] = self.penalty(lambda y, c: self._critic(y, c)[0], real, fake.detach(), (x,))
            loss = loss + parts["gp"]
        return loss, parts

    def _g_loss(self, x: torch.Tensor, real: torch.Tensor, fake: torch.Tensor, code: torch.Tensor,
                mask: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        h = self.hparams
        f_src, f_cls = self._critic(fake, x)
        parts = {"adv": self.adversarial.generator(f_src), "l1": reconstruction_l1(fake, real, h.rec_reduction)}
        loss = parts["adv"] + h.lambda_rec * parts["l1"]
        if f_cls is not None and h.lambda_cls:
            parts["cls"] = target_classification_loss(f_cls, code)
            loss = loss + h.lambda_cls * parts["cls"]
        if self.segmentor is not None:
            parts["tc"] = soft_dice_loss(self.segmentor(fake, self._seg_code(code)), mask)
            loss = loss + h.lambda_tc * parts["tc"]
        return loss, parts

    def _s_loss(self, real: torch.Tensor, fake: torch.Tensor | None, code: torch.Tensor, mask: torch.Tensor
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        assert self.segmentor is not None
        c = self._seg_code(code)
        parts = {"dice_real": soft_dice_loss(self.segmentor(real, c), mask)}
        if fake is None:
            return parts["dice_real"], parts
        w = self.hparams.seg_fake_weight
        parts["dice_fake"] = soft_dice_loss(self.segmentor(fake.detach(), c), mask)
        return w * parts["dice_fake"] + (1 - w) * parts["dice_real"], parts

    # --- training ------------------------------------------------------------------------------
    def _pretraining(self) -> bool:
        return self.segmentor is not None and self.current_epoch < self.hparams.seg_pretrain_epochs

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """One critic step, a generator step every ``n_critic`` batches, a segmentor step (TC-MGAN)."""
        x, real, code, mask = self._draw(batch)
        bs = x.shape[0]
        if self._pretraining():
            loss, parts = self._s_loss(real, None, code, mask)
            self.step_player("segmentor", loss, parts, bs)
            self.finish_batch()
            return
        fake = self(x, code)
        d_loss, d_parts = self._d_loss(x, real, fake, code)
        self.step_player("discriminator", d_loss, d_parts, bs)
        if self.generator_turn():
            frozen = [self.critic] + ([self.segmentor] if self.segmentor is not None else [])
            self.set_requires_grad(frozen, False)
            g_loss, g_parts = self._g_loss(x, real, fake, code, mask)
            self.step_player("generator", g_loss, g_parts, bs)
            self.set_requires_grad(frozen, True)
        if self.segmentor is not None and not self.hparams.freeze_segmentor:
            with torch.no_grad():
                fresh = self(x, code)
            s_loss, s_parts = self._s_loss(real, fresh, code, mask)
            self.step_player("segmentor", s_loss, s_parts, bs)
        self.finish_batch()

    def contract_step(self, batch: dict[str, Any]) -> list[ContractLoss]:
        """Critic, generator and segmentor losses of one batch, without steps."""
        x, real, code, mask = self._draw(batch)
        fake = self(x, code)
        d_loss, _ = self._d_loss(x, real, fake, code)
        g_loss, _ = self._g_loss(x, real, fake, code, mask)
        out = [ContractLoss("discriminator", d_loss, list(self.critic.named_parameters())),
               ContractLoss("generator", g_loss, list(self.generator.named_parameters()))]
        if self.segmentor is not None:
            s_loss, _ = self._s_loss(real, fake, code, mask)
            out.append(ContractLoss("segmentor", s_loss, list(self.segmentor.named_parameters())))
        return out

    # --- evaluation ----------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        """Load the evaluator checkpoint (frozen, outside the checkpoint) if one is given."""
        path = self.hparams.evaluator
        if path and not hasattr(self, "evaluator_net"):
            ev = TumourEvaluator.load_from_checkpoint(path, map_location="cpu", weights_only=True)
            self.evaluator_contrasts = list(ev.hparams.contrasts)
            self.add_frozen("evaluator_net", ev.net)
            self.evaluator_net.to(self.device)

    def _evaluate(self, prob_net: Any, images: torch.Tensor, contrast: str) -> torch.Tensor:
        k = self.evaluator_contrasts.index(contrast)
        code = _one_hot(torch.full((images.shape[0],), k, device=images.device), len(self.evaluator_contrasts))
        return prob_net(images, code)

    def evaluation_step(self, batch: dict[str, Any], batch_idx: int, stage: str) -> None:
        """Synthesise every target of the batch's slices; accumulate quality and (evaluator) Dice."""
        metrics: SynthesisMetrics = self.stage_state(stage, SynthesisMetrics)
        x, ys = batch["source"].float(), batch["targets"].float()
        masks = {"brain": batch["brain"], "tumour": batch["mask"]}
        tumour_slices = batch["mask"].flatten(1).sum(1) > 0
        ev = getattr(self, "evaluator_net", None)
        fakes = {}
        for name, ch in zip(self.hparams.synthesise, self.synth_index):
            fake = self.synthesise(x, name)
            fakes[name] = fake
            real = ys[:, ch:ch + 1]
            metrics.update(name, (fake + 1) / 2, (real + 1) / 2, masks)
            if ev is not None and bool(tumour_slices.any()):
                t = tumour_slices
                for key, img in ((name, fake), (f"{name}_real", real)):
                    d = dice_per_slice(self._evaluate(ev, img[t], name), batch["mask"][t])
                    self._dice.setdefault(key, []).append(d.cpu().numpy())
        if ev is not None and bool(tumour_slices.any()) and "t2" in self.evaluator_contrasts:
            t = tumour_slices
            d = dice_per_slice(self._evaluate(ev, x[t], "t2"), batch["mask"][t])
            self._dice.setdefault("t2", []).append(d.cpu().numpy())
        if batch_idx == 0:
            order = torch.argsort(batch["mask"].flatten(1).sum(1), descending=True)[: self.hparams.n_samples]
            self._samples = {"source": x[order].cpu(), "mask": batch["mask"][order].cpu(),
                             **{f"fake_{k}": v[order].cpu() for k, v in fakes.items()},
                             **{f"real_{k}": ys[order, ch:ch + 1].cpu()
                                for k, ch in zip(self.hparams.synthesise, self.synth_index)}}

    def evaluation_end(self, stage: str) -> dict[str, Any] | None:
        """Quality per contrast and region, their means, and the evaluator's Dice (tumour slices)."""
        metrics: SynthesisMetrics | None = self.pop_stage_state(stage)
        if metrics is None:
            return None
        record: dict[str, Any] = dict(metrics.compute())
        for key, vals in self._dice.items():
            record[f"dice_{key}"] = float(np.concatenate(vals).mean())
        synth = [record[f"dice_{c}"] for c in self.hparams.synthesise if f"dice_{c}" in record]
        if synth:
            record["dice"] = float(np.mean(synth))
        self._dice = {}
        return record

    # --- prediction ----------------------------------------------------------------------------
    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """The missing contrasts of one case, as volumes on the input grid in [0, 1] (0 outside T2's brain)."""
        shape = tuple(int(s) for s in batch["shape"])
        brain = torch.as_tensor(batch["brain"]).bool()
        present = set(batch["present"])
        volumes = {}
        for name in self.hparams.synthesise:
            if name in present:
                continue
            fake = (self.synthesise(batch["source"], name).cpu() + 1) / 2  # (Z, 1, S, S)
            native = F.interpolate(fake, size=shape[:2], mode="bilinear", align_corners=False)[:, 0].clamp(0, 1)
            vol = native.permute(1, 2, 0).contiguous() * brain.float()  # (X, Y, Z)
            volumes[name] = vol.numpy().astype(np.float32)
        return {"case": batch["case"], "case_dir": batch["case_dir"], "affine": np.asarray(batch["affine"]),
                "files": dict(batch["files"]), "volumes": volumes}

    def prediction_writer(self, run_dir: str | Path) -> Any:
        """``medlearn predict``: the missing contrasts of each case as NIfTI, in a BraTS case folder."""
        from medlearn.methods.mgan.predict import SynthesisWriter

        return SynthesisWriter(run_dir)

    # --- report --------------------------------------------------------------------------------
    def report_sections(self, run_dir: Path, stage: str) -> list[Section]:
        """Loss curves of every player (fit), sample grids and the quality table of the evaluated split."""
        sections: list[Section] = []
        if stage == "fit":
            curves = self.loss_curves(run_dir)
            if curves is not None:
                sections.append(curves)
        split = "val" if stage in ("fit", "validate") else stage
        s = self._samples
        if s is not None:
            rows = []
            for i in range(s["source"].shape[0]):
                row = {"T2 (input)": (s["source"][i] + 1) / 2, "tumour mask": s["mask"][i]}
                for c in self.hparams.synthesise:
                    nm = CONTRAST_NAMES.get(c, c)
                    row[f"{nm} synthesised"] = (s[f"fake_{c}"][i] + 1) / 2
                    row[f"{nm} real"] = (s[f"real_{c}"][i] + 1) / 2
                rows.append(row)
            png = sample_grid(rows, Path(run_dir) / "figures" / f"{split}_samples.png",
                              title=f"{split} slices with the most tumour: input, synthesised and real contrasts")
            sections.append(Section(f"Synthesised contrasts ({split})", "Each row: the T2 input, the whole-tumour "
                                    "mask, then per target contrast the synthesised slice next to the real one "
                                    "(all scaled to [0, 1]).", [png]))
        r = self.results.get(split)
        if r:
            regions = ("", "_brain", "_tumour")
            header = ["contrast", *[f"{m}{reg or ' (slice)'}" for reg in regions for m in SYNTHESIS_METRICS[:3]]]
            rows_t = [[CONTRAST_NAMES.get(c, c), *[r.get(f"{c}/{m}{reg}", float("nan")) for reg in regions
                                                   for m in SYNTHESIS_METRICS[:3]]] for c in self.hparams.synthesise]
            text = "PSNR (dB), SSIM and MAE on [0, 1]-scaled slices: whole slice, inside the brain, inside the tumour."
            if "dice" in r:
                text += (f" Independent evaluator's whole-tumour Dice on tumour slices: synthesised {r['dice']:.3f}"
                         + (f", T2 alone {r['dice_t2']:.3f}" if "dice_t2" in r else "") + ".")
            sections.append(Section(f"Synthesis quality ({split})", text, [], table=(header, rows_t)))
        return sections


class TumourEvaluator(MethodModule):
    """An independent conditional whole-tumour segmenter trained on *real* slices only.

    It reads any of ``contrasts`` (one-hot code) and is used to score synthesised slices (its Dice
    on a synthesised FLAIR vs on the real FLAIR vs on T2 alone): the spec's evaluator, kept apart
    from TC-MGAN's co-trained segmentor, which could learn to read the generator's artefacts.

    Args:
        contrasts: the contrasts it reads, in code order: the data's targets, then the source.
        conv_dim: width of :class:`~medlearn.methods.mgan.model.ConditionalSegmentor`.
        lr: Adam learning rate.
        image_size: slice side (for the example input).
    """

    @property
    def monitor(self) -> tuple[str, str]:
        """``best.ckpt`` on the validation Dice."""
        return ("val/dice", "max")

    def __init__(self, contrasts: Sequence[str] = ("flair", "t1ce", "t1", "t2"), conv_dim: int = 16,
                 lr: float = 1e-3, image_size: int | None = None) -> None:
        super().__init__()
        image_size = 128 if image_size is None else int(image_size)
        self.save_hyperparameters()
        self.net = ConditionalSegmentor(1, len(contrasts), conv_dim)
        self.example_input_array = (torch.zeros(2, 1, image_size, image_size), torch.eye(len(contrasts))[[0, 1]])

    def forward(self, image: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        """Tumour probabilities of ``image`` of the contrast ``code``."""
        return self.net(image, code)

    @staticmethod
    def _stack(batch: dict[str, Any]) -> torch.Tensor:
        return torch.cat([batch["targets"], batch["source"]], 1).float()  # data targets, then the source

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """Dice loss on one random real contrast per slice."""
        imgs = self._stack(batch)
        n = imgs.shape[1]
        if n != len(self.hparams.contrasts):
            raise ValueError(f"the data gives {n} contrasts, the evaluator reads {len(self.hparams.contrasts)}")
        k = torch.randint(n, (imgs.shape[0],), device=imgs.device)
        x = imgs.gather(1, k.view(-1, 1, 1, 1).expand(-1, 1, *imgs.shape[2:]))
        loss = soft_dice_loss(self(x, _one_hot(k, n)), batch["mask"])
        self.log("train/loss", loss.detach(), on_step=False, on_epoch=True, batch_size=x.shape[0])
        return loss

    def evaluation_step(self, batch: dict[str, Any], batch_idx: int, stage: str) -> None:
        """Dice per contrast on tumour-bearing slices."""
        acc: dict[str, list[np.ndarray]] = self.stage_state(stage, dict)
        imgs = self._stack(batch)
        t = batch["mask"].flatten(1).sum(1) > 0
        if not bool(t.any()):
            return
        n = imgs.shape[1]
        for k, c in enumerate(self.hparams.contrasts):
            code = _one_hot(torch.full((int(t.sum()),), k, device=imgs.device), n)
            d = dice_per_slice(self(imgs[t][:, k:k + 1], code), batch["mask"][t])
            acc.setdefault(c, []).append(d.cpu().numpy())

    def evaluation_end(self, stage: str) -> dict[str, Any] | None:
        """Mean Dice per contrast and over contrasts."""
        acc: dict[str, list[np.ndarray]] | None = self.pop_stage_state(stage)
        if not acc:
            return None
        rec = {f"dice_{c}": float(np.concatenate(v).mean()) for c, v in acc.items()}
        rec["dice"] = float(np.mean(list(rec.values())))
        return rec
