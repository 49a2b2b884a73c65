"""The registry of public dataset layouts: name -> how to recognise a folder and read its records.

A *layout* is a way a dataset is stored on disk (the NIH ChestX-ray14 folder, ISIC 2018 Task 3,
BraTS, a CSV manifest ...). Each layout module registers its layout(s) at import with
:func:`register_layout`; :mod:`medlearn.data` imports them all. The DataModules resolve their
``layout=`` option through this registry (:func:`get_layout`, :func:`detect_layout` for
``"auto"``) instead of knowing the readers, so a new public layout is one module plus one
registration; ``medlearn check-data`` and ``medlearn synth`` iterate :func:`list_layouts`.

Layouts are grouped by *kind*, the data family (and DataModule) they serve:

- ``radiograph``: :class:`~medlearn.data.radiograph.RadiographDataModule`, records
  :class:`~medlearn.data.records.ImageRecord`;
- ``labelled2d``: :class:`~medlearn.data.labelled2d.LabelledImageDataModule`, records
  :class:`~medlearn.data.records.LabelledImage`;
- ``volume``: :class:`~medlearn.data.volumes.VolumeDataModule`, records
  :class:`~medlearn.data.records.VolumeRecord`;
- ``asoct``: :class:`~medlearn.data.age_asoct.ASOCTDataModule`, records
  :class:`~medlearn.data.age_asoct.ASOCTRecord`;
- ``segmentation2d``: :class:`~medlearn.data.segmentation2d.ImageMaskDataModule`, records
  :class:`~medlearn.data.records.MaskedImage`;
- ``oneshot``: :class:`~medlearn.data.oneshot.OneShotDataModule`, one record per data set,
  :class:`~medlearn.data.oneshot.OneShotSet` (an atlas with labels, images, evaluation labels).

One name may serve several kinds (``"folder"`` is a folder of images for ``radiograph`` and a
folder of NIfTI volumes for ``volume``); a layout is identified by ``(kind, name)``.

The two callables of a layout take the dataset root and keyword options:

- ``detect(root, **options) -> bool``: cheap (no decoding), never raises for a missing or
  unreadable root;
- ``read(root, **options) -> RecordSet``: the records, validated, or a
  :class:`~medlearn.io.errors.DataError` naming the file and every problem.

Options a layout does not use are ignored, so a DataModule passes the options of all the layouts
of its kind in one call.

Examples:
    >>> import medlearn.data  # registers the layouts
    >>> from medlearn.data.layouts import get_layout, list_layouts
    >>> [layout.name for layout in list_layouts("radiograph")]
    ['chestxray14', 'folder']
    >>> get_layout("brats").synth
    'brats'
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from medlearn.io.errors import DataError

__all__ = [
    "CheckHints",
    "KINDS",
    "LAYOUTS",
    "Layout",
    "RecordSet",
    "check_layout_name",
    "detect_layout",
    "get_layout",
    "list_layouts",
    "register_layout",
]

R = TypeVar("R")

#: The data families of the built-in DataModules (a layout may name another kind).
KINDS: tuple[str, ...] = ("radiograph", "labelled2d", "volume", "asoct", "segmentation2d", "neuron", "oneshot")


@dataclass
class RecordSet(Generic[R]):
    """What a layout's ``read`` returns: the records, and the class names when known.

    Iterating, indexing and ``len`` go to :attr:`records`.

    Attributes:
        records: the records, in the layout's order.
        class_names: class names in label-index order when the layout or the options fix them
            (ISIC 2018's 7, a table's labels), else ``None``.
    """

    records: list[R]
    class_names: list[str] | None = None

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[R]:
        return iter(self.records)

    def __getitem__(self, index: int) -> R:
        return self.records[index]


@dataclass(frozen=True)
class CheckHints:
    """What ``medlearn check-data`` needs to know about a layout beyond its records.

    Every field has a default that suits most layouts; a layout registers hints only where it
    knows more (:func:`register_layout`'s ``check=``).

    Attributes:
        options: reader options for checking, so that the records cover every file of the
            dataset (ChestX-ray14's ``split="all"``, INbreast's unannotated images too).
        splits: ``{split name: reader options}`` when the layout fixes its splits through an
            option instead of a ``split`` field of its records (ChestX-ray14's ``train_val`` and
            ``test`` lists): each is read, and its records are tagged with the split name, so
            that a patient in two splits is found.
        modality: ``"CT"`` when the images are CT (intensities are expected in Hounsfield
            units, not 0..255 or 0..1), else ``None``.
        mask_values: the values stored in the mask files when they differ from the layout's
            ``label_values`` (CVC-ClinicDB's 0 / 255 masks that the DataModule maps to 0 / 1).
        stray: whether files in the image folders that no record names are reported (``False``
            for a layout whose folders hold other files by design, e.g. ACDC's 4D cine volumes).
    """

    options: Mapping[str, Any] = field(default_factory=dict)
    splits: Mapping[str, Mapping[str, Any]] | None = None
    modality: str | None = None
    mask_values: tuple[int, ...] | None = None
    stray: bool = True


@dataclass(frozen=True)
class Layout:
    """One registered dataset layout.

    Attributes:
        name: the ``layout=`` string users write (``"chestxray14"``, ``"brats"``).
        kind: the data family it serves (see :data:`KINDS`).
        detect: ``detect(root, **options) -> bool``: whether ``root`` looks like this layout.
        read: ``read(root, **options) -> RecordSet``: the validated records.
        description: one line saying what the layout is.
        synth: the ``medlearn synth`` generator that writes this layout, if any.
        priority: order of :func:`detect_layout` within the kind (higher first), so that a
            specific layout is tried before a generic one that would also match.
        tasks: what its records can serve (``"unlabeled"``, ``"classification"``,
            ``"multilabel"``, ``"segmentation"``, ``"localisation"``).
        classes: class names in label-index order that the layout defines (a fixed set or its
            default order), else ``None``.
        label_values: segmentation label values the layout defines, else ``None``.
        label_names: names of :attr:`label_values`, else ``None``.
        check: what ``medlearn check-data`` needs to know beyond the records (:class:`CheckHints`).
    """

    name: str
    kind: str
    detect: Callable[..., bool] = field(repr=False)
    read: Callable[..., RecordSet[Any]] = field(repr=False)
    description: str = ""
    synth: str | None = None
    priority: int = 0
    tasks: tuple[str, ...] = ()
    classes: tuple[str, ...] | None = None
    label_values: tuple[int, ...] | None = None
    label_names: tuple[str, ...] | None = None
    check: CheckHints = field(default_factory=CheckHints)


#: ``(kind, name)`` -> layout, in registration order; fill it with :func:`register_layout`.
LAYOUTS: dict[tuple[str, str], Layout] = {}


def _same_function(a: Callable[..., Any], b: Callable[..., Any]) -> bool:
    key = lambda f: (getattr(f, "__module__", None), getattr(f, "__qualname__", repr(f)))  # noqa: E731
    return key(a) == key(b)


def register_layout(
    name: str,
    detect: Callable[..., bool],
    read: Callable[..., RecordSet[Any]],
    *,
    kind: str,
    description: str,
    synth: str | None = None,
    priority: int = 0,
    tasks: Sequence[str] = (),
    classes: Sequence[str] | None = None,
    label_values: Sequence[int] | None = None,
    label_names: Sequence[str] | None = None,
    check: CheckHints | None = None,
) -> Layout:
    """Register a dataset layout (called by each layout module at import).

    Args:
        name: the ``layout=`` string (``"auto"`` is reserved).
        detect: ``detect(root, **options) -> bool``; cheap, no decoding, ``False`` for a missing root.
        read: ``read(root, **options) -> RecordSet``.
        kind: the data family it serves (see :data:`KINDS`).
        description: one line saying what it is.
        synth: the name of the ``medlearn synth`` generator that writes it, if any.
        priority: detection order within the kind (higher first).
        tasks: what its records can serve.
        classes: class names it defines, in label-index order.
        label_values: segmentation label values it defines.
        label_names: names of ``label_values``.
        check: hints for ``medlearn check-data`` (:class:`CheckHints`; default: none needed).

    Returns:
        The registered :class:`Layout`.

    Raises:
        ValueError: an empty or reserved name, an empty kind, ``label_names`` not matching
            ``label_values``, or ``(kind, name)`` already taken by other functions (registering the
            same functions again, as a module reload does, is allowed).
    """
    if not name or not name.strip() or name == "auto":
        raise ValueError(f"layout name must be a non-empty string other than 'auto', got {name!r}")
    if not kind or not kind.strip():
        raise ValueError("layout kind must be a non-empty string")
    if label_names is not None and (label_values is None or len(label_names) != len(label_values)):
        raise ValueError("label_names needs label_values of the same length")
    existing = LAYOUTS.get((kind, name))
    if existing is not None and not (_same_function(existing.detect, detect) and _same_function(existing.read, read)):
        raise ValueError(f"{kind} layout {name!r} is already registered ({existing.read.__module__})")
    layout = Layout(
        name=name, kind=kind, detect=detect, read=read, description=description, synth=synth,
        priority=int(priority), tasks=tuple(tasks), classes=None if classes is None else tuple(classes),
        label_values=None if label_values is None else tuple(int(v) for v in label_values),
        label_names=None if label_names is None else tuple(label_names), check=check or CheckHints(),
    )
    LAYOUTS[(kind, name)] = layout
    return layout


def list_layouts(kind: str | None = None) -> list[Layout]:
    """The registered layouts, of one kind or all, in detection order.

    Args:
        kind: only layouts of this kind (``None``: all kinds).

    Returns:
        Layouts sorted by kind (in :data:`KINDS` order, others after), then by decreasing
        ``priority``, then in registration order.
    """
    order = {k: i for i, k in enumerate(KINDS)}
    found = [(i, layout) for i, layout in enumerate(LAYOUTS.values()) if kind is None or layout.kind == kind]
    found.sort(key=lambda t: (order.get(t[1].kind, len(order)), t[1].kind, -t[1].priority, t[0]))
    return [layout for _, layout in found]


def get_layout(name: str, kind: str | None = None) -> Layout:
    """The layout registered under ``name`` (and ``kind``).

    Args:
        name: the layout's name.
        kind: its kind; needed only when several kinds use the name (``"folder"``).

    Returns:
        The :class:`Layout`.

    Raises:
        KeyError: no such layout (the message lists the known ones), or the name is used by
            several kinds and ``kind`` is not given.
    """
    if kind is not None:
        if (kind, name) in LAYOUTS:
            return LAYOUTS[(kind, name)]
        known = ", ".join(layout.name for layout in list_layouts(kind)) or "(none)"
        raise KeyError(f"unknown {kind} layout {name!r}; known: {known}")
    matches = [layout for layout in list_layouts() if layout.name == name]
    if len(matches) == 1:
        return matches[0]
    if matches:
        kinds = ", ".join(layout.kind for layout in matches)
        raise KeyError(f"layout {name!r} exists for several kinds ({kinds}); pass kind=")
    known = ", ".join(sorted({layout.name for layout in LAYOUTS.values()})) or "(none)"
    raise KeyError(f"unknown layout {name!r}; known: {known}")


def check_layout_name(layout: str, kind: str) -> None:
    """Check a DataModule's ``layout=`` option: ``"auto"`` or a registered layout of ``kind``.

    Raises:
        ValueError: otherwise (the message lists the choices).
    """
    names = ["auto", *(entry.name for entry in list_layouts(kind))]
    if layout not in names:
        choices = ", ".join(repr(n) for n in names[:-1]) + f" or {names[-1]!r}"
        raise ValueError(f"layout must be {choices}, got {layout!r}")


def detect_layout(root: str | Path, kind: str, default: str | None = None, **options: Any) -> Layout:
    """The first layout of ``kind`` (in :func:`list_layouts` order) whose ``detect`` accepts ``root``.

    Args:
        root: the dataset root.
        kind: the data family.
        default: the layout to return when none is detected (a DataModule's generic fallback,
            whose reader then says precisely what is missing); ``None``: raise instead.
        **options: passed to every ``detect`` (e.g. ``modalities`` for BraTS).

    Returns:
        The detected :class:`Layout`.

    Raises:
        DataError: no layout detected and no ``default``; it names ``root`` and every layout tried.
        KeyError: ``default`` is not a registered layout of ``kind``.
    """
    tried = list_layouts(kind)
    for layout in tried:
        try:
            if layout.detect(Path(root), **options):
                return layout
        except OSError:  # an unreadable root or sub-folder: not this layout
            continue
    if default is not None:
        return get_layout(default, kind)
    if not tried:
        raise DataError(root, f"no {kind} layouts are registered")
    raise DataError(root, f"not a recognised {kind} layout (tried {', '.join(t.name for t in tried)})",
                    [f"{t.name}: {t.description}" for t in tried])
