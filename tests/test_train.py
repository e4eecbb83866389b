"""The distillation / fine-tuning trainer: losses, early stopping, resume, DDP, reference KD."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from slim_models import digits, mlp, small_resnet, trained_resnet
from support_models import HAVE_REFERENCE
from torchslim.config import config_from_dict, config_to_dict
from torchslim.errors import DataError, TorchslimError
from torchslim.evaluate import predict, top1_accuracy
from torchslim.train import DistillConfig, fit

TRAIN, TEST = digits("train"), digits("test")


def _acc(m):
    return top1_accuracy(predict(m.eval(), TEST), TEST)


@pytest.fixture(scope="module")
def teacher():
    return trained_resnet()


def test_finetune_learns_digits():
    model = small_resnet()
    before = _acc(model)
    res = fit(
        model,
        TRAIN,
        DistillConfig(method="finetune", epochs=2, lr=3e-3, batch_size=64),
        eval_data=TEST,
    )
    assert res.best_metric is not None and res.best_metric > before + 0.3
    assert res.steps == 2 * (1400 // 64)


def test_kd_student_approaches_teacher(teacher):
    student = mlp()
    fit(
        student,
        TRAIN,
        DistillConfig(method="kd", epochs=3, lr=3e-3, batch_size=64),
        teacher=teacher,
    )
    assert _acc(student) > 0.8 * _acc(teacher)


def test_teacher_is_left_as_given(teacher):
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    fit(mlp(), TRAIN, DistillConfig(max_steps=2, batch_size=32), teacher=teacher)
    assert all(p.requires_grad for p in teacher.parameters())
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before.items())


def test_kd_without_labels_uses_soft_targets_only(teacher):
    from torchslim.data import DataSet

    unlabeled = DataSet("u", TRAIN.inputs, None)
    student = mlp()
    fit(student, unlabeled, DistillConfig(epochs=2, lr=3e-3, batch_size=64), teacher=teacher)
    assert _acc(student) > 0.5


def test_feature_kd_with_adapter(teacher):
    from slim_models import SmallResNet

    torch.manual_seed(0)
    student = SmallResNet(width=8)  # narrower: a learnt 1x1 adapter maps 8 -> 16 channels
    res = fit(
        student,
        TRAIN,
        DistillConfig(features=("stem", "r2"), max_steps=3, batch_size=32),
        teacher=teacher,
    )
    assert res.steps == 3
    with pytest.raises(TorchslimError, match="does not exist"):
        fit(student, TRAIN, DistillConfig(features=("nope",), max_steps=1), teacher=teacher)


def test_self_distillation_runs():
    model = small_resnet()
    res = fit(model, TRAIN, DistillConfig(method="self", max_steps=4, batch_size=32))
    assert res.steps == 4


def test_missing_inputs_are_clear_errors(teacher):
    from torchslim.data import DataSet

    with pytest.raises(DataError, match="training data"):
        fit(mlp(), None, DistillConfig(), teacher=teacher)
    with pytest.raises(TorchslimError, match="teacher"):
        fit(mlp(), TRAIN, DistillConfig(method="kd"))
    with pytest.raises(DataError, match="labels"):
        fit(mlp(), DataSet("u", TRAIN.inputs, None), DistillConfig(method="finetune"))


def test_early_stopping_restores_best():
    model = small_resnet()
    cfg = DistillConfig(
        method="finetune",
        max_steps=40,
        lr=5.0,
        optimizer="sgd",
        eval_every=5,
        patience=2,
        batch_size=32,
    )
    try:
        res = fit(model, TRAIN, cfg, eval_data=TEST)
    except TorchslimError:  # diverged: also a clear stop
        return
    assert res.stopped_early or res.steps == 40
    assert _acc(model) == pytest.approx(res.best_metric)


def test_resume_gives_the_same_weights(tmp_path):
    cfg = DistillConfig(
        method="finetune",
        max_steps=8,
        batch_size=64,
        checkpoint_every=3,
        checkpoint_dir=str(tmp_path / "ck"),
    )
    straight = small_resnet()
    fit(
        straight,
        TRAIN,
        DistillConfig(
            **{**config_to_dict(cfg)["fields"], "checkpoint_dir": None, "method": "finetune"}
        ),
    )

    class Stop(Exception):
        pass

    def interrupt(step, _info):
        if step == 5:
            raise Stop

    first = small_resnet()
    with pytest.raises(Stop):
        fit(first, TRAIN, cfg, callback=interrupt)
    resumed = small_resnet()
    res = fit(resumed, TRAIN, cfg)
    assert res.resumed_from == 3 and res.steps == 8
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=k)
    with pytest.raises(TorchslimError, match="different settings"):
        fit(
            small_resnet(),
            TRAIN,
            DistillConfig(**{**config_to_dict(cfg)["fields"], "lr": 0.5, "method": "finetune"}),
        )


def test_time_budget_stops():
    res = fit(
        small_resnet(),
        TRAIN,
        DistillConfig(method="finetune", epochs=100, time_budget_s=1.0, batch_size=32),
    )
    assert res.steps < 100 * (1400 // 32)


def test_bf16_refused_without_hardware(monkeypatch):
    import torchslim.train as tr

    monkeypatch.setattr(tr, "bf16_supported", lambda device="cpu": False)
    with pytest.raises(TorchslimError, match="bf16"):
        fit(mlp(), TRAIN, DistillConfig(method="finetune", amp="bf16", max_steps=1))


def test_config_round_trip_and_validation():
    cfg = DistillConfig(method="self", features=("a=b",), time_budget_s=10.0)  # type: ignore[arg-type]
    assert config_from_dict(config_to_dict(cfg)) == cfg
    for bad in (dict(alpha=1.5), dict(temperature=0), dict(optimizer="adam"), dict(epochs=0)):
        with pytest.raises(TorchslimError):
            DistillConfig(**bad)  # type: ignore[arg-type]


_DDP_SCRIPT = """
import json, os, sys, torch
sys.path.insert(0, {tests!r})
from slim_models import digits, mlp
from torchslim.train import DistillConfig, fit
torch.set_num_threads(1)
m = mlp()
fit(m, digits("train"), DistillConfig(method="finetune", max_steps=6, batch_size=64, lr=1e-2))
if int(os.environ.get("RANK", "0")) == 0:
    torch.save(m.state_dict(), {out!r})
