"""Losses of CCL-Net and of the soft-label baselines, as plain functions and one module.

Soft-label cross-entropy covers the three baselines with one formula (per-sample weights for
class-imbalance): hard labels (one-hot targets), label smoothing (Szegedy et al., CVPR 2016:
``(1 - eps) onehot + eps / K``) and knowledge distillation (Hinton et al., 2015: teacher
probabilities at temperature T). CCL-Net's terms (``methods/ccl.md`` section 2.3, formulas [I]):

* ``L_soft = KL(q_y || p)`` with the detached class-level soft label ``q_y``;
* ``L_dml = CE(p_ccl, y)``: metric learning of the class embeddings (NormFace / proxy style);
* ``L_geo`` ("intuitive loss based on a geometrical explanation of correlation", formula unknown):
  ``"hinge"`` (default) ``sum_{j != y} max(0, cos(v, e_j) - cos(e_y, e_j))`` — a sample must not be
  more correlated with another class than its own class is, so ``e_y`` is pulled towards the
  classes its samples drift to; ``"centre"``: ``1 - cos(v, e_y)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medlearn.methods.ccl.model import CCLOutput

__all__ = ["soft_target_cross_entropy", "soft_kl", "smoothed_targets", "dml_loss", "geo_loss", "kd_loss", "CCLLoss"]


def _weighted_mean(per_sample: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    if weight is None:
        return per_sample.mean()
    return (per_sample * weight).sum() / weight.sum().clamp(min=1e-12)


def soft_target_cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
                              ) -> torch.Tensor:
    """``sum_i w_i H(target_i, softmax(logits_i)) / sum_i w_i``; ``(B, K)`` logits and targets, ``(B,)`` weights.

    With one-hot targets and ``weight = class_weight[y]`` this equals
    ``F.cross_entropy(logits, y, weight=class_weight)``.
    """
    return _weighted_mean(-(target * F.log_softmax(logits.float(), dim=1)).sum(1), weight)


def soft_kl(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """``KL(target || softmax(logits))`` per sample, weighted mean (``target`` treated as a constant)."""
    t = target.detach().float()
    kl = (t * (torch.log(t.clamp(min=1e-12)) - F.log_softmax(logits.float(), dim=1))).sum(1)
    return _weighted_mean(kl, weight)


def smoothed_targets(labels: torch.Tensor, num_classes: int, eps: float) -> torch.Tensor:
    """Label-smoothing targets ``(1 - eps) onehot + eps / K`` ``(B, K)``."""
    onehot = F.one_hot(labels.long().view(-1), num_classes).float()
    return (1.0 - eps) * onehot + eps / num_classes


def dml_loss(out: CCLOutput, labels: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Metric-learning cross-entropy of the CCL posterior ``p_ccl``."""
    return _weighted_mean(F.cross_entropy(out.logits.float(), labels.long(), reduction="none"), weight)


def geo_loss(out: CCLOutput, labels: torch.Tensor, form: str = "hinge", weight: torch.Tensor | None = None
             ) -> torch.Tensor:
    """The correlation ("geometry") loss; see the module docstring for ``form``."""
    y = labels.long()
    if form == "centre":
        return _weighted_mean(1.0 - (out.v * out.e[y]).sum(1), weight)
    if form != "hinge":
        raise ValueError(f"form must be 'hinge' or 'centre', got {form!r}")
    cos_v = out.v @ out.e.t()  # (B, K): cos(v_i, e_j)
    cos_e = out.corr[y]  # (B, K): cos(e_{y_i}, e_j)
    other = 1.0 - F.one_hot(y, out.e.shape[0]).to(cos_v.dtype)
    return _weighted_mean((F.relu(cos_v - cos_e) * other).sum(1), weight)


def kd_loss(logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, temperature: float = 4.0,
            alpha: float = 0.5, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Knowledge distillation (Hinton et al.): ``(1 - alpha) CE(y) + alpha T^2 KL(p_t^T || p_s^T)``."""
    k = logits.shape[1]
    hard = soft_target_cross_entropy(logits, F.one_hot(labels.long(), k).float(), weight)
    pt = torch.softmax(teacher_logits.detach().float() / temperature, dim=1)
    return (1 - alpha) * hard + alpha * temperature**2 * soft_kl(logits.float() / temperature, pt, weight)


class CCLLoss(nn.Module):
    """``L = L_ce + lambda_soft L_soft + lambda_dml L_dml + lambda_geo L_geo`` (spec section 2.3).

    A term whose weight is 0 is not computed. Returns the total and the parts (detached) for logging.

    Args:
        lambda_soft: weight of ``KL(q_y || p)``.
        lambda_dml: weight of the metric-learning term.
        lambda_geo: weight of the correlation term.
        geo_form: ``"hinge"`` or ``"centre"``.
    """

    def __init__(self, lambda_soft: float = 1.0, lambda_dml: float = 1.0, lambda_geo: float = 1.0,
                 geo_form: str = "hinge") -> None:
        super().__init__()
        if geo_form not in ("hinge", "centre"):
            raise ValueError(f"geo_form must be 'hinge' or 'centre', got {geo_form!r}")
        self.lambda_soft, self.lambda_dml, self.lambda_geo = lambda_soft, lambda_dml, lambda_geo
        self.geo_form = geo_form

    def forward(self, logits: torch.Tensor, out: CCLOutput, labels: torch.Tensor, weight: torch.Tensor | None = None,
                lambda_soft: float | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total loss and ``{"ce", "soft", "dml", "geo"}``; ``lambda_soft`` overrides (warm-up)."""
        if out.q is None:
            raise ValueError("CCLOutput without soft labels: call the head with the labels")
        ls = self.lambda_soft if lambda_soft is None else lambda_soft
        y = labels.long()
        parts = {"ce": soft_target_cross_entropy(logits, F.one_hot(y, logits.shape[1]).float(), weight)}
        total = parts["ce"]
        zero = logits.new_zeros(())
        parts["soft"] = soft_kl(logits, out.q, weight) if ls else zero
        parts["dml"] = dml_loss(out, y, weight) if self.lambda_dml else zero
        parts["geo"] = geo_loss(out, y, self.geo_form, weight) if self.lambda_geo else zero
        total = total + ls * parts["soft"] + self.lambda_dml * parts["dml"] + self.lambda_geo * parts["geo"]
        return total, {k: v.detach() for k, v in parts.items()}
