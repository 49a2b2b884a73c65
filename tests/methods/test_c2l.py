"""C2L specifics: the three terms, queue pushes, EMA teacher, un-shuffling, real radiographs."""

from __future__ import annotations

import shutil

import pytest
import torch

from medlearn.engine.config import load_config
from medlearn.engine.run import fit_from_config
from medlearn.methods.c2l import C2L
from medlearn.methods.c2l.model import C2LEncoder, shuffled_forward
from medlearn.registry import config_dir


def small(**kw):
    args = dict(backbone="plaincnn", queue_size=64, temperature=0.2, ema=0.9, view_size=32, bn_groups=2)
    args.update(kw)
    return C2L(**args)


@pytest.mark.parametrize("mixup,terms", [(True, 3), (False, 1)])
def test_queue_receives_one_push_per_term(mixup, terms):
    torch.manual_seed(0)
    m = small(mixup=mixup).train()
    loss = m.training_step({"image": torch.rand(8, 1, 40, 40)}, 0)
    assert torch.isfinite(loss)
    assert int(m.queue.ptr) == (terms * 8) % 64


def test_teacher_is_ema_of_student_and_gets_no_gradient():
    torch.manual_seed(0)
    m = small(ema=0.75).train()
    t0 = [p.detach().clone() for p in m.teacher.parameters()]
    loss = m.training_step({"image": torch.rand(8, 1, 40, 40)}, 0)
    loss.backward()
    assert all(p.grad is None for p in m.teacher.parameters())
    with torch.no_grad():
        for p in m.student.parameters():
            p.add_(1.0)
    m.on_train_batch_end(None, None, 0)
    for t_old, t_new, s in zip(t0, m.teacher.parameters(), m.student.parameters()):
        assert torch.allclose(t_new, 0.75 * t_old + 0.25 * s, atol=1e-6)


def test_shuffled_forward_returns_keys_in_input_order():
    torch.manual_seed(0)
    net = C2LEncoder("plaincnn", 2, 1, 16).eval()  # eval BN: the output of a sample does not depend on its group
    x = torch.randn(12, 1, 32, 32)
    with torch.no_grad():
        ref = net(x)
        out, perm = shuffled_forward(net, x, None, groups=3)
        again, _ = shuffled_forward(net, x, perm, groups=3)
    assert sorted(perm.tolist()) == list(range(12))
    assert torch.allclose(out, ref, atol=1e-5) and torch.allclose(again, ref, atol=1e-5)


def test_ghost_bn_changes_teacher_statistics():
    torch.manual_seed(0)
    net = C2LEncoder("plaincnn", 2, 1, 16).train()
    x = torch.randn(16, 1, 32, 32)
    with torch.no_grad():
        plain = net(x)
        ghost, _ = shuffled_forward(net, x, None, groups=4)
    assert not torch.allclose(plain, ghost, atol=1e-4)


def test_nce_form_trains_and_checkpoints_its_partition_constant():
    torch.manual_seed(0)
    m = small(loss="nce", n_data=100).train()
    loss = m.training_step({"image": torch.rand(8, 1, 40, 40)}, 0)
    assert torch.isfinite(loss) and float(m.criterion.z) > 0
    m2 = small(loss="nce", n_data=100)
    m2.load_state_dict(m.state_dict())
    assert float(m2.criterion.z) == float(m.criterion.z)


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="loss"):
        small(loss="triplet")
    with pytest.raises(ValueError, match="ema"):
        small(ema=1.0)


def test_pretrains_on_real_radiographs_in_a_folder(tmp_path):
    """Smoke: the real PA chest radiograph from pydicom-data (and its JPEG 2000 twins) as a folder."""
    from pydicom.data import get_testdata_file

    folder = tmp_path / "cxr"
    folder.mkdir()
    n = 0
    for name in ("RG1_UNCI.dcm", "RG1_J2KI.dcm", "RG1_J2KR.dcm", "RG3_UNCI.dcm"):
        p = get_testdata_file(name)
        if p:
            shutil.copy(p, folder / name)
            n += 1
    if n < 2:
        pytest.skip("pydicom-data radiographs not installed")
    cfg = load_config(config_dir("c2l") / "demo.yaml", {
        "data.init_args.root": str(folder), "data.init_args.batch_size": n, "data.init_args.image_size": 48,
        "model.init_args.queue_size": 16, "trainer.max_epochs": 2})
    res = fit_from_config(cfg, tmp_path / "run", test=False, progress="none")
    ck = torch.load(res.last_ckpt, weights_only=True)
    assert ck["epoch"] == 1 and res.datamodule.n_train == n
    assert (tmp_path / "run" / "figures" / "views.png").is_file()


def test_bf16_mixed_precision_step_through_lightning(tmp_path):
    """`--trainer.precision bf16-mixed` needs no code change (CPU autocast here, CUDA on a GPU)."""
    from medlearn.methods.c2l.recipe import write_contract_data

    root = write_contract_data(tmp_path / "data")
    cfg = load_config(config_dir("c2l") / "demo.yaml", {
        "data.init_args.root": str(root), "data.init_args.batch_size": 8, "model.init_args.queue_size": 32,
        "trainer.max_epochs": 1, "trainer.limit_train_batches": 2, "trainer.precision": "bf16-mixed"})
    res = fit_from_config(cfg, tmp_path / "run", test=False, progress="none")
    assert torch.isfinite(torch.tensor(float(res.model.trainer.callback_metrics["train/loss"])))
    assert res.model.queue.queue.dtype == torch.float32


@pytest.mark.slow
def test_demo_c2l_beats_scratch(tmp_path):
    """The built-in demo (about 1.5 min on 2 cores): C2L init beats scratch with 50 labels."""
    from medlearn.methods.c2l.recipe import demo

    res = demo(out_dir=tmp_path / "demo")
    assert res.passed, res.headline
    assert (tmp_path / "demo" / "report.html").is_file()
