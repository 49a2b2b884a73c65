"""The DataModule base: :class:`SplitDataModule`, what every medlearn DataModule shares.

A medlearn DataModule reads its source, splits it and builds one dataset per part in ``setup``;
the loaders, their seeds and the cache handling are :class:`SplitDataModule`'s:

* **Parts.** ``setup`` fills ``train_set``, ``val_set``, ``test_set`` and, for a module that
  predicts on other data than its test split, ``predict_set``; a part the data does not have
  stays ``None``. ``setup`` must be idempotent (later calls reuse what earlier ones built): every
  loader calls it for its stage first, so a loader works with or without Lightning's own call.
* **Loaders.** Built by :func:`~medlearn.data.sampling.seeded_loader`: the training order comes
  from ``(seed, epoch)`` with a private generator, evaluation is sequential and complete. No
  validation part gives an empty validation loader; no test part is a
  :class:`~medlearn.io.errors.DataError` saying why (:attr:`SplitDataModule.no_test_reason`);
  prediction runs on ``predict_set``, else on the test part.
* **Caches.** With ``cache`` and ``num_workers > 0``, a dataset that caches its decoded items
  (it has ``fill_cache()``, :class:`CachedDataset`) is filled before its loader is returned:
  the forked workers then share one filled block copy-on-write instead of each decoding, and
  holding, a copy of its own.
* **Hooks**, for what differs between DataModules: :meth:`~SplitDataModule.loader_seed`,
  :meth:`~SplitDataModule.train_drop_last`, :meth:`~SplitDataModule.train_sampler` and
  :attr:`~SplitDataModule.no_test_reason`; :meth:`~SplitDataModule.layout_sources` says which
  dataset roots and layouts it reads (``medlearn fit`` checks them before training).
* **Hyper-parameters** (``save_hyperparameters`` in the subclass): the base reads
  ``batch_size``, ``num_workers`` and ``cache``; the default hooks read ``split_seed``,
  ``label_seed``, ``drop_last`` and ``task``. :attr:`~SplitDataModule.hparams` is typed as the
  :class:`~lightning.fabric.utilities.data.AttributeDict` it is, for attribute access.

What a DataModule reads, how it splits and what its items are stay in its own module
(:mod:`medlearn.data.radiograph`, :mod:`~medlearn.data.labelled2d`, :mod:`~medlearn.data.volumes`,
:mod:`~medlearn.data.segmentation2d`, :mod:`~medlearn.data.age_asoct`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Generic, NamedTuple, Protocol, TypeVar, cast, runtime_checkable

from lightning.fabric.utilities.data import AttributeDict
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset, Sampler

from medlearn.data.sampling import seeded_loader
from medlearn.io.errors import DataError

__all__ = ["CachedDataset", "LayoutSource", "SplitDataModule"]

D = TypeVar("D", bound=Dataset)

#: The multiplier of ``label_seed`` in the default loader seed (a prime, so that
#: ``(split_seed, label_seed)`` pairs in everyday ranges give distinct seeds).
LABEL_SEED_STRIDE = 7919


@runtime_checkable
class CachedDataset(Protocol):
    """A dataset that keeps decoded items in memory and can decode them all up front."""

    def fill_cache(self) -> None:
        """Decode every item not cached yet."""


class LayoutSource(NamedTuple):
    """A dataset root a DataModule reads through the layout registry, and how.

    Attributes:
        root: the dataset root.
        kind: the layout kind (see :data:`~medlearn.data.layouts.KINDS`).
        layout: the layout's name, or ``"auto"``.
        options: the options the DataModule passes to the layout's reader.
    """

    root: Path
    kind: str
    layout: str
    options: dict[str, Any]


class SplitDataModule(LightningDataModule, Generic[D]):
    """Train / validation / test (/ predict) datasets and their seeded loaders.

    Subclasses call ``super().__init__(root)`` and ``self.save_hyperparameters()``, implement
    ``setup`` (idempotent) to fill the parts, and override a hook where their data needs it.

    Args:
        root: the dataset root that errors name (``None``: none, e.g. prediction-only use).

    Attributes:
        root: the dataset root.
        train_set: the training part (``None`` until ``setup``).
        val_set: the validation part (``None``: none; the validation loader is empty).
        test_set: the test part (``None``: none; testing raises).
        predict_set: data to predict on instead of the test part (``None``: the test part).
    """

    #: Why the data has no test part and how to get one; the error of a test loader without one.
    no_test_reason: ClassVar[str] = "the data has no test part"
    #: The kind of layout (:data:`~medlearn.data.layouts.KINDS`) ``root`` is read as; ``None``: not
    #: read through the layout registry.
    layout_kind: ClassVar[str | None] = None

    def __init__(self, root: str | Path | None = None) -> None:
        super().__init__()
        self.root: Path | None = Path(root) if root is not None else None
        self.train_set: D | None = None
        self.val_set: D | None = None
        self.test_set: D | None = None
        self.predict_set: Dataset | None = None  # may be another kind of data (e.g. images without masks)

    @property
    def hparams(self) -> AttributeDict:
        """The saved hyper-parameters, with attribute access (``self.hparams.batch_size``)."""
        hp = super().hparams  # save_hyperparameters stores an AttributeDict; Lightning types it more loosely
        assert isinstance(hp, AttributeDict)
        return hp

    # --- hooks ---

    def loader_seed(self) -> int:
        """Seed of the training order and of every loader's generator.

        Default: ``split_seed + 7919 * label_seed``, so that runs on other labelled subsets
        also see other orders.
        """
        return self.hparams.split_seed + LABEL_SEED_STRIDE * self.hparams.label_seed

    def train_drop_last(self) -> bool:
        """Whether training drops the last incomplete batch.

        Default: the ``drop_last`` hyper-parameter when given; else only for unlabeled
        pretraining (``task == "unlabeled"``), where BatchNorm and cross-sample losses want equal
        batches.
        """
        drop = self.hparams.get("drop_last")
        if drop is not None:
            return bool(drop)
        return self.hparams.get("task") == "unlabeled"

    def train_sampler(self, dataset: D) -> Sampler[int] | None:
        """The training sampler; ``None`` (default): a seeded shuffle per epoch.

        Args:
            dataset: the training set.

        Returns:
            A sampler drawing ``len(dataset)`` indices per epoch, reproducible from
            :meth:`loader_seed` and the epoch (see :mod:`medlearn.data.sampling`), or ``None``.
        """
        return None

    def layout_sources(self) -> list[LayoutSource]:
        """The dataset roots this DataModule reads through the layout registry (none by default).

        ``medlearn fit`` runs the cheap checks of :mod:`medlearn.data.check` on each before training.
        With :attr:`layout_kind` set: ``root`` in its layout (``resolved_layout`` when the DataModule
        has one, else the ``layout`` hyper-parameter or ``"auto"``) with every hyper-parameter and
        ``layout_options`` as reader options (readers ignore the options they do not use). Override
        where the reader gets other options than these.
        """
        if self.layout_kind is None or self.root is None:
            return []
        h = dict(self.hparams)
        options = {k: v for k, v in h.items() if k not in ("root", "layout", "layout_options")}
        options.update(h.get("layout_options") or {})
        layout = getattr(self, "resolved_layout", None) or h.get("layout") or "auto"
        return [LayoutSource(Path(self.root), self.layout_kind, str(layout), options)]

    def grouping_options(self, domain: str) -> dict[str, Any]:
        """Reader options that keep a derived video grouping in the run folder of a training run.

        A video layout without sequence ids (ETIS-LaribPolypDB, CVC-ClinicDB without its table)
        groups its frames by frame difference and writes nothing into the dataset; a training run
        keeps the grouping beside its records, where a user can read and fix it. While the attached
        trainer fits (on its global rank 0): ``{"grouping_out":
        <default_root_dir>/pseudo_sequences-<domain>.csv}``, which the reader writes only when it
        derived the grouping; else ``{}`` (no trainer, or an evaluation, which leaves the training
        run's files alone).

        Args:
            domain: the name of the data in the file name (a domain folder's name).

        Returns:
            Options to pass to the layout's reader (a ``grouping_out`` the user gives comes after).
        """
        trainer = getattr(self, "trainer", None)
        if trainer is None or getattr(trainer.state, "fn", None) != "fit" or not trainer.is_global_zero:
            return {}
        name = "".join(c if c.isalnum() or c in "-_." else "_" for c in domain) or "data"
        return {"grouping_out": Path(trainer.default_root_dir) / f"pseudo_sequences-{name}.csv"}

    # --- loaders ---

    def _where(self) -> Path | str:
        return self.root if self.root is not None else "<none>"

    def _loader(self, dataset: D, train: bool) -> DataLoader:
        h = self.hparams
        if h.cache and h.num_workers > 0 and isinstance(dataset, CachedDataset):
            dataset.fill_cache()  # before the workers fork, so that they share the filled cache
        seed = self.loader_seed()
        sampler = self.train_sampler(dataset) if train else None
        return seeded_loader(dataset, h.batch_size, train, train and self.train_drop_last(), h.num_workers,
                             seed=seed, sampler=sampler)

    def train_dataloader(self) -> DataLoader:
        """The training loader (sets up ``"fit"`` first).

        Raises:
            DataError: ``setup`` built no training set.
        """
        self.setup("fit")
        if self.train_set is None:
            raise DataError(self._where(), "no training data")
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader | list[Any]:
        """The validation loader, or ``[]`` when the data has no validation part (sets up ``"validate"``)."""
        self.setup("validate")
        return [] if self.val_set is None else self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader:
        """The test loader (sets up ``"test"`` first).

        Raises:
            DataError: the data has no test part (the message says why: :attr:`no_test_reason`).
        """
        self.setup("test")
        if self.test_set is None:
            raise DataError(self._where(), f"no test split: {self.no_test_reason}")
        return self._loader(self.test_set, train=False)

    def predict_dataloader(self) -> DataLoader:
        """The loader of ``predict_set``, else of the test part (sets up ``"predict"`` first).

        Raises:
            DataError: neither exists.
        """
        self.setup("predict")
        if self.predict_set is not None:
            return self._loader(cast(D, self.predict_set), train=False)  # predict-only data: no sampler
        if self.test_set is None:
            raise DataError(self._where(), f"nothing to predict: no prediction data and no test split; "
                                           f"{self.no_test_reason}")
        return self._loader(self.test_set, train=False)
