"""OpenVINO profiling: per-layer counters with kernel and precision, mapped to modules; an INT8
artifact profiled in its own runtime shows which layers ran in int8 and which in float."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from _deps import need
from torchslim.profile import ProfileResult, profile
from torchslim.timing import TimingConfig

pytestmark = pytest.mark.openvino
FAST = TimingConfig(min_samples=5, min_time_s=0.0, max_time_s=0.5, min_warmup_calls=2)


@pytest.fixture(scope="module")
def fp32() -> ProfileResult:
    need("openvino")
    return profile(
        "torchslim:fashion_resnet",
        runtime="openvino",
        iterations=5,
        peak=False,
        save=False,
        timing=FAST,
    )


@pytest.fixture(scope="module")
def int8(int8_artifact: Path) -> ProfileResult:
    return profile(int8_artifact, iterations=5, peak=False, save=False, timing=FAST)


def test_fp32_layers_name_kernels_precisions_and_modules(fp32: ProfileResult) -> None:
    import torchslim

    model = torchslim.load_model("torchslim:fashion_resnet").require_module()
    convs = {n for n, m in model.named_modules() if type(m).__name__ == "Conv2d"}
    layers = [x for x in fp32.layers if x.type == "Convolution"]
    # OpenVINO folds each BatchNorm into its convolution (renaming it): still mapped to the Conv2d.
    assert {x.module for x in layers} == convs
    assert all(x.precision == "fp32" for x in layers)
    assert all(x.exec_type and "f32" in x.exec_type.lower() for x in layers)
    assert fp32.precision["fp32"]["share"] == pytest.approx(1.0)
    assert "float-in-int8" not in {f.id for f in fp32.findings}


def test_int8_artifact_shows_int8_kernels_and_the_float_layer(int8: ProfileResult) -> None:
    assert int8.runtime == "openvino"  # the artifact's own runtime
    by_module = {}
    for x in int8.layers:
        if x.module in ("conv1", "conv2", "fc1", "fc2") and x.kind in ("conv", "matmul"):
            by_module[x.module] = x
    assert set(by_module) == {"conv1", "conv2", "fc1", "fc2"}
    for name in ("conv1", "conv2", "fc1"):
        assert by_module[name].precision == "int8", by_module[name]
        assert "i8" in (by_module[name].exec_type or "").lower()
    # fc2 was kept in float (--ignore fc2): it runs at the model's float precision (OpenVINO's
    # default: bf16 on CPUs with AVX-512 BF16 or AMX, else f32).
    assert by_module["fc2"].precision in ("fp32", "bf16")
    advice = {f.id: f for f in int8.findings}
    assert "float-in-int8" in advice
    assert advice["float-in-int8"].numbers["names"] == ["fc2"]
    assert advice["float-in-int8"].numbers["layers"] == 1
    assert int8.precision["int8"]["layers"] >= 3


def test_int8_float_layer_at_f32_precision(int8_artifact: Path) -> None:
    import torchslim
    from torchslim.profile.ov import profile_openvino
    from torchslim.runtimes.configs import Precision

    loaded = torchslim.load_model(str(int8_artifact))
    dep = loaded.deployed
    config = dataclasses.replace(dep.config, precision=Precision.F32)
    raw = profile_openvino(dep.model, config, loaded.input_spec.example_inputs(1), iterations=3)
    kinds = {x.module: x.precision for x in raw.layers if x.kind in ("conv", "matmul")}
    assert kinds["fc2"] == "fp32"
    assert kinds["conv1"] == kinds["conv2"] == kinds["fc1"] == "int8"


def test_cli_profile_artifact_json(int8_artifact: Path, tmp_path: Path) -> None:
    import typer

    from torchslim.cli import profile as profile_cli
    from torchslim.profile.result import JSON_KEYS

    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Test root."""

    profile_cli.register(app)
    res = CliRunner().invoke(
        app,
        ["profile", str(int8_artifact), "--json", "--no-peak", "--iterations", "3"],
    )
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert tuple(data) == JSON_KEYS
    assert data["runtime"] == "openvino"
    assert data["table"] and Path(data["table"]).is_file()
    table = json.loads(Path(data["table"]).read_text(encoding="utf-8"))
    assert table["format"] == "torchslim.profile.table"
    assert "openvino/b1/t" in next(iter(table["entries"]))
    human = CliRunner().invoke(
        app, ["profile", str(int8_artifact), "--no-peak", "--no-save", "--iterations", "3"]
    )
    assert human.exit_code == 0, human.output
    assert "int8" in human.stdout and "brgconv" in human.stdout
    assert "inside the INT8 model" in human.stdout
