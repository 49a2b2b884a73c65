"""The cross-denoising network as a MethodModule: two peer segmenters, every baseline a switch of it.

Zhang, Liu, Ma, Zhuo, Zheng, "Cross-denoising Network against Corrupted Labels in Medical Image
Segmentation with Domain Shift", IJCAI-PRICAI 2020, arXiv:2006.10990. Two segmenters with the same
architecture, independent initialisation and independent optimisers see the same stream of
batches (a labelled source batch with possibly corrupted masks + an unlabelled target batch,
:class:`~medlearn.data.two_domain.TwoDomainDataModule`). Per batch (losses in
:mod:`medlearn.methods.cross_denoise.losses`):

1. **peer review**: each network is updated on the source images (or pixels) with the smallest
   loss under its *peer*, ``keep(t) = round(n (1 - tau(t)))``, ``tau`` ramped to ``tau_max``
   over ``t_k`` epochs;
2. on those, the **noise-tolerant loss** (Dice + cross-entropy over the pixels not flagged as a
   label / prediction discrepancy) instead of the plain CE + Dice;
3. from epoch ``pl_start_epoch``, **class-balanced cross pseudo-labels** on the target batch: each
   network's most confident pixels per class (a fraction ramped ``pl_p_start -> pl_p_end``)
   supervise the other, weight ``lambda_u``.

The baselines are the same module with parts switched off (``arm``, :data:`ARMS`; or the
booleans, which override it): ``single`` (one network, plain loss: source only), ``indep`` (two
independent networks), ``coteach`` (selection only, plain loss: Co-teaching for segmentation),
``cdn_no_nt`` (selection + pseudo-labels), ``cdn_no_pl`` (selection + noise-tolerant loss),
``cdn`` (all three), ``pl_only`` (two networks + cross pseudo-labels, no denoising; the ablation
the spec's pilot pointed at).

Evaluation scores, per domain (the batch's ``role``: clean source test / target test), network
A, network B, their mean and the softmax ensemble A+B: optic disc and cup Dice and the vertical
cup-to-disc ratio error. The headline (``eval_output``, default ``"mean"``: the expected quality
of one CDN network, the fair comparison with one single network; the ensemble is reported beside
it and compared with the two independent networks' ensemble) is logged as
``{stage}/{role}_{metric}``; every output as ``{stage}/{role}/{output}/{metric}``.
``medlearn predict`` writes masks in the REFUGE encoding and overlays
(:class:`~medlearn.methods.cross_denoise.predict.FundusMaskWriter`) from ``predict_output``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medlearn.engine.module import ContractLoss, MethodModule, OptimizerPlan, ParamGroup
from medlearn.engine.report import Section, save_figure
from medlearn.methods.cross_denoise import losses as L
from medlearn.methods.cross_denoise.model import build_segmenter, input_multiple
from medlearn.metrics.fundus import VerticalCDRError
from medlearn.metrics.segmentation import OPTIC_DISC_CUP, SegmentationMetrics, classes_to_labels, labels_to_classes

__all__ = ["CrossDenoise", "ARMS", "ARM_LABELS"]

#: arm -> (two_networks, selection, noise_tolerant, pseudo_labels)
ARMS: dict[str, tuple[bool, str, bool, bool]] = {
    "single": (False, "none", False, False),
    "indep": (True, "none", False, False),
    "coteach": (True, "image", False, False),
    "cdn_no_nt": (True, "image", False, True),
    "cdn_no_pl": (True, "image", True, False),
    "cdn": (True, "image", True, True),
    "pl_only": (True, "none", False, True),
}
ARM_LABELS: dict[str, str] = {
    "single": "single network (source only)", "indep": "two independent networks",
    "coteach": "selection only (co-teaching)", "cdn_no_nt": "CDN without the noise-tolerant loss",
    "cdn_no_pl": "CDN without pseudo-labels", "cdn": "CDN (full)",
    "pl_only": "cross pseudo-labels only (no denoising)",
}
SELECTIONS = ("none", "image", "pixel")
NT_FILTERS = ("truncate", "peer", "both")
OUTPUTS = ("a", "b", "ens")
METRIC_KEYS = ("dice_disc", "dice_cup", "vcdr_err")


class CrossDenoise(MethodModule):
    """Two peer segmenters against corrupted source labels under domain shift (see the module docstring).

    Args:
        arm: ``single``, ``indep``, ``coteach``, ``cdn_no_nt``, ``cdn_no_pl``, ``cdn`` or ``pl_only``
            (:data:`ARMS`); the four switches below override it when set.
        two_networks: train two peers (``False``: network A alone).
        selection: ``"none"``, ``"image"`` (peer small-loss images) or ``"pixel"`` (per image, the
            peer's small-loss pixels).
        noise_tolerant: the noise-tolerant loss on the selected images (else CE + Dice).
        pseudo_labels: class-balanced cross pseudo-labels on the target batch.
        backbone: ``"unet"`` (MONAI U-Net, ``widths``) or a factory encoder (``resnet34`` ...).
        widths: U-Net channels per level.
        num_res_units: U-Net residual units per block.
        in_channels: image channels.
        num_classes: 3 (background, rim, cup).
        label_values: stored label values of the classes (0, 1, 2).
        image_size: input side (for the example input; the data's ``image_size``).
        input_norm: ``"zscore"`` (per image and channel, the spec's recipe) or ``"none"``.
        flip_prob: probability of a horizontal flip of each source and target image.
        tau_max: largest forget rate (the spec: the estimated corrupted fraction, or half of it).
        t_k: epochs of the ``tau`` ramp (and the default pseudo-label start).
        nt_filter: ``"truncate"`` (top-``nt_q`` own cross-entropy, label-free), ``"peer"`` (the peer
            predicts another class with confidence > ``nt_delta``) or ``"both"``.
        nt_q: truncated fraction of each image's pixels.
        nt_delta: peer confidence that flags a pixel.
        boundary_sigma: key-location weighting width in pixels (``None``: off).
        pl_start_epoch: first epoch with pseudo-labels (``None``: ``t_k``).
        pl_p_start: kept fraction per class at the start.
        pl_p_end: kept fraction per class at the last epoch.
        lambda_u: weight of the pseudo-label loss.
        eval_output: headline output: ``"mean"`` (of A and B), ``"a"`` or ``"ens"``.
        predict_output: what ``medlearn predict`` writes: ``"ens"``, ``"a"`` or ``"b"``.
        optimizer: ``"adam"``, ``"adamw"`` or ``"sgd"`` (one per network, same settings).
        lr: learning rate.
        weight_decay: weight decay.
        schedule: ``"cosine"``, ``"step"`` or ``"constant"`` (epoch-stepped).
        monitor_metric: metric that selects ``best.ckpt`` (e.g. ``"val/source_dice_mean"``); ``None``
            (default): the last checkpoint is tested (no model selection on noisy labels, never on
            the target test set).
        overlay_max_side: longest side of the prediction overlays.

    Raises:
        ValueError: an unknown arm or option, or a peer part (selection, pseudo-labels, the peer
            filter) without two networks.
    """

    #: ``precision: auto`` keeps fp32: the reproduction under bf16 autocast (same seeds, one thread)
    #: lost 0.085 target disc Dice on one seed of five in both arms that truncate the top-``q``
    #: cross-entropy pixels (CDN 0.746 vs 0.831, CDN without pseudo-labels 0.718 vs 0.770), and an
    #: fp32 rerun gave the fp32 table back (0.831); the other arms and seeds held. Our reading: with
    #: bf16 logits many pixels share one cross-entropy value, and which of them the truncation drops
    #: is then decided by the tie order. bf16 brought no speed at this scale (20 vs 21 s per run).
    bf16_autocast = False

    def __init__(
        self,
        arm: str = "cdn",
        two_networks: bool | None = None,
        selection: str | None = None,
        noise_tolerant: bool | None = None,
        pseudo_labels: bool | None = None,
        backbone: str = "unet",
        widths: tuple[int, ...] = (8, 16, 32),
        num_res_units: int = 1,
        in_channels: int = 3,
        num_classes: int = 3,
        label_values: list[int] | None = None,
        image_size: int | list[int] = 48,
        input_norm: str = "zscore",
        flip_prob: float = 0.5,
        tau_max: float = 0.25,
        t_k: int = 10,
        nt_filter: str = "truncate",
        nt_q: float = 0.1,
        nt_delta: float = 0.9,
        boundary_sigma: float | None = None,
        pl_start_epoch: int | None = None,
        pl_p_start: float = 0.2,
        pl_p_end: float = 0.5,
        lambda_u: float = 0.5,
        eval_output: str = "mean",
        predict_output: str = "ens",
        optimizer: str = "adam",
        lr: float = 2e-3,
        weight_decay: float = 1e-4,
        schedule: str = "cosine",
        monitor_metric: str | None = None,
        overlay_max_side: int = 1024,
    ) -> None:
        super().__init__()
        if arm not in ARMS:
            raise ValueError(f"arm must be one of {sorted(ARMS)}, got {arm!r}")
        two, sel, nt, pl = ARMS[arm]
        two = two if two_networks is None else bool(two_networks)
        sel = sel if selection is None else selection
        nt = nt if noise_tolerant is None else bool(noise_tolerant)
        pl = pl if pseudo_labels is None else bool(pseudo_labels)
        if sel not in SELECTIONS:
            raise ValueError(f"selection must be one of {SELECTIONS}, got {sel!r}")
        if nt_filter not in NT_FILTERS:
            raise ValueError(f"nt_filter must be one of {NT_FILTERS}, got {nt_filter!r}")
        if not two and (sel != "none" or pl or (nt and nt_filter != "truncate")):
            raise ValueError("peer selection, cross pseudo-labels and the peer filter need two_networks")
        if input_norm not in ("zscore", "none"):
            raise ValueError(f"input_norm must be 'zscore' or 'none', got {input_norm!r}")
        if eval_output not in ("mean", "a", "ens") or predict_output not in OUTPUTS:
            raise ValueError(f"eval_output must be mean|a|ens and predict_output a|b|ens, got {eval_output!r}, "
                             f"{predict_output!r}")
        if not 0.0 <= tau_max < 1.0 or not 0.0 <= nt_q < 1.0:
            raise ValueError(f"tau_max and nt_q must be in [0, 1), got {tau_max}, {nt_q}")
        self.save_hyperparameters()
        self.two, self.selection, self.nt, self.pl = two, sel, nt, pl
        self.label_values = [int(v) for v in (label_values or [0, 1, 2])]
        if len(self.label_values) != num_classes:
            raise ValueError(f"{len(self.label_values)} label_values for num_classes={num_classes}")
        self.automatic_optimization = False
        self.net_a = build_segmenter(backbone, in_channels, num_classes, widths, num_res_units)
        self.net_b = build_segmenter(backbone, in_channels, num_classes, widths, num_res_units) if two else None
        side = image_size if isinstance(image_size, int) else int(image_size[0])
        mult = input_multiple(self.net_a, widths)
        side = max(mult, side // mult * mult)
        self.example_input_array = torch.zeros(1, in_channels, side, side)
        self.history: list[dict[str, float]] = []
        self._epoch_stats: dict[str, float] = {}
        self._examples: dict[str, dict[str, Any]] = {}

    # --- the networks ---

    @property
    def monitor(self) -> tuple[str, str] | None:
        """``(monitor_metric, "max" or "min")``, or ``None`` (test the last checkpoint)."""
        m = self.hparams.monitor_metric
        return None if m is None else (m, "min" if m.endswith("vcdr_err") else "max")

    @property
    def nets(self) -> dict[str, torch.nn.Module]:
        """``{"a": net_a[, "b": net_b]}``."""
        return {"a": self.net_a} if self.net_b is None else {"a": self.net_a, "b": self.net_b}

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """The network input: per-image, per-channel z-scores (``input_norm="zscore"``) of ``x`` in [0, 1]."""
        x = x.float()
        if self.hparams.input_norm == "none":
            return x
        mean = x.mean(dim=(2, 3), keepdim=True)
        std = x.std(dim=(2, 3), keepdim=True).clamp(min=1e-6)
        return (x - mean) / std

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Logits of each network ``(B, C, H, W)`` on normalised images ``x``: ``(A,)`` or ``(A, B)``."""
        return tuple(net(x) for net in self.nets.values())

    def optimizer_plans(self) -> list[OptimizerPlan]:
        """One optimiser per network (``net_a``, ``net_b``), same settings, independent states."""
        spec = self.optim_spec()
        return [OptimizerPlan(f"net_{k}", [ParamGroup(list(net.parameters()), name=f"net_{k}")], spec)
                for k, net in self.nets.items()]

    # --- schedules ---

    def _max_epochs(self) -> int:
        t = self._trainer
        return int(t.max_epochs) if t is not None and t.max_epochs is not None and t.max_epochs > 0 else 1

    def tau(self, epoch: float | None = None) -> float:
        """Forget rate of ``epoch`` (default: the current one); 0 without selection."""
        if self.selection == "none":
            return 0.0
        e = self.current_epoch if epoch is None else epoch
        return L.tau_schedule(e, self.hparams.tau_max, self.hparams.t_k)

    def pl_start(self) -> int:
        """First epoch with pseudo-labels."""
        s = self.hparams.pl_start_epoch
        return int(self.hparams.t_k if s is None else s)

    def pl_fraction(self, epoch: float | None = None) -> float:
        """Kept fraction per class of ``epoch``; 0 before :meth:`pl_start` or without pseudo-labels."""
        e = self.current_epoch if epoch is None else epoch
        if not self.pl or e < self.pl_start():
            return 0.0
        h = self.hparams
        return L.ramp(e, self.pl_start(), self._max_epochs() - 1, h.pl_p_start, h.pl_p_end)

    # --- training ---

    def _flip(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        p = self.hparams.flip_prob
        if p <= 0:
            return tensors
        f = (torch.rand(tensors[0].shape[0], device=tensors[0].device) < p).view(-1, 1, 1, 1)
        return tuple(torch.where(f if t.ndim == 4 else f[:, :, :, 0], t.flip(-1), t) for t in tensors)

    def _supervised(self, logits: torch.Tensor, peer_logits: torch.Tensor | None, y: torch.Tensor,
                    tau: float) -> tuple[torch.Tensor, torch.Tensor]:
        """One network's source loss and the boolean mask of the images it trained on."""
        h = self.hparams
        n = y.shape[0]
        chosen = torch.ones(n, dtype=torch.bool, device=y.device)
        pixel_keep = y >= 0
        if peer_logits is not None and self.selection == "image" and tau > 0:
            peer_loss = L.per_image_loss(peer_logits.detach(), y)
            chosen = torch.zeros_like(chosen)
            chosen[L.small_loss_indices(peer_loss, L.keep_count(n, tau))] = True
        elif peer_logits is not None and self.selection == "pixel" and tau > 0:
            peer_ce = torch.nn.functional.cross_entropy(peer_logits.detach().float(), y.clamp(min=0), reduction="none")
            pixel_keep = L.pixel_keep_mask(peer_ce, tau, y >= 0)
        idx = torch.nonzero(chosen).squeeze(1)
        lg, yy, keep = logits[idx], y[idx], pixel_keep[idx]
        if self.nt:
            if h.nt_filter in ("truncate", "both"):
                ce = torch.nn.functional.cross_entropy(lg.detach().float(), yy.clamp(min=0), reduction="none")
                keep = keep & L.truncation_keep_mask(ce, h.nt_q, keep)
            if h.nt_filter in ("peer", "both") and peer_logits is not None:
                keep = keep & L.peer_agreement_mask(peer_logits[idx], yy, h.nt_delta)
            w = L.boundary_weights(yy, h.boundary_sigma) if h.boundary_sigma else None
            loss = L.noise_tolerant_loss(lg, yy, keep, w).mean()
        elif self.selection == "pixel":
            loss = L.noise_tolerant_loss(lg, yy, keep).mean()  # Dice + CE over the peer-selected pixels
        else:
            loss = L.per_image_loss(lg, yy).mean()
        return loss, chosen

    def training_losses(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Every network's loss on one batch (no optimiser step), with diagnostics under ``"_..."`` keys."""
        src = batch["source"] if "source" in batch else batch
        x = src["image"].float()
        y = labels_to_classes(src["seg"] if src["seg"].ndim == 4 else src["seg"][:, None], self.label_values)
        x, y = self._flip(x, y)
        y = y[:, 0]
        xs = self.normalize(x)
        logits = {k: net(xs) for k, net in self.nets.items()}
        tau = self.tau()
        out: dict[str, torch.Tensor] = {}
        chosen: dict[str, torch.Tensor] = {}
        for k in logits:
            peer = logits.get("b" if k == "a" else "a")
            out[k], chosen[k] = self._supervised(logits[k], peer, y, tau)
        p = self.pl_fraction()
        if self.pl and p > 0 and "target" in batch:
            (xt,) = self._flip(batch["target"]["image"].float())
            xt = self.normalize(xt)
            t_logits = {k: net(xt) for k, net in self.nets.items()}
            labels = {k: L.class_balanced_pseudo_labels(t_logits[k].detach().softmax(1), p) for k in t_logits}
            for k in t_logits:
                peer = "b" if k == "a" else "a"
                out[k] = out[k] + self.hparams.lambda_u * L.pseudo_label_loss(t_logits[k], labels[peer])
            out["_pl_frac"] = torch.stack([(v >= 0).float().mean() for v in labels.values()]).mean()
        out["_tau"] = torch.tensor(tau)
        out["_pl_p"] = torch.tensor(p)
        if "noisy" in src and self.selection == "image":
            noisy = torch.as_tensor(src["noisy"]).to(y.device)
            for k, c in chosen.items():
                known = noisy >= 0
                out[f"_drop_{k}"] = (~c & known).sum().float()
                out[f"_drop_noisy_{k}"] = (~c & known & (noisy == 1)).sum().float()
                out[f"_noisy_{k}"] = (known & (noisy == 1)).sum().float()
        return out

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        """Both networks' losses, then one step of each network's own optimiser."""
        out = self.training_losses(batch)
        n = int((batch["source"] if "source" in batch else batch)["image"].shape[0])
        for k in self.nets:
            self.manual_step(f"net_{k}", out[k])
            self.log(f"train/loss_{k}", out[k].detach(), on_step=False, on_epoch=True, batch_size=n)
        self.log("train/tau", float(out["_tau"]), on_step=False, on_epoch=True, batch_size=n)
        if self.pl:
            self.log("train/pl_p", float(out["_pl_p"]), on_step=False, on_epoch=True, batch_size=n)
        if "_pl_frac" in out:
            self.log("train/pl_pixels", float(out["_pl_frac"]), on_step=False, on_epoch=True, batch_size=n)
        for key, v in out.items():
            if key.startswith(("_drop", "_noisy")):
                self._epoch_stats[key] = self._epoch_stats.get(key, 0.0) + float(v)

    def on_train_epoch_end(self) -> None:
        """Step the schedules; log how well the peer selection caught the corrupted masks this epoch."""
        super().on_train_epoch_end()
        s, self._epoch_stats = self._epoch_stats, {}
        row: dict[str, float] = {"epoch": float(self.current_epoch), "tau": self.tau(), "pl_p": self.pl_fraction()}
        dropped = sum(s.get(f"_drop_{k}", 0.0) for k in self.nets)
        if dropped > 0:
            hit = sum(s.get(f"_drop_noisy_{k}", 0.0) for k in self.nets)
            noisy = sum(s.get(f"_noisy_{k}", 0.0) for k in self.nets)
            row["drop_precision"] = hit / dropped
            row["drop_recall"] = hit / noisy if noisy else float("nan")
            self.log("train/drop_precision", row["drop_precision"])
            if noisy:
                self.log("train/drop_recall", row["drop_recall"])
        self.history.append(row)

    def contract_step(self, batch: Any) -> list[ContractLoss]:
        """Each network's loss with that network's parameters (the contract test)."""
        out = self.training_losses(batch)
        return [ContractLoss(f"net_{k}", out[k], list(net.named_parameters())) for k, net in self.nets.items()]

    # --- evaluation ---

    def _outputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Class probabilities of each output: ``a`` (, ``b``, ``ens``)."""
        probs = {k: net(x).float().softmax(1) for k, net in self.nets.items()}
        if "b" in probs:
            probs["ens"] = (probs["a"] + probs["b"]) / 2
        return probs

    def evaluation_step(self, batch: Mapping[str, Any], batch_idx: int, stage: str) -> None:
        """Per role (source / target) and output: Dice of disc and cup, vCDR error."""
        x = self.normalize(batch["image"])
        seg = batch["seg"] if batch["seg"].ndim == 4 else batch["seg"][:, None]
        true = classes_to_labels(labels_to_classes(seg, self.label_values), self.label_values)
        preds = {k: classes_to_labels(p.argmax(1, keepdim=True), self.label_values)
                 for k, p in self._outputs(x).items()}
        roles = list(batch.get("role") or ["all"] * x.shape[0])
        state = self.stage_state(stage, lambda: {"metrics": {}, "shown": set()})
        show = "ens" if "ens" in preds else "a"
        for role in dict.fromkeys(roles):
            idx = torch.tensor([i for i, r in enumerate(roles) if r == role], device=x.device)
            for out, pred in preds.items():
                if (role, out) not in state["metrics"]:
                    state["metrics"][(role, out)] = (SegmentationMetrics(OPTIC_DISC_CUP), VerticalCDRError())
                dice, cdr = state["metrics"][(role, out)]
                dice.update(pred[idx], true[idx])
                cdr.update(pred[idx], true[idx])
            if role not in state["shown"]:  # the first cases of each domain, for the report
                state["shown"].add(role)
                k = idx[:4]
                self._examples[role] = {"stage": stage, "image": batch["image"][k].float().cpu(),
                                        "true": true[k, 0].cpu(), "pred": preds[show][k, 0].cpu(), "output": show,
                                        "name": [batch["name"][int(i)] for i in k]}

    def evaluation_end(self, stage: str) -> dict[str, Any] | None:
        """The stage's record: every ``{role}/{output}/{metric}``, the mean of A and B, and the headline."""
        state = self.pop_stage_state(stage)
        if not state or not state["metrics"]:
            return None
        rec: dict[str, Any] = {}
        roles = list(dict.fromkeys(r for r, _ in state["metrics"]))
        for (role, out), (dice, cdr) in state["metrics"].items():
            d = dice.compute()
            rec[f"{role}/{out}/dice_disc"] = d["dice/disc"]
            rec[f"{role}/{out}/dice_cup"] = d["dice/cup"]
            rec[f"{role}/{out}/vcdr_err"] = cdr.compute()["vcdr_err"]
        head = self.hparams.eval_output if self.two else "a"
        for role in roles:
            for m in METRIC_KEYS:
                if self.two:
                    rec[f"{role}/mean/{m}"] = float(np.mean([rec[f"{role}/a/{m}"], rec[f"{role}/b/{m}"]]))
                rec[f"{role}_{m}"] = rec[f"{role}/{head}/{m}"]
            rec[f"{role}_dice_mean"] = (rec[f"{role}_dice_disc"] + rec[f"{role}_dice_cup"]) / 2
        return rec

    def predict_step(self, batch: Mapping[str, Any], batch_idx: int) -> dict[str, Any]:
        """Predicted labels ``(B, H, W)`` of ``predict_output`` with the items' names, paths, boxes and sizes."""
        probs = self._outputs(self.normalize(batch["image"]))
        key = self.hparams.predict_output if self.hparams.predict_output in probs else "a"
        labels = classes_to_labels(probs[key].argmax(1), self.label_values)
        return {"name": list(batch["name"]), "path": list(batch.get("path") or batch["name"]), "labels": labels.cpu(),
                "roi": batch.get("roi"), "orig_hw": batch.get("orig_hw")}

    def prediction_writer(self, run_dir: str | Path) -> Any:
        """Masks in the REFUGE encoding (``masks/``), overlays (``overlays/``) and ``predictions.csv``."""
        from medlearn.methods.cross_denoise.predict import FundusMaskWriter

        return FundusMaskWriter(run_dir, overlay_max_side=self.hparams.overlay_max_side)

    # --- report ---

    def report_sections(self, run_dir: Path, stage: str) -> list[Section]:
        """Per-domain scores of every output, example predictions per domain, selection diagnostics."""
        import matplotlib.pyplot as plt

        sections: list[Section] = []
        key = "val" if stage in ("fit", "validate") else stage
        rec = self.results.get(key)
        arm = self.hparams.arm
        if rec:
            outs = ["a", "b", "mean", "ens"] if self.two else ["a"]
            names = {"a": "network A", "b": "network B", "mean": "mean of A and B", "ens": "ensemble A+B (softmax)"}
            roles = sorted({k.split("/")[0] for k in rec if k.count("/") == 2})
            rows = [[role, names[o], rec[f"{role}/{o}/dice_disc"], rec[f"{role}/{o}/dice_cup"],
                     rec[f"{role}/{o}/vcdr_err"]] for role in roles for o in outs]
            head = self.hparams.eval_output if self.two else "a"
            sections.append(Section(
                f"{key}: optic disc / cup per domain ({arm})",
                f"Headline output: {names[head]}. Dice per image averaged over images; vCDR error = |vertical "
                "cup-to-disc ratio of the prediction - of the truth| per image.", [],
                table=(["domain", "output", "Dice disc", "Dice cup", "vCDR error"], rows)))
            figs = []
            for role in roles:
                ex = self._examples.get(role)
                if ex is None or ex["stage"] != key:
                    continue
                figs.append(_example_figure(ex, role, Path(run_dir) / "figures" / f"{key}_{role}_examples.png"))
            if figs:
                sections.append(Section(f"{key}: example predictions", "Rows: image, ground truth, prediction "
                                        "(green: rim, yellow: cup).", figs))
        if stage == "fit" and self.history and any("drop_precision" in h for h in self.history):
            ep = [h["epoch"] + 1 for h in self.history]
            fig, ax = plt.subplots(figsize=(5.5, 3.2))
            ax.plot(ep, [h["tau"] for h in self.history], label="tau (forget rate)")
            ax.plot(ep, [h.get("drop_precision", np.nan) for h in self.history], label="dropped that are corrupted")
            ax.plot(ep, [h.get("drop_recall", np.nan) for h in self.history], label="corrupted that are dropped")
            if self.pl:
                ax.plot(ep, [h["pl_p"] for h in self.history], label="pseudo-label fraction p", ls="--")
            ax.set_xlabel("epoch")
            ax.set_ylabel("fraction")
            ax.set_ylim(0, 1)
            ax.legend(fontsize=7)
            ax.set_title("peer selection on the source batches")
            png = save_figure(fig, Path(run_dir) / "figures" / "selection.png")
            sections.append(Section("Peer selection", "Share of the images dropped by the peer review whose mask is "
                                    "corrupted (precision; the corrupted share of the data is the chance level) and "
                                    "share of the corrupted images dropped (recall), per epoch.", [png]))
        return sections


def _example_figure(ex: dict[str, Any], role: str, path: Path) -> Path:
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    n = ex["image"].shape[0]
    fig, axes = plt.subplots(3, n, figsize=(1.9 * n + 0.4, 5.8), squeeze=False)
    cmap = ListedColormap([(0.0, 0.0, 0.0, 0.0), (0.27, 0.73, 0.27, 1.0), (1.0, 0.87, 0.2, 1.0)])
    for j in range(n):
        img = ex["image"][j].permute(1, 2, 0).numpy()
        img = img[..., 0] if img.shape[-1] == 1 else img
        for i, (lab, title) in enumerate(((None, str(Path(ex["name"][j]).name)), (ex["true"][j], "truth"),
                                          (ex["pred"][j], f"prediction ({ex['output']})"))):
            ax = axes[i, j]
            ax.imshow(np.clip(img, 0, 1), cmap="gray" if img.ndim == 2 else None)
            if lab is not None:
                ax.imshow(np.ma.masked_equal(lab.numpy(), 0), cmap=cmap, vmin=0, vmax=2, alpha=0.55,
                          interpolation="nearest")
            ax.set_title(title, fontsize=7)
            ax.axis("off")
    fig.suptitle(f"{role} domain", fontsize=10)
    return save_figure(fig, path)
