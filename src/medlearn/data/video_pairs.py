"""Two-domain video data for unpaired video translation (VideoGAN): frame pairs within a video, test clips.

:class:`VideoPairDataModule` reads two folders of kind ``video`` (domain A, e.g. CVC-ClinicDB, and
domain B, e.g. ETIS-LaribPolypDB; any registered video layout, ``"auto"`` by detection), by
default ``root/CVC-ClinicDB`` and ``root/ETIS-LaribPolypDB`` (``domain_a`` / ``domain_b``:
other names under ``root``, or absolute paths), splits
each domain **by video** (never by frame: neighbouring frames are near duplicates; VideoGAN spec
5), decodes and resizes every frame once (uint8 in memory; bilinear for frames, nearest for
masks) and serves:

- training items (:class:`VideoPairDataset`): a frame of A and a partner frame *of the same A
  video*, a frame of B and a partner of the same B video (A and B unpaired), each in [-1, 1] with
  its endoscope border mask (:func:`~medlearn.data.video_frames.endoscope_border_mask`); the
  partner is drawn at random within the video (``pair_mode="random_in_video"``, the spec's
  default) or is a neighbour (``"adjacent"``); one epoch = as many items as A has training frames;
- evaluation items (:class:`VideoClipDataset`, batch size 1): one whole test video of each
  domain (frames, polyp masks when the layout has them, border masks) and, when the root holds
  ``Reference/N.tif`` (phantoms only), the same frames rendered in the other domain's style.

- prediction items (:class:`VideoPredictDataset`, batch size 1), with ``predict_root``: one whole
  video per item, resized to the model's size, with its stored size and frame rate, from a video
  file, a folder of frames (one video) or a folder of videos (any ``video`` layout).

Both domain roots are its :meth:`~VideoPairDataModule.layout_sources`, so ``medlearn fit`` checks
them before training. A domain whose layout derives its grouping by frame difference (ETIS, CVC
without its table) gets it written into the run folder of a training run as
``pseudo_sequences-<domain folder>.csv``; the dataset itself is never written to.

It knows no dataset layout (they come from the registry).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from medlearn.data.datamodule import LayoutSource, SplitDataModule
from medlearn.data.decode import load_image, resize_image, resize_mask
from medlearn.data.info import DataInfo
from medlearn.data.layouts import detect_layout, get_layout
from medlearn.data.video_frames import VideoFrame, endoscope_border_mask, group_videos, load_frame, load_frame_mask
from medlearn.io.errors import DataError

__all__ = ["PAIR_MODES", "DecodedVideo", "VideoClipDataset", "VideoPairDataModule", "VideoPairDataset",
           "decode_videos", "read_video_layout", "resolve_video_layout"]

PAIR_MODES = ("random_in_video", "adjacent")


def resolve_video_layout(root: str | Path, layout: str = "auto") -> str:
    """The ``video`` layout ``root`` is read as: ``layout``; ``"auto"``: detected, else ``video_folder``."""
    return detect_layout(root, "video", default="video_folder").name if layout == "auto" else layout


def read_video_layout(root: str | Path, layout: str = "auto", **options: Any) -> list[VideoFrame]:
    """The frames of ``root`` through the registered ``video`` layout (``"auto"``: detected)."""
    return list(get_layout(resolve_video_layout(root, layout), "video").read(Path(root), **options))


class DecodedVideo:
    """One video decoded at ``size``: ``frames (T, 3, S, S)`` uint8, ``masks (T, 1, S, S)`` uint8 or
    ``None``, ``border (T, 1, S, S)`` uint8, ``reference`` (phantom ground truth) uint8 or ``None``.
    """

    def __init__(self, video: str, frames: torch.Tensor, masks: torch.Tensor | None, border: torch.Tensor,
                 reference: torch.Tensor | None, names: list[str]) -> None:
        self.video, self.frames, self.masks, self.border, self.reference = video, frames, masks, border, reference
        self.names = names


def _u8(x: torch.Tensor) -> torch.Tensor:
    return x.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)


def decode_videos(records: list[VideoFrame], size: int) -> list[DecodedVideo]:
    """Decode and resize every frame (and mask, border, phantom reference) of every video."""
    out = []
    for video, frames in group_videos(records).items():
        imgs, masks, borders, refs = [], [], [], []
        for r in frames:
            full = load_frame(r)
            borders.append(_u8(resize_image(endoscope_border_mask(full).expand(3, -1, -1), (size, size))[:1]))
            imgs.append(_u8(resize_image(full, (size, size))))
            if r.mask is not None:
                masks.append(resize_mask(load_frame_mask(r), (size, size)).to(torch.uint8))
            ref = None if r.container else r.path.parent.parent / "Reference" / r.path.name
            if ref is not None and ref.is_file():
                refs.append(_u8(resize_image(load_image(ref, 3), (size, size))))
        out.append(DecodedVideo(video, torch.stack(imgs), torch.stack(masks) if len(masks) == len(frames) else None,
                                (torch.stack(borders) >= 128).to(torch.uint8),
                                torch.stack(refs) if len(refs) == len(frames) else None, [r.name for r in frames]))
    return out


def _pm1(x: torch.Tensor) -> torch.Tensor:
    return x.float().div(127.5).sub(1.0)


class VideoPairDataset(Dataset):
    """Training items: two frames of one A video and two of one B video (see the module docstring)."""

    def __init__(self, videos_a: list[DecodedVideo], videos_b: list[DecodedVideo], pair_mode: str = "random_in_video"
                 ) -> None:
        if pair_mode not in PAIR_MODES:
            raise ValueError(f"pair_mode must be one of {PAIR_MODES}, got {pair_mode!r}")
        self.a, self.b, self.pair_mode = videos_a, videos_b, pair_mode
        self.index_a = [(v, t) for v, d in enumerate(videos_a) for t in range(d.frames.shape[0])]
        self.index_b = [(v, t) for v, d in enumerate(videos_b) for t in range(d.frames.shape[0])]

    def __len__(self) -> int:
        return len(self.index_a)

    def _partner(self, n: int, t: int) -> int:
        if n == 1:
            return t
        if self.pair_mode == "adjacent":
            return t + 1 if t + 1 < n else t - 1
        k = int(torch.randint(n - 1, ()))
        return k if k < t else k + 1  # a different frame of the same video

    def _pair(self, video: DecodedVideo, t: int, prefix: str) -> dict[str, torch.Tensor]:
        j = self._partner(video.frames.shape[0], t)
        return {f"{prefix}_i": _pm1(video.frames[t]), f"{prefix}_j": _pm1(video.frames[j]),
                f"border_{prefix}_i": video.border[t].float(), f"border_{prefix}_j": video.border[j].float()}

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        va, ta = self.index_a[i]
        vb, tb = self.index_b[int(torch.randint(len(self.index_b), ()))]
        return {**self._pair(self.a[va], ta, "a"), **self._pair(self.b[vb], tb, "b")}


def _clip(v: DecodedVideo | None, prefix: str) -> dict[str, Any]:
    if v is None:
        empty = torch.zeros(0)
        return {f"frames_{prefix}": empty, f"border_{prefix}": empty, f"masks_{prefix}": empty,
                f"reference_{prefix}": empty, f"video_{prefix}": ""}
    return {f"frames_{prefix}": _pm1(v.frames), f"border_{prefix}": v.border.float(),
            f"masks_{prefix}": v.masks.float() if v.masks is not None else torch.zeros(0),
            f"reference_{prefix}": _pm1(v.reference) if v.reference is not None else torch.zeros(0),
            f"video_{prefix}": v.video}


class VideoClipDataset(Dataset):
    """Evaluation items: the ``i``-th test video of A and the ``i``-th of B (batch size 1).

    Item keys per domain ``x`` in ``a``, ``b``: ``frames_x (T, 3, S, S)`` in [-1, 1],
    ``border_x (T, 1, S, S)``, ``masks_x (T, 1, S, S)``, ``reference_x`` (phantom ground truth in
    the other domain's style) and ``video_x``; a domain with fewer videos gives empty tensors and
    ``""`` from its last video on, so that every batch up to the shorter count holds both domains
    (the colour distance needs real target frames in every evaluated batch).
    """

    def __init__(self, videos_a: list[DecodedVideo], videos_b: list[DecodedVideo]) -> None:
        self.a, self.b = videos_a, videos_b

    def __len__(self) -> int:
        return max(len(self.a), len(self.b))

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {**_clip(self.a[i] if i < len(self.a) else None, "a"),
                **_clip(self.b[i] if i < len(self.b) else None, "b")}


def read_predict_videos(source: str | Path, layout: str = "auto") -> list[VideoFrame]:
    """The frames to translate: a video file, a folder of frame images (one video), or a folder of videos."""
    from medlearn.data.records import IMAGE_SUFFIXES
    from medlearn.data.video_frames import VIDEO_SUFFIXES, video_meta

    p = Path(source)
    if p.is_file():
        if p.suffix.lower() not in VIDEO_SUFFIXES:
            raise DataError(p, f"not a video file ({', '.join(sorted(VIDEO_SUFFIXES))})")
        n, _, _ = video_meta(p)
        return [VideoFrame(p, p.stem, i, f"{p.name}#{i}", container=True) for i in range(n)]
    if p.is_dir() and any(f.suffix.lower() in IMAGE_SUFFIXES for f in p.iterdir() if f.is_file()):
        import re

        def natural(f: Path) -> tuple[Any, ...]:
            return tuple(int(t) if t.isdecimal() else t for t in re.split(r"(\d+)", f.stem)) + (f.name,)

        files = sorted((f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES), key=natural)
        records = [VideoFrame(f, p.name, i, f.name) for i, f in enumerate(files)]
        from medlearn.data.video_frames import check_videos

        check_videos(records, p)
        return records
    return read_video_layout(p, layout)


class VideoPredictDataset(Dataset):
    """One whole video per item for ``medlearn predict`` (frames at ``size`` in [-1, 1], stored size, rate)."""

    def __init__(self, records: list[VideoFrame], size: int) -> None:
        self.videos = list(group_videos(records).items())
        self.size = size

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, i: int) -> dict[str, Any]:
        from medlearn.data.video_frames import video_meta

        video, frames = self.videos[i]
        full = [load_frame(r) for r in frames]
        h, w = full[0].shape[-2:]
        container = frames[0].container
        fps = video_meta(frames[0].path)[2] if container else 0.0
        x = torch.stack([resize_image(f, (self.size, self.size)) for f in full]).mul(2.0).sub(1.0)
        return {"frames": x, "height": int(h), "width": int(w), "fps": float(fps), "video": video,
                "container": container, "source": str(frames[0].path),
                "names": "\n".join(Path(r.name).name for r in frames)}


class VideoPairDataModule(SplitDataModule[Any]):
    """Two video domains split by video (see the module docstring).

    Args:
        root: the folder holding both domains.
        domain_a: domain A's folder under ``root`` (or an absolute path; a ``video`` layout).
        domain_b: domain B's folder.
        layout_a: A's layout (``"auto"``: detected; ``"cvc_clinicdb"``, ``"etis"``, ``"video_folder"``).
        layout_b: B's layout.
        image_size: frame side after resizing (the spec: 256; CPU demo 32-48).
        pair_mode: ``"random_in_video"`` or ``"adjacent"``.
        test_fraction: share of each domain's videos held out for testing (at least one video).
        val_fraction: share held out for validation (0: the test videos also validate).
        split_seed: seed of the video split.
        batch_size: training pairs per batch (evaluation: one video per batch).
        num_workers: loader workers.
        num_train: use only the first ``num_train`` training frames of A per epoch (``None``: all).
        predict_root: what ``medlearn predict`` translates: a video file, a folder of frames, or a
            folder of videos (``None``: the test videos).
        predict_layout: the layout of a folder of videos (``"auto"``).
        cache: unused (frames are always decoded once into memory); kept for the base.
    """

    no_test_reason = "each domain needs at least two videos (one is held out for testing)"

    def __init__(self, root: str | Path | None = None, domain_a: str = "CVC-ClinicDB",
                 domain_b: str = "ETIS-LaribPolypDB", layout_a: str = "auto", layout_b: str = "auto",
                 image_size: int = 48,
                 pair_mode: str = "random_in_video", test_fraction: float = 0.25, val_fraction: float = 0.0,
                 split_seed: int = 0, batch_size: int = 4, num_workers: int = 0, num_train: int | None = None,
                 predict_root: str | Path | None = None, predict_layout: str = "auto", cache: bool = True) -> None:
        super().__init__(root)
        if pair_mode not in PAIR_MODES:
            raise ValueError(f"pair_mode must be one of {PAIR_MODES}, got {pair_mode!r}")
        self.save_hyperparameters()
        self._split: dict[str, list[list[DecodedVideo]]] | None = None

    def loader_seed(self) -> int:
        """The split seed (no label subsets here)."""
        return int(self.hparams.split_seed)

    def _domains(self) -> list[tuple[Path, str, str]]:
        """``(root, layout, name)`` of domains A and B; ``name`` (the folder's, ``-a`` / ``-b`` added
        when both have the same) names the run folder's ``pseudo_sequences-<name>.csv``.
        """
        h = self.hparams
        assert self.root is not None
        roots = [self.root / h.domain_a, self.root / h.domain_b]  # an absolute domain replaces root
        names = [r.name for r in roots]
        if names[0] == names[1]:
            names = [f"{names[0]}-a", f"{names[1]}-b"]
        return [(roots[0], h.layout_a, names[0]), (roots[1], h.layout_b, names[1])]

    def layout_sources(self) -> list[LayoutSource]:
        """One source per domain root (kind ``video``, its layout resolved as the reader resolves it).

        The check reads with the readers' defaults, so it writes nothing (not even a derived grouping).
        """
        if self.root is None:
            return []
        return [LayoutSource(root, "video", resolve_video_layout(root, layout) if root.exists() else layout, {})
                for root, layout, _ in self._domains()]

    def _split_domain(self, root: str | Path, layout: str, name: str) -> list[list[DecodedVideo]]:
        h = self.hparams
        videos = decode_videos(read_video_layout(root, layout, **self.grouping_options(name)), h.image_size)
        if len(videos) < 2:
            raise DataError(root, f"{len(videos)} video(s): {self.no_test_reason}")
        order = np.random.default_rng(h.split_seed).permutation(len(videos))
        n_test = max(1, round(h.test_fraction * len(videos)))
        n_val = round(h.val_fraction * len(videos))
        if n_test + n_val >= len(videos):
            raise DataError(root, f"{len(videos)} videos leave none for training with test_fraction "
                                  f"{h.test_fraction} and val_fraction {h.val_fraction}")
        test = [videos[i] for i in sorted(order[:n_test])]
        val = [videos[i] for i in sorted(order[n_test:n_test + n_val])] or test
        train = [videos[i] for i in sorted(order[n_test + n_val:])]
        return [train, val, test]

    def setup(self, stage: str | None = None) -> None:
        """Read, decode and split both domains (once); for ``"predict"`` with ``predict_root``, only that."""
        h = self.hparams
        if stage == "predict" and h.predict_root is not None:
            if self.predict_set is None:
                self.predict_set = VideoPredictDataset(read_predict_videos(h.predict_root, h.predict_layout),
                                                       h.image_size)
            return
        if self.root is None:
            raise DataError("<none>", "no data root: pass root (the folder holding both domains)")
        if self._split is None:
            (root_a, layout_a, name_a), (root_b, layout_b, name_b) = self._domains()
            a = self._split_domain(root_a, layout_a, name_a)
            b = self._split_domain(root_b, layout_b, name_b)
            self._split = {"a": a, "b": b}
            self.train_set = VideoPairDataset(a[0], b[0], h.pair_mode)
            if h.num_train is not None:
                self.train_set.index_a = self.train_set.index_a[: int(h.num_train)]
            self.val_set = VideoClipDataset(a[1], b[1])
            self.test_set = VideoClipDataset(a[2], b[2])

    def videos(self, domain: str, split: str) -> list[DecodedVideo]:
        """The decoded videos of ``domain`` (``"a"`` or ``"b"``) in ``split`` (``"train"``, ``"val"``, ``"test"``)."""
        if domain not in ("a", "b") or split not in ("train", "val", "test"):
            raise ValueError(f"domain must be 'a' or 'b' and split 'train', 'val' or 'test', got {domain!r}, {split!r}")
        self.setup("fit")
        assert self._split is not None
        return self._split[domain][("train", "val", "test").index(split)]

    def _loader(self, dataset: Any, train: bool) -> Any:
        if not train:  # whole videos of different lengths: one per batch
            from torch.utils.data import DataLoader

            return DataLoader(dataset, batch_size=1, shuffle=False, num_workers=0)
        return super()._loader(dataset, train)

    def data_info(self) -> DataInfo:
        """Training pairs per epoch, frame size and channels."""
        self.setup("fit")
        assert self.train_set is not None
        return DataInfo(n_train=len(self.train_set), input_size=(self.hparams.image_size,) * 2, in_channels=3)
