"""``torchslim prune`` / ``distill`` / ``compress`` through typer's test runner."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from torchslim.cli.main import app

MODEL = "slim_models:small_resnet"
TRAIN = "slim_models:digits_train"
TEST = "slim_models:digits_test"
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
            "--epochs",
            "0.1",
            "--out",
            str(out),
            "--json",
        ],
    )
    rep = _json(res)
    for key in KEYS:
        assert key in rep, key
    assert rep["params"] < rep["baseline_params"] and rep["flops"] < rep["baseline_flops"]
    assert rep["drop_points"] == pytest.approx(100 * (rep["baseline_accuracy"] - rep["accuracy"]))
    assert rep["speedup"]["1"]["baseline_ms"] > 0 and rep["speedup"]["1"]["ratio"] > 0
    assert set(rep["fidelity"]) >= {"agreement", "cosine", "max_abs_error"}
    assert rep["artifact"] == str(out)
    from torchslim.artifact import load_artifact

    art = load_artifact(out)
    x = torch.rand(1, 1, 8, 8)
    assert art(x).shape == (1, 10)
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


@pytest.mark.parametrize("ratio", ["0", "1.2"])
def test_prune_bad_ratio_is_a_clear_error(ratio):
    res = runner.invoke(app, ["prune", MODEL, "--ratio", ratio, "--input-shape", "1x1x8x8"])
    assert res.exit_code == 2
    assert "between 0 and 1" in res.output


def test_distill_without_data_is_a_clear_error():
    res = runner.invoke(app, ["distill", MODEL, "--teacher", MODEL])
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
            "0.2",
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
    assert rep["teacher_accuracy"] == pytest.approx(top1_accuracy(predict(teacher, test), test))
    assert rep["reports"][0]["train"]["steps"] > 0


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
    assert rep["reports"][0]["index_bits"] == 3
    assert rep["reports"][0]["size_bytes_compressed"] / 1e6 < rep["baseline_size_mb"]


def test_compress_lowrank_table():
    res = runner.invoke(
        app,
        [
            "compress",
            MODEL,
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
    res = runner.invoke(app, ["compress", MODEL, "--method", "magic", "--input-shape", "1x1x8x8"])
    assert res.exit_code == 2 and "Unknown compression method" in res.output
