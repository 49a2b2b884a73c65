"""C2L pretraining as a LightningModule.

Zhou et al., "Comparing to Learn", MICCAI 2020 (arXiv:2007.07423); the training step follows the
official ``train_C2L`` (github.com/funnyzhou/C2L_MICCAI2020). Per step, with two augmented views
``x1, x2`` of a batch, student ``g_s`` and EMA teacher ``g_t``:

1. ``q = g_s(x1)``, ``k = g_t(x2)`` (no grad, shuffled BN); term 1 = ``l(n(q), n(k))``.
2. Mixup with ``lam ~ Beta(a, a)`` folded to ``>= 0.5`` and one permutation ``pi``:
   ``x1~, x2~`` mixed images, ``k_mix = lam k + (1 - lam) k[pi]`` (raw teacher outputs);
   ``q~ = g_s(x1~)``, ``k~ = g_t(x2~)``; term 2 = ``l(n(q~), n(k~))``, term 3 = ``l(n(q~), n(k_mix))``.
3. loss = mean of the terms; SGD step on the student; teacher EMA ``a = 0.999``.

``l`` is softmax InfoNCE against a FIFO queue (default) or the NCE form of the official command
(``loss="nce"``). After each term its positive keys are pushed to the queue (3B keys per step), as
in the official code. ``mixup=False`` gives the two-view momentum-contrast ablation (term 1 only).

Choices where the paper or code is unclear are options; see ``methods/c2l/README.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medlearn.data.augment import AugmentParams, ViewAugment
from medlearn.engine.module import MethodModule, OptimSpec
from medlearn.engine.report import Section, save_figure
from medlearn.losses import InfoNCELoss, MomentumQueue, NCEQueueLoss
from medlearn.methods.c2l.model import C2LEncoder, shuffled_forward

__all__ = ["C2L"]


class C2L(MethodModule):
    """Comparing-to-Learn contrastive pretraining (student/teacher, queue, mixup terms).

    Args:
        backbone: backbone factory name (paper: ``resnet18`` or ``densenet121``).
        in_channels: image channels (1 = gray radiographs).
        embed_dim: embedding width (128).
        queue_size: negatives K (16384 at paper scale; keep K well below the image count).
        temperature: softmax temperature (0.07).
        ema: teacher momentum per step (0.999); the teacher is an EMA copy of the student
            (:meth:`~medlearn.engine.module.MethodModule.add_ema`).
        mixup: add the two mixup terms (C2L); ``False`` = two-view momentum contrast only.
        mixup_alpha: Beta(a, a) for lambda, folded to ``>= 0.5``.
        loss: ``"infonce"`` (softmax, default) or ``"nce"`` (official default command; needs ``n_data``).
        n_data: training images, for ``loss="nce"`` (``None``: the training data's size, handed over
            by the run builder through :meth:`receive_data`).
        teacher_bn: ``"shuffle"`` (ShuffleBN across ranks; ghost BN on one process) or ``"none"``.
        bn_groups: sub-batches of the teacher forward on one process.
        queue_init: ``"uniform"`` (official) or ``"normal"``.
        optimizer_lr: SGD learning rate (0.03).
        momentum: SGD momentum (0.9).
        weight_decay: weight decay on all parameters (1e-4).
        schedule: ``"step"`` (x0.1 at ``milestones``) or ``"cosine"``.
        milestones: epochs of the step schedule (60, 80, 100).
        warmup_epochs: linear warm-up epochs (0: none, as the official code).
        view_size: side of the augmented views (224 at paper scale); ``None``: the data's
            ``image_size`` in a config (the run builder links them), 224 for a model built on its own.
        crop_scale: random-resized-crop area range ((0.2, 1.0)).
        rotation: max rotation in degrees (10).
        hflip: horizontal flip probability (0.5).
        brightness: brightness jitter (0.4).
        contrast: contrast jitter (0.4).
        cutout_holes: Cutout holes per view (3).
        cutout_size: hole side as a fraction of ``view_size`` (32/224).
        norm_mean: intensity mean for normalisation (gray ImageNet mean 0.449).
        norm_std: intensity std (0.226).
        channels_last: use channels-last memory format (2D).
    """

    #: ``precision: auto`` keeps fp32 for pretraining: the reproduction's encoders pretrained under
    #: bf16 autocast fine-tuned to 0.846 test AUC at 50 labels (C2L and two-view alike) against
    #: 0.867 / 0.864 in fp32 on the same thread count, beyond the fine-tuning spread (sd <= 0.006);
    #: ``docs/results.md``, "Precision". Fine-tuning (``ImageClassifier``) is not affected.
    bf16_autocast = False

    @property
    def monitor(self) -> tuple[str, str]:
        """No labels during pretraining: ``best.ckpt`` on the epoch loss."""
        return ("train/loss", "min")

    def __init__(
        self,
        backbone: str = "resnet18",
        in_channels: int = 1,
        embed_dim: int = 128,
        queue_size: int = 16384,
        temperature: float = 0.07,
        ema: float = 0.999,
        mixup: bool = True,
        mixup_alpha: float = 1.0,
        loss: str = "infonce",
        n_data: int | None = None,
        teacher_bn: str = "shuffle",
        bn_groups: int = 2,
        queue_init: str = "uniform",
        optimizer_lr: float = 0.03,
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        schedule: str = "step",
        milestones: tuple[int, ...] = (60, 80, 100),
        warmup_epochs: int = 0,
        view_size: int | None = None,
        crop_scale: tuple[float, float] = (0.2, 1.0),
        rotation: float = 10.0,
        hflip: float = 0.5,
        brightness: float = 0.4,
        contrast: float = 0.4,
        cutout_holes: int = 3,
        cutout_size: float = 32 / 224,
        norm_mean: float = 0.449,
        norm_std: float = 0.226,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        if loss not in ("infonce", "nce"):
            raise ValueError(f"loss must be 'infonce' or 'nce', got {loss!r}")
        if teacher_bn not in ("shuffle", "none"):
            raise ValueError(f"teacher_bn must be 'shuffle' or 'none', got {teacher_bn!r}")
        if not 0.0 <= ema < 1.0:
            raise ValueError(f"ema must be in [0, 1), got {ema}")
        view_size = 224 if view_size is None else int(view_size)
        self.save_hyperparameters()
        self.student = C2LEncoder(backbone, 2, in_channels, embed_dim)
        self.teacher = self.add_ema("teacher", "student", ema)
        self.queue = MomentumQueue(queue_size, embed_dim, init=queue_init)
        self.augment = ViewAugment(AugmentParams(
            out_size=view_size, crop_scale=crop_scale, rotation=rotation, hflip=hflip,
            brightness=brightness, contrast=contrast, cutout_holes=cutout_holes, cutout_size=cutout_size,
            mean=norm_mean, std=norm_std))
        # The NCE form needs the training-set size; without n_data it is built in receive_data() from
        # the training data, and n_data is then written back into the hyper-parameters of the checkpoint.
        self.criterion: nn.Module = (InfoNCELoss(temperature) if loss == "infonce" else
                                     NCEQueueLoss(n_data, temperature) if n_data else nn.Identity())
        self._samples: torch.Tensor | None = None
        self.example_input_array = torch.zeros(2, in_channels, view_size, view_size)
        if channels_last:  # Module.to forwards memory_format to Tensor.to (not in torch's stubs)
            self.student.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
            self.teacher.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    # -- set-up ---------------------------------------------------------------------------------
    def receive_data(self, info: Any) -> None:
        """``loss="nce"`` without ``n_data``: the NCE normaliser needs the training-set size."""
        super().receive_data(info)
        if self.hparams.loss == "nce" and not isinstance(self.criterion, NCEQueueLoss):
            n = self.hparams.n_data if self.hparams.n_data is not None else getattr(info, "n_train", None)
            if n is None:
                raise ValueError("loss='nce' needs n_data (the number of training images)")
            self.hparams.n_data = int(n)
            self.criterion = NCEQueueLoss(int(n), self.hparams.temperature).to(self.device)

    def optim_spec(self) -> OptimSpec:
        """SGD on the student (the official recipe), step or cosine schedule."""
        h = self.hparams
        return OptimSpec(optimizer="sgd", lr=h.optimizer_lr, momentum=h.momentum, weight_decay=h.weight_decay,
                         schedule=h.schedule, milestones=tuple(h.milestones), warmup_epochs=h.warmup_epochs)

    # -- forward pieces -------------------------------------------------------------------------
    def _fmt(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.hparams.channels_last else x

    def views(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Two independent augmented views of a batch ``(B, C, H, W)`` in [0, 1]."""
        return self.augment(x), self.augment(x)

    def _term(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        qn, kn = F.normalize(q.float(), dim=1), F.normalize(k.float(), dim=1)
        loss, logits = self.criterion(qn, kn, self.queue.negatives())
        self.queue.enqueue(kn)
        return loss, logits

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """The three C2L terms (two without mixup) on two views of the batch; the queue advances."""
        x = batch["image"]
        if self._samples is None:
            self._samples = x[:8].detach().cpu()
        x1, x2 = self.views(x)
        x1, x2 = self._fmt(x1), self._fmt(x2)
        groups = self.hparams.bn_groups if self.hparams.teacher_bn == "shuffle" else 1
        q = self.student(x1)
        with torch.no_grad():
            k, perm = shuffled_forward(self.teacher, x2, None, groups)
        l_plain, logits = self._term(q, k)
        terms = [l_plain]
        log = {"train/loss_plain": l_plain, "train/acc": (logits.argmax(1) == 0).float().mean()}
        if self.hparams.mixup:
            a = self.hparams.mixup_alpha
            lam = float(torch.distributions.Beta(a, a).sample()) if a > 0 else 1.0
            lam = max(lam, 1.0 - lam)
            pi = torch.randperm(x.shape[0], device=x.device)
            x1m = lam * x1 + (1 - lam) * x1[pi]
            x2m = lam * x2 + (1 - lam) * x2[pi]
            k_mix = lam * k + (1 - lam) * k[pi]
            qm = self.student(x1m)
            with torch.no_grad():
                km, _ = shuffled_forward(self.teacher, x2m, perm, groups)
            l_mix, _ = self._term(qm, km)
            l_mixfeat, _ = self._term(qm, k_mix)
            terms += [l_mix, l_mixfeat]
            log.update({"train/loss_mix": l_mix, "train/loss_mixfeat": l_mixfeat, "train/lambda": torch.tensor(lam)})
        loss = torch.stack(terms).mean()
        log["train/loss"] = loss
        self.log_dict(log, on_step=False, on_epoch=True, prog_bar=False, batch_size=x.shape[0], sync_dist=True)
        self.log("loss", loss, on_step=True, on_epoch=False, prog_bar=True, logger=False, batch_size=x.shape[0])
        return loss

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised student embedding ``(B, embed_dim)`` of already-normalised images."""
        return F.normalize(self.student(self._fmt(x)), dim=1)

    # -- report ---------------------------------------------------------------------------------
    def report_sections(self, run_dir: Path, stage: str) -> list[Section]:
        """A grid of sample radiographs with their two augmented views (after ``fit``)."""
        if self._samples is None or stage != "fit":
            return []
        import matplotlib.pyplot as plt

        x = self._samples.to(self.device)
        g = torch.random.get_rng_state()
        torch.manual_seed(0)
        with torch.no_grad():
            v1, v2 = self.views(x)
        torch.random.set_rng_state(g)
        n = x.shape[0]
        fig, axes = plt.subplots(3, n, figsize=(1.6 * n, 5))
        for i in range(n):
            for r, (img, title) in enumerate([(x[i], "image"), (v1[i], "view 1"), (v2[i], "view 2")]):
                ax = axes[r, i] if n > 1 else axes[r]
                ax.imshow(img[0].float().cpu().numpy(), cmap="gray")
                ax.set_xticks([])
                ax.set_yticks([])
                if i == 0:
                    ax.set_ylabel(title)
        fig.suptitle("C2L: sample images and their two augmented views (normalised, with Cutout)")
        png = save_figure(fig, Path(run_dir) / "figures" / "views.png")
        return [Section("Augmented views", "Each column: an image and the two random views the student and "
                        "teacher see in one step.", [png])]
