"""``torchslim quantize`` through typer's test runner."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from _deps import need
from torchslim.cli.main import app

runner = CliRunner()


@pytest.mark.openvino
def test_quantize_json_keys_and_output(tmp_path):
    need("openvino", "nncf")
    out = tmp_path / "cnn_int8"
    res = runner.invoke(
        app,
        [
            "quantize",
            "torchslim:fashion_cnn",
            "--method",
            "static",
            "--backend",
            "openvino",
            "--calib",
            "torchslim:fashion_mnist?split=train&limit=200",
            "--eval",
            "torchslim:fashion_mnist?limit=400",
            "--max-drop",
            "1.0",
            "--samples",
            "100",
            "--out",
            str(out),
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    for key in (
        "baseline_accuracy",
        "accuracy",
        "drop_points",
        "speedup",
        "baseline_size_mb",
        "size_mb",
        "artifact",
    ):
        assert d[key] is not None, key
    assert set(d["fidelity"]) >= {"agreement", "cosine", "max_abs_error"}
    assert d["drop_points"] <= 1.0  # the --max-drop budget, in points
    assert d["drop_points"] == pytest.approx(100 * (d["baseline_accuracy"] - d["accuracy"]))
    assert d["speedup"]["1"]["ratio"] > 0 and len(d["speedup"]["1"]["ci95"]) == 2
    assert d["size_mb"] < d["baseline_size_mb"] / 2  # INT8 weights, MB of the shipped files
    assert (out / "manifest.json").is_file() and (out / "runtime" / "model.xml").is_file()

    # The output reloads through the public API and scores what the report said ...
    import torchslim
    from torchslim.data import load_data
    from torchslim.evaluate import predict, top1_accuracy

    art = torchslim.load_artifact(out)
    assert art.capabilities.runtime == "openvino"
    ev = load_data("torchslim:fashion_mnist?limit=400")
    assert top1_accuracy(predict(art, ev), ev) == pytest.approx(d["accuracy"], abs=0.0026)
    # ... and is itself a model source for `torchslim bench`.
    fast = ["--repeats", "3", "--min-time", "0", "--max-time", "0.2", "--no-peak"]
    res = runner.invoke(app, ["bench", str(out), "--batch", "1", *fast, "--json"])
    assert res.exit_code == 0, res.output
    rec = json.loads(res.stdout)["models"][str(out)]["batches"]["1"]
    assert rec["latency_ms"]["p50"] > 0
    assert rec["size_mb"] == pytest.approx(d["size_mb"], rel=0.01)


def test_static_without_calibration_is_a_clear_error():
    # a model with no bundled data (bundled ones default to their packaged calibration set)
    res = runner.invoke(
        app, ["quantize", "support_models:sized", "--method", "static", "--no-latency"]
    )
    assert res.exit_code == 2
    assert "calibration data" in res.output and "--method dynamic" in res.output


def test_unknown_method_is_a_clear_error():
    res = runner.invoke(app, ["quantize", "torchslim:fashion_cnn", "--method", "int3"])
    assert res.exit_code == 2
    assert "Unknown QuantMethod" in res.output


def test_human_output_lists_float_layers():
    res = runner.invoke(
        app,
        [
            "quantize",
            "torchslim:fashion_cnn",
            "--method",
            "dynamic",
            "--calib",
            "torchslim:fashion_mnist?limit=64",
            "--no-latency",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "kept in float" in res.output and "conv1" in res.output
