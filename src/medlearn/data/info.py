"""What a model needs to know about its data, declared in one place by every DataModule.

Every medlearn DataModule has a ``data_info()`` method returning a :class:`DataInfo`: how many
training items there are, the classes and their counts, the label values of a segmentation, the
size and channels batches arrive with. The run builder hands it to the model through one hook, so
that no model reads ``trainer.datamodule`` to size its head or weight its loss. A field is ``None``
when it does not apply (no classes for unlabeled pretraining, no label values for
classification).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DataInfo"]


@dataclass(frozen=True)
class DataInfo:
    """What the data of a run looks like, valid after the DataModule's ``setup("fit")``.

    Attributes:
        n_train: training items per epoch (after ``num_train`` subsetting), or ``None``.
        class_counts: training items per class, in class-index order (multi-label: positives per
            class), or ``None``.
        num_classes: classes of a classification; for a segmentation, the number of label values
            (background included) when known; else ``None``.
        class_names: names in class-index order (segmentation: of the label values), or ``None``.
        input_size: spatial size the batches arrive at, ``(H, W)`` or ``(D, H, W)``, or ``None``.
        in_channels: image channels of the batches, or ``None``.
        label_values: the label values a segmentation's masks hold, sorted, or ``None``.

    Raises:
        ValueError: ``class_counts``, ``class_names`` or ``label_values`` whose length is not
            ``num_classes``.

    Examples:
        >>> info = DataInfo(n_train=80, class_counts=[60, 20], num_classes=2, class_names=["a", "b"],
        ...                 input_size=(64, 64), in_channels=3)
        >>> info.num_classes, info.label_values
        (2, None)
    """

    n_train: int | None = None
    class_counts: list[int] | None = None
    num_classes: int | None = None
    class_names: list[str] | None = None
    input_size: tuple[int, ...] | None = None
    in_channels: int | None = None
    label_values: list[int] | None = None

    def __post_init__(self) -> None:
        if self.num_classes is None:
            return
        for name in ("class_counts", "class_names", "label_values"):
            value = getattr(self, name)
            if value is not None and len(value) != self.num_classes:
                raise ValueError(f"{name} has {len(value)} entries for num_classes={self.num_classes}")
