"""Config loading, dotted overrides and nested instantiation."""

from __future__ import annotations

from medlearn.engine.config import apply_overrides, instantiate_class


def test_overrides_create_intermediate_keys_and_leave_the_original():
    cfg = {"model": {"init_args": {"lr": 1.0}}}
    out = apply_overrides(cfg, {"model.init_args.lr": 0.5, "trainer.max_epochs": 3})
    assert out["model"]["init_args"]["lr"] == 0.5 and out["trainer"]["max_epochs"] == 3
    assert cfg["model"]["init_args"]["lr"] == 1.0


def test_nested_class_paths_are_built_first():
    obj = instantiate_class({"class_path": "collections.OrderedDict", "init_args": {
        "inner": {"class_path": "fractions.Fraction", "init_args": {"numerator": 1, "denominator": 3}},
        "many": [{"class_path": "fractions.Fraction", "init_args": {"numerator": 2}}, 5]}})
    from fractions import Fraction

    assert obj["inner"] == Fraction(1, 3) and obj["many"] == [Fraction(2), 5]
