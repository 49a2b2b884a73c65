"""The layout registry: every layout recognises what its phantom writer writes, "auto" picks the
right one, the DataModules reach readers only through the registry, and the import rules hold."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import medlearn.data as data
from medlearn.data import layouts
from medlearn.data.brats import BRATS_MODALITIES
from medlearn.data.layouts import (
    Layout,
    RecordSet,
    check_layout_name,
    detect_layout,
    get_layout,
    list_layouts,
    register_layout,
)
from medlearn.data.records import LabelledImage
from medlearn.io.errors import DataError
from medlearn.synth import get_synth

#: Small options for each phantom writer (a layout naming a writer missing here fails the test).
SMALL: dict[str, dict[str, Any]] = {
    "chestxray": dict(n_images=12, size=16, seed=1),
    "isic": dict(counts="3,6,2,2,3,2,2", n_test_per_class=1, size=12, seed=1),
    "brats": dict(n_cases=2, size=16, seed=1),
    "headct": dict(n_volumes=6, size=16, seed=1),
    "asoct": dict(n_scans=4, width=64, height=32, images_per_patient=2, table_format="csv", seed=1),
    "fundus": dict(n_train=4, n_target=2, n_test=2, n_source_test=1, seed=1),
    "drishti": dict(n_train=2, n_test=2, size=32, seed=1),
    "kits19": dict(n_cases=2, n_unlabelled=0, n_slices=6, size=32, seed=1),
    "acdc": dict(n_patients=2, n_slices=3, size=32, seed=1),
    "inbreast": dict(n_images=3, height=64, width=64, p_mass=1.0, seed=1),
    "endoscopy-cvc": dict(n_videos=2, n_frames=3, size=16, seed=1),
    "endoscopy-etis": dict(n_videos=2, n_frames=3, size=16, seed=1),
    "oneshot": dict(dims=2, n_train=2, n_eval=1, size=16, seed=1),
    "neurons": dict(n_neurons=2, size_xy=32, size_z=16, error_fraction=1.0, seed=1),
}
#: What "auto" resolves each writer's output to: (kind, layout). The head CT phantom is a manifest
#: to "auto" (its explicit layout "headct" only changes the default class order).
AUTO: dict[str, tuple[str, str]] = {
    "chestxray": ("radiograph", "chestxray14"),
    "isic": ("labelled2d", "isic2018"),
    "brats": ("volume", "brats"),
    "headct": ("volume", "manifest"),
    "asoct": ("asoct", "age"),
    "fundus": ("segmentation2d", "refuge"),
    "drishti": ("segmentation2d", "drishti"),
    "kits19": ("segmentation2d", "kits19"),
    "acdc": ("segmentation2d", "acdc"),
    "inbreast": ("segmentation2d", "inbreast"),
    "endoscopy-cvc": ("video", "cvc_clinicdb"),
    "endoscopy-etis": ("video", "etis"),
    "oneshot": ("oneshot", "oneshot"),
    "neurons": ("neuron", "neurons"),
}


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("layouts")
    return {name: Path(get_synth(name)(out=out / name, **opts)) for name, opts in SMALL.items()}


def test_every_kind_and_synth_writer_is_covered() -> None:
    assert {layout.kind for layout in list_layouts()} >= {"radiograph", "labelled2d", "volume", "asoct"}
    synths = {layout.synth for layout in list_layouts() if layout.synth}
    assert synths <= set(SMALL), f"add small options for {sorted(synths - set(SMALL))} to SMALL and AUTO"
    assert set(AUTO) == set(SMALL)


@pytest.mark.parametrize("layout", [entry for entry in list_layouts() if entry.synth],
                         ids=lambda entry: f"{entry.kind}-{entry.name}")
def test_layout_detects_and_reads_what_its_writer_writes(layout: Layout, written: dict[str, Path]) -> None:
    root = written[layout.synth or ""]
    assert layout.detect(root)
    found = layout.read(root)
    assert isinstance(found, RecordSet) and len(found) > 0
    if layout.classes is not None:
        assert found.class_names == list(layout.classes)


@pytest.mark.parametrize("synth", sorted(AUTO))
def test_detect_layout_picks_the_right_one(synth: str, written: dict[str, Path]) -> None:
    kind, name = AUTO[synth]
    assert detect_layout(written[synth], kind).name == name
    for other in list_layouts(kind):  # layouts tried before the right one do not claim the data
        if other.name == name:
            break
        assert not other.detect(written[synth])


def test_specific_layouts_do_not_claim_each_others_data(written: dict[str, Path]) -> None:
    for synth, root in written.items():
        own_kind = AUTO[synth][0]
        for layout in list_layouts():
            if layout.synth and layout.kind != own_kind:
                assert not layout.detect(root), f"{layout.kind}/{layout.name} claims the {synth} phantom"


def test_detect_layout_names_the_root_and_every_layout_tried(tmp_path: Path) -> None:
    with pytest.raises(DataError) as exc:
        detect_layout(tmp_path, "volume")
    assert exc.value.path == str(tmp_path)
    for name in ("manifest", "headct", "brats", "folder"):
        assert name in str(exc.value)
    assert detect_layout(tmp_path, "volume", default="folder").name == "folder"
    assert detect_layout(tmp_path / "missing", "radiograph", default="folder").name == "folder"
    with pytest.raises(KeyError):
        detect_layout(tmp_path, "volume", default="nope")


def test_get_layout_and_layout_names() -> None:
    assert get_layout("brats").kind == "volume" and get_layout("brats").label_values == (0, 1, 2, 4)
    assert get_layout("folder", "radiograph") is not get_layout("folder", "volume")
    with pytest.raises(KeyError, match="several kinds"):
        get_layout("folder")
    with pytest.raises(KeyError, match="known: .*chestxray14"):
        get_layout("nope", "radiograph")
    with pytest.raises(KeyError, match="unknown layout 'nope'"):
        get_layout("nope")
    check_layout_name("auto", "labelled2d")
    check_layout_name("isic2018", "labelled2d")
    with pytest.raises(ValueError, match="layout must be 'auto', 'isic2018' or 'csv', got 'brats'"):
        check_layout_name("brats", "labelled2d")
    assert [entry.name for entry in list_layouts("volume")] == ["manifest", "headct", "brats", "folder"]


def test_register_layout_refuses_clashes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(layouts, "LAYOUTS", dict(layouts.LAYOUTS))

    def detect(root: Path, **_: Any) -> bool:
        return False

    def read(root: Path, **_: Any) -> RecordSet[Any]:
        return RecordSet([])

    def other_read(root: Path, **_: Any) -> RecordSet[Any]:
        return RecordSet([])

    entry = register_layout("toy", detect, read, kind="toy-kind", description="a toy")
    assert register_layout("toy", detect, read, kind="toy-kind", description="a toy") == entry  # a reload
    with pytest.raises(ValueError, match="already registered"):
        register_layout("toy", detect, other_read, kind="toy-kind", description="another toy")
    with pytest.raises(ValueError, match="'auto'"):
        register_layout("auto", detect, read, kind="toy-kind", description="")
    with pytest.raises(ValueError, match="label_names"):
        register_layout("toy2", detect, read, kind="toy-kind", description="", label_names=("a",))
    assert list_layouts("toy-kind") == [entry]


def test_a_new_layout_is_one_registration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A layout registered from outside is found by ``"auto"`` and read by the DataModule."""
    monkeypatch.setattr(layouts, "LAYOUTS", dict(layouts.LAYOUTS))
    folder = tmp_path / "toyset"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (6, 6), dtype=np.uint8)).save(folder / f"{i}.png")
    (folder / "TOY").write_text("")

    def detect(root: Path, **_: Any) -> bool:
        return (Path(root) / "TOY").is_file()

    def read(root: Path, **_: Any) -> RecordSet[LabelledImage]:
        recs = [LabelledImage(Path(root) / f"{i}.png", i % 2, f"g{i // 2}", f"{i}.png") for i in range(12)]
        return RecordSet(recs, ["even", "odd"])

    register_layout("toy", detect, read, kind="labelled2d", description="a toy layout", priority=50)
    dm = data.LabelledImageDataModule(str(folder), image_size=4, batch_size=3, val_fraction=0.2, test_fraction=0.2)
    dm.setup("fit")
    assert dm.resolved_layout == "toy" and dm.class_names == ["even", "odd"] and dm.num_classes == 2
    assert next(iter(dm.train_dataloader()))["image"].shape == (3, 3, 4, 4)


