"""Reader for the CVC-ClinicDB layout (colonoscopy frames with polyp masks, grouped into sequences).

CVC-ClinicDB (Bernal et al., "WM-DOVA maps for accurate polyp highlighting in colonoscopy",
CMIG 2015; the MICCAI 2015 polyp sub-challenge training set) ships 612 RGB frames of 384 x 288
from 29 colonoscopy sequences, each with a binary polyp mask::

    root/Original/1.tif ... 612.tif
    root/Ground Truth/1.tif ... 612.tif          (same stem; 0 background, 255 polyp)
    root/metadata.csv                            (optional: frame number -> sequence id)

The sequence table (``metadata.csv`` or ``sequences.csv``; columns ``name`` / ``frame`` / ``image``
/ ``filename`` / ``image_id``, the first present, and ``sequence_id`` / ``sequence`` / ``video``)
gives each frame its sequence (``name`` first, so that a written grouping, whose ``frame`` is the
position in the sequence, reads back as it was); frames of one sequence are ordered by frame number.
Without a table the sequences are cut by
:func:`~medlearn.data.video_frames.split_by_frame_difference` (as for ETIS). Reading writes nothing
into the dataset: the derived grouping is written only where the ``grouping_out`` option names a
file (a training run's DataModule writes it into the run folder, ``pseudo_sequences-<domain>.csv``;
put back as ``sequences.csv`` it is read as the table), otherwise one INFO line of the log gives its
size and cut level (:func:`~medlearn.data.video_frames.keep_derived_grouping`). A table row naming
no frame, a frame missing from the table, an image without a mask or a mask without an image is a
:class:`~medlearn.io.errors.DataError` listing every one, as is a sequence whose frames differ in
size. Registered twice: kind ``video`` (records :class:`VideoFrame`, for the VideoGAN translators)
and kind ``segmentation2d`` (records :class:`~medlearn.data.records.MaskedImage` with ``group`` =
sequence, so a :class:`~medlearn.data.segmentation2d.ImageMaskDataModule` splits by sequence, never
by frame). ``medlearn synth endoscopy-cvc`` writes phantoms in this layout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medlearn.data.layouts import CheckHints, RecordSet, register_layout
from medlearn.data.records import MaskedImage
from medlearn.data.tables import find_column, read_csv_table, table_lines
from medlearn.data.video_frames import VideoFrame, check_videos, keep_derived_grouping, split_frame_files
from medlearn.io.errors import DataError

__all__ = ["CVC_DOMAIN", "read_cvc_clinicdb", "read_cvc_clinicdb_masked"]

CVC_DOMAIN = "cvc-clinicdb"
_TABLES = ("metadata.csv", "sequences.csv")
_FRAME_COLS = ("name", "frame", "image", "filename", "image_id", "frame_id")
_SEQ_COLS = ("sequence_id", "sequence", "video")
_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".bmp")


def _numbered(folder: Path) -> dict[int, Path]:
    out: dict[int, Path] = {}
    for p in folder.iterdir():
        if p.is_file() and p.suffix.lower() in _SUFFIXES and p.stem.isdecimal():
            out[int(p.stem)] = p
    return out


def _read_table(path: Path) -> dict[int, str]:
    df = read_csv_table(path)
    fcol, scol = find_column(df, None, _FRAME_COLS), find_column(df, None, _SEQ_COLS)
    if fcol is None or scol is None:
        raise DataError(path, f"the sequence table needs a frame column ({', '.join(_FRAME_COLS)}) and a "
                              f"sequence column ({', '.join(_SEQ_COLS)}); found {list(df.columns)}")
    out: dict[int, str] = {}
    problems = []
    for line, frame, sequence in zip(table_lines(df), df[fcol].str.strip(), df[scol].str.strip()):
        stem = Path(frame).stem
        if not stem.isdecimal():
            problems.append(f"line {line}: frame {frame!r} is not a frame number")
        elif not sequence:
            problems.append(f"line {line}: empty sequence id")
        elif int(stem) in out:
            problems.append(f"line {line}: frame {stem} listed twice")
        else:
            out[int(stem)] = sequence
    if problems:
        raise DataError(path, f"{len(problems)} bad rows", problems)
    return out


def read_cvc_clinicdb(root: str | Path, threshold: float | None = None, grouping_out: str | Path | None = None,
                      check_files: bool = True) -> list[VideoFrame]:
    """Read a CVC-ClinicDB folder as videos (see the module docstring).

    Args:
        root: the folder holding ``Original/`` and ``Ground Truth/``.
        threshold: frame-difference cut level when there is no sequence table (``None``: adaptive).
        grouping_out: a file to write a derived grouping to (``name,video,frame``); ``None``:
            written nowhere (an INFO line of the log says how to keep it).
        check_files: pair images and masks and check frame sizes per sequence.

    Returns:
        Frames ordered by sequence (first appearance) then frame number; ``frame`` is the position
        in the sequence, ``domain`` :data:`CVC_DOMAIN`.

    Raises:
        DataError: not this layout, unpaired files, a bad or incomplete table, mixed sizes in a sequence.
    """
    root = Path(root)
    img_dir, mask_dir = root / "Original", root / "Ground Truth"
    if not img_dir.is_dir():
        raise DataError(root, "not a CVC-ClinicDB folder: no Original/ folder")
    images = _numbered(img_dir)
    masks = _numbered(mask_dir) if mask_dir.is_dir() else {}
    problems: list[str] = []
    if check_files:
        problems += [f"{images[i]}: no mask in {mask_dir}" for i in sorted(set(images) - set(masks))]
        problems += [f"{masks[i]}: mask without an image in {img_dir}" for i in sorted(set(masks) - set(images))]
    if not images:
        raise DataError(img_dir, "no numbered frames (1.tif, 2.tif, ...)")
    table = next((root / t for t in _TABLES if (root / t).is_file()), None)
    order = sorted(images)
    if table is not None:
        seq = _read_table(table)
        problems += [f"{images[i]}: not in the sequence table {table.name}" for i in order if i not in seq]
        problems += [f"{table.name}: frame {i} has no image" for i in sorted(set(seq) - set(images))]
    if problems:
        raise DataError(root, f"{len(problems)} problems", problems)
    derived = table is None
    if derived:
        ids, level = split_frame_files([images[i] for i in order], threshold)
        seq = {i: f"seq{s + 1:03d}" for i, s in zip(order, ids)}
    records: list[VideoFrame] = []
    position: dict[str, int] = {}
    for i in order:
        v = seq[i]
        records.append(VideoFrame(images[i], v, position.get(v, 0), f"Original/{images[i].name}",
                                  masks.get(i), CVC_DOMAIN))
        position[v] = position.get(v, 0) + 1
    first = {v: k for k, v in reversed(list(enumerate(r.video for r in records)))}
    records.sort(key=lambda r: (first[r.video], r.frame))
    if check_files:
        check_videos(records, root)
    if derived:
        keep_derived_grouping(records, root, "cvc_clinicdb", level, grouping_out)
    return records


def read_cvc_clinicdb_masked(root: str | Path, **options: Any) -> list[MaskedImage]:
    """The frames as :class:`MaskedImage` (``group`` = sequence) for polyp segmentation."""
    return [MaskedImage(r.path, r.mask, r.video, r.name, r.split, r.domain)  # type: ignore[arg-type]
            for r in read_cvc_clinicdb(root, **options)]


def _detect(root: Path, **_: Any) -> bool:
    root = Path(root)
    return (root / "Original").is_dir() and (root / "Ground Truth").is_dir()


def _read(root: Path, threshold: float | None = None, check_files: bool = True,
          grouping_out: str | Path | None = None, **_: Any) -> RecordSet[VideoFrame]:
    return RecordSet(read_cvc_clinicdb(root, threshold=threshold, check_files=check_files, grouping_out=grouping_out))


def _read_masked(root: Path, threshold: float | None = None, grouping_out: str | Path | None = None,
                 **_: Any) -> RecordSet[MaskedImage]:
    return RecordSet(read_cvc_clinicdb_masked(root, threshold=threshold, grouping_out=grouping_out))


#: Polyp masks are stored as 0 / 255, re-encoded copies with values in between (any non-zero is polyp).
_CHECK = CheckHints(mask_values=tuple(range(256)))

register_layout(
    "cvc_clinicdb", _detect, _read, kind="video", synth="endoscopy-cvc", priority=20,
    description="CVC-ClinicDB: Original/N.tif + Ground Truth/N.tif, sequences from metadata.csv "
                "(else cut by frame difference)", tasks=("segmentation",), label_values=(0, 1),
    label_names=("background", "polyp"), check=_CHECK,
)
register_layout(
    "cvc_clinicdb", _detect, _read_masked, kind="segmentation2d", priority=20,
    description="CVC-ClinicDB frames with polyp masks (value 255 -> 1 with value_map), grouped by sequence",
    tasks=("segmentation",), label_values=(0, 1), label_names=("background", "polyp"), check=_CHECK,
)
