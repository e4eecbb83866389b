"""Tests for `torchslim bench` (the command is registered on a local typer app)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import typer
from typer.testing import CliRunner

from torchslim import machine
from torchslim.cli import bench as bench_cli

# Tiny budgets: a handful of calls per model and batch size, no wall-clock assertions.
FAST = ["--repeats", "3", "--min-time", "0", "--max-time", "0.2"]
# torchslim:fashion_cnn, per item: conv 1->32 3x3 pad 1 on 28² (2·784·32·9 = 451,584), conv
# 32->64 3x3 pad 1 on 14² (2·196·64·288 = 7,225,344), fc 3136->128 (802,816) and 128->10 (2,560).
FASHION_CNN_FLOPS = 451_584 + 7_225_344 + 802_816 + 2_560
BATCH_KEYS = (
    "latency_ms",
    "first_call_ms",
    "throughput_per_s",
    "peak_memory_mb",
    "size_mb",
    "params",
    "flops",
    "percent_of_peak",
    "machine",
    "threads",
    "ratio_vs_first",
)


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Test root."""

    bench_cli.register(app)
    return app


@pytest.fixture
def fake_peak(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Replace the GEMM benchmark by a fixed 10 GFLOP/s so tests stay fast."""
    calls: list[dict[str, Any]] = []

    def measure(**kw: Any) -> machine.PeakFlops:
        calls.append(kw)
        return machine.PeakFlops(
            {"fp32": 10.0, "int8": 40.0},
            {"fp32": 64, "int8": 64},
            kw["threads"],
            kw["device"],
            kw["fingerprint"],
            0.01,
        )

    monkeypatch.setattr(machine, "measure_peak", measure)
    return calls


def _invoke(app: typer.Typer, *args: str) -> Any:
    return CliRunner().invoke(app, ["bench", *args])


def test_two_models_json(app: typer.Typer, tmp_path: Path, fake_peak: list[Any]) -> None:
    from support_models import tiny

    weights = tmp_path / "tiny.pt"
    torch.save(tiny().state_dict(), weights)
    result = _invoke(
        app,
        "support_models:tiny",
        str(weights),
        "--arch",
        "support_models:tiny",
        "--input-shape",
        "1x1x8x8",
        "--batch",
        "1,4",
        "--threads",
        "1",
        *FAST,
        "--json",
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["threads"] == 1 and report["baseline"] == "support_models:tiny"
    assert report["interleaving"]["order"] == ["support_models:tiny", str(weights)]
    assert report["peak"]["gflops"]["fp32"] == 10.0 and len(fake_peak) == 1
    assert report["machine"]["fingerprint"]
    for name in ("support_models:tiny", str(weights)):
        model = report["models"][name]
        assert set(model["batches"]) == {"1", "4"}
        for rec in model["batches"].values():
            for key in BATCH_KEYS:
                assert key in rec, key
            lat = rec["latency_ms"]
            assert lat["n"] >= 3 and lat["ci95"][0] <= lat["p50"] <= lat["ci95"][1]
            assert lat["p50"] <= lat["p90"] <= lat["p99"]
            assert rec["threads"] == 1 and rec["percent_of_peak"] > 0
    one, four = (report["models"][str(weights)]["batches"][b] for b in ("1", "4"))
    # Conv 1->4 3x3 pad 1 on 8x8 (2·64·4·9 = 4608) + Linear 16->3 (2·16·3 = 96) per item.
    assert one["flops"] == 4704 and four["flops"] == 4 * 4704
    assert one["params"] == 4 * 9 + 4 + 8 + 16 * 3 + 3
    assert one["size_mb"] == pytest.approx(weights.stat().st_size / 1e6)
    assert (
        report["models"]["support_models:tiny"]["batches"]["1"]["ratio_vs_first"]["speedup"] == 1.0
    )


def test_human_table(app: typer.Typer, fake_peak: list[Any]) -> None:
    result = _invoke(
        app,
        "support_models:tiny",
        "support_models:tiny",
        "--input-shape",
        "1x1x8x8",
        *FAST,
    )
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "Machine" in out and "Peak" in out and "GFLOP/s" in out
    assert "baseline" in out and "×" in out  # the duplicate source is compared with the first
    assert "support_models:tiny (2)" in out


def test_reference_model_and_onnx(app: typer.Typer, tmp_path: Path) -> None:
    from support_models import write_tiny_onnx

    onnx_path = tmp_path / "tiny.onnx"
    write_tiny_onnx(onnx_path)
    result = _invoke(app, "torchslim:fashion_cnn", "--batch", "2", *FAST, "--no-peak", "--json")
    assert result.exit_code == 0, result.output
    rec = json.loads(result.stdout)["models"]["torchslim:fashion_cnn"]["batches"]["2"]
    assert rec["params"] == 421_642  # the bundled 2-conv CNN
    assert rec["flops"] == 2 * FASHION_CNN_FLOPS and rec["percent_of_peak"] is None

    result = _invoke(app, str(onnx_path), "--batch", "1,2", *FAST, "--no-peak", "--json")
    assert result.exit_code == 0, result.output
    rec = json.loads(result.stdout)["models"][str(onnx_path)]["batches"]["2"]
    assert rec["params"] == 15 and rec["flops"] is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["no_such_module_xyz:build"], "Cannot import module"),
        (["support_models:tiny", "--batch", "1,x"], "Invalid --batch"),
        (["support_models:tiny", "--batch", "0"], "Invalid --batch"),
        (["support_models:tiny"], "Input shapes"),
        (["support_models:tiny", "--input-shape", "1x5"], "failed on inputs of shape"),
        (["support_models:tiny", "--input-shape", "1x1x8x8", "--device", "tpu"], "device"),
        (["support_models:tiny", "--min-time", "5", "--max-time", "1"], "--max-time"),
    ],
)
def test_bad_input_exits_2_with_one_line_error(
    app: typer.Typer, args: list[str], message: str
) -> None:
    result = _invoke(app, *args, "--no-peak")
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0]
    assert "Traceback" not in result.output and result.stdout == ""


def test_percent_of_peak_end_to_end(
    app: typer.Typer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real (short) GEMM peak measurement, cached, then % of it for a conv model."""
    import functools

    monkeypatch.setenv("TORCHSLIM_CACHE_DIR", str(tmp_path / "cache"))
    # the real benchmark, on a short budget: 512² products, 0.1 s per dtype
    short = functools.partial(machine.measure_peak, size=512, min_time_s=0.1, max_call_s=0.5)
    monkeypatch.setattr(machine, "measure_peak", short)
    args = ("torchvision:resnet18", "--input-shape", "1x3x64x64", "--threads", "2")
    result = _invoke(app, *args, *FAST, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    peak = report["peak"]
    assert peak["threads"] == 2 and peak["device"] == "cpu"
    assert peak["gflops"]["fp32"] > 1.0  # measured here, not a fixed number
    rec = report["models"]["torchvision:resnet18"]["batches"]["1"]
    assert rec["flops"] > 1e8
    assert 0 < rec["percent_of_peak"] < 200, rec["percent_of_peak"]
    # the same definition as the report: achieved FLOP/s over the mean latency (sustained)
    achieved = rec["flops"] / (rec["latency_ms"]["mean"] / 1e3) / 1e9
    assert rec["percent_of_peak"] == pytest.approx(
        100 * achieved / peak["gflops"]["fp32"], rel=1e-6
    )
