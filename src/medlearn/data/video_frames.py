"""Videos as ordered frames: the :class:`VideoFrame` record, frame decoding, checks and grouping.

A video reaches medlearn either as numbered image files (CVC-ClinicDB's ``Original/N.tif`` with a
sequence table, ETIS-LaribPolypDB's ``N.tif`` with pseudo-sequences, a folder of frame folders) or
as one container file (mp4 / avi ...) decoded through PyAV (``pip install av``). This module owns
what those layouts share and knows none of them:

- :class:`VideoFrame`: one frame, its video, its position in the video, its mask if any;
- :func:`load_frame` / :func:`decode_video` / :func:`video_meta`: RGB frames in [0, 1] from either
  source (a container is decoded once and cached per process, :func:`decode_video`);
- :func:`check_videos`: frames of one video must share one size, masks named by the records must
  exist: a :class:`~medlearn.io.errors.DataError` lists every bad video and file;
- :func:`split_by_frame_difference` / :func:`split_frame_files`: pseudo-sequences of an
  index-ordered frame list, cut where consecutive frames differ strongly (the VideoGAN spec's rule
  for ETIS, which ships no sequence ids); :func:`write_grouping` writes a grouping as a CSV, and
  :func:`keep_derived_grouping` is what a layout does with the grouping it derived: write it where
  ``grouping_out`` names a file, else say so in one line of the log (a read never writes into the
  dataset);
- :func:`endoscope_border_mask`: the black endoscope border, masked out of colour statistics;
- :func:`write_video`: frames -> an mp4 with a given frame rate (``medlearn predict``).
"""

from __future__ import annotations

import csv
import io
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from medlearn.data.decode import image_size, load_image, load_mask
from medlearn.io.errors import DataError

__all__ = ["VIDEO_SUFFIXES", "VideoFrame", "check_videos", "decode_video", "endoscope_border_mask",
           "frame_differences", "group_videos", "keep_derived_grouping", "load_frame", "load_frame_mask",
           "split_by_frame_difference", "split_frame_files", "video_meta", "write_grouping", "write_video"]

log = logging.getLogger(__name__)

#: Container suffixes read through PyAV.
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".mpg", ".mpeg", ".m4v", ".webm"})


@dataclass
class VideoFrame:
    """One frame of a video.

    Attributes:
        path: the image file of the frame, or the video container it is decoded from.
        video: the video (sequence) id; frames of one video never straddle a split.
        frame: 0-based position of the frame in its video.
        name: the frame's name in its layout (``Original/12.tif``, ``clip03/0007.png``, ``a.mp4#7``).
        mask: the frame's label mask file, ``None`` when the layout has none.
        domain: the acquisition domain (centre / scope), ``""`` when unknown.
        split: ``"train"``, ``"val"``, ``"test"`` when the layout fixes it, else ``""``.
        container: ``path`` is a video container and ``frame`` the decoded frame index.
    """

    path: Path
    video: str
    frame: int
    name: str
    mask: Path | None = None
    domain: str = ""
    split: str = ""
    container: bool = False


def _require_av(path: str | Path) -> object:
    try:
        import av
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise DataError(path, "reading video files needs PyAV: pip install av") from exc
    return av


@lru_cache(maxsize=4)
def _decode_cached(path: str, mtime: float) -> tuple[np.ndarray, float]:
    av = _require_av(path)
    try:
        with av.open(path) as box:  # type: ignore[attr-defined]
            stream = box.streams.video[0]
            rate = float(stream.average_rate or stream.guessed_rate or 25)
            frames = [f.to_ndarray(format="rgb24") for f in box.decode(stream)]
    except DataError:
        raise
    except Exception as exc:
        raise DataError(path, f"cannot decode the video: {type(exc).__name__}: {exc}") from exc
    if not frames:
        raise DataError(path, "the video holds no frames")
    sizes = sorted({f.shape[:2] for f in frames})
    if len(sizes) > 1:
        raise DataError(path, f"the video's frames differ in size: {sizes}")
    return np.stack(frames), rate


