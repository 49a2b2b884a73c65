"""VideoGAN's downstream test: polyp segmentation across two endoscopes, both directions of the spec's protocol.

The claim users were promised is that translation lets a polyp segmenter trained at one centre work
at another (Chen et al., AAAI 2020: about +5 % Dice). On the video split of a
:class:`~medlearn.data.video_pairs.VideoPairDataModule` (domain A = the labelled source centre,
e.g. CVC-ClinicDB; B = the target, e.g. ETIS-LaribPolypDB; masks are read only where the
direction needs them), with the foundation :class:`~medlearn.tasks.segmentation.Segmenter` as the
instrument (:mod:`medlearn.tasks.downstream`):

- **direction 1 (B -> A at test time)**: a segmenter trained on real A training frames is tested on
  the B test videos translated to A's style by ``G_BA`` (``dice_b2a``, ``iou_b2a``);
- **direction 2 (A -> B at training time)**: a segmenter trained on the A training videos translated
  to B's style by ``G_AB``, with A's masks, is tested on the real B test frames (``dice_a2b``, ...);
- **no adaptation**: the A-trained segmenter on the real B test frames (``dice_none``), the common
  baseline of both directions; **target-trained**: a segmenter trained on real B training frames
  with their masks (``dice_target``), the upper bound that needs labels at the target.

Scores are mean per-frame Dice and IoU (+1 smoothing) over every B test frame. Videos are translated
whole (:meth:`~medlearn.methods.videogan.module.VideoGAN.translate_clip`, the model's inference
pairing). The segmenters' seeds are the caller's, so arms compared at one seed share the
no-adaptation and target-trained segmenters (trained once per seed, reused).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from medlearn.data.video_pairs import DecodedVideo, VideoPairDataModule
from medlearn.io.errors import DataError
from medlearn.tasks.downstream import fit_binary_segmenter, score_segmenter

__all__ = ["SEGMENTER_BATCH", "SEGMENTER_EPOCHS", "SEGMENTER_LR", "polyp_segmentation", "translate_videos"]

#: Training epochs, batch size and learning rate of each downstream segmenter (about 10 s for 200 frames
#: of 32 px on 2 cores; on the phantoms it reaches Dice 0.8-0.9 in its own domain).
SEGMENTER_EPOCHS = 30
SEGMENTER_BATCH = 16
SEGMENTER_LR = 3e-3


def _frames(videos: list[DecodedVideo]) -> torch.Tensor:
    return torch.cat([v.frames for v in videos]).float().div(127.5).sub(1.0)


def _masks(videos: list[DecodedVideo], what: str) -> torch.Tensor:
    missing = [v.video for v in videos if v.masks is None]
    if missing:
        raise DataError(what, f"{len(missing)} video(s) without polyp masks, needed for the segmentation test: "
                              + ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else ""))
    return torch.cat([v.masks for v in videos if v.masks is not None]).long()


@torch.no_grad()
def translate_videos(model: Any, videos: list[DecodedVideo], direction: str) -> torch.Tensor:
    """Every frame of ``videos`` translated (``"ab"`` or ``"ba"``), video by video, in [-1, 1]."""
    model.eval()
    return torch.cat([model.translate_clip(v.frames.float().div(127.5).sub(1.0), direction).cpu() for v in videos])


def polyp_segmentation(model: Any, dm: VideoPairDataModule, out_dir: str | Path, seed: int = 0,
                       epochs: int = SEGMENTER_EPOCHS, tag: str = "") -> dict[str, float]:
    """Both directions of the protocol for a trained translator ``model`` (``None``: references only).

    Args:
        model: a trained :class:`~medlearn.methods.videogan.module.VideoGAN` (any arm), or ``None``.
        dm: the data module it was trained on (its video split is reused).
        out_dir: where the segmenters' run folders go (``seg-source-s<seed>`` and
            ``seg-target-s<seed>`` are shared by every arm at that seed; ``seg-a2b<tag>-s<seed>`` is
            the arm's own).
        seed: seed of every segmenter.
        epochs: training epochs of every segmenter.
        tag: names the arm's direction-2 segmenter folder.

    Returns:
        ``dice_none``, ``iou_none``, ``dice_target``, ``iou_target`` and, with a model,
        ``dice_b2a``, ``iou_b2a``, ``dice_a2b``, ``iou_a2b``.

    Raises:
        DataError: a video of A's training split or B's test / training split has no masks.
    """
    out = Path(out_dir)
    fit: dict[str, Any] = {"batch_size": SEGMENTER_BATCH, "lr": SEGMENTER_LR}
    a_train, b_train, b_test = dm.videos("a", "train"), dm.videos("b", "train"), dm.videos("b", "test")
    ya = _masks(a_train, f"{dm.hparams.domain_a} (training videos)")
    yb_test = _masks(b_test, f"{dm.hparams.domain_b} (test videos)")
    xb_test = _frames(b_test)
    source = fit_binary_segmenter(_frames(a_train), ya, out / f"seg-source-s{seed}", epochs=epochs, seed=seed,
                                  reuse=True, **fit)
    target = fit_binary_segmenter(_frames(b_train), _masks(b_train, f"{dm.hparams.domain_b} (training videos)"),
                                  out / f"seg-target-s{seed}", epochs=epochs, seed=seed, reuse=True, **fit)
    row: dict[str, float] = {}

    def put(name: str, scores: dict[str, Any]) -> None:
        row[f"dice_{name}"], row[f"iou_{name}"] = scores["dice"], scores["iou"]

    put("none", score_segmenter(source, xb_test, yb_test))
    put("target", score_segmenter(target, xb_test, yb_test))
    if model is not None:
        put("b2a", score_segmenter(source, translate_videos(model, b_test, "ba"), yb_test))
        adapted = fit_binary_segmenter(translate_videos(model, a_train, "ab"), ya, out / f"seg-a2b{tag}-s{seed}",
                                       epochs=epochs, seed=seed, **fit)
        put("a2b", score_segmenter(adapted, xb_test, yb_test))
    return row
