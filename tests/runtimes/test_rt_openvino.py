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


def test_static_shapes_are_specialised_per_batch_and_chunk_past_the_cap(tmp_path: Path) -> None:
    """A search may compile OpenVINO with static shapes: the artifact says so, each new batch
    size gets its own compiled model, and past the cap batches run in padded chunks — always
    with the dynamic model's answers."""
    from torchslim.artifact import load_artifact
    from torchslim.models import load_model
    from torchslim.pipeline import run_recipe
    from torchslim.recipe import Recipe

    static = Recipe(runtime=OpenVINOConfig(dynamic=False), batch_sizes=(8, 64))
    loaded = load_model("torchslim:fashion_cnn")
    cand = run_recipe(static, loaded, measure=False, raise_errors=True)
    assert cand.parity is not None and cand.parity.passed  # at batch 1, 4, 8 and 64
    cand.save(tmp_path / "static")
    art = load_artifact(tmp_path / "static")
    assert art.capabilities.dynamic_batch is False and art.capabilities.batch_sizes == (8, 64)
    runner = art.runner()
    assert runner.compiled.inputs[0].get_partial_shape().is_static
    module = loaded.require_module()

    def same(n: int) -> None:
        x = torch.randn(n, 1, 28, 28)
        with torch.no_grad():
            torch.testing.assert_close(runner(x), module(x), rtol=1e-3, atol=1e-4)

    for n in (8, 3, 64):  # the compiled batch, then two specialised ones
        same(n)
    assert len(runner._by_shape) == 2
    runner._MAX_SHAPES = 2  # full: a new batch runs in padded chunks of the compiled 8
    same(19)
    assert len(runner._by_shape) == 2


def test_throughput_hint_runs_slices_on_every_stream_with_the_same_answers() -> None:
    import os

    lat = build(small_cnn(), OpenVINOConfig(), cnn_inputs())
    tp = build(
        small_cnn(), OpenVINOConfig(performance_hint=PerformanceHint.THROUGHPUT), cnn_inputs()
    )
    if (os.cpu_count() or 1) >= 2:
        assert tp.info["streams"] >= 2  # else the multi-request path below is not exercised
    for n in (1, 7, 64):  # fewer items than streams, an uneven split, a full batch
        x = torch.randn(n, *cnn_inputs()[0].shape[1:])
        torch.testing.assert_close(tp(x), lat(x), rtol=1e-3, atol=1e-4)
    assert tp._queue is not None  # the batch really went through the async queue