def decode_video(path: str | Path) -> tuple[np.ndarray, float]:
    """Decode every frame of a video container (through PyAV).

    Args:
        path: an mp4 / avi / ... file.

    Returns:
        ``(frames (T, H, W, 3) uint8 RGB, frames per second)``; the last 4 videos are cached.

    Raises:
        DataError: naming the file: PyAV missing, unreadable or empty video, frames of different sizes.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(p, "no such video file")
    return _decode_cached(str(p), p.stat().st_mtime)


def video_meta(path: str | Path) -> tuple[int, tuple[int, int], float]:
    """``(frame count, (H, W), fps)`` of a video container (decodes it; see :func:`decode_video`)."""
    frames, fps = decode_video(path)
    return int(frames.shape[0]), (int(frames.shape[1]), int(frames.shape[2])), fps


def load_frame(record: VideoFrame) -> torch.Tensor:
    """The frame as a ``(3, H, W)`` float32 RGB tensor in [0, 1] (image file or decoded container).

    Raises:
        DataError: naming the file when it cannot be read or the frame index is out of range.
    """
    if not record.container:
        return load_image(record.path, 3)
    frames, _ = decode_video(record.path)
    if not 0 <= record.frame < frames.shape[0]:
        raise DataError(record.path, f"frame {record.frame} out of range (the video has {frames.shape[0]})")
    return torch.from_numpy(frames[record.frame]).permute(2, 0, 1).float().div_(255.0)


def load_frame_mask(record: VideoFrame, positive_from: int = 1) -> np.ndarray:
    """The frame's binary mask ``(H, W)`` int64 (stored values ``>= positive_from`` -> 1).

    Polyp masks are stored as 0 / 255 (and JPEG-like re-encodings as values near them), so the
    default reads any non-zero value as polyp; ``positive_from=128`` reads soft edges by threshold.

    Raises:
        DataError: the record has no mask, or the mask cannot be decoded.
    """
    if record.mask is None:
        raise DataError(record.path, "this frame has no mask")
    return (load_mask(record.mask) >= positive_from).astype(np.int64)


def endoscope_border_mask(frame: torch.Tensor, level: float = 0.06) -> torch.Tensor:
    """1 on tissue, 0 on the black endoscope border (and dark overlays touching the image edge).

    Dark pixels (every channel below ``level`` on [0, 1]) that are connected to the image edge
    form the border; dark regions inside the view (the lumen) are kept, so the colour-histogram
    loss sees them (VideoGAN spec 5: "mask out the black border, otherwise L_hist matches the
    border, not the tissue"). Connected components by :func:`scipy.ndimage.label` (8-connected).

    Args:
        frame: ``(3, H, W)`` in [0, 1].
        level: the darkness level.

    Returns:
        ``(1, H, W)`` float32 mask.
    """
    from scipy import ndimage

    dark = (frame.detach().float().amax(0) < level).cpu().numpy()
    labels, _ = ndimage.label(dark, structure=np.ones((3, 3)))
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    border = np.isin(labels, edge[edge > 0])
    return torch.from_numpy((~border).astype(np.float32))[None]


def group_videos(records: Sequence[VideoFrame]) -> dict[str, list[VideoFrame]]:
    """Video id -> its frames ordered by ``frame`` (videos in order of first appearance)."""
    groups: dict[str, list[VideoFrame]] = defaultdict(list)
    for r in records:
        groups[r.video].append(r)
    return {v: sorted(fs, key=lambda r: r.frame) for v, fs in groups.items()}


def check_videos(records: Sequence[VideoFrame], root: str | Path, need_masks: bool = False) -> None:
    """Check that the frames of every video share one size and that named masks exist.

    Reads image headers only (containers are checked when decoded). Every problem is listed.

    Args:
        records: the frames.
        root: the dataset root named in the error.
        need_masks: also require every frame to have a mask.

    Raises:
        DataError: listing every video whose frames differ in size (with the frames of each size),
            every missing or unreadable frame and every missing mask.
    """
    problems: list[str] = []
    for video, frames in group_videos(records).items():
        sizes: dict[tuple[int, int], list[str]] = defaultdict(list)
        for r in frames:
            if r.mask is None and need_masks:
                problems.append(f"{r.name}: no mask")
            elif r.mask is not None and not Path(r.mask).is_file():
                problems.append(f"{r.name}: mask {r.mask} missing")
            if r.container:
                continue
            try:
                w, h = image_size(r.path)
                sizes[(h, w)].append(r.name)
            except DataError as exc:
                problems.append(f"{r.name}: {exc.reason}")
        if len(sizes) > 1:
            parts = "; ".join(f"{h}x{w}: {', '.join(names[:4])}{' ...' if len(names) > 4 else ''}"
                              for (h, w), names in sorted(sizes.items()))
            problems.append(f"video {video}: frames of different sizes ({parts})")
    if problems:
        raise DataError(root, f"{len(problems)} problems in the videos", problems)


def frame_differences(frames: Sequence[torch.Tensor], thumb: int = 16) -> np.ndarray:
    """Mean absolute difference of consecutive frames' ``thumb`` x ``thumb`` area-averaged thumbnails, ``(N-1,)``."""
    th = [torch.nn.functional.interpolate(f[None].float(), size=(thumb, thumb), mode="area")[0] for f in frames]
    return np.array([float((th[t] - th[t - 1]).abs().mean()) for t in range(1, len(th))])


def _cut_level(diff: np.ndarray, threshold: float | None, factor: float) -> float:
    if threshold is not None:
        return float(threshold)
    return factor * float(np.median(diff)) if len(diff) else 0.0


def _cut(diff: np.ndarray, level: float, sizes: Sequence[tuple[int, int]]) -> list[int]:
    ids = [0]
    for t in range(1, len(sizes)):
        ids.append(ids[-1] + int(diff[t - 1] > level or sizes[t] != sizes[t - 1]))
    return ids


def split_by_frame_difference(frames: Sequence[torch.Tensor], threshold: float | None = None, factor: float = 2.5,
                              sizes: Sequence[tuple[int, int]] | None = None) -> list[int]:
    """Pseudo-sequence ids of index-ordered frames: a new sequence starts where consecutive frames differ.

    The difference of frames ``t-1`` and ``t`` is the mean absolute difference of their 16 x 16
    area-averaged thumbnails (colour and coarse layout; [0, 1]). A new sequence starts where it
    exceeds ``threshold``, by default ``factor`` x the median difference of the whole list (an
    adaptive level: within a video most consecutive frames are alike, so the median is a
    within-video difference), or where the stored size changes. This is the spec's rule for ETIS,
    which ships no sequence ids (VideoGAN spec 3.2: "split where consecutive frames differ
    strongly"; the distance and the adaptive level are our choice).

    Args:
        frames: ``(3, H, W)`` tensors in index order.
        threshold: a fixed cut level; ``None``: ``factor`` x the median difference.
        factor: the adaptive level's multiple of the median.
        sizes: stored size of each frame (a change always cuts); ``None``: the tensors' sizes.

    Returns:
        0-based sequence id per frame, non-decreasing.
    """
    if not frames:
        return []
    diff = frame_differences(frames)
    sizes = list(sizes) if sizes is not None else [tuple(f.shape[-2:]) for f in frames]  # type: ignore[misc]
    return _cut(diff, _cut_level(diff, threshold, factor), sizes)


def split_frame_files(paths: Sequence[Path], threshold: float | None = None,
                      factor: float = 2.5) -> tuple[list[int], float]:
    """:func:`split_by_frame_difference` of image files, with the cut level it used.

    Args:
        paths: the frames' image files in index order.
        threshold: a fixed cut level; ``None``: ``factor`` x the median difference.
        factor: the adaptive level's multiple of the median.

    Returns:
        ``(0-based sequence id per frame, the cut level)``.

    Raises:
        DataError: naming a file that cannot be decoded.
    """
    if not paths:
        return [], 0.0
    diff = frame_differences([load_image(p, 3) for p in paths])
    level = _cut_level(diff, threshold, factor)
    sizes = [image_size(p) for p in paths]
    return _cut(diff, level, sizes), level


def write_grouping(path: str | Path, records: Sequence[VideoFrame]) -> Path:
    """Write ``name,video,frame`` per record (the grouping a layout derived), atomically."""
    from medlearn.io._common import atomic_write_text

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["name", "video", "frame"])
    for r in records:
        w.writerow([r.name, r.video, r.frame])
    return atomic_write_text(path, buf.getvalue())


