"""The contract every registered method meets, generated from the registry.

For each method and each of its demo configs: build from the config, read one batch of synthetic
data written in the public layout through the real reader, one training step on CPU through the
module's ``contract_step`` (automatic or manual optimisation alike) with finite losses and gradients
on every parameter each loss must reach, then a short fit through the run builder, checkpoint
save -> load -> identical outputs (one or several inputs, from ``contract_inputs``).
"""

from __future__ import annotations

import pytest
from lightning.pytorch import seed_everything

from medlearn.engine.config import instantiate_class, load_config
from medlearn.engine.contract import reload_problems, training_step_problems
from medlearn.engine.run import fit_from_config
from medlearn.registry import config_dir, get_method, list_methods

CASES = [(m.name, c) for m in list_methods() for c in m.contract_configs]


@pytest.fixture(scope="module")
def data_roots(tmp_path_factory):
    """One tiny dataset per (method, data writer), written through the public layouts."""
    roots = {}
    for m in list_methods():
        for c in m.contract_configs:
            writer = m.contract_writer(c)
            if writer not in roots:
                roots[writer] = writer(tmp_path_factory.mktemp(m.name))
    return roots


@pytest.mark.parametrize("method,config", CASES, ids=[f"{m}-{c}" for m, c in CASES])
def test_contract(method, config, data_roots, tmp_path):
    cfg = load_config(config_dir(method) / config, {
        "data.init_args.root": str(data_roots[get_method(method).contract_writer(config)]),
        "data.init_args.batch_size": 8,
        "data.init_args.num_train": None, "trainer.max_epochs": 1, "trainer.limit_train_batches": 2,
        "trainer.limit_val_batches": 1,
    })
    seed_everything(0)
    model = instantiate_class(cfg["model"])
    dm = instantiate_class(cfg["data"])
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    problems = training_step_problems(model, batch)
    assert not problems, f"{method}/{config}: {problems}"

    # a real (short) fit writes last.ckpt through the engine; reload it weights-only
    model = instantiate_class(cfg["model"])
    res = fit_from_config(cfg, tmp_path / "run", test=False, progress="none", model=model)
    assert res.last_ckpt.is_file() and (tmp_path / "run" / "report.html").is_file()
    assert (tmp_path / "run" / "config.yaml").is_file() and (tmp_path / "run" / "metrics.csv").is_file()
    assert not reload_problems(model, res.last_ckpt)
