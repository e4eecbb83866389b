"""The distillation / fine-tuning trainer: losses, early stopping, resume, DDP, reference KD."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from slim_models import digits, mlp, small_resnet, trained_resnet
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


def _narrow_student():
    from slim_models import SmallResNet

    torch.manual_seed(0)
    return SmallResNet(width=8)  # narrower: a learnt 1x1 adapter maps 8 -> 16 channels


def test_feature_kd_with_adapter(teacher):
    cfg = dict(max_steps=5, lr=3e-3, batch_size=64)
    student = _narrow_student()
    res = fit(student, TRAIN, DistillConfig(features=("stem", "r2"), **cfg), teacher=teacher)
    assert res.steps == 5
    # the adapted feature term really is in the loss: without it the same run ends elsewhere
    plain = _narrow_student()
    fit(plain, TRAIN, DistillConfig(**cfg), teacher=teacher)
    assert not torch.equal(plain.stem[0].weight, student.stem[0].weight)
    with pytest.raises(TorchslimError, match="does not exist"):
        fit(student, TRAIN, DistillConfig(features=("nope",), max_steps=1), teacher=teacher)


def test_feature_kd_pulls_the_features_to_the_teacher(teacher):
    from slim_models import SmallResNet

    x = TEST.inputs[0]

    def student():
        torch.manual_seed(1)  # not the teacher's initialisation
        return SmallResNet()

    def stem_mse(model):  # student in train mode (batch statistics), as while distilling
        model.train()
        with torch.no_grad():
            return float(torch.nn.functional.mse_loss(model.stem(x), teacher.stem(x)))

    start = stem_mse(student())
    cfg = dict(epochs=1, lr=3e-3, batch_size=64)
    plain, matched = student(), student()
    fit(plain, TRAIN, DistillConfig(**cfg), teacher=teacher)
    fit(
        matched,
        TRAIN,
        DistillConfig(features=("stem",), feature_weight=100.0, **cfg),
        teacher=teacher,
    )
    assert stem_mse(matched) < 0.85 * min(start, stem_mse(plain)), (start, stem_mse(plain))


def test_self_distillation_learns():
    model = small_resnet()
    before = _acc(model)
    res = fit(model, TRAIN, DistillConfig(method="self", epochs=2, lr=3e-3, batch_size=64))
    assert res.steps == 2 * (1400 // 64)
    assert _acc(model) > before + 0.3  # ~0.6 after 2 epochs, from chance (0.1)
    assert all(p.requires_grad for p in model.parameters())


def test_missing_inputs_are_clear_errors(teacher):
    from torchslim.data import DataSet

    with pytest.raises(DataError, match="training data"):
        fit(mlp(), None, DistillConfig(), teacher=teacher)
    with pytest.raises(TorchslimError, match="teacher"):
        fit(mlp(), TRAIN, DistillConfig(method="kd"))
    with pytest.raises(DataError, match="labels"):
        fit(mlp(), DataSet("u", TRAIN.inputs, None), DistillConfig(method="finetune"))


def test_early_stopping_restores_best(monkeypatch):
    import torchslim.train as tr

    # scripted evaluations: best at the 2nd (step 10), then 2 without improvement -> stop at 20
    scores = iter([0.5, 0.7, 0.6, 0.7, 0.9])
    monkeypatch.setattr(tr, "_evaluate", lambda module, data, bs: next(scores))
    snapshots = {}

    def keep(step, _info):
        snapshots[step] = {k: v.clone() for k, v in model.state_dict().items()}

    model = small_resnet()
    cfg = DistillConfig(method="finetune", max_steps=40, eval_every=5, patience=2, batch_size=32)
    res = fit(model, TRAIN, cfg, eval_data=TEST, callback=keep)
    assert res.stopped_early and res.steps == 20 and res.best_metric == 0.7
    assert [h["step"] for h in res.history] == [5, 10, 15, 20]
    for k, v in model.state_dict().items():  # the weights of step 10, not those of step 20
        torch.testing.assert_close(v, snapshots[10][k], rtol=0, atol=0, msg=k)
    assert any(not torch.equal(v, snapshots[15][k]) for k, v in model.state_dict().items())


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
    lrs = []
    t0 = time.perf_counter()
    res = fit(
        small_resnet(),
        TRAIN,
        DistillConfig(method="finetune", epochs=100, time_budget_s=1.0, batch_size=32),
        callback=lambda step, info: lrs.append(info["lr"]),
    )
    took = time.perf_counter() - t0
    assert 0 < res.steps < 100 * (1400 // 32)
    assert 1.0 <= took < 5.0 and res.seconds < 5.0  # stops at the budget (plus one step)
    # the cosine schedule follows elapsed time: the LR has decayed most of the way to 0
    assert lrs[0] > 0.9e-3 and lrs[-1] < 0.1e-3


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


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
        str(_free_port()),  # never a fixed port: parallel runs on one machine would collide
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


# ----------------------------------------------------------------- interrupts and checkpoints


def _ckpt_cfg(tmp_path, **kw):
    fields = dict(
        method="finetune",
        max_steps=12,
        batch_size=64,
        checkpoint_every=1000,  # no step-interval checkpoint: only the interrupt writes one
        checkpoint_every_s=None,
        checkpoint_dir=str(tmp_path / "ck"),
    )
    return DistillConfig(**{**fields, **kw})  # type: ignore[arg-type]


def _straight(cfg):
    model = small_resnet()
    fit(model, TRAIN, DistillConfig(**{**config_to_dict(cfg)["fields"], "checkpoint_dir": None}))
    return model


def _assert_same_weights(a, b):
    for (k, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(x, y, msg=k)


def _saved_step(cfg) -> int:
    state = torch.load(str(Path(cfg.checkpoint_dir) / "checkpoint.pt"), weights_only=True)
    return int(state["step"])


def test_old_sigterm_handler_restored_after_a_normal_run(tmp_path):
    calls = []

    def mine(signum, frame):
        calls.append(signum)

    old = signal.signal(signal.SIGTERM, mine)
    try:
        fit(mlp(), TRAIN, _ckpt_cfg(tmp_path, max_steps=2))
        assert signal.getsignal(signal.SIGTERM) is mine
        fit(mlp(), TRAIN, DistillConfig(method="finetune", max_steps=1))  # no checkpoint dir
        assert signal.getsignal(signal.SIGTERM) is mine and calls == []
    finally:
        signal.signal(signal.SIGTERM, old)


_SIGTERM_SCRIPT = """
import sys, time, torch
sys.path.insert(0, {tests!r})
from slim_models import digits, small_resnet
from torchslim.train import DistillConfig, fit
torch.set_num_threads(1)

