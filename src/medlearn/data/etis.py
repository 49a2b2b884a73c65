"""Reader for the ETIS-LaribPolypDB layout (colonoscopy frames with polyp masks, no sequence ids).

ETIS-LaribPolypDB (Silva et al., "Toward embedded detection of polyps in WCE images for early
diagnosis of colorectal cancer", IJCARS 2014) ships 196 RGB frames of 1225 x 966 from another
centre and scope than CVC-ClinicDB::

    root/ETIS-LaribPolypDB/1.tif ... 196.tif     (or the frames directly in root/)
    root/GroundTruth/p1.tif ... p196.tif         (0 background, 255 polyp)

No sequence ids are published, so frames are grouped into pseudo-sequences in index order, cut where
consecutive frames differ strongly (:func:`~medlearn.data.video_frames.split_by_frame_difference`,
VideoGAN spec 3.2), and a ``sequences.csv`` (``name`` or ``frame`` + ``video`` / ``sequence_id``) in
the root, when present, is used instead. Reading writes nothing into the dataset: the derived
grouping is written only where the ``grouping_out`` option names a file (a training run's DataModule
writes it into the run folder, ``pseudo_sequences-<domain>.csv``, where a user can read it, fix it
and put it back as ``sequences.csv``); otherwise one INFO line of the log gives its size and cut
level (:func:`~medlearn.data.video_frames.keep_derived_grouping`). An image without
``GroundTruth/p<N>.tif`` or a mask without its image is a :class:`~medlearn.io.errors.DataError`
listing every one. Registered as kind ``video`` and kind ``segmentation2d`` (group =
pseudo-sequence); ``medlearn synth endoscopy-etis`` writes phantoms in this layout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medlearn.data.layouts import CheckHints, RecordSet, register_layout
from medlearn.data.records import MaskedImage
from medlearn.data.tables import find_column, read_csv_table, table_lines
from medlearn.data.video_frames import VideoFrame, check_videos, keep_derived_grouping, split_frame_files
from medlearn.io.errors import DataError

__all__ = ["ETIS_DOMAIN", "read_etis", "read_etis_masked"]

ETIS_DOMAIN = "etis-larib"
_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".bmp")


def _image_dir(root: Path) -> Path:
    nested = root / "ETIS-LaribPolypDB"
    return nested if nested.is_dir() else root


def _numbered(folder: Path, prefix: str = "") -> dict[int, Path]:
    out: dict[int, Path] = {}
    for p in folder.iterdir():
        s = p.stem
        if p.is_file() and p.suffix.lower() in _SUFFIXES and s.startswith(prefix) and s[len(prefix):].isdecimal():
            out[int(s[len(prefix):])] = p
    return out


def _given_grouping(path: Path) -> dict[int, str]:
    df = read_csv_table(path)
    names = [find_column(df, c) for c in ("name", "frame")]
    videos = [find_column(df, c) for c in ("video", "sequence_id")]

    def first(row: dict[str, str], cols: list[str | None]) -> str:
        return next((row[c].strip() for c in cols if c is not None and row[c].strip()), "")

    out: dict[int, str] = {}
    problems = []
    for line, row in zip(table_lines(df), df.to_dict("records")):
        key = Path(first(row, names)).stem
        video = first(row, videos)
        if not key.isdecimal() or not video:
            problems.append(f"line {line}: needs a frame number (name / frame) and a video (video / sequence_id)")
        else:
            out[int(key)] = video
    if problems:
        raise DataError(path, f"{len(problems)} bad rows", problems)
    return out


def read_etis(root: str | Path, threshold: float | None = None, grouping_out: str | Path | None = None,
              check_files: bool = True) -> list[VideoFrame]:
    """Read an ETIS-LaribPolypDB folder as pseudo-videos (see the module docstring).

    Args:
        root: the dataset folder.
        threshold: frame-difference cut level (``None``: 2.5 x the median difference).
        grouping_out: a file to write the derived grouping to (``name,video,frame``); ``None``:
            written nowhere (an INFO line of the log says how to keep it).
        check_files: pair images with masks and check frame sizes per pseudo-sequence.

    Returns:
        Frames in index order; ``video`` the pseudo-sequence (``etis001`` ...), ``domain`` :data:`ETIS_DOMAIN`.

    Raises:
        DataError: no frames, unpaired files, a bad ``sequences.csv``, mixed sizes in a sequence.
    """
    root = Path(root)
    img_dir, mask_dir = _image_dir(root), root / "GroundTruth"
    if not mask_dir.is_dir():
        raise DataError(root, "not an ETIS-LaribPolypDB folder: no GroundTruth/ folder")
    images, masks = _numbered(img_dir), _numbered(mask_dir, "p")
    if not images:
        raise DataError(img_dir, "no numbered frames (1.tif, 2.tif, ...)")
    problems: list[str] = []
    if check_files:
        problems += [f"{images[i]}: no mask (expected {mask_dir}/p{i}.tif)" for i in sorted(set(images) - set(masks))]
        problems += [f"{masks[i]}: mask without an image in {img_dir}" for i in sorted(set(masks) - set(images))]
    order = sorted(images)
    given = root / "sequences.csv"
    if given.is_file():
        seq = _given_grouping(given)
        problems += [f"{images[i]}: not in {given.name}" for i in order if i not in seq]
    if problems:
        raise DataError(root, f"{len(problems)} problems", problems)
    if not given.is_file():
        ids, level = split_frame_files([images[i] for i in order], threshold)
        seq = {i: f"etis{s + 1:03d}" for i, s in zip(order, ids)}
    records: list[VideoFrame] = []
    position: dict[str, int] = {}
    for i in order:
        v = seq[i]
        records.append(VideoFrame(images[i], v, position.get(v, 0), images[i].relative_to(root).as_posix(),
                                  masks.get(i), ETIS_DOMAIN))
        position[v] = position.get(v, 0) + 1
    if check_files:
        check_videos(records, root)
    if not given.is_file():
        keep_derived_grouping(records, root, "etis", level, grouping_out)
    return records


def read_etis_masked(root: str | Path, **options: Any) -> list[MaskedImage]:
    """The frames as :class:`MaskedImage` (``group`` = pseudo-sequence) for polyp segmentation."""
    return [MaskedImage(r.path, r.mask, r.video, r.name, r.split, r.domain)  # type: ignore[arg-type]
            for r in read_etis(root, **options)]


def _detect(root: Path, **_: Any) -> bool:
    root = Path(root)
    return (root / "GroundTruth").is_dir() and not (root / "Original").is_dir()


def _read(root: Path, threshold: float | None = None, check_files: bool = True,
          grouping_out: str | Path | None = None, **_: Any) -> RecordSet[VideoFrame]:
    return RecordSet(read_etis(root, threshold=threshold, check_files=check_files, grouping_out=grouping_out))


def _read_masked(root: Path, threshold: float | None = None, grouping_out: str | Path | None = None,
                 **_: Any) -> RecordSet[MaskedImage]:
    return RecordSet(read_etis_masked(root, threshold=threshold, grouping_out=grouping_out))


#: Polyp masks are stored as 0 / 255, re-encoded copies with values in between (any non-zero is polyp).
_CHECK = CheckHints(mask_values=tuple(range(256)))

register_layout(
    "etis", _detect, _read, kind="video", synth="endoscopy-etis", priority=10,
    description="ETIS-LaribPolypDB: N.tif + GroundTruth/pN.tif, pseudo-sequences by frame difference "
                "(a sequences.csv in the root overrides)", tasks=("segmentation",), label_values=(0, 1),
    label_names=("background", "polyp"), check=_CHECK,
)
register_layout(
    "etis", _detect, _read_masked, kind="segmentation2d", priority=10,
    description="ETIS-LaribPolypDB frames with polyp masks (value 255 -> 1 with value_map), grouped by pseudo-sequence",
    tasks=("segmentation",), label_values=(0, 1), label_names=("background", "polyp"), check=_CHECK,
)
