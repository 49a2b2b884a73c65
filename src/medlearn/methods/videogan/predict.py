"""What ``medlearn predict`` writes for VideoGAN: each translated video at its own size, frame count and rate.

:class:`VideoWriter` writes, per input video, into the prediction folder:

- a video file input (``case.mp4``): ``case.mp4`` (H.264, the input's frame rate);
- frames (a folder of frames, or a folder of frame folders): ``<video>/<frame stem>.png`` for every
  input frame, 8-bit RGB, same names;

every output at the input's stored size (the translation runs at the model's size and is resized
back, bilinear), plus ``translations.csv`` (video, source, frames, height, width, fps, output).
Files are written atomically.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch.callbacks import BasePredictionWriter

from medlearn.data.video_frames import write_video
from medlearn.io import write_image

__all__ = ["VideoWriter"]


class VideoWriter(BasePredictionWriter):
    """Write each translated video (see the module docstring).

    Args:
        out_dir: the prediction folder.
    """

    def __init__(self, out_dir: str | Path) -> None:
        super().__init__(write_interval="batch")
        self.out_dir = Path(out_dir)
        self.rows: list[dict[str, Any]] = []

    def write_on_batch_end(self, trainer: Any, pl_module: Any, prediction: Any, batch_indices: Any, batch: Any,
                           batch_idx: int, dataloader_idx: int = 0) -> None:
        """Write one video's translation."""
        frames = prediction["frames"]  # (T, 3, H, W) in [0, 1]
        video = prediction["video"]
        if prediction["container"]:
            out = write_video(self.out_dir / f"{video}.mp4", frames, prediction["fps"])
        else:
            out = self.out_dir / video
            u8 = np.clip(np.rint(frames.numpy() * 255.0), 0, 255).astype(np.uint8)
            for name, img in zip(prediction["names"], u8):
                write_image(out / f"{Path(name).stem}.png", img)
        self.rows.append({"video": video, "source": prediction["source"], "frames": int(frames.shape[0]),
                          "height": int(frames.shape[2]), "width": int(frames.shape[3]),
                          "fps": prediction["fps"], "output": out.name})
        with (self.out_dir / "translations.csv").open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(self.rows[0]), lineterminator="\n")
            w.writeheader()
            w.writerows(self.rows)
