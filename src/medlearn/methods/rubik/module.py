"""Rubik's cube recovery pretraining as a LightningModule.

Zhuang, Li, Chen, Ma, Zheng: "Self-supervised Feature Learning for 3D Medical Images by Playing a
Rubik's Cube", MICCAI 2019 (arXiv:1910.02241); Rubik's Cube+ (cube masking): Zhu et al., Medical
Image Analysis 64:101746, 2020. No official code was published; details follow the benchmark
re-implementation ``EndoluminalSurgicalVision-IMR/Medical-SSL`` where the paper is silent.

Per step, for every volume of the batch: cut a 2x2x2 grid of sub-cubes with random gaps, shuffle
them with one of K maximal-Hamming permutations, turn each cube by 180 degrees (none / horizontal /
vertical, independently), optionally mask some cubes (Rubik's Cube+); the Siamese-Octad network
(one shared encoder) predicts the permutation, the rotations (and the masks). Loss:
``w_order * CE + w_rot * (BCE_hor + BCE_ver) [+ w_mask * BCE_mask]``.

The puzzles are built on the batch tensor on the training device, with a NumPy generator seeded
from the torch RNG, so a seeded (or resumed) run draws the same puzzles.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from medlearn.engine.module import MethodModule
from medlearn.engine.report import Section, save_figure
from medlearn.methods.rubik.losses import pretext_accuracy, rubik_loss
from medlearn.methods.rubik.model import SiameseOctad
from medlearn.methods.rubik.puzzle import RubikPuzzle, min_hamming_distance

__all__ = ["Rubik"]


class Rubik(MethodModule):
    """Rubik's cube (+) pretext training of a 3D encoder.

    Args:
        encoder: backbone factory name, 3D (``smallcnn`` at CPU scale; ``resnet18``, ``plaincnn`` ...).
        in_channels: volume channels (1 for CT; 4 for BraTS's four contrasts).
        k: number of permutations (100).
        perm_seed: seed of the permutation set (fixed: it defines what the order classes mean).
        cube_size: sub-cube size ``(d, h, w)``; must fit inside a half of the input volume per axis.
        rotation: predict 180-degree rotations (``False``: order only, the 3D jigsaw ablation).
        mask: Rubik's Cube+ cube masking and mask head.
        p_mask: probability that a cube is masked.
        mask_ratio: fraction of a masked cube's voxels set to zero.
        flip_lr: random left-right flip of the whole volume before cutting.
        flip_axis: the volumes' left-right spatial axis (0 = x for NIfTI in RAS/LAS voxel order;
            flipping another axis makes the rotation labels ambiguous).
        feature_dim: per-cube feature width (64).
        head_hidden: hidden width of the heads (1024).
        w_order: weight of the permutation loss (0.5; Rubik's Cube+: 1).
        w_rot: weight of the rotation loss (0.5; Rubik's Cube+: 1).
        w_mask: weight of the mask loss (1).
        optimizer: ``"adam"`` (default), ``"adamw"`` or ``"sgd"``.
        lr: learning rate (1e-3).
        weight_decay: weight decay (1e-6).
        schedule: ``"step"`` (x0.1 at ``milestones``), ``"cosine"`` or ``"constant"``.
        milestones: epochs of the step schedule (250).
    """

    #: ``precision: auto`` keeps fp32 for pretraining: the Rubik encoder pretrained under bf16 autocast
    #: probed 0.478 / 0.560 test accuracy at 120 / 300 labels against 0.556 / 0.641 in fp32 on the same
    #: thread count (3 seeds each; the order-only encoder did not move); ``docs/results.md``, "Precision".
    bf16_autocast = False

    @property
    def monitor(self) -> tuple[str, str]:
        """No labels during pretraining: ``best.ckpt`` on the epoch loss."""
        return ("train/loss", "min")

    def __init__(
        self,
        encoder: str = "smallcnn",
        in_channels: int = 1,
        k: int = 100,
        perm_seed: int = 0,
        cube_size: tuple[int, int, int] = (16, 16, 16),
        rotation: bool = True,
        mask: bool = False,
        p_mask: float = 0.5,
        mask_ratio: float = 0.5,
        flip_lr: bool = True,
        flip_axis: int = 0,
        feature_dim: int = 64,
        head_hidden: int = 1024,
        w_order: float = 0.5,
        w_rot: float = 0.5,
        w_mask: float = 1.0,
        optimizer: str = "adam",
        lr: float = 1e-3,
        weight_decay: float = 1e-6,
        schedule: str = "step",
        milestones: tuple[int, ...] = (250,),
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.octad = SiameseOctad(encoder, in_channels, k, feature_dim, head_hidden, mask_head=mask,
                                  rotation_heads=rotation)
        p_rotate = (1 / 3, 1 / 3, 1 / 3) if rotation else (1.0, 0.0, 0.0)
        self.puzzle = RubikPuzzle(k=k, cube_size=tuple(cube_size), p_rotate=p_rotate, mask=mask, p_mask=p_mask,
                                  mask_ratio=mask_ratio, flip_lr=flip_lr, seed=perm_seed, flip_axis=flip_axis)
        side = [2 * c for c in cube_size]
        self.example_input_array = torch.zeros(2, in_channels, *side)
        self._samples: torch.Tensor | None = None

    @property
    def min_hamming(self) -> int:
        """Minimum pairwise Hamming distance of the permutation set."""
        return min_hamming_distance(self.puzzle.permutations)

    def forward(self, volumes: torch.Tensor) -> torch.Tensor:
        """Pooled encoder features ``(B, F)`` of whole volumes ``(B, C, D, H, W)`` (what transfers)."""
        return self.octad.encoder(volumes)

    def make_puzzles(self, volumes: torch.Tensor) -> dict[str, torch.Tensor]:
        """Puzzles for a batch, drawn with a generator seeded from the torch RNG."""
        seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
        return self.puzzle.batch(volumes, np.random.default_rng(seed))

    def _step(self, batch: dict[str, Any], stage: str) -> torch.Tensor:
        x = batch["image"]
        if self._samples is None and stage == "train":
            self._samples = x[:2].detach().cpu()
        targets = self.make_puzzles(x)
        out = self.octad(targets["cubes"])
        h = self.hparams
        loss, parts = rubik_loss(out, targets, h.w_order, h.w_rot, h.w_mask)
        acc = pretext_accuracy(out, targets)
        log = {f"{stage}/loss": loss.detach(), **{f"{stage}/loss_{k}": v for k, v in parts.items()},
               **{f"{stage}/{k}": v for k, v in acc.items()}}
        self.log_dict(log, on_step=False, on_epoch=True, batch_size=x.shape[0], sync_dist=True)
        return loss

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """Pretext loss on fresh puzzles of the batch."""
        return self._step(batch, "train")

    def evaluation_step(self, batch: dict[str, Any], batch_idx: int, stage: str) -> None:
        """Pretext loss and accuracies on fresh puzzles of the batch."""
        self._step(batch, stage)

    def report_sections(self, run_dir: Path, stage: str) -> list[Section]:
        """Montage: the central slice of the 8 cubes of a volume before and after the puzzle (after ``fit``)."""
        if self._samples is None or stage != "fit":
            return []
        import matplotlib.pyplot as plt

        vol = self._samples[:1].to(self.device)
        g = torch.random.get_rng_state()
        torch.manual_seed(0)
        with torch.no_grad():
            t = self.make_puzzles(vol)
        torch.random.set_rng_state(g)
        order = int(t["order"][0])
        shuffled = t["cubes"][0]  # (8, C, d, h, w)
        original = self.puzzle.restore(shuffled, order, t["hor"][0], t["ver"][0])  # all-zero turns if rotation=False
        fig, axes = plt.subplots(2, 8, figsize=(13, 3.6))
        for m in range(8):
            for r, (cubes, title) in enumerate(((original, "cell"), (shuffled, "slot"))):
                c = cubes[m, 0].float().cpu().numpy()
                ax = axes[r, m]
                ax.imshow(c[c.shape[0] // 2], cmap="gray")
                ax.set_xticks([])
                ax.set_yticks([])
                label = f"{title} {m}"
                if r == 1:
                    rot = ("" if not self.hparams.rotation else
                           " H" if float(t["hor"][0, m]) else " V" if float(t["ver"][0, m]) else "")
                    label += f" <- {int(self.puzzle.permutations[order][m])}{rot}"
                ax.set_title(label, fontsize=8)
        fig.suptitle(f"Rubik's cube: central slices of the 8 cubes before (top) and after (bottom) the puzzle "
                     f"(permutation {order} of {self.hparams.k}; H/V = 180-degree turn)")
        png = save_figure(fig, Path(run_dir) / "figures" / "cubes.png")
        return [Section("Puzzle", f"Permutation set: K = {self.hparams.k}, minimum Hamming distance "
                        f"{self.min_hamming}.", [png])]