def keep_derived_grouping(records: Sequence[VideoFrame], root: str | Path, layout: str, level: float,
                          grouping_out: str | Path | None = None) -> Path | None:
    """What a layout reader does with the grouping it derived by frame difference.

    Reading a dataset never writes into it (datasets are often on read-only shares, and
    ``medlearn check-data`` promises to write nothing): the grouping is written (``name,video,frame``,
    :func:`write_grouping`) only where ``grouping_out`` names a file; otherwise one INFO line of the
    log says how many frames went into how many pseudo-sequences at which cut level, and how to
    fix or keep it. A training DataModule passes a file in its run folder.

    Args:
        records: the frames with their derived ``video``.
        root: the dataset root the frames were read from.
        layout: the layout's name (``"etis"``, ``"cvc_clinicdb"``).
        level: the frame-difference cut level used.
        grouping_out: where to write the grouping; ``None``: nowhere.

    Returns:
        The file written, or ``None`` (none asked for, or the write failed: a warning says why).
    """
    n_seq = len({r.video for r in records})
    if grouping_out is None:
        log.info("%s (%s): %d frames grouped into %d pseudo-sequences by frame difference (cut level %.4g); "
                 "to fix the grouping put a sequences.csv (name, video) in the root, to keep it pass "
                 "layout_options: {grouping_out: FILE}", root, layout, len(records), n_seq, level)
        return None
    out = Path(grouping_out)
    try:
        write_grouping(out, records)
    except OSError as exc:
        log.warning("could not write the %s pseudo-sequences of %s to %s: %s", layout, root, out, exc)
        return None
    log.info("%s (%s): %d frames grouped into %d pseudo-sequences by frame difference (cut level %.4g), "
             "written to %s", root, layout, len(records), n_seq, level, out)
    return out