"""


@pytest.mark.slow
def test_ddp_two_gloo_processes_match_single_process(tmp_path):
    tests = str(Path(__file__).resolve().parent)
    script = tmp_path / "ddp.py"
    script.write_text(_DDP_SCRIPT.format(tests=tests, out=str(tmp_path / "ddp.pt")))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(tests).parent / "src"), tests])}
    env.pop("WORLD_SIZE", None)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        "29517",
        str(script),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    single = mlp()
    fit(single, TRAIN, DistillConfig(method="finetune", max_steps=6, batch_size=64, lr=1e-2))
    ddp = torch.load(str(tmp_path / "ddp.pt"), weights_only=True)
    for k, v in single.state_dict().items():
        torch.testing.assert_close(ddp[k], v, atol=1e-5, rtol=1e-4, msg=k)


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_REFERENCE, reason="reference model assets not generated")
def test_kd_recovers_half_pruned_reference_within_one_point():
    from torchslim.data import load_data
    from torchslim.models import load_model
    from torchslim.passes.prune import PruneConfig
    from torchslim.slim import prune

    torch.manual_seed(0)
    teacher = load_model("torchslim:fashion_resnet").require_module()
    train = load_data("torchslim:fashion_mnist?split=train")
    test = load_data("torchslim:fashion_mnist")
    cfg = PruneConfig(
        ratio=0.5,
        target="flops",
        recover=DistillConfig(method="kd", epochs=1, lr=2e-3, batch_size=128),
    )
    res = prune(teacher, cfg, test.inputs[0][:2], train=train, eval=test, measure=False)
    assert res.baseline_flops / res.flops >= 2.0
    assert res.drop_points <= 1.0  # points: one percentage point of top-1
    assert res.baseline_accuracy > 0.93
