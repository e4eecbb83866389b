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
    "params_before",
    "params_after",
    "flops_before",
    "flops_after",
    "accuracy_before",
    "accuracy_after",
    "accuracy_drop",
    "fidelity",
    "latency_ms_before",
    "latency_ms_after",
    "speedup",
    "size_mb_before",
    "size_mb_after",
    "output",
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
    assert rep["params_after"] < rep["params_before"]
    assert rep["latency_ms_before"] > 0 and rep["speedup"] > 0
    assert set(rep["fidelity"]) >= {"agreement", "cosine", "max_abs_error"}
    assert rep["output"] == str(out)
    from torchslim.slim import load_slim

    model = load_slim(out)
    assert model(torch.rand(1, 1, 8, 8)).shape == (1, 10)
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
            "--json",
        ],
    )
    rep2 = _json(res2)
    assert rep2["params_before"] == rep["params_after"]
    assert rep2["details"]["sparsity"] == pytest.approx(0.5, abs=0.01)


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
    assert rep["teacher_accuracy"] is not None and "gap_to_teacher" in rep
    assert rep["details"]["train"]["steps"] > 0


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
    assert rep["size_mb_compressed"] < rep["size_mb_before"]
    assert rep["details"]["index_bits"] == 3


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