def test_datamodules_resolve_auto_through_the_registry(written: dict[str, Path], tmp_path: Path) -> None:
    assert data.RadiographDataModule(str(written["chestxray"])).resolved_layout == "chestxray14"
    assert data.RadiographDataModule(str(written["chestxray"] / "images")).resolved_layout == "folder"
    assert data.LabelledImageDataModule(str(written["isic"])).resolved_layout == "isic2018"
    assert data.LabelledImageDataModule(str(tmp_path)).resolved_layout == "csv"
    assert data.VolumeDataModule(str(written["headct"])).resolved_layout == "manifest"
    assert data.VolumeDataModule(str(written["headct"] / "labels.csv")).resolved_layout == "manifest"
    assert data.VolumeDataModule(str(written["brats"])).resolved_layout == "brats"
    assert data.VolumeDataModule(str(written["brats"]), modalities=("t2w",)).resolved_layout == "folder"
    assert data.VolumeDataModule(str(tmp_path)).resolved_layout == "folder"
    for cls in (data.RadiographDataModule, data.LabelledImageDataModule, data.VolumeDataModule):
        with pytest.raises(ValueError, match="layout must be 'auto'"):
            cls(str(tmp_path), layout="nope")


def test_volume_datamodule_default_modalities_are_brats() -> None:
    assert data.VolumeDataModule("x").hparams.modalities == BRATS_MODALITIES


def test_radiograph_multilabel_needs_a_labelled_layout(written: dict[str, Path]) -> None:
    with pytest.raises(DataError, match="multi-label classification needs a layout with labels: chestxray14"):
        data.RadiographDataModule(str(written["chestxray"] / "images"), task="multilabel").setup("fit")


# --- import rules ----------------------------------------------------------------------------------
DATA = Path(data.__file__).parent
#: Modules of medlearn.data that know no dataset; every other module there is a dataset module.
GENERIC = {"__init__", "augment", "check", "datamodule", "datasets", "decode", "image_view", "info", "labelled2d",
           "layouts", "radiograph", "records", "roi", "sampling", "segmentation2d", "tables", "two_domain",
           "volume_preprocess", "trace_raster", "video_frames", "video_pairs", "volume_slices",
           "volumes"}


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_import_rules() -> None:
    modules = {p.stem: _imports(p) for p in DATA.glob("*.py")}
    dataset_modules = set(modules) - GENERIC
    assert {"chestxray14", "isic2018", "age_asoct", "brats", "manifest"} <= dataset_modules
    for name, imported in modules.items():
        upward = sorted(m for m in imported if m.startswith(("medlearn.methods", "medlearn.tasks", "medlearn.engine")))
        assert not upward, f"medlearn.data.{name} imports {upward}"
        if name == "__init__":
            continue
        others = sorted(m for m in imported for d in dataset_modules - {name}
                        if m == f"medlearn.data.{d}" or m.startswith(f"medlearn.data.{d}."))
        assert not others, f"medlearn.data.{name} imports the dataset module(s) {others}"
