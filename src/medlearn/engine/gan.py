"""GAN training on the method base: :class:`GANModule`, what every GAN method shares.

A GAN method (pix2pix, MGAN, CycleGAN, VideoGAN) writes its networks and the losses of one
batch; :class:`GANModule` gives it the rest, on :class:`~medlearn.engine.module.MethodModule`'s
manual optimisation:

* **Players.** :meth:`GANModule.players` names the optimisers and the submodules each one
  updates (``{"generator": ["gen"], "discriminator": ["disc"]}``; CycleGAN: two generators in one
  optimiser, two discriminators in another; MGAN adds a segmentor). Each player has an
  :class:`~medlearn.engine.module.OptimSpec` from the hyper-parameters (``optimizer``, ``lr``,
  ``betas``, ``schedule``, ``milestones``, ``gamma``, ...), with ``lr_<player>`` overriding
  ``lr``; the base steps every schedule once per epoch.
* **n_critic.** The discriminators step every batch, the generators on every ``n_critic``-th
  (:meth:`GANModule.generator_turn`; WGAN-GP usually uses 5, pix2pix / MGAN 1). The counter is
  a buffer (``gan_step``), saved in checkpoints, so a resumed run keeps the rhythm.
* **Losses.** ``self.adversarial`` is the :class:`~medlearn.losses.adversarial.AdversarialLoss`
  of ``gan_loss`` (``"vanilla"``, ``"lsgan"``, ``"wgan"``) with ``patch_reduction``;
  :meth:`GANModule.penalty` is ``lambda_gp`` times the gradient penalty (WGAN-GP), 0 when
  ``lambda_gp`` is 0. Both compute in float32, so ``precision: bf16-mixed`` is safe.
* **Generator EMA.** ``g_ema`` > 0 keeps an exponential moving average of a generator
  (:meth:`GANModule.add_generator_ema`; Karras et al., ProGAN, ICLR 2018), updated after every
  batch by the base; evaluation and prediction may use it (:meth:`GANModule.inference_generator`).
* **Logs and report.** :meth:`GANModule.step_player` steps one optimiser and logs its loss parts
  as ``train/<player>/<part>`` (epoch means); the report gets the loss curves of every player
  (:meth:`GANModule.loss_curves`) and sample grids (:func:`sample_grid`: input, output and
  target side by side); the console's epoch line shows each player's loss and the monitored
  metric only (``console_metrics``).

Subclasses implement ``training_step`` with :meth:`step_player`, and call
:meth:`finish_batch` at its end. Hyper-parameters are read with defaults, so a subclass saves
only those it has (``save_hyperparameters``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from medlearn.engine.module import MethodModule, OptimizerPlan, OptimSpec, ParamGroup
from medlearn.losses.adversarial import AdversarialLoss, gradient_penalty

if TYPE_CHECKING:
    from medlearn.engine.report import Section

__all__ = ["GANModule", "ImagePool", "sample_grid"]


class GANModule(MethodModule):
    """Base of the GAN methods (see the module docstring).

    Hyper-parameters read (with defaults): ``gan_loss`` ("lsgan"), ``patch_reduction`` ("mean"),
    ``n_critic`` (1), ``lambda_gp`` (0), ``g_ema`` (0), and the optimiser fields of
    :class:`~medlearn.engine.module.OptimSpec` with ``lr_<player>`` overrides.
    """

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.register_buffer("gan_step", torch.zeros((), dtype=torch.long))
        self._adversarial: AdversarialLoss | None = None

    # --- configuration -------------------------------------------------------------------------
    def _hp(self, key: str, default: Any) -> Any:
        v = self.hparams.get(key, default)
        return default if v is None else v

    @property
    def adversarial(self) -> AdversarialLoss:
        """The adversarial loss of ``gan_loss`` / ``patch_reduction``."""
        if self._adversarial is None:
            self._adversarial = AdversarialLoss(self._hp("gan_loss", "lsgan"), self._hp("patch_reduction", "mean"))
        return self._adversarial

    @property
    def console_metrics(self) -> tuple[str, ...] | None:
        """The epoch line shows each player's loss and the monitored metric (a GAN logs many)."""
        keys = [f"train/{p}/loss" for p in self.players()]
        return tuple(keys + ([self.monitor[0]] if self.monitor else []))

    def players(self) -> dict[str, list[str]]:
        """Optimiser name -> the attribute names of the submodules it updates (in step order)."""
        raise NotImplementedError(f"{type(self).__name__} must declare its players")

    def player_spec(self, name: str) -> OptimSpec:
        """The optimiser of player ``name``: the module's spec with ``lr_<name>`` if given."""
        lr = self.hparams.get(f"lr_{name}")
        base = OptimSpec.from_hparams(self.hparams)
        return base if lr is None else replace(base, lr=float(lr))

    def optimizer_plans(self) -> list[OptimizerPlan]:
        """One optimiser per player over its submodules' parameters."""
        plans = []
        for name, modules in self.players().items():
            params = [p for m in modules for p in getattr(self, m).parameters()]
            plans.append(OptimizerPlan(name, [ParamGroup(params, name=name)], self.player_spec(name)))
        return plans

    # --- the step rhythm -------------------------------------------------------------------------
    def generator_turn(self) -> bool:
        """Whether the generators step at this batch (every ``n_critic``-th, StarGAN's rule)."""
        n = int(self._hp("n_critic", 1))
        step = self.gan_step
        assert isinstance(step, torch.Tensor)
        return (int(step) + 1) % max(1, n) == 0

    def finish_batch(self) -> None:
        """Advance the batch counter (call once at the end of ``training_step``)."""
        step = self.gan_step
        assert isinstance(step, torch.Tensor)
        step.add_(1)

    def step_player(self, name: str, loss: torch.Tensor, parts: Mapping[str, torch.Tensor] | None = None,
                    batch_size: int | None = None) -> None:
        """Zero the grads of player ``name``, back-propagate ``loss``, step; log ``loss`` and ``parts``.

        Logged as ``train/<name>/loss`` and ``train/<name>/<part>`` (epoch means).
        """
        self.manual_step(name, loss)
        self.log(f"train/{name}/loss", loss.detach().float(), on_step=False, on_epoch=True, batch_size=batch_size)
        for k, v in (parts or {}).items():
            self.log(f"train/{name}/{k}", v.detach().float(), on_step=False, on_epoch=True, batch_size=batch_size)

    @staticmethod
    def set_requires_grad(modules: Sequence[nn.Module], flag: bool) -> None:
        """Switch gradients of ``modules`` on or off (pix2pix freezes D while G steps)."""
        for m in modules:
            for p in m.parameters():
                p.requires_grad_(flag)

    def penalty(self, critic: Any, real: torch.Tensor, fake: torch.Tensor,
                conditions: Sequence[torch.Tensor] = ()) -> torch.Tensor:
        """``lambda_gp`` x the WGAN-GP gradient penalty (a zero tensor when ``lambda_gp`` is 0)."""
        lam = float(self._hp("lambda_gp", 0.0))
        if lam == 0.0:
            return real.new_zeros((), dtype=torch.float32)
        return lam * gradient_penalty(critic, real, fake, conditions)

    def on_train_epoch_end(self) -> None:
        """Step every schedule (the base); a player that sat out the epoch (e.g. G while a segmentor
        pre-trains) still follows the epoch schedule, without torch's order warning.
        """
        import warnings

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*lr_scheduler\.step\(\)` before `optimizer\.step\(\)`.*")
            super().on_train_epoch_end()

    # --- generator EMA ---------------------------------------------------------------------------
    def add_generator_ema(self, source: str) -> nn.Module | None:
        """Declare ``<source>_ema`` when ``g_ema`` > 0 (an EMA copy outside the optimisers)."""
        m = float(self._hp("g_ema", 0.0))
        if m <= 0.0:
            return None
        return self.add_ema(f"{source}_ema", source, m)

    def inference_generator(self, source: str) -> nn.Module:
        """The EMA copy of generator ``source`` if there is one, else the generator."""
        return getattr(self, f"{source}_ema", None) or getattr(self, source)

    # --- report ------------------------------------------------------------------------------------
    def loss_curves(self, run_dir: Path) -> Section | None:
        """A section with the epoch-mean training losses of every player (from ``metrics.csv``)."""
        import matplotlib.pyplot as plt
        import pandas as pd

        from medlearn.engine.report import Section, save_figure

        csv = Path(run_dir) / "metrics.csv"
        if not csv.is_file():
            return None
        df = pd.read_csv(csv)
        players = list(self.players())
        cols = {p: [c for c in df.columns if c.startswith(f"train/{p}/") and df[c].notna().any()] for p in players}
        players = [p for p in players if cols[p]]
        if not players or "epoch" not in df:
            return None
        fig, axes = plt.subplots(1, len(players), figsize=(4.2 * len(players), 3.0), squeeze=False)
        for ax, p in zip(axes[0], players):
            for c in cols[p]:
                d = df[["epoch", c]].dropna().groupby("epoch")[c].mean()
                ax.plot(d.index + 1, d.values, marker="o" if len(d) < 30 else None, ms=3, label=c.split("/")[-1])
            ax.set_title(f"{p} losses", fontsize=9)
            ax.set_xlabel("epoch")
            ax.set_ylabel("loss (epoch mean)", fontsize=8)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        fig.tight_layout()
        png = save_figure(fig, Path(run_dir) / "figures" / "gan_losses.png")
        return Section("Losses of every player", "Epoch means of each optimiser's loss and its parts "
                       "(train/<player>/<part> in metrics.csv).", [png])


class ImagePool(nn.Module):
    """CycleGAN's history of generated images for the discriminator (Shrivastava et al., CVPR 2017).

    ``query(images)`` returns, per image, with probability 1/2 a stored older image (which the new
    one replaces) and else the new image, once the pool is full; until then it stores and returns
    the new ones. As in ``junyanz/pytorch-CycleGAN-and-pix2pix`` (``util/image_pool.py``), pool
    size 50. The pool is a buffer (saved in checkpoints) and draws from torch's RNG (whose state
    checkpoints keep), so a resumed run continues identically. ``size`` 0: no pool.

    Args:
        size: images kept.
    """

    def __init__(self, size: int = 50) -> None:
        super().__init__()
        self.size = int(size)
        self.register_buffer("images", torch.zeros(0))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any, **kwargs: Any) -> None:
        key = prefix + "images"
        if key in state_dict:  # the stored pool's shape, not the empty placeholder's
            self.images = torch.empty_like(state_dict[key])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def query(self, images: torch.Tensor) -> torch.Tensor:
        """Images for the discriminator (detached), ``images``' shape."""
        images = images.detach()
        if self.size <= 0:
            return images
        if self.images.numel() == 0:
            self.images = images.new_zeros((self.size, *images.shape[1:]))
        out = []
        count, store = self.count, self.images
        assert isinstance(count, torch.Tensor) and isinstance(store, torch.Tensor)
        for img in images:
            n = int(count)
            if n < self.size:
                store[n] = img
                count.add_(1)
                out.append(img)
            elif float(torch.rand(())) < 0.5:
                k = int(torch.randint(0, self.size, ()))
                out.append(store[k].clone())
                store[k] = img
            else:
                out.append(img)
        return torch.stack(out)


def sample_grid(rows: Sequence[Mapping[str, torch.Tensor]], path: Path, title: str = "",
                vmin: float = 0.0, vmax: float = 1.0, row_labels: Sequence[str] | None = None) -> Path:
    """A figure of image rows, e.g. ``{"T2 (input)": ..., "FLAIR synth": ..., "FLAIR real": ...}`` per row.

    Args:
        rows: one mapping per row, column title -> a 2D image ``(H, W)`` or ``(1, H, W)``, or
            ``(3, H, W)`` RGB.
        path: the PNG to write.
        title: figure title.
        vmin: grey value of black.
        vmax: grey value of white.
        row_labels: a label per row (left).

    Returns:
        ``path``.
    """
    import matplotlib.pyplot as plt

    from medlearn.engine.report import save_figure

    ncol = max(len(r) for r in rows)
    fig, axes = plt.subplots(len(rows), ncol, figsize=(1.9 * ncol, 1.95 * len(rows) + 0.3), squeeze=False)
    for i, row in enumerate(rows):
        for j, (name, img) in enumerate(row.items()):
            ax = axes[i, j]
            a = img.detach().float().cpu()
            if a.ndim == 3 and a.shape[0] == 3:
                ax.imshow(a.permute(1, 2, 0).clamp(vmin, vmax).numpy())
            else:
                ax.imshow(a.reshape(a.shape[-2:]).numpy(), cmap="gray", vmin=vmin, vmax=vmax)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=8)
            if j == 0 and row_labels is not None:
                ax.set_ylabel(row_labels[i], fontsize=8)
        for j in range(len(row), ncol):
            axes[i, j].axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)