def write_video(path: str | Path, frames: np.ndarray | torch.Tensor, fps: float) -> Path:
    """Write RGB frames as a video through PyAV, keeping the frame count, size and rate.

    H.264 (``libx264``, near-lossless CRF 12) in 4:4:4 chroma, so odd sizes are kept exactly; MPEG-4
    part 2 (even sizes only) when the PyAV build has no H.264. Written to a temporary name, then renamed.

    Args:
        path: the output file (``.mp4``, ``.avi``, ``.mkv``).
        frames: ``(T, H, W, 3)`` uint8, or ``(T, 3, H, W)`` float in [0, 1].
        fps: frames per second (kept as a rational to 1/1000).

    Returns:
        ``path``.

    Raises:
        DataError: PyAV missing, or an odd size without H.264.
    """
    from fractions import Fraction

    av = _require_av(path)
    a = frames.detach().cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if a.dtype != np.uint8:
        a = np.clip(np.rint(np.moveaxis(a, 1, -1) * 255.0), 0, 255).astype(np.uint8)
    t, h, w, _ = a.shape
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.part{path.suffix}")
    rate = Fraction(fps).limit_denominator(1000)
    h264 = "libx264" in set(av.codecs_available)  # type: ignore[attr-defined]
    if not h264 and (h % 2 or w % 2):
        raise DataError(path, f"this PyAV build has no H.264; MPEG-4 needs even sizes, got {h}x{w}")
    with av.open(str(tmp), mode="w") as box:  # type: ignore[attr-defined]
        stream = box.add_stream("libx264" if h264 else "mpeg4", rate=rate)
        stream.width, stream.height = w, h
        if h264:
            stream.pix_fmt = "yuv444p"
            stream.options = {"crf": "12"}
        else:
            stream.pix_fmt = "yuv420p"
            stream.bit_rate = 8_000_000
        for i in range(t):
            for packet in stream.encode(av.VideoFrame.from_ndarray(a[i], format="rgb24")):  # type: ignore[attr-defined]
                box.mux(packet)
        for packet in stream.encode():
            box.mux(packet)
    tmp.replace(path)
    return path
