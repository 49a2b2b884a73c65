"""CCL-Net as a LightningModule, with its baselines in the same code path.

:class:`CCLClassifier` is :class:`medlearn.tasks.classification.ImageClassifier` (factory backbone +
linear head, same optimiser, schedule and augmentation) with one switch, ``soft_labels``, that only
changes the training targets and losses:

* ``"hard"``: cross-entropy with one-hot labels (the baseline);
* ``"smoothing"``: label smoothing with ``smoothing`` (0.1, Szegedy et al. 2016);
* ``"kd"``: knowledge distillation from a ``teacher`` checkpoint (Hinton et al. 2015);
* ``"ccl"``: CCL-Net (Wei et al., MICCAI 2020): the CCL block on the pooled features, soft labels
  from the learned class correlations, ``L_ce + lambda_soft L_soft + lambda_dml L_dml +
  lambda_geo L_geo`` (:class:`~medlearn.methods.ccl.losses.CCLLoss`).

So a comparison between the four differs in the head/losses only (the spec's fairness rule).
Class imbalance: ``class_weights="balanced"`` weights every loss term per sample by
``N / (K n_y)`` (for all methods alike); the DataModule's ``sampler="balanced"`` is the other
option. Evaluation: accuracy, balanced accuracy (the ISIC 2018 metric, monitored for
``best.ckpt``), macro F1, Cohen's kappa, NLL and ECE
(:class:`~medlearn.metrics.multiclass.MulticlassMetrics`). The run report shows the learned
correlation matrix ``C`` and the soft labels next to the confusion matrix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medlearn.data.augment import center_view
from medlearn.engine.module import ParamGroup
from medlearn.engine.report import Section, save_figure
from medlearn.methods.ccl.losses import CCLLoss, kd_loss, smoothed_targets, soft_target_cross_entropy
from medlearn.methods.ccl.model import CCLHead
from medlearn.metrics.multiclass import MulticlassMetrics
from medlearn.tasks.classification import ImageClassifier

__all__ = ["CCLClassifier", "SOFT_LABELS"]

SOFT_LABELS = ("hard", "smoothing", "kd", "ccl")


class CCLClassifier(ImageClassifier):
    """Single-label classifier with hard, smoothed, distilled or CCL soft labels.

    Args (beyond :class:`~medlearn.tasks.classification.ImageClassifier`'s, whose ``multilabel``
    must stay ``False``; ``norm_mean`` / ``norm_std`` may be per-channel lists, e.g. ImageNet's):
        soft_labels: ``"hard"``, ``"smoothing"``, ``"kd"`` or ``"ccl"``.
        smoothing: label-smoothing epsilon.
        teacher: checkpoint of a trained classifier (``CCLClassifier`` or ``ImageClassifier``) for ``"kd"``.
        kd_temperature: distillation temperature T.
        kd_alpha: weight of the distillation term.
        emb_dim: CCL embedding size d.
        scale: CCL metric-logit scale s.
        soft_temp: CCL soft-label temperature t.
        soft_form: ``"softmax"`` or ``"relu"`` soft labels from the correlations.
        detach_input: the CCL block reads detached features (metric terms do not train the backbone).
        lambda_soft: weight of ``KL(q_y || p)``.
        lambda_dml: weight of the metric-learning term.
        lambda_geo: weight of the correlation term (0 turns it off).
        geo_form: ``"hinge"`` or ``"centre"``.
        soft_warmup_epochs: epochs with ``lambda_soft = 0`` at the start.
        class_weights: ``"none"``, ``"balanced"`` (from the DataModule's training class counts) or a
            list of K weights.
        augment: random crop / rotation / flip / brightness-contrast views for training (else the
            evaluation view).
        input_noise: standard deviation of Gaussian noise added to the normalised training input.
        ccl_lr_mult: learning-rate multiplier of the CCL block (class embeddings and projection);
            proxy-based metric learning trains its proxies faster than the network (Proxy-NCA uses
            100x), and the correlations can only be learned if the embeddings move.
        proj_hidden: CCL projection: 0 = one linear layer (default), > 0 = two-layer MLP of this width.
        soft_source: ``"correlation"`` (default: soft labels from the learned correlations) or
            ``"posterior"`` (running class mean of the CCL block's metric posterior, the
            online-label-smoothing reading).
        posterior_momentum: per-step EMA momentum of the ``"posterior"`` source.
    """

    class_weight: torch.Tensor
    _mean: torch.Tensor
    _std: torch.Tensor
    teacher: ImageClassifier

    @property
    def monitor(self) -> tuple[str, str]:
        """``best.ckpt`` on the validation balanced accuracy (the ISIC 2018 ranking metric)."""
        return ("val/bal_acc", "max")

    def __init__(
        self,
        *,
        in_channels: int = 3,
        num_classes: int = 7,
        norm_mean: float | list[float] = 0.5,
        norm_std: float | list[float] = 0.25,
        class_weights: str | list[float] = "none",
        soft_labels: str = "ccl",
        smoothing: float = 0.1,
        teacher: str | None = None,
        kd_temperature: float = 4.0,
        kd_alpha: float = 0.5,
        emb_dim: int = 4,
        scale: float = 16.0,
        soft_temp: float = 4.0,
        soft_form: str = "softmax",
        detach_input: bool = True,
        lambda_soft: float = 1.0,
        lambda_dml: float = 1.0,
        lambda_geo: float = 1.0,
        geo_form: str = "hinge",
        soft_warmup_epochs: int = 0,
        augment: bool = True,
        input_noise: float = 0.0,
        ccl_lr_mult: float = 10.0,
        proj_hidden: int = 0,
        soft_source: str = "correlation",
        posterior_momentum: float = 0.9,
        **kwargs: Any,
    ) -> None:
        if kwargs.pop("multilabel", False):
            raise ValueError("CCLClassifier is single-label (multilabel must be False)")
        if soft_labels not in SOFT_LABELS:
            raise ValueError(f"soft_labels must be one of {SOFT_LABELS}, got {soft_labels!r}")
        if soft_labels == "kd" and not teacher:
            raise ValueError("soft_labels='kd' needs a teacher checkpoint")
        if isinstance(class_weights, str) and class_weights not in ("none", "balanced"):
            raise ValueError(f"class_weights must be 'none', 'balanced' or a list, got {class_weights!r}")
        if not isinstance(class_weights, str) and len(class_weights) != num_classes:
            raise ValueError(f"{len(class_weights)} class_weights for num_classes={num_classes}")
        # the parent builds its augmentation with mean 0 / std 1; normalisation (per channel) is ours.
        # Its save_hyperparameters() records this constructor's arguments too (child values win).
        super().__init__(in_channels=in_channels, num_classes=num_classes, multilabel=False, norm_mean=0.0,
                         norm_std=1.0, **kwargs)
        h = self.hparams
        spatial_dims = h.spatial_dims
        chans = in_channels if spatial_dims == 2 else 1
        self.register_buffer("_mean", self._per_channel(norm_mean, in_channels).view(1, chans, *[1] * spatial_dims)
                             if spatial_dims == 2 else torch.tensor(float(np.mean(norm_mean))), persistent=False)
        self.register_buffer("_std", self._per_channel(norm_std, in_channels).view(1, chans, *[1] * spatial_dims)
                             if spatial_dims == 2 else torch.tensor(float(np.mean(norm_std))), persistent=False)
        self.register_buffer("class_weight", torch.ones(num_classes) if isinstance(class_weights, str)
                             else torch.tensor([float(w) for w in class_weights]))
        self.ccl: CCLHead | None = None
        self.ccl_loss: CCLLoss | None = None
        if soft_labels == "ccl":
            self.ccl = CCLHead(self.backbone.out_features, num_classes, emb_dim, scale, soft_temp, soft_form,
                               detach_input, proj_hidden, soft_source, posterior_momentum)
            self.ccl_loss = CCLLoss(lambda_soft, lambda_dml, lambda_geo, geo_form)
        if soft_labels == "kd":
            assert teacher is not None
            self.add_frozen("teacher", self._load_teacher(teacher))

    def param_groups(self) -> list[ParamGroup]:
        """The CCL block (class embeddings, projection) at ``ccl_lr_mult`` x the learning rate."""
        groups = super().param_groups()
        if self.ccl is None:
            return groups
        ccl = list(self.ccl.parameters())
        ids = {id(p) for p in ccl}
        return [ParamGroup([p for p in groups[0].params if id(p) not in ids]),
                ParamGroup(ccl, self.hparams.ccl_lr_mult, "ccl")]

    @staticmethod
    def _per_channel(value: float | list[float], channels: int) -> torch.Tensor:
        v = torch.tensor(value, dtype=torch.float32).view(-1)
        if v.numel() == 1:
            return v.expand(channels).clone()
        if v.numel() != channels:
            raise ValueError(f"{v.numel()} normalisation values for in_channels={channels}")
        return v

    @staticmethod
    def _load_teacher(path: str) -> ImageClassifier:
        """A frozen teacher from a ``CCLClassifier`` or ``ImageClassifier`` checkpoint (strict load).

        It must share the student's input normalisation (it sees the student's training views).
        """
        hp = torch.load(path, map_location="cpu", weights_only=True).get("hyper_parameters", {})
        over: dict[str, Any] = {"teacher": None, "pretrained": None}
        if hp.get("soft_labels") in (None, "kd"):  # an ImageClassifier, or a distilled student: no CCL block
            over["soft_labels"] = "hard"
        teacher = CCLClassifier.load_from_checkpoint(path, map_location="cpu", weights_only=True, **over)
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        return teacher

    # --- data ------------------------------------------------------------------------------------
    def receive_data(self, info: Any) -> None:
        """Balanced class weights from the training class counts (``class_weights="balanced"``)."""
        super().receive_data(info)
        if self.hparams.class_weights != "balanced":
            return
        counts = getattr(info, "class_counts", None)
        if counts is None:
            raise ValueError("class_weights='balanced' needs training class counts from the data")
        c = torch.as_tensor(counts, dtype=torch.float32)
        w = torch.where(c > 0, c.sum() / (len(c) * c.clamp(min=1)), torch.zeros_like(c))
        self.class_weight.copy_(w.to(self.class_weight.device))

    def _prep(self, x: torch.Tensor, train: bool) -> torch.Tensor:
        h = self.hparams
        if h.spatial_dims != 2:
            return super()._prep(x, train)
        if train and h.augment and self.train_augment is not None:
            x = self.train_augment(x)  # mean 0 / std 1: [0, 1] views
        else:
            x = center_view(x, h.image_size, 0.0, 1.0)
        x = (x - self._mean) / self._std
        if train and h.input_noise > 0:
            x = x + h.input_noise * torch.randn_like(x)
        return x

    # --- training --------------------------------------------------------------------------------
    def _weights(self, y: torch.Tensor) -> torch.Tensor | None:
        return None if self.hparams.class_weights == "none" else self.class_weight[y]

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """The arm's loss: hard, smoothed or distilled targets, or CCL's four terms."""
        h = self.hparams
        x = self._prep(batch["image"], True)
        y = batch["label"].long().view(-1)
        feats = self.backbone(x)
        logits = self.head(self.dropout(self.feature_norm(feats)))
        w = self._weights(y)
        parts: dict[str, torch.Tensor] = {}
        if h.soft_labels == "hard":
            loss = soft_target_cross_entropy(logits, F.one_hot(y, h.num_classes).float(), w)
        elif h.soft_labels == "smoothing":
            loss = soft_target_cross_entropy(logits, smoothed_targets(y, h.num_classes, h.smoothing), w)
        elif h.soft_labels == "kd":
            with torch.no_grad():
                t_logits = self.teacher(x)
            loss = kd_loss(logits, t_logits, y, h.kd_temperature, h.kd_alpha, w)
        else:
            assert self.ccl is not None and self.ccl_loss is not None
            out = self.ccl(feats, y)
            lam = 0.0 if self.current_epoch < h.soft_warmup_epochs else h.lambda_soft
            loss, parts = self.ccl_loss(logits, out, y, w, lambda_soft=lam)
        bs = x.shape[0]
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=bs, sync_dist=True)
        for k, v in parts.items():
            self.log(f"train/{k}", v, on_step=False, on_epoch=True, batch_size=bs, sync_dist=True)
        return loss

    # --- evaluation ------------------------------------------------------------------------------
    def evaluation_step(self, batch: dict[str, Any], batch_idx: int, stage: str) -> None:
        """Loss and the batch's class probabilities into the stage's metrics."""
        x, y = batch["image"], batch["label"].long().view(-1)
        logits = self(self._prep(x, False)).float()
        self.log(f"{stage}/loss", F.cross_entropy(logits, y), on_epoch=True, batch_size=x.shape[0], sync_dist=True)
        self.stage_state(stage, lambda: MulticlassMetrics(self.hparams.num_classes)).update(torch.softmax(logits, 1), y)

    def evaluation_end(self, stage: str) -> dict[str, Any] | None:
        """Accuracy, balanced accuracy, macro F1, kappa, NLL, ECE, recall per class; the confusion matrix."""
        m = self.pop_stage_state(stage)
        if m is None:
            return None
        r = m.compute()
        return {**r.scalars(), **{f"recall/{n}": float(v) for n, v in zip(self.class_names, r.recall)},
                "confusion": r.confusion.tolist(), "recall": r.recall.tolist()}

    def correlation_matrix(self) -> np.ndarray | None:
        """The learned ``(K, K)`` correlation ``C`` (``None`` unless ``soft_labels="ccl"``)."""
        return None if self.ccl is None else self.ccl.correlation().detach().float().cpu().numpy()

    def soft_label_matrix(self) -> np.ndarray | None:
        """The current ``(K, K)`` soft labels (row = true class); smoothing gives its fixed matrix."""
        h = self.hparams
        if self.ccl is not None:
            return self.ccl.soft_label_matrix().cpu().numpy()
        if h.soft_labels == "smoothing":
            return smoothed_targets(torch.arange(h.num_classes), h.num_classes, h.smoothing).numpy()
        return None

    # --- report ----------------------------------------------------------------------------------
    def report_sections(self, run_dir: Path, stage: str) -> list[Section]:
        """Metrics, confusion matrix, learned correlations and soft labels (figures; the matrices also as
        ``<stage>_confusion.csv``, ``ccl_correlation.csv`` and ``ccl_soft_labels.csv`` in the run folder).
        """
        import matplotlib.pyplot as plt

        sections: list[Section] = []
        stage = "val" if stage in ("fit", "validate") else stage
        names = self.class_names
        figs: list[Path] = []
        if stage in self.results:
            r = self.results[stage]
            cm = np.asarray(r["confusion"], dtype=float)
            _write_matrix(Path(run_dir) / f"{stage}_confusion.csv", cm.astype(int), names, "%d")
            rown = cm / np.maximum(cm.sum(1, keepdims=True), 1)
            figs.append(_heatmap(rown, names, f"{stage} confusion (row-normalised)", "predicted", "true", 0, 1,
                                 Path(run_dir) / "figures" / f"{stage}_confusion.png", plt))
            rows = [[k, r[k]] for k in ("acc", "bal_acc", "f1", "kappa", "nll", "ece")]
            rows += [[f"recall {n}", v] for n, v in zip(names, r["recall"])]
            sections.append(Section(f"{stage} metrics", f"soft labels: {self.hparams.soft_labels}; "
                                    "bal_acc = mean per-class recall (ISIC 2018 ranking metric)", figs,
                                    table=(["metric", "value"], rows)))
        corr = self.correlation_matrix()
        if corr is not None:
            q = self.soft_label_matrix()
            assert q is not None
            _write_matrix(Path(run_dir) / "ccl_correlation.csv", corr, names)
            _write_matrix(Path(run_dir) / "ccl_soft_labels.csv", q, names)
            c_png = _heatmap(corr, names, "learned correlation C = cos(e_j, e_k)", "class", "class", -1, 1,
                             Path(run_dir) / "figures" / "ccl_correlation.png", plt, cmap="RdBu_r")
            q_png = _heatmap(q, names, "soft labels q_y (row = true class)", "target class", "true class", 0,
                             float(q.max()), Path(run_dir) / "figures" / "ccl_soft_labels.png", plt)
            off = corr - np.eye(len(names)) * 2
            i, j = np.unravel_index(np.argsort(-off, axis=None)[:5], off.shape)
            pairs = [(a, b) for a, b in zip(i, j) if a < b]
            text = ("Class embeddings learned by the CCL block; the correlation of two classes is the cosine "
                    "of their embeddings. Largest off-diagonal correlations: "
                    + ", ".join(f"{names[a]}-{names[b]} {corr[a, b]:+.2f}" for a, b in pairs) + ".")
            sections.append(Section("Learned inter-class correlations (CCL)", text, [c_png, q_png],
                                    table=(["class", *names], [[n, *row] for n, row in zip(names, corr.tolist())])))
        return sections


def _write_matrix(path: Path, m: np.ndarray, names: list[str], fmt: str = "%.6f") -> None:
    """A labelled ``K x K`` matrix as CSV (first column and header: class names)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [",".join(["", *names])] + [",".join([n, *(fmt % v for v in row)]) for n, row in zip(names, m)]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")


def _heatmap(m: np.ndarray, names: list[str], title: str, xlabel: str, ylabel: str, vmin: float, vmax: float,
             path: Path, plt: Any, cmap: str = "viridis") -> Path:
    k = len(names)
    fig, ax = plt.subplots(figsize=(0.55 * k + 2.4, 0.55 * k + 1.6))
    im = ax.imshow(m, vmin=vmin, vmax=vmax, cmap=cmap)
    ax.set_xticks(range(k), names, rotation=45, ha="right")
    ax.set_yticks(range(k), names)
    for a in range(k):
        for b in range(k):
            ax.text(b, a, f"{m[a, b]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if (m[a, b] - vmin) / max(vmax - vmin, 1e-9) < 0.5 else "black")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046)
    return save_figure(fig, path)