def slow(step, info):
    if step == 1:
        print("READY", flush=True)
    time.sleep(0.05)

fit(small_resnet(), digits("train"), DistillConfig(**{cfg!r}), callback=slow)
print("FINISHED", flush=True)
"""


@pytest.mark.slow
def test_sigterm_subprocess_resumes_to_the_uninterrupted_weights(tmp_path):
    cfg = _ckpt_cfg(tmp_path, max_steps=60)
    tests = str(Path(__file__).resolve().parent)
    script = tmp_path / "train.py"
    script.write_text(_SIGTERM_SCRIPT.format(tests=tests, cfg=config_to_dict(cfg)["fields"]))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(tests).parent / "src"), tests])}
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # after the first step: a checkpoint-able state
        assert line.strip() == "READY", (line, proc.stderr.read() if proc.stderr else "")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0 and "FINISHED" not in out, err[-2000:]
    assert "checkpoint saved" in err and "Run the same command again to resume" in err
    saved = _saved_step(cfg)
    assert 1 <= saved < 60
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the interrupted process
    try:
        resumed = small_resnet()
        res = fit(resumed, TRAIN, cfg)
        straight = _straight(cfg)
    finally:
        torch.set_num_threads(old)
    assert res.resumed_from == saved and res.steps == 60
    _assert_same_weights(straight, resumed)


def test_checkpoints_on_a_time_interval(tmp_path):
    class Stop(Exception):
        pass

    def slow_then_stop(step, _info):
        time.sleep(0.01)
        if step == 4:
            raise Stop

    by_steps = _ckpt_cfg(tmp_path / "a")
    with pytest.raises(Stop):
        fit(small_resnet(), TRAIN, by_steps, callback=slow_then_stop)
    assert not (Path(by_steps.checkpoint_dir) / "checkpoint.pt").exists()

    timed = _ckpt_cfg(tmp_path / "b", checkpoint_every_s=0.005)
    with pytest.raises(Stop):
        fit(small_resnet(), TRAIN, timed, callback=slow_then_stop)
    assert _saved_step(timed) == 4
    # the interval only says when to save: resuming with another value is the same run
    resumed = small_resnet()
    res = fit(
        resumed,
        TRAIN,
        DistillConfig(**{**config_to_dict(timed)["fields"], "checkpoint_every_s": 60.0}),
    )
    assert res.resumed_from == 4 and res.steps == 12
    _assert_same_weights(_straight(timed), resumed)


def test_config_without_checkpoint_every_s_still_loads():
    data = config_to_dict(DistillConfig(method="finetune", checkpoint_every=7))
    del data["fields"]["checkpoint_every_s"]  # written by a torchslim before the field existed
    cfg = config_from_dict(data)
    assert cfg.checkpoint_every_s == 60.0 and cfg.checkpoint_every == 7
    with pytest.raises(TorchslimError, match="checkpoint_every_s"):
        DistillConfig(checkpoint_every_s=0)


def _one_line_error(info, path) -> None:
    err = info.value
    assert str(path) in err.message and "\n" not in err.message
    assert err.hint and "start over" in err.hint and str(path) in err.hint


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_checkpoint_is_a_one_line_error(tmp_path, damage):
    cfg = _ckpt_cfg(tmp_path, max_steps=2)
    fit(small_resnet(), TRAIN, cfg)
    path = Path(cfg.checkpoint_dir) / "checkpoint.pt"
    raw = path.read_bytes()
    path.write_bytes(
        {"garbage": b"not a checkpoint", "truncated": raw[: len(raw) // 2], "empty": b""}[damage]
    )
    with pytest.raises(TorchslimError, match="corrupt") as info:
        fit(small_resnet(), TRAIN, cfg)
    _one_line_error(info, path)


def test_checkpoint_of_another_model_is_a_one_line_error(tmp_path):
    cfg = _ckpt_cfg(tmp_path, max_steps=2)
    fit(mlp(), TRAIN, cfg)
    path = Path(cfg.checkpoint_dir) / "checkpoint.pt"
    student = small_resnet()
    before = {k: v.clone() for k, v in student.state_dict().items()}
    with pytest.raises(TorchslimError, match="does not fit") as info:
        fit(student, TRAIN, cfg)
    _one_line_error(info, path)
    assert all(torch.equal(v, student.state_dict()[k]) for k, v in before.items())  # untouched
    with pytest.raises(TorchslimError, match=r"different settings \(lr\)") as info:
        fit(mlp(), TRAIN, DistillConfig(**{**config_to_dict(cfg)["fields"], "lr": 0.5}))
    _one_line_error(info, path)


def test_cli_distill_corrupt_checkpoint_is_one_error_line(tmp_path):
    from typer.testing import CliRunner

    from torchslim.cli.main import app

    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "checkpoint.pt").write_bytes(b"\x00garbage")
    res = CliRunner().invoke(
        app,
        [
            "distill",
            "slim_models:mlp",
            "--teacher",
            "slim_models:small_resnet",
            "--data",
            "slim_models:digits_train",
            "--epochs",
            "0.1",
            "--no-latency",
            "--checkpoint-dir",
            str(ck),
        ],
    )
    assert res.exit_code == 2, res.output
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "checkpoint.pt" in errors[0] and "corrupt" in errors[0]
    assert "Traceback" not in res.output and "start over" in res.stderr
