"""``torchslim quantize`` through typer's test runner."""

from __future__ import annotations

import importlib.util
import json

import pytest
from typer.testing import CliRunner

from support_models import requires_reference
from torchslim.cli.main import app

runner = CliRunner()


@requires_reference
@pytest.mark.skipif(importlib.util.find_spec("nncf") is None, reason="openvino extra missing")
def test_quantize_json_keys_and_output(tmp_path):
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
        "accuracy_before",
        "accuracy_after",
        "accuracy_drop",
        "latency_ms_before",
        "latency_ms_after",
        "speedup",
        "size_mb_before",
        "size_mb_after",
        "output",
    ):
        assert d[key] is not None, key
    assert set(d["fidelity"]) >= {"agreement", "cosine", "max_abs_error"}
    assert d["accuracy_drop"] <= 1.0 and d["within_budget"] is True
    assert (out / "quantization.json").is_file() and (out / "runtime" / "model.xml").is_file()


@requires_reference
def test_static_without_calibration_is_a_clear_error():
    res = runner.invoke(
        app, ["quantize", "torchslim:fashion_cnn", "--method", "static", "--no-latency"]
    )
    assert res.exit_code == 2
    assert "calibration data" in res.output and "--method dynamic" in res.output


def test_unknown_method_is_a_clear_error():
    res = runner.invoke(app, ["quantize", "torchslim:fashion_cnn", "--method", "int3"])
    assert res.exit_code == 2
    assert "Unknown QuantMethod" in res.output


@requires_reference
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
