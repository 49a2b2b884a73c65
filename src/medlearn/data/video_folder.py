"""Reader for a generic folder of videos: one sub-folder of frame images per video, or video files.

::

    root/clip01/0001.png 0002.png ...        frames of one video, ordered by the numbers in their names
    root/clip02/...
    root/case7.mp4  root/case8.avi ...       video files, decoded through PyAV (``pip install av``)

Both may be mixed. The video id is the sub-folder name or the file stem; ``domain`` is the
``domain=`` option (the folder holds one centre's videos). Frames are ordered by the integers in
their names (``frame_2`` before ``frame_10``), then by name. Every sub-folder whose frames differ
in size, every unreadable frame and every video file that cannot be decoded (or whose frames
differ in size) is listed in one :class:`~medlearn.io.errors.DataError`. Registered as layout
``"video_folder"`` of kind ``video`` (the generic fallback, tried last); it has no masks.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from medlearn.data.layouts import RecordSet, register_layout
from medlearn.data.records import IMAGE_SUFFIXES
from medlearn.data.video_frames import VIDEO_SUFFIXES, VideoFrame, check_videos, video_meta
from medlearn.io.errors import DataError

__all__ = ["read_video_folder"]


def _natural(p: Path) -> tuple[Any, ...]:
    return tuple(int(t) if t.isdecimal() else t for t in re.split(r"(\d+)", p.stem)) + (p.name,)


def read_video_folder(root: str | Path, domain: str = "") -> list[VideoFrame]:
    """Read a folder of frame folders and / or video files (see the module docstring).

    Args:
        root: the folder.
        domain: the domain written into every record.

    Returns:
        Frames, videos in name order, frames in natural order.

    Raises:
        DataError: no videos; frames of different sizes in one video; unreadable frames or videos
            (every one listed).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "no such folder")
    records: list[VideoFrame] = []
    problems: list[str] = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            frames = sorted((p for p in entry.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                            key=_natural)
            records += [VideoFrame(p, entry.name, i, f"{entry.name}/{p.name}", domain=domain)
                        for i, p in enumerate(frames)]
        elif entry.suffix.lower() in VIDEO_SUFFIXES:
            try:
                n, _, _ = video_meta(entry)
            except DataError as exc:
                problems.append(f"{entry.name}: {exc.reason}")
                continue
            records += [VideoFrame(entry, entry.stem, i, f"{entry.name}#{i}", domain=domain, container=True)
                        for i in range(n)]
    try:
        check_videos(records, root)
    except DataError as exc:
        problems += exc.problems
    if problems:
        raise DataError(root, f"{len(problems)} problems in the videos", problems)
    if not records:
        raise DataError(root, "no videos: expected sub-folders of frame images or video files "
                              f"({', '.join(sorted(VIDEO_SUFFIXES))})")
    return records


def _detect(root: Path, **_: Any) -> bool:
    root = Path(root)
    if not root.is_dir():
        return False
    return any((e.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in e.iterdir()))
               or e.suffix.lower() in VIDEO_SUFFIXES for e in root.iterdir() if not e.name.startswith("."))


def _read(root: Path, domain: str = "", **_: Any) -> RecordSet[VideoFrame]:
    return RecordSet(read_video_folder(root, domain=domain))


register_layout(
    "video_folder", _detect, _read, kind="video", priority=-10,
    description="one sub-folder of frame images per video and / or video files (mp4, avi ...) through PyAV",
    tasks=("unlabeled",),
)
