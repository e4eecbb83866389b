"""The public one-step API (``torchslim.distill/lowrank/cluster/depthwise``) on a trained model.

Each verb returns a :class:`~torchslim.candidate.Candidate`; these tests check its numbers against
what the result model really does on held-out digits (``slim_models:digits_test``).
"""

from __future__ import annotations

import pytest
import torch

import torchslim
from slim_models import digits, mlp, trained_resnet
from torchslim.evaluate import predict, top1_accuracy
from torchslim.passes.compress import ClusterConfig, DepthwiseConfig, LowRankConfig
from torchslim.train import DistillConfig

TRAIN, TEST = digits("train"), digits("test")
X = TEST.inputs[0][:2]
# SmallResNet(width=16) on 1x8x8, FLOPs per item: stem 2·64·16·9 = 18,432, c1 2·64·16·144 =
# 294,912, c2 2·16·32·144 = 147,456, proj 2·16·32·16 = 16,384, fc 2·32·10 = 640.
BASELINE_FLOPS = 18_432 + 294_912 + 147_456 + 16_384 + 640
RECOVER = DistillConfig(epochs=2, lr=3e-3, batch_size=64)


def _acc(model: torch.nn.Module) -> float:
    return top1_accuracy(predict(model.eval(), TEST), TEST)


@pytest.fixture(scope="module")
def teacher() -> torch.nn.Module:
    return trained_resnet()


@pytest.fixture(scope="module")
def teacher_acc(teacher: torch.nn.Module) -> float:
    acc = _acc(teacher)
    assert acc > 0.75  # really trained (chance is 0.1)
    return acc


def _check_candidate(cand, teacher_acc: float) -> None:
    assert cand.ok, cand.reason
    assert cand.baseline_accuracy == pytest.approx(teacher_acc)
    assert cand.accuracy == pytest.approx(_acc(cand.model), abs=1e-6)
    assert cand.drop_points == pytest.approx(100 * (cand.baseline_accuracy - cand.accuracy))


def test_lowrank_cuts_flops_by_the_rank_it_reports(teacher, teacher_acc) -> None:
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    cand = torchslim.lowrank(teacher, LowRankConfig(rank_ratio=0.25), X, eval=TEST, measure=False)
    _check_candidate(cand, teacher_acc)
    assert cand.baseline_flops == BASELINE_FLOPS  # per call at batch 1
    assert cand.flops < cand.baseline_flops / 3 and cand.params < cand.baseline_params / 2
    layers = cand.reports[0]["layers"]
    assert {n: (v["rank"], v["full_rank"]) for n, v in layers.items()} == {
        "c1": (4, 16),
        "c2": (8, 32),
        "proj": (4, 16),
    }
    assert cand.reports[0]["factorized"] == 3
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before.items())  # untouched


def test_lowrank_with_recovery_keeps_accuracy(teacher, teacher_acc) -> None:
    cfg = LowRankConfig(rank_ratio=0.5, recover=RECOVER)
    cand = torchslim.lowrank(teacher, cfg, X, train=TRAIN, eval=TEST, measure=False)
    _check_candidate(cand, teacher_acc)
    assert cand.flops < cand.baseline_flops
    assert cand.drop_points <= 5.0, cand.drop_points


def test_cluster_shares_weights_and_reports_the_compressed_size(teacher, teacher_acc) -> None:
    cand = torchslim.cluster(teacher, ClusterConfig(clusters=8), X, eval=TEST, measure=False)
    _check_candidate(cand, teacher_acc)
    rep = cand.reports[0]
    assert rep["index_bits"] == 3
    modules = dict(cand.model.named_modules())
    for name, layer in rep["layers"].items():
        assert layer["clusters"] == 8
        distinct = modules[name].weight.detach().unique().numel()
        assert distinct == layer["distinct"] <= 8, name
    assert set(rep["layers"]) == {"c1", "c2", "proj", "fc"}  # the 144-weight stem is too small
    assert rep["size_bytes_compressed"] < rep["size_bytes_dense"] / 5
    assert rep["compression"] == pytest.approx(
        rep["size_bytes_dense"] / rep["size_bytes_compressed"], rel=1e-3
    )
    assert cand.drop_points <= 5.0, cand.drop_points


def test_depthwise_swap_recovers_most_accuracy(teacher, teacher_acc) -> None:
    cfg = DepthwiseConfig(recover=RECOVER)
    cand = torchslim.depthwise(teacher, cfg, X, train=TRAIN, eval=TEST, measure=False)
    _check_candidate(cand, teacher_acc)
    rep = cand.reports[0]
    assert rep["swapped"] == ["c1", "c2"]
    assert rep["recovery"]["steps"] == 2 * (1400 // 64)
    assert cand.flops < cand.baseline_flops / 3
    assert cand.drop_points <= 10.0, cand.drop_points


def test_distill_trains_the_student_towards_the_teacher(teacher, teacher_acc) -> None:
    student = mlp()
    untrained = _acc(student)
    cfg = DistillConfig(epochs=3, lr=3e-3, batch_size=64)
    cand = torchslim.distill(student, teacher, TRAIN, cfg, eval=TEST, measure=False)
    assert cand.ok, cand.reason
    assert cand.baseline_accuracy == pytest.approx(untrained) and untrained < 0.2
    assert cand.teacher is not None and cand.teacher.value == pytest.approx(teacher_acc)
    assert cand.accuracy == pytest.approx(_acc(cand.model), abs=1e-6)
    assert cand.accuracy > untrained + 0.5
    assert cand.accuracy >= teacher_acc - 0.08, (cand.accuracy, teacher_acc)
    assert cand.reports[0]["train"]["steps"] == 3 * (1400 // 64)
    assert _acc(student) == pytest.approx(untrained)  # the student given is left as it was
