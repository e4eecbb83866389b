"""Tests for torchslim.measure: exact statistics with a fake clock, FLOPs, sizes, interleaving."""

from __future__ import annotations

import random
import statistics
from collections.abc import Iterable
from pathlib import Path

import pytest
import torch
from torch import nn

from support_models import write_tiny_onnx
from torchslim.errors import ShapeError, TorchslimError
from torchslim.machine import MachineInfo, PeakFlops
from torchslim.measure import (
    BenchTarget,
    TimingConfig,
    count_flops,
    latency_stats,
    measure_models,
    measurements_to_dict,
    median_ci,
    percentile,
    time_callable,
)
from torchslim.models import InputSpec, LoadedModel, TensorSpec, load_model


class FakeClock:
    """A clock that only moves when the timed function says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def scripted(clock: FakeClock, durations_ms: Iterable[float]):
    """A function that takes the next duration from the script on every call."""
    it = iter(durations_ms)

    def fn() -> None:
        clock.advance(next(it) / 1e3)

    return fn


FAST_WARMUP = dict(
    warmup_window=5,
    warmup_tolerance=0.05,
    min_warmup_calls=10,
    max_warmup_calls=100,
    max_warmup_s=100.0,
)

MACHINE = MachineInfo("Test CPU", 2, 2, 2, ("avx2",), "Linux-test", "x86_64", "3.11", {})


def test_exact_statistics_first_call_apart_and_stable_warmup() -> None:
    clock = FakeClock()
    steady = list(range(1, 101))
    random.Random(0).shuffle(steady)
    script = [500.0] + [50.0] * 5 + [20.0] * 5 + [10.0] * 5 + [10.0] * 5 + steady
    config = TimingConfig(**FAST_WARMUP, min_samples=100, min_time_s=0.0, max_time_s=1e6)

    result = time_callable(scripted(clock, script), config, clock=clock)

    assert result.first_call_ms == pytest.approx(500.0)
    assert result.warmup_calls == 20  # 50 -> 20 -> 10 -> 10: stable at the 4th window
    assert result.warmup_stable
    lat = result.latency
    assert lat.n == 100
    assert 500.0 not in [round(s, 6) for s in result.samples_ms]
    assert list(result.samples_ms) == pytest.approx(steady)
    assert lat.p50_ms == pytest.approx(50.5)
    assert lat.p90_ms == pytest.approx(90.1)
    assert lat.p99_ms == pytest.approx(99.01)
    assert lat.mean_ms == pytest.approx(50.5)
    assert lat.std_ms == pytest.approx(statistics.stdev(range(1, 101)))
    assert (lat.min_ms, lat.max_ms) == pytest.approx((1.0, 100.0))
    # Exact binomial ranks for n=100: the 40th and 61st order statistics.
    assert (lat.ci95_low_ms, lat.ci95_high_ms) == pytest.approx((40.0, 61.0))
    assert lat.ci_coverage == pytest.approx(0.9648, abs=1e-4)
    d = result.to_dict()
    assert d["latency_ms"]["ci95"] == pytest.approx([40.0, 61.0])
    assert "samples_ms" not in d and len(result.to_dict(include_samples=True)["samples_ms"]) == 100


def test_warmup_stops_at_bound_when_never_stable() -> None:
    clock = FakeClock()
    windows = ([10.0] * 5 + [20.0] * 5) * 10
    config = TimingConfig(
        warmup_window=5,
        min_warmup_calls=5,
        max_warmup_calls=30,
        max_warmup_s=100.0,
        min_samples=3,
        min_time_s=0.0,
    )
    result = time_callable(
        scripted(clock, [1.0, *windows[:30], 7.0, 7.0, 7.0]), config, clock=clock
    )
    assert result.warmup_calls == 30
    assert not result.warmup_stable
    assert result.latency.p50_ms == pytest.approx(7.0)


def test_warmup_bounded_by_time() -> None:
    clock = FakeClock()
    config = TimingConfig(
        warmup_window=2,
        min_warmup_calls=100,
        max_warmup_calls=1000,
        max_warmup_s=0.1,
        min_samples=1,
        min_time_s=0.0,
    )
    result = time_callable(scripted(clock, [30.0] * 100), config, clock=clock)
    assert result.warmup_calls == 4  # two windows of 2 × 30 ms pass 0.1 s
    assert not result.warmup_stable
    assert result.latency.n == 1


def test_min_time_and_max_time_bound_the_samples() -> None:
    clock = FakeClock()
    base = dict(warmup_window=1, min_warmup_calls=0, max_warmup_calls=0)
    r = time_callable(
        scripted(clock, [10.0] * 100),
        TimingConfig(**base, min_samples=5, min_time_s=0.2, max_time_s=10.0),
        clock=clock,
    )
    assert r.latency.n == 20  # 20 × 10 ms reach the 0.2 s minimum
    r = time_callable(
        scripted(clock, [10.0] * 100),
        TimingConfig(**base, min_samples=1000, min_time_s=0.0, max_time_s=0.1),
        clock=clock,
    )
    assert r.latency.n == 10  # the maximum time wins over min_samples
    r = time_callable(
        scripted(clock, [10.0] * 100),
        TimingConfig(**base, min_samples=1, min_time_s=100.0, max_time_s=100.0, max_samples=7),
        clock=clock,
    )
    assert r.latency.n == 7


def test_sync_runs_after_every_call_inside_the_timed_region() -> None:
    clock = FakeClock()
    calls: list[str] = []

    def fn() -> None:
        calls.append("fn")
        clock.advance(0.001)

    def sync() -> None:
        calls.append("sync")
        clock.advance(0.002)  # waiting for the device counts as latency

    config = TimingConfig(
        warmup_window=1, min_warmup_calls=0, max_warmup_calls=0, min_samples=3, min_time_s=0.0
    )
    result = time_callable(fn, config, clock=clock, sync=sync)
    assert calls == ["fn", "sync"] * 4
    assert result.latency.p50_ms == pytest.approx(3.0)
    assert result.first_call_ms == pytest.approx(3.0)


def test_percentile_and_median_ci_edge_cases() -> None:
    assert percentile([5.0], 0.99) == 5.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    # Five samples cannot give 95%: the interval is [min, max] with coverage 1 - 2/32.
    lo, hi, cov = median_ci([1.0, 2.0, 3.0, 4.0, 5.0])
    assert (lo, hi) == (1.0, 5.0) and cov == pytest.approx(1 - 2 / 32)
    lo, hi, cov = median_ci([float(i) for i in range(1, 7)])
    assert (lo, hi) == (1.0, 6.0) and cov == pytest.approx(1 - 2 / 64)
    # Large n uses the normal approximation and stays near the median.
    values = [float(i) for i in range(1, 2001)]
    lo, hi, _ = median_ci(values)
    assert 950 <= lo < 1000.5 < hi <= 1051
    s = latency_stats([0.004])
    assert (s.n, s.std_ms, s.p50_ms) == (1, 0.0, pytest.approx(4.0))


def test_invalid_timing_config_is_a_user_error() -> None:
    with pytest.raises(TorchslimError):
        TimingConfig(min_samples=0)
    with pytest.raises(TorchslimError):
        TimingConfig(max_time_s=0.0)


def test_flops_counted_by_flop_counter() -> None:
    assert count_flops(nn.Linear(4, 3), (torch.randn(2, 4),)) == 2 * 2 * 4 * 3
    # Conv 3->8, 3x3 on 10x10 -> 8x8 outputs: 2 · out_elems · in_ch · k·k
    assert count_flops(nn.Conv2d(3, 8, 3), (torch.randn(1, 3, 10, 10),)) == 2 * 8 * 8 * 8 * 3 * 9
    # Nothing counted in a model with weights means "unknown", not zero.
    assert count_flops(nn.LayerNorm(4), (torch.randn(2, 4),)) is None
    assert count_flops(nn.ReLU(), (torch.randn(2, 4),)) == 0


def _fake_target(name: str, clock: FakeClock, ms: float, **kw) -> BenchTarget:
    def predict(*inputs: torch.Tensor) -> None:
        clock.advance(ms / 1e3)

    return BenchTarget(name, predict, lambda b: (torch.randn(b, 4),), **kw)


def test_measure_models_interleaves_and_reports() -> None:
    clock = FakeClock()
    lin = nn.Linear(4, 3)
    a = _fake_target("a", clock, 10.0, module=lin)
    b = _fake_target("b", clock, 5.0)
    config = TimingConfig(
        warmup_window=2,
        min_warmup_calls=2,
        max_warmup_calls=4,
        min_samples=4,
        min_time_s=0.0,
        round_time_s=0.008,
    )
    peak = PeakFlops({"fp32": 1.0}, {"fp32": 64}, 1, "cpu", "x")
    events: list[tuple[str, float]] = []
    ms = measure_models(
        [a, b],
        [1, 2],
        threads=1,
        config=config,
        clock=clock,
        peak=peak,
        machine=MACHINE,
        memory=False,
        progress=lambda m, f: events.append((m, f)),
    )

    # a's blocks hold 1 call of 10 ms, b's blocks 2 calls of 5 ms: A B A B ... per batch size.
    expected = [(1, "a", 1), (1, "b", 2)] * 2 + [(1, "a", 1)] * 2
    expected += [(2, "a", 1), (2, "b", 2)] * 2 + [(2, "a", 1)] * 2
    assert list(ms[0].schedule) == expected
    assert [m.position for m in ms] == [0, 1]

    ma, mb = ms
    assert ma.params == 15 and mb.params is None
    assert ma.batches[2].flops == 48 and ma.flops_per_item == pytest.approx(24.0)
    assert ma.batches[1].latency.p50_ms == pytest.approx(10.0)
    assert ma.batches[2].throughput_per_s == pytest.approx(200.0)
    # 48 FLOPs per 10 ms against a 1 GFLOP/s peak
    assert ma.batches[2].percent_of_peak == pytest.approx(100 * 4800 / 1e9)
    assert mb.batches[1].percent_of_peak is None
    assert ma.threads == 1 and ma.machine["cpu_model"] == "Test CPU"
    assert ma.size_bytes is not None and ma.size_bytes > 0
    assert all(0.0 <= f <= 1.0 for _, f in events) and events[-1][1] == 1.0

    report = measurements_to_dict(ms, peak=peak, config=config)
    assert report["interleaving"] == {"order": ["a", "b"], "rounds": {"1": 4, "2": 4}}
    rec = report["models"]["b"]["batches"]["1"]
    for key in (
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
    ):
        assert key in rec
    assert rec["ratio_vs_first"]["latency_p50"] == pytest.approx(0.5)
    assert rec["ratio_vs_first"]["speedup"] == pytest.approx(2.0)
    assert report["models"]["a"]["batches"]["1"]["ratio_vs_first"]["speedup"] == 1.0


def test_measure_models_rejects_duplicate_names_and_bad_batches() -> None:
    clock = FakeClock()
    a = _fake_target("a", clock, 1.0)
    with pytest.raises(TorchslimError):
        measure_models([a, a], [1], machine=MACHINE, memory=False, clock=clock)
    with pytest.raises(TorchslimError):
        measure_models([a], [0], machine=MACHINE, memory=False, clock=clock)


def test_real_module_with_memory_and_file_size(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 4))
    path = tmp_path / "m.pt"
    torch.save(model.state_dict(), path)
    spec = InputSpec((TensorSpec("input", (1, 16)),))
    target = BenchTarget.from_module(model, spec, name="mlp", path=path)
    config = TimingConfig(
        warmup_window=2,
        min_warmup_calls=2,
        max_warmup_calls=4,
        min_samples=5,
        min_time_s=0.0,
        max_time_s=1.0,
    )
    (m,) = measure_models([target], [1, 4], config=config, machine=MACHINE)
    assert m.size_bytes == path.stat().st_size
    assert m.params == 16 * 64 + 64 + 64 * 4 + 4
    assert m.batches[4].flops == 2 * 4 * (16 * 64 + 64 * 4)
    assert m.batches[1].peak_memory_mb is not None and m.batches[1].peak_memory_mb >= 0
    assert m.batches[1].latency.n >= 5 and m.batches[1].first_call_ms > 0


def test_onnx_target_runs_in_onnxruntime(tmp_path: Path) -> None:
    path = tmp_path / "tiny.onnx"
    write_tiny_onnx(path)
    target = BenchTarget.from_loaded(load_model(str(path)), threads=1)
    assert target.module is None and target.params == 15 and target.threads == 1
    out = target.predict(*target.make_inputs(3))
    assert out[0].shape == (3, 3)
    config = TimingConfig(
        warmup_window=2, min_warmup_calls=2, max_warmup_calls=4, min_samples=3, min_time_s=0.0
    )
    (m,) = measure_models([target], [2], config=config, machine=MACHINE, memory=False)
    assert m.size_bytes == path.stat().st_size and m.batches[2].flops is None


def test_from_loaded_needs_input_shapes() -> None:
    loaded = LoadedModel("x", "factory", nn.Linear(4, 3), None)
    with pytest.raises(ShapeError):
        BenchTarget.from_loaded(loaded)
