"""VideoGAN's training module: a CycleGAN on frame pairs of one video, X-shape generators, colour-histogram loss.

VideoGAN (Chen, Li, Ma, Zheng, "GANs for video-to-video domain adaptation", AAAI 2020,
arXiv:2004.08058), as the spec reads it (2.1-2.5; [B] = CycleGAN defaults, [I] = our reading):

``L_G = L_GAN(G_AB, D_B) + L_GAN(G_BA, D_A) + lambda_cyc (L_cyc^A + L_cyc^B) + lambda_idt lambda_cyc L_idt
+ lambda_hist L_hist``

- generators ``g_ab``, ``g_ba``: :class:`~medlearn.methods.videogan.model.XShapeGenerator` on two
  frames of one video (``generator="xshape"``); the cycle reconstructs the pair jointly. With
  ``xshape=False`` the crossing is removed (the "without X-shape" ablation); ``generator="resnet"``
  is the frame-wise CycleGAN baseline (:class:`~medlearn.nn.gan.ResNetGenerator`);
- discriminators ``d_a``, ``d_b``: 70x70 PatchGANs on single frames, least-squares GAN, loss
  x ``d_weight`` (0.5), fed from an :class:`~medlearn.engine.gan.ImagePool` of 50 [B];
- ``L_cyc``: L1, ``lambda_cyc`` 10 per direction; ``L_idt``: L1(G_AB(b), b) + L1(G_BA(a), a),
  weight ``lambda_idt`` x ``lambda_cyc`` (0.5 x 10) [B];
- ``L_hist``: :class:`~medlearn.losses.colour_histogram.ColourHistogramLoss` of every translated
  frame against the real frames of the target domain in the batch, endoscope borders masked out,
  both directions (``lambda_hist`` 1, 64 bins, EMD) [I]; ``lambda_hist=0`` is the "without
  histogram loss" ablation.

Every baseline of the spec is this module with other options: frame-wise CycleGAN
(``generator="resnet", lambda_hist=0``), without histogram loss (``lambda_hist=0``), without
X-shape (``xshape=False``); "no adaptation" needs no training (the recipe evaluates the identity).

Evaluation (validation and test; one test video per batch): every A video translated to B and
every B video to A (:meth:`VideoGAN.translate_clip`, pairing each frame with the video's middle
frame, ``inference_pairing="middle"``, or sliding pairs ``(t, t+1)`` averaged,
``"sliding"``), then per direction:

- ``w1_ab``: colour distance to the target domain, the per-channel 1-D Wasserstein distance between
  the pooled tissue pixels (border masked) of the translated videos and of the real target videos,
  on the [0, 1] scale, mean over R, G, B;
- ``flicker_ab``: temporal consistency, the mean over videos of ``mean_t |y_t - y_{t-1}| -
  mean_t |x_t - x_{t-1}|`` (0: the translation adds no frame-to-frame change);
- on phantoms (whose ``Reference/`` renders each frame in the other scope's style): ``psnr_ab`` to
  that ground truth, ``tdiff_ab`` = ``mean |Δy - Δy_GT|`` and ``drift_ab`` = the per-video s.d.
  over frames of the mean-colour offset to the ground truth;
- ``<reading>_identity_ab``: the same readings of the untranslated input ("no adaptation").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medlearn.engine.gan import GANModule, ImagePool, sample_grid
from medlearn.engine.module import ContractLoss
from medlearn.engine.report import Section
from medlearn.losses.colour_histogram import ColourHistogramLoss
from medlearn.methods.videogan.model import XShapeGenerator
from medlearn.nn.gan import PatchGAN, ResNetGenerator

__all__ = ["VideoGAN", "wasserstein_1d"]

GENERATORS = ("xshape", "resnet")
PAIRINGS = ("middle", "sliding")


def wasserstein_1d(u: np.ndarray, v: np.ndarray) -> float:
    """1-D Wasserstein distance of two samples (:func:`scipy.stats.wasserstein_distance`)."""
    from scipy.stats import wasserstein_distance

    return float(wasserstein_distance(u, v))


class VideoGAN(GANModule):
    """VideoGAN and its baselines (see the module docstring).

    Args:
        generator: ``"xshape"`` (VideoGAN) or ``"resnet"`` (frame-wise CycleGAN).
        xshape: fuse the two frames (``False``: the "without X-shape" ablation).
        image_size: frame side (for the example input).
        ngf: generator width.
        n_blocks: residual blocks (CycleGAN: 6 at <= 128 px, 9 at 256 px).
        g_norm: generator normalisation.
        d_channels: discriminator width.
        d_layers: PatchGAN layers (3: 70x70).
        d_norm: discriminator normalisation (CycleGAN: instance).
        gan_loss: ``"lsgan"`` (CycleGAN), ``"vanilla"`` or ``"wgan"``.
        d_weight: discriminator loss factor (CycleGAN 0.5).
        lambda_cyc: cycle weight per direction.
        lambda_idt: identity weight as a fraction of ``lambda_cyc`` (0: off).
        lambda_hist: colour-histogram weight (0: the ablation).
        hist_bins: histogram bins.
        hist_distance: ``"emd"``, ``"l1"``, ``"l2"``, ``"chi2"``.
        hist_reference: ``"frame"`` or ``"batch"``.
        pool_size: image pool size for the discriminators (0: none).
        inference_pairing: ``"middle"`` or ``"sliding"``.
        predict_direction: what ``medlearn predict`` applies: ``"ab"`` (G_AB) or ``"ba"`` (G_BA).
        lr: Adam learning rate.
        betas: Adam betas.
        schedule: learning-rate schedule (CycleGAN: ``"linear"``, constant then linearly to 0).
        milestones: ``"linear"``: ``[n]``, the end of the constant part (CycleGAN: 100 of 200 epochs).
        n_samples: sample rows in the report.
    """

    #: ``precision: auto`` keeps fp32: under bf16 autocast the demo's VideoGAN translations lost 1.99 dB
    #: PSNR B->A (22.57 -> 20.58; the reproduction's seed sd is 0.4-0.9 dB) and the downstream Dice
    #: fell (0.185 -> 0.058 A->B), while the frame-wise CycleGAN arm held; ``docs/benchmarks.md``,
    #: "Precision".
    bf16_autocast = False

    @property
    def monitor(self) -> tuple[str, str]:
        """The colour distance of A -> B translations to domain B, lower is better."""
        return ("val/w1_ab", "min")

    def __init__(self, generator: str = "xshape", xshape: bool = True, image_size: int = 256, ngf: int = 64,
                 n_blocks: int = 9, g_norm: str = "instance", d_channels: int = 64, d_layers: int = 3,
                 d_norm: str = "instance", gan_loss: str = "lsgan", d_weight: float = 0.5, lambda_cyc: float = 10.0,
                 lambda_idt: float = 0.5, lambda_hist: float = 1.0, hist_bins: int = 64, hist_distance: str = "emd",
                 hist_reference: str = "frame", pool_size: int = 50, inference_pairing: str = "middle",
                 predict_direction: str = "ab",
                 lr: float = 2e-4, betas: tuple[float, float] = (0.5, 0.999), schedule: str = "constant",
                 milestones: list[int] | None = None, n_samples: int = 3) -> None:
        super().__init__()
        if generator not in GENERATORS:
            raise ValueError(f"generator must be one of {GENERATORS}, got {generator!r}")
        if predict_direction not in ("ab", "ba"):
            raise ValueError(f"predict_direction must be 'ab' or 'ba', got {predict_direction!r}")
        if inference_pairing not in PAIRINGS:
            raise ValueError(f"inference_pairing must be one of {PAIRINGS}, got {inference_pairing!r}")
        self.save_hyperparameters()
        self.g_ab, self.g_ba = (self._generator() for _ in range(2))
        self.d_a, self.d_b = (PatchGAN(2, 3, d_channels, d_layers, d_norm) for _ in range(2))
        self.pool_a, self.pool_b = ImagePool(pool_size), ImagePool(pool_size)
        self.hist = ColourHistogramLoss(hist_bins, distance=hist_distance, reference=hist_reference)
        self.example_input_array: Any = (torch.zeros(2, 3, image_size, image_size),
                                         torch.zeros(2, 3, image_size, image_size))
        self._samples: list[dict[str, torch.Tensor]] = []

    def _generator(self) -> torch.nn.Module:
        h = self.hparams
        if h.generator == "resnet":
            return ResNetGenerator(2, 3, 3, h.ngf, h.n_blocks, h.g_norm)
        return XShapeGenerator(3, 3, h.ngf, h.n_blocks, h.g_norm, h.xshape)

    def players(self) -> dict[str, list[str]]:
        """Both generators in one optimiser, both discriminators in another (CycleGAN)."""
        return {"generator": ["g_ab", "g_ba"], "discriminator": ["d_a", "d_b"]}

    def pair(self, g: torch.nn.Module, x_i: torch.Tensor, x_j: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Translate two frames of one video with ``g`` (frame by frame for the ResNet baseline)."""
        if isinstance(g, XShapeGenerator):
            return g(x_i, x_j)
        y = g(torch.cat([x_i, x_j]))
        return y[: x_i.shape[0]], y[x_i.shape[0]:]

    def forward(self, x_i: torch.Tensor, x_j: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A -> B translation of a pair of frames in [-1, 1]."""
        return self.pair(self.g_ab, x_i, x_j)

    # --- losses --------------------------------------------------------------------------------
    def _fakes(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        a_i, a_j, b_i, b_j = (batch[k].float() for k in ("a_i", "a_j", "b_i", "b_j"))
        fb_i, fb_j = self.pair(self.g_ab, a_i, a_j)
        fa_i, fa_j = self.pair(self.g_ba, b_i, b_j)
        return {"fake_b": torch.cat([fb_i, fb_j]), "fake_a": torch.cat([fa_i, fa_j]),
                "real_a": torch.cat([a_i, a_j]), "real_b": torch.cat([b_i, b_j]),
                "border_a": torch.cat([batch["border_a_i"], batch["border_a_j"]]).float(),
                "border_b": torch.cat([batch["border_b_i"], batch["border_b_j"]]).float()}

    def _g_loss(self, f: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        h = self.hparams
        n = f["real_a"].shape[0] // 2
        rec_a = torch.cat(self.pair(self.g_ba, f["fake_b"][:n], f["fake_b"][n:]))
        rec_b = torch.cat(self.pair(self.g_ab, f["fake_a"][:n], f["fake_a"][n:]))
        adv = self.adversarial.generator
        parts = {"adv": adv(self.d_b(f["fake_b"])) + adv(self.d_a(f["fake_a"])),
                 "cyc": F.l1_loss(rec_a, f["real_a"]) + F.l1_loss(rec_b, f["real_b"])}
        loss = parts["adv"] + h.lambda_cyc * parts["cyc"]
        if h.lambda_idt:
            ia = torch.cat(self.pair(self.g_ba, f["real_a"][:n], f["real_a"][n:]))
            ib = torch.cat(self.pair(self.g_ab, f["real_b"][:n], f["real_b"][n:]))
            parts["idt"] = F.l1_loss(ia, f["real_a"]) + F.l1_loss(ib, f["real_b"])
            loss = loss + h.lambda_idt * h.lambda_cyc * parts["idt"]
        if h.lambda_hist:
            # each translated frame against a real target frame of the batch (border masked); the A frame
            # and its fake keep the A frame's border
            parts["hist"] = (self.hist(f["fake_b"], f["real_b"], f["border_a"], f["border_b"])
                             + self.hist(f["fake_a"], f["real_a"], f["border_b"], f["border_a"]))
            loss = loss + h.lambda_hist * parts["hist"]
        return loss, parts

    def _d_loss(self, f: dict[str, torch.Tensor], pooled: bool = True
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        fb = self.pool_b.query(f["fake_b"]) if pooled else f["fake_b"].detach()
        fa = self.pool_a.query(f["fake_a"]) if pooled else f["fake_a"].detach()
        parts = {"d_b": self.adversarial.discriminator(self.d_b(f["real_b"]), self.d_b(fb)),
                 "d_a": self.adversarial.discriminator(self.d_a(f["real_a"]), self.d_a(fa))}
        return self.hparams.d_weight * (parts["d_a"] + parts["d_b"]), parts

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        """CycleGAN's order: the generators (discriminators frozen), then the discriminators on pooled fakes."""
        f = self._fakes(batch)
        bs = batch["a_i"].shape[0]
        if self.generator_turn():
            self.set_requires_grad([self.d_a, self.d_b], False)
            g_loss, g_parts = self._g_loss(f)
            self.step_player("generator", g_loss, g_parts, bs)
            self.set_requires_grad([self.d_a, self.d_b], True)
        d_loss, d_parts = self._d_loss(f)
        self.step_player("discriminator", d_loss, d_parts, bs)
        self.finish_batch()

    def contract_step(self, batch: dict[str, torch.Tensor]) -> list[ContractLoss]:
        """Generator and discriminator losses of one batch, without steps."""
        f = self._fakes(batch)
        g_loss, _ = self._g_loss(f)
        d_loss, _ = self._d_loss(f, pooled=False)
        gens = list(self.g_ab.named_parameters()) + list(self.g_ba.named_parameters())
        discs = list(self.d_a.named_parameters()) + list(self.d_b.named_parameters())
        return [ContractLoss("generator", g_loss, gens), ContractLoss("discriminator", d_loss, discs)]

    # --- video translation -------------------------------------------------------------------------
    @torch.no_grad()
    def translate_clip(self, frames: torch.Tensor, direction: str = "ab") -> torch.Tensor:
        """Translate a whole video ``(T, 3, H, W)`` in [-1, 1] (``direction`` ``"ab"`` or ``"ba"``).

        X-shape pairing (``inference_pairing``): ``"middle"`` pairs frame ``t`` with the middle
        frame ``r = T // 2`` (and ``r`` with ``r - 1`` or ``r + 1``, never itself); ``"sliding"``
        translates the pairs ``(t, t + 1)`` and averages the two outputs of inner frames. A
        one-frame video is paired with itself. The frame-wise baseline translates each frame alone.
        """
        g = self.g_ab if direction == "ab" else self.g_ba
        x = frames.to(self.device, torch.float32)
        t = x.shape[0]
        if not isinstance(g, XShapeGenerator):
            return torch.cat([g(x[i:i + 16]) for i in range(0, t, 16)])
        if t == 1:
            return g(x, x)[0]
        if self.hparams.inference_pairing == "middle":
            r = t // 2
            partner = torch.full((t,), r, dtype=torch.long)
            partner[r] = r - 1 if r > 0 else r + 1
            return torch.cat([g(x[i:i + 16], x[partner[i:i + 16]])[0] for i in range(0, t, 16)])
        out = torch.zeros_like(x)
        count = torch.zeros(t, 1, 1, 1, device=x.device)
        y_i, y_j = g(x[:-1], x[1:])
        out[:-1] += y_i
        out[1:] += y_j
        count[:-1] += 1
        count[1:] += 1
        return out / count

    # --- evaluation ----------------------------------------------------------------------------
    def evaluation_step(self, batch: dict[str, Any], batch_idx: int, stage: str) -> None:
        """Translate the batch's A test video to B and its B video to A; keep what the metrics need."""
        state = self.stage_state(stage, lambda: {"ab": [], "ba": [], "real": {"a": [], "b": []}})
        for src, direction in (("a", "ab"), ("b", "ba")):
            x = batch[f"frames_{src}"][0].float()
            if x.numel() == 0:
                continue
            border = batch[f"border_{src}"][0].float().cpu()
            ref = batch[f"reference_{src}"][0].float().cpu()
            y = self.translate_clip(x, direction).cpu()
            state["real"][src].append((x.cpu(), border))
            state[direction].append((x.cpu(), y, border, ref if ref.numel() else None))
            if stage == "test" and src == "a" and len(self._samples) < self.hparams.n_samples:
                k = x.shape[0] // 2
                row = {"A (input)": (x[k].cpu() + 1) / 2, "A -> B": (y[k] + 1) / 2}
                if ref.numel():
                    row["B-style truth"] = (ref[k] + 1) / 2
                self._samples.append(row)

    @staticmethod
    def _pixels(items: list[tuple[torch.Tensor, torch.Tensor]]) -> np.ndarray:
        """Tissue pixels ``(N, 3)`` on [0, 1] of frames with their border masks."""
        out = [((f + 1) / 2).permute(0, 2, 3, 1)[m[:, 0] > 0.5] for f, m in items]
        return torch.cat(out).numpy() if out else np.zeros((0, 3))

    def evaluation_end(self, stage: str) -> dict[str, Any] | None:
        """Colour distance, flicker and (phantoms) PSNR / tdiff / drift per direction."""
        state = self.pop_stage_state(stage)
        if state is None:
            return None
        record: dict[str, Any] = {}
        for direction, target in (("ab", "b"), ("ba", "a")):
            clips = state[direction]
            real = self._pixels(state["real"][target])
            if not clips or not len(real):
                continue
            fake = self._pixels([(y, m) for _, y, m, _ in clips])
            src = self._pixels([(x, m) for x, _, m, _ in clips])
            record[f"w1_{direction}"] = float(np.mean([wasserstein_1d(fake[:, c], real[:, c]) for c in range(3)]))
            record[f"w1_identity_{direction}"] = float(np.mean([wasserstein_1d(src[:, c], real[:, c])
                                                                for c in range(3)]))
            for tag, pick in (("", 1), ("_identity", 0)):  # the translation, and no adaptation (the input)
                flick, psnr, tdiff, drift = [], [], [], []
                for clip in clips:
                    x, y, ref = clip[0], clip[pick], clip[3]
                    if x.shape[0] > 1 and not tag:
                        dy, dx = (y[1:] - y[:-1]).abs().mean() / 2, (x[1:] - x[:-1]).abs().mean() / 2
                        flick.append(float(dy - dx))
                    if ref is not None:
                        y01, r01 = (y + 1) / 2, (ref + 1) / 2
                        mse = ((y01 - r01) ** 2).mean(dim=(1, 2, 3)).clamp_min(1e-10)
                        psnr.append(float((10 * torch.log10(1 / mse)).mean()))
                        if x.shape[0] > 1:
                            tdiff.append(float(((y01[1:] - y01[:-1]) - (r01[1:] - r01[:-1])).abs().mean()))
                        offset = (y01 - r01).mean(dim=(2, 3))  # (T, 3) mean-colour offset per frame
                        drift.append(float(offset.std(0, unbiased=False).mean()))
                for key, vals in (("flicker", flick), ("psnr", psnr), ("tdiff", tdiff), ("drift", drift)):
                    if vals:
                        record[f"{key}{tag}_{direction}"] = float(np.mean(vals))
        return record

    # --- prediction ----------------------------------------------------------------------------
    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """One whole video translated by ``predict_direction``, resized back to its stored size, in [0, 1]."""
        y = self.translate_clip(batch["frames"][0], self.hparams.predict_direction)
        h, w = int(batch["height"][0]), int(batch["width"][0])
        y = F.interpolate((y + 1) / 2, size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1).cpu()
        return {"frames": y, "video": batch["video"][0], "fps": float(batch["fps"][0]),
                "container": bool(batch["container"][0]), "source": batch["source"][0],
                "names": str(batch["names"][0]).split("\n")}

    def prediction_writer(self, run_dir: str | Path) -> Any:
        """``medlearn predict``: translated videos (mp4) or frames, at the input's size, count and rate."""
        from medlearn.methods.videogan.predict import VideoWriter

        return VideoWriter(run_dir)

    # --- report --------------------------------------------------------------------------------
    def report_sections(self, run_dir: Path, stage: str) -> list[Section]:
        """Loss curves of both players (fit) and A -> B samples (test)."""
        sections: list[Section] = []
        if stage == "fit":
            curves = self.loss_curves(run_dir)
            if curves is not None:
                sections.append(curves)
        if stage == "test" and self._samples:
            png = sample_grid(self._samples, Path(run_dir) / "figures" / "translations.png",
                              "Middle frame of test videos: scope A, translated to B, B-style truth")
            sections.append(Section("Translations", "Scope-A test frames, their A -> B translation and, on "
                                    "phantoms, the same frame rendered in scope B's style.", [png]))
            self._samples = []
        return sections
