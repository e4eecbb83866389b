"""``torchslim prune`` / ``distill`` / ``compress`` through typer's test runner."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from torchslim.cli.main import app

MODEL = "slim_models:trained_resnet"  # trained on digits (~82% top-1): also the default teacher
UNTRAINED = "slim_models:small_resnet"
TRAIN = "slim_models:digits_train"
TEST = "slim_models:digits_test"
# Recovery that really trains: 2 epochs of 1,400 digits at batch 64 (~2 s each on 2 cores).
RECOVER = ["--epochs", "2", "--lr", "3e-3", "--batch-size", "64"]
KEYS = (
    "baseline_params",
    "params",
    "baseline_flops",
    "flops",
    "baseline_accuracy",
    "accuracy",
    "drop_points",
    "fidelity",
    "speedup",
    "baseline_size_mb",
    "size_mb",
    "artifact",
    "recipe",
)

runner = CliRunner()


def _json(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_prune_json_report_and_reloadable_output(tmp_path):
    out = tmp_path / "pruned"
    res = runner.invoke(
        app,
        [
            "prune",
            MODEL,
            "--ratio",
            "0.5",
            "--eval",
            TEST,
            "--data",
            TRAIN,
            "--recover",
            "finetune",
            *RECOVER,
            "--out",
            str(out),
            "--json",
        ],
    )
    rep = _json(res)
    for key in KEYS:
        assert key in rep, key
    # a trained model (not chance), and recovery wins its accuracy back: within 3 points
    assert rep["baseline_accuracy"] > 0.75
    assert rep["drop_points"] <= 3.0, rep["drop_points"]
    assert [r["steps"] for r in rep["reports"][0]["recovery"]] == [2 * (1400 // 64)]
    assert rep["warnings"] == []  # recovered: nothing to warn about
    assert rep["params"] < rep["baseline_params"] and rep["flops"] < rep["baseline_flops"]
    assert rep["drop_points"] == pytest.approx(100 * (rep["baseline_accuracy"] - rep["accuracy"]))
    assert rep["speedup"]["1"]["baseline_ms"] > 0 and rep["speedup"]["1"]["ratio"] > 0
    assert rep["fidelity"]["agreement"] > 0.8
    assert rep["artifact"] == str(out)
    from torchslim.artifact import load_artifact
    from torchslim.data import load_data
    from torchslim.evaluate import predict, top1_accuracy

    art = load_artifact(out)
    test = load_data(TEST)
    assert top1_accuracy(predict(art, test), test) == pytest.approx(rep["accuracy"], abs=1e-6)
    # the factory named by the artifact is not imported without --trust-code
    with pytest.raises(Exception, match="trust-code"):
        art.module()
    # The output directory is itself a model source for the next command.
    res2 = runner.invoke(
        app,
        [
            "prune",
            str(out),
            "--method",
            "unstructured",
            "--ratio",
            "0.5",
            "--eval",
            TEST,
            "--no-latency",
            "--trust-code",
            "--json",
        ],
    )
    rep2 = _json(res2)
    assert rep2["baseline_params"] == rep["baseline_params"]  # still against the original
    assert [type_["type"] for type_ in rep2["recipe"]["steps"]] == ["PruneConfig", "PruneConfig"]
    assert rep2["reports"][-1]["sparsity"] == pytest.approx(0.5, abs=0.01)


def test_prune_without_recovery_warns_when_predictions_are_lost():
    res = runner.invoke(
        app,
        [
            "prune",
            MODEL,
            "--ratio",
            "0.7",  # 32 -> 8 channels: ~38% agreement without recovery
            "--recover",
            "none",
            "--eval",
            TEST,
            "--no-latency",
            "--json",
        ],
    )
    rep = _json(res)
    assert rep["fidelity"]["agreement"] < 0.5 and "recovery" not in rep["reports"][0]
    (warning,) = rep["warnings"]
    assert "--recover kd" in warning and f"{rep['fidelity']['agreement']:.0%}" in warning
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("warning:")]
    assert lines == [f"warning: {warning}"]


@pytest.mark.parametrize("ratio", ["0", "1.2"])
def test_prune_bad_ratio_is_a_clear_error(ratio):
    res = runner.invoke(app, ["prune", UNTRAINED, "--ratio", ratio, "--input-shape", "1x1x8x8"])
    assert res.exit_code == 2
    assert "between 0 and 1" in res.output


def test_distill_without_data_is_a_clear_error():
    res = runner.invoke(app, ["distill", UNTRAINED, "--teacher", UNTRAINED])
    assert res.exit_code == 2
    assert "training data" in res.output


def test_distill_json(tmp_path):
    res = runner.invoke(
        app,
        [
            "distill",
            "slim_models:mlp",
            "--teacher",
            MODEL,
            "--data",
            TRAIN,
            "--eval",
            TEST,
            "--epochs",
            "3",
            "--lr",
            "3e-3",
            "--batch-size",
            "64",
            "--no-latency",
            "--json",
        ],
    )
    rep = _json(res)
    from torchslim.data import load_data
    from torchslim.evaluate import predict, top1_accuracy
    from torchslim.models import load_model

    test = load_data(TEST)
    teacher = load_model(MODEL).require_module()
    teacher_acc = top1_accuracy(predict(teacher, test), test)
    assert rep["teacher_accuracy"] == pytest.approx(teacher_acc) and teacher_acc > 0.75
    assert rep["reports"][0]["train"]["steps"] == 3 * (1400 // 64)
    # the untrained student is at chance; the distilled one comes close to its teacher
    assert rep["baseline_accuracy"] < 0.2
    assert rep["accuracy"] >= teacher_acc - 0.08, (rep["accuracy"], teacher_acc)


def test_compress_cluster_json():
    res = runner.invoke(
        app,
        [
            "compress",
            MODEL,
            "--method",
            "cluster",
            "--clusters",
            "8",
            "--eval",
            TEST,
            "--no-latency",
            "--json",
        ],
    )
    rep = _json(res)
    cl = rep["reports"][0]
    assert cl["index_bits"] == 3
    assert all(layer["distinct"] <= 8 for layer in cl["layers"].values()) and cl["layers"]
    assert cl["size_bytes_compressed"] < cl["size_bytes_dense"] / 4
    assert cl["size_bytes_compressed"] / 1e6 < rep["baseline_size_mb"]
    assert rep["baseline_accuracy"] > 0.75 and rep["drop_points"] <= 5.0, rep["drop_points"]


def test_compress_depthwise_recovers_accuracy(tmp_path):
    out = tmp_path / "dw"
    res = runner.invoke(
        app,
        [
            "compress",
            MODEL,
            "--method",
            "depthwise",
            "--recover",
            "kd",
            *RECOVER,
            "--data",
            TRAIN,
            "--eval",
            TEST,
            "--no-latency",
            "--out",
            str(out),
            "--json",
        ],
    )
    rep = _json(res)
    swap = rep["reports"][0]
    assert swap["swapped"] == ["c1", "c2"]  # the stem (first layer) is protected
    assert swap["recovery"]["steps"] == 2 * (1400 // 64)
    assert rep["flops"] < rep["baseline_flops"] / 3 and rep["params"] < rep["baseline_params"] / 2
    assert rep["baseline_accuracy"] > 0.75 and rep["drop_points"] <= 10.0, rep["drop_points"]
    from torchslim.artifact import load_artifact

    x = torch.rand(3, 1, 8, 8)
    art = load_artifact(out)
    assert art(x).shape == (3, 10)


def test_compress_lowrank_table():
    res = runner.invoke(
        app,
        [
            "compress",
            UNTRAINED,
            "--method",
            "lowrank",
            "--rank-ratio",
            "0.25",
            "--input-shape",
            "1x1x8x8",
            "--no-latency",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "FLOPs" in res.stdout


def test_compress_unknown_method():
    res = runner.invoke(
        app, ["compress", UNTRAINED, "--method", "magic", "--input-shape", "1x1x8x8"]
    )
    assert res.exit_code == 2 and "Unknown compression method" in res.output
