"""The CCL block: class-specific embeddings learned by distance-metric learning, whose geometry gives
the inter-class correlations and, from them, per-class soft labels.

Wei, Cao, Ma, Zheng, "Learning and Exploiting Interclass Visual Correlations for Medical Image
Classification", MICCAI 2020 (LNCS 12261), arXiv:2007.06371. No official code was found; the
formulas below are the reconstruction of ``methods/ccl.md`` section 2 (tags [I]/[R] there), every
uncertain choice being an argument:

* projection ``v = normalize(W_e h)`` of the pooled backbone feature ``h`` (one linear layer, or an MLP),
  read from ``h.detach()`` by default (``detach_input``; the spec's pilot lost 6-13 points of
  balanced accuracy when the metric loss shared the backbone);
* learnable class embeddings ``e_k``, used L2-normalised;
* metric-learning posterior ``p_ccl(k | x) = softmax_k(-s * (1 - cos(v, e_k)))`` (scale ``s``);
* correlation ``C[j, k] = cos(e_j, e_k)`` (the cosine of centred vectors is their Pearson
  correlation: the "geometrical explanation");
* soft label of class ``y``: ``q_y = softmax(t * C[y, :])`` (``soft_form="softmax"``) or
  ``relu(C[y, :]) / sum`` (``"relu"``), recomputed from the current embeddings at every step and
  detached (a constant target);
* alternative source (``soft_source="posterior"``, the spec's online-label-smoothing variant):
  ``q_y`` = running mean over class-``y`` training samples of the metric posterior ``p_ccl``
  (exponential moving average per class with ``posterior_momentum``, starting from the
  correlation soft labels; a buffer, so it is saved in checkpoints).

The block is a training-time plug-in: inference uses the classification head only.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CCLHead", "CCLOutput", "soft_labels_from_correlation"]


class CCLOutput(NamedTuple):
    """What :class:`CCLHead` returns for a batch.

    Attributes:
        v: ``(B, d)`` unit-norm sample embeddings.
        e: ``(K, d)`` unit-norm class embeddings.
        logits: ``(B, K)`` metric-learning logits ``-s * (1 - cos(v, e_k))``.
        corr: ``(K, K)`` learned inter-class correlation ``C`` (with gradient).
        q: ``(B, K)`` detached soft labels of the given labels, or ``None`` without labels.
    """

    v: torch.Tensor
    e: torch.Tensor
    logits: torch.Tensor
    corr: torch.Tensor
    q: torch.Tensor | None


def soft_labels_from_correlation(corr: torch.Tensor, temperature: float = 4.0, form: str = "softmax") -> torch.Tensor:
    """``(K, K)`` soft-label matrix: row ``y`` is the target distribution of class ``y``.

    Args:
        corr: ``(K, K)`` correlations in [-1, 1] with unit diagonal.
        temperature: ``t`` of ``softmax(t * C[y, :])``.
        form: ``"softmax"`` or ``"relu"`` (``relu(C[y, :]) / sum``).
    """
    if form == "softmax":
        return torch.softmax(temperature * corr, dim=1)
    if form == "relu":
        r = corr.clamp(min=0)
        return r / r.sum(dim=1, keepdim=True).clamp(min=1e-12)
    raise ValueError(f"form must be 'softmax' or 'relu', got {form!r}")


class CCLHead(nn.Module):
    """The CCL block: a plug-in head on pooled features ``(B, in_dim)`` of any backbone.

    Args:
        in_dim: feature width of the backbone.
        num_classes: K.
        emb_dim: embedding size d (spec default 4 for K=7; with ``d >= K`` the class embeddings can
            sit orthogonally and no correlation is learned).
        scale: ``s`` of the metric-learning logits.
        soft_temp: ``t`` of the soft labels.
        soft_form: ``"softmax"`` or ``"relu"``.
        detach_input: read ``h.detach()`` (the metric terms then train only this block).
        soft_source: ``"correlation"`` (default: from ``C``) or ``"posterior"`` (class-mean ``p_ccl``).
        posterior_momentum: EMA momentum of the ``"posterior"`` source, per training step.
        proj_hidden: 0 = one linear projection (spec default [I]); > 0 = a two-layer MLP with this width.

    Examples:
        >>> head = CCLHead(32, 7)
        >>> out = head(torch.randn(5, 32), torch.tensor([0, 1, 2, 3, 4]))
        >>> out.corr.shape, out.q.shape, bool(torch.allclose(out.q.sum(1), torch.ones(5)))
        (torch.Size([7, 7]), torch.Size([5, 7]), True)
    """

    class_posterior: torch.Tensor

    def __init__(self, in_dim: int, num_classes: int, emb_dim: int = 4, scale: float = 16.0, soft_temp: float = 4.0,
                 soft_form: str = "softmax", detach_input: bool = True, proj_hidden: int = 0,
                 soft_source: str = "correlation", posterior_momentum: float = 0.9) -> None:
        super().__init__()
        if soft_source not in ("correlation", "posterior"):
            raise ValueError(f"soft_source must be 'correlation' or 'posterior', got {soft_source!r}")
        if not 0.0 <= posterior_momentum < 1.0:
            raise ValueError(f"posterior_momentum must be in [0, 1), got {posterior_momentum}")
        if not 1 <= emb_dim <= 4096:
            raise ValueError(f"emb_dim must be in [1, 4096], got {emb_dim}")
        if soft_form not in ("softmax", "relu"):
            raise ValueError(f"soft_form must be 'softmax' or 'relu', got {soft_form!r}")
        self.num_classes = num_classes
        self.scale = float(scale)
        self.soft_temp = float(soft_temp)
        self.soft_form = soft_form
        self.detach_input = bool(detach_input)
        self.proj: nn.Module = (nn.Linear(in_dim, emb_dim) if proj_hidden <= 0 else
                                nn.Sequential(nn.Linear(in_dim, proj_hidden), nn.ReLU(inplace=True),
                                              nn.Linear(proj_hidden, emb_dim)))
        # unit-norm random init: with Adam the angular step is ~lr / ||e||, so a large init norm would
        # freeze the geometry (and with it the correlations) near its random start
        self.class_emb = nn.Parameter(F.normalize(torch.randn(num_classes, emb_dim), dim=1))
        self.soft_source = soft_source
        self.posterior_momentum = float(posterior_momentum)
        if soft_source == "posterior":
            with torch.no_grad():
                start = soft_labels_from_correlation(self.correlation().float(), self.soft_temp, self.soft_form)
            self.register_buffer("class_posterior", start)

    def class_embeddings(self) -> torch.Tensor:
        """``(K, d)`` unit-norm class embeddings."""
        return F.normalize(self.class_emb, dim=1)

    def correlation(self) -> torch.Tensor:
        """``(K, K)`` learned correlation ``C[j, k] = cos(e_j, e_k)``."""
        e = self.class_embeddings()
        return e @ e.t()

    @torch.no_grad()
    def soft_label_matrix(self) -> torch.Tensor:
        """``(K, K)`` current soft labels (row = true class), detached."""
        if self.soft_source == "posterior":
            return self.class_posterior.clone()
        return soft_labels_from_correlation(self.correlation().float(), self.soft_temp, self.soft_form)

    @torch.no_grad()
    def _update_posterior(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """EMA of the class-mean metric posterior, for the classes present in the batch."""
        p = torch.softmax(logits.detach().float(), dim=1)
        y = labels.long()
        sums = torch.zeros_like(self.class_posterior).index_add_(0, y, p)
        counts = torch.bincount(y, minlength=self.num_classes).to(p.dtype)
        seen = counts > 0
        m = self.posterior_momentum
        mean = sums[seen] / counts[seen, None]
        self.class_posterior[seen] = m * self.class_posterior[seen] + (1 - m) * mean

    def forward(self, h: torch.Tensor, labels: torch.Tensor | None = None) -> CCLOutput:
        """Embeddings, metric logits, correlations and (with ``labels``) the detached soft labels."""
        v = F.normalize(self.proj(h.detach() if self.detach_input else h), dim=1)
        e = self.class_embeddings()
        logits = -self.scale * (1.0 - v @ e.t())
        corr = e @ e.t()
        q = None
        if labels is not None:
            if self.soft_source == "posterior":
                if self.training:
                    self._update_posterior(logits, labels)
                q = self.class_posterior[labels.long()].clone()
            else:
                q = soft_labels_from_correlation(corr.detach().float(), self.soft_temp, self.soft_form)[labels.long()]
        return CCLOutput(v, e, logits, corr, q)
