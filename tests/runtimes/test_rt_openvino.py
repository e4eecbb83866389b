"""OpenVINO: precision reported and parity-checked at its tolerance, hints, threads, cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from rt_helpers import DataDependent, cnn_inputs, small_cnn

from _deps import need
from torchslim.errors import ExportError
from torchslim.parity import TOLERANCES, check_parity
from torchslim.runtimes import build, load_deployed
from torchslim.runtimes.configs import OpenVINOConfig, PerformanceHint, Precision

need("openvino")
pytestmark = pytest.mark.openvino


def test_f32_default_and_settings_honoured(tmp_path: Path) -> None:
    cfg = OpenVINOConfig(
        threads=1, performance_hint=PerformanceHint.THROUGHPUT, cache_dir=str(tmp_path / "cache")
    )
    d = build(small_cnn(), cfg, cnn_inputs())
    assert d.info["precision"] == "fp32"
    assert d.info["threads"] == 1
    assert "THROUGHPUT" in d.info["performance_hint"]
    assert (tmp_path / "cache").is_dir()
    assert check_parity(d, small_cnn(), cnn_inputs()).precision == "fp32"


def test_default_precision_is_reported_and_checked_with_its_tolerance() -> None:
    d = build(small_cnn(), OpenVINOConfig(precision=Precision.DEFAULT), cnn_inputs())
    prec = d.info["precision"]
    assert prec in ("fp32", "bf16", "fp16")
    report = check_parity(d, small_cnn(), cnn_inputs())
    assert report.precision == prec and report.tolerance == TOLERANCES[prec]
    assert report.passed


def test_from_onnx_and_static_shapes(tmp_path: Path) -> None:
    d = build(small_cnn(), OpenVINOConfig(source="onnx", dynamic=False), cnn_inputs(2))
    assert d.static_shapes
    report = check_parity(d, small_cnn(), cnn_inputs(2))
    assert [c.batch for c in report.cases] == [2]
    d.save(tmp_path / "ov")
    assert {p.name for p in (tmp_path / "ov").iterdir()} == {
        "model.xml",
        "model.bin",
        "runtime.json",
    }
    torch.testing.assert_close(load_deployed(tmp_path / "ov")(*cnn_inputs(2)), d(*cnn_inputs(2)))


def test_python_branch_on_tensor_is_refused() -> None:
    with pytest.raises(ExportError, match=r"data-dependent control flow at rt_helpers\.py"):
        build(DataDependent().eval(), OpenVINOConfig(), (torch.rand(2, 4),))
