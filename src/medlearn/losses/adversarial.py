"""Adversarial losses and the WGAN gradient penalty, shared by every GAN method.

This module owns the *pure* parts of GAN training: the generator and discriminator losses of
the three usual formulations, and the gradient penalty. It knows no optimiser, no trainer and no
network; :class:`medlearn.engine.gan.GANModule` schedules them (n_critic, players, EMA).

- ``"vanilla"``: the original non-saturating GAN (Goodfellow et al., NeurIPS 2014), as pix2pix
  uses it (Isola et al., CVPR 2017, arXiv:1611.07004): binary cross-entropy on logits, the
  generator maximising log D(G(x)).
- ``"lsgan"``: least squares (Mao et al., ICCV 2017, arXiv:1611.04076), targets 1 (real) and 0
  (fake), as CycleGAN uses it (Zhu et al., ICCV 2017).
- ``"wgan"``: Wasserstein critic (Arjovsky et al., ICML 2017); with :func:`gradient_penalty`
  WGAN-GP (Gulrajani et al., NeurIPS 2017, arXiv:1704.00028), as StarGAN and MGAN use it.

Patch discriminators give a map of outputs per sample. ``patch_reduction`` says how a sample's
map becomes one number before the batch mean: ``"mean"`` (pix2pix, CycleGAN) or ``"sum"`` (the
official TC-MGAN / StarGAN critic loss, ``-mean_b(sum_patch D)``).

Everything is computed in float32 (logits are cast), so the losses are safe under bf16 autocast.
No library offers these as pure functions with patch reductions (MONAI's ``PatchAdversarialLoss``
has no WGAN and no per-sample sum), hence written here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GAN_LOSSES", "AdversarialLoss", "gradient_penalty", "interpolate"]

#: The supported formulations.
GAN_LOSSES = ("vanilla", "lsgan", "wgan")
_REDUCTIONS = ("mean", "sum")


def _per_sample(x: torch.Tensor, reduction: str) -> torch.Tensor:
    """``(B, ...)`` -> ``(B,)`` by the patch reduction, in float32."""
    x = x.float().reshape(x.shape[0], -1)
    return x.mean(1) if reduction == "mean" else x.sum(1)


class AdversarialLoss(nn.Module):
    """Generator and discriminator losses of one GAN formulation.

    Args:
        kind: ``"vanilla"``, ``"lsgan"`` or ``"wgan"`` (see the module docstring).
        patch_reduction: ``"mean"`` or ``"sum"`` over a sample's patch outputs.
        real_label: target of real samples (vanilla / LSGAN).
        fake_label: target of fake samples (vanilla / LSGAN).

    Raises:
        ValueError: unknown ``kind`` or ``patch_reduction``.

    Examples:
        >>> loss = AdversarialLoss("lsgan")
        >>> d_real, d_fake = torch.ones(2, 1, 4, 4), torch.zeros(2, 1, 4, 4)
        >>> float(loss.discriminator(d_real, d_fake)), float(loss.generator(d_fake))
        (0.0, 1.0)
    """

    def __init__(self, kind: str = "lsgan", patch_reduction: str = "mean", real_label: float = 1.0,
                 fake_label: float = 0.0) -> None:
        super().__init__()
        if kind not in GAN_LOSSES:
            raise ValueError(f"kind must be one of {GAN_LOSSES}, got {kind!r}")
        if patch_reduction not in _REDUCTIONS:
            raise ValueError(f"patch_reduction must be one of {_REDUCTIONS}, got {patch_reduction!r}")
        self.kind, self.patch_reduction = kind, patch_reduction
        self.real_label, self.fake_label = float(real_label), float(fake_label)

    def _term(self, out: torch.Tensor, real: bool) -> torch.Tensor:
        """Mean over the batch of the per-sample loss of ``out`` treated as real / fake."""
        out = out.float()
        if self.kind == "wgan":
            v = _per_sample(out, self.patch_reduction)
            return -v.mean() if real else v.mean()
        target = torch.full_like(out, self.real_label if real else self.fake_label)
        if self.kind == "lsgan":
            per = (out - target) ** 2
        else:
            per = F.binary_cross_entropy_with_logits(out, target, reduction="none")
        return _per_sample(per, self.patch_reduction).mean()

    def generator(self, fake_out: torch.Tensor) -> torch.Tensor:
        """The generator's loss: the discriminator should take its fakes for real.

        Args:
            fake_out: discriminator outputs (logits or critic values) on fakes, ``(B, ...)``.

        Returns:
            A float32 scalar.
        """
        return self._term(fake_out, real=True)

    def discriminator(self, real_out: torch.Tensor, fake_out: torch.Tensor) -> torch.Tensor:
        """The discriminator's loss: real as real plus fake as fake (no 0.5 factor; pix2pix's
        halving is a weight the caller applies).

        Args:
            real_out: outputs on real samples, ``(B, ...)``.
            fake_out: outputs on (detached) fakes, ``(B', ...)``.

        Returns:
            A float32 scalar.
        """
        return self._term(real_out, real=True) + self._term(fake_out, real=False)

    def forward(self, out: torch.Tensor, real: bool) -> torch.Tensor:
        """The loss of ``out`` against the real (``True``) or fake target."""
        return self._term(out, real)


def interpolate(real: torch.Tensor, fake: torch.Tensor, alpha: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Random points on the lines between real and fake samples (WGAN-GP's ``x_hat``).

    Args:
        real: ``(B, C, ...)`` real samples.
        fake: fakes of the same shape (detached here).
        alpha: ``(B,)`` or broadcastable mixing weights; default ``U(0, 1)`` per sample.
        generator: random generator for ``alpha``.

    Returns:
        ``alpha * real + (1 - alpha) * fake`` with ``requires_grad``.
    """
    if alpha is None:
        alpha = torch.rand(real.shape[0], generator=generator, device=real.device)
    alpha = alpha.to(real.device, torch.float32).reshape(-1, *([1] * (real.ndim - 1)))
    x_hat = alpha * real.detach().float() + (1 - alpha) * fake.detach().float()
    return x_hat.requires_grad_(True)


def gradient_penalty(critic: Callable[..., torch.Tensor], real: torch.Tensor, fake: torch.Tensor,
                     conditions: Sequence[torch.Tensor] = (), alpha: torch.Tensor | None = None,
                     target: float = 1.0) -> torch.Tensor:
    """WGAN-GP penalty ``E[(||d critic(x_hat) / d x_hat||_2 - target)^2]`` (Gulrajani et al. 2017).

    The critic's output is summed per sample before differentiating (a patch critic's per-sample
    value is the sum over patches, as in the official StarGAN / TC-MGAN code); condition inputs
    (e.g. the source image of a paired GAN) are passed unchanged, not interpolated. The gradient
    is taken in float32 with autocast disabled, so the penalty is bf16-safe.

    Args:
        critic: ``critic(x_hat, *conditions)`` -> a tensor ``(B, ...)``, or a tuple whose first
            element is that tensor (a critic with an auxiliary head).
        real: ``(B, C, ...)`` real samples.
        fake: fakes of the same shape.
        conditions: extra critic inputs.
        alpha: mixing weights (default uniform per sample).
        target: the target gradient norm (1).

    Returns:
        A float32 scalar, differentiable w.r.t. the critic's parameters (``create_graph``).

    Raises:
        ValueError: ``real`` and ``fake`` differ in shape.
    """
    if real.shape != fake.shape:
        raise ValueError(f"real {tuple(real.shape)} and fake {tuple(fake.shape)} must have the same shape")
    x_hat = interpolate(real, fake, alpha)
    device_type = x_hat.device.type
    with torch.autocast(device_type=device_type, enabled=False):
        out = critic(x_hat, *[c.float() for c in conditions])
        if isinstance(out, (tuple, list)):
            out = out[0]
        score = out.float().reshape(out.shape[0], -1).sum(1)
        (grad,) = torch.autograd.grad(score.sum(), x_hat, create_graph=True)
    norm = grad.reshape(grad.shape[0], -1).norm(2, dim=1)
    return ((norm - target) ** 2).mean()
