"""``torchslim export``: builds, checks parity, saves atomically; clear errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import typer
from typer.testing import CliRunner

from torchslim.cli import export as export_cli


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Test root."""

    export_cli.register(app)
    return app


def _invoke(app: typer.Typer, *args: str) -> Any:
    return CliRunner().invoke(app, ["export", *args])


def test_torchscript_json(app: typer.Typer, tmp_path: Path) -> None:
    out = tmp_path / "ts"
    res = _invoke(
        app,
        "support_models:tiny",
        "--runtime",
        "torchscript",
        "--out",
        str(out),
        "--input-shape",
        "1x1x8x8",
        "--json",
    )
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["runtime"] == "torchscript" and data["parity"]["passed"] is True
    assert {c["batch"] for c in data["parity"]["cases"]} == {1, 4}
    assert data["files"] == ["runtime/model.ts", "runtime/runtime.json"]
    from support_models import tiny
    from torchslim.runtimes import load_deployed

    x = torch.rand(3, 1, 8, 8)
    torch.testing.assert_close(load_deployed(out / "runtime")(x), tiny().eval()(x))


def test_onnxruntime_human_output(app: typer.Typer, tmp_path: Path) -> None:
    res = _invoke(
        app,
        "support_models:tiny",
        "-r",
        "onnxruntime",
        "-o",
        str(tmp_path / "o"),
        "--input-shape",
        "1x1x8x8",
        "--opset",
        "17",
    )
    assert res.exit_code == 0, res.output
    assert "parity passed" in res.stdout and "model.onnx" in res.stdout
    assert (tmp_path / "o" / "runtime" / "model.onnx").exists()
    assert not (
        tmp_path / "o" / "runtime" / "model.optimized.onnx"
    ).exists()  # a cache, not shipped


def test_export_failure_is_one_line_without_traceback(app: typer.Typer, tmp_path: Path) -> None:
    args = (
        "rt_helpers:DataDependent",
        "--runtime",
        "export",
        "--out",
        str(tmp_path / "x"),
        "--input-shape",
        "2x4",
    )
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtimes"))
    res = _invoke(app, *args)
    assert res.exit_code == 2
    assert "data-dependent control flow" in res.stderr and "Traceback" not in res.stderr
    assert "hint: Try another runtime" in res.stderr
    assert not (tmp_path / "x").exists()
    debug = _invoke(app, *args, "--debug")
    assert debug.exit_code != 0 and debug.exception is not None


def test_unknown_runtime_and_bad_precision(app: typer.Typer, tmp_path: Path) -> None:
    res = _invoke(app, "support_models:tiny", "-r", "tflite", "-o", str(tmp_path / "t"))
    assert res.exit_code == 2 and "Unknown runtime 'tflite'" in res.stderr
    res = _invoke(
        app,
        "support_models:tiny",
        "-r",
        "onnxruntime",
        "-o",
        str(tmp_path / "t"),
        "--precision",
        "bf16",
    )
    assert res.exit_code == 2 and "--precision applies to openvino" in res.stderr


def test_tensorrt_unavailable_is_clean(app: typer.Typer, tmp_path: Path) -> None:
    from torchslim.runtimes.tensorrt import probe

    if probe() is None:
        pytest.skip("TensorRT available here")
    res = _invoke(
        app,
        "support_models:tiny",
        "-r",
        "tensorrt",
        "-o",
        str(tmp_path / "t"),
        "--input-shape",
        "1x1x8x8",
    )
    assert res.exit_code == 2 and "Backend 'tensorrt' is not available" in res.stderr


@pytest.mark.parametrize(
    ("runtime", "files"),
    [
        ("openvino", ["runtime/model.bin", "runtime/model.xml", "runtime/runtime.json"]),
        ("export", None),
        pytest.param("inductor", None, marks=pytest.mark.slow),
    ],
)
def test_export_reloads_as_an_artifact_equal_to_the_model(
    app: typer.Typer, tmp_path: Path, runtime: str, files: list[str] | None
) -> None:
    if runtime == "openvino":
        from _deps import need

        need("openvino")
    import torchslim
    from support_models import tiny

    out = tmp_path / runtime
    res = _invoke(
        app,
        "support_models:tiny",
        "-r",
        runtime,
        "-o",
        str(out),
        "--input-shape",
        "1x1x8x8",
        "--json",
    )
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["runtime"] == runtime and data["parity"]["passed"] is True
    assert data["artifact"] == str(out)
    assert all(f.startswith("runtime/") for f in data["files"]) and data["files"]
    if files is not None:
        assert data["files"] == files
    art = torchslim.load_artifact(out)
    assert art.capabilities.runtime == runtime
    model = tiny().eval()
    for batch in (1, 3):
        x = torch.rand(batch, 1, 8, 8, generator=torch.Generator().manual_seed(batch))
        torch.testing.assert_close(art(x), model(x), rtol=1e-4, atol=1e-5)
