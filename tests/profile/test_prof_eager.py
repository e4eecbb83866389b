"""Eager profiling: per-module attribution, FLOPs, memory, operators and the Chrome trace."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import torchslim
from torchslim.profile import ProfileResult, profile
from torchslim.profile.eager import MODULE_PREFIX
from torchslim.timing import TimingConfig

FAST = TimingConfig(min_samples=5, min_time_s=0.0, max_time_s=0.5, min_warmup_calls=2)


@pytest.fixture(scope="module")
def result(known_net: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> ProfileResult:
    trace = tmp_path_factory.mktemp("trace") / "eager.json"
    return profile(
        known_net,
        example_inputs=(torch.randn(64, 32),),
        iterations=5,
        peak=False,
        save=False,
        trace=trace,
        timing=FAST,
    )


def test_the_slow_module_is_found_slowest(result: ProfileResult) -> None:
    assert result.runtime == "eager"
    assert result.slowest().module == "heavy"
    assert result.slowest().type == "Heavy"
    assert result.slowest().share > 0.5
    # The root module's total covers its children; the heavy module is most of it.
    by_name = {m.name: m for m in result.modules}
    assert by_name[""].total_ms >= by_name["heavy"].total_ms > by_name["stem"].total_ms
    assert by_name["head"].type == "Sequential"
    assert by_name["head"].total_ms >= by_name["head.0"].total_ms


def test_flops_calls_shapes_and_memory_per_module(result: ProfileResult) -> None:
    layers = {x.module: x for x in result.layers}
    heavy = layers["heavy"]
    assert heavy.flops == 8 * 2 * 64 * 512 * 512  # eight 64x512 @ 512x512 matmuls
    assert heavy.gflops_per_s is not None and heavy.gflops_per_s > 0
    assert heavy.shapes is not None and "64x512" in heavy.shapes and "512x512" in heavy.shapes
    assert heavy.precision == "fp32"
    # `act` is one module called twice per forward pass.
    assert layers["act"].calls == 2
    # Each matmul writes a new 64x512 float32 activation (131 kB): memory events are seen.
    assert heavy.peak_memory_mb is not None and heavy.peak_memory_mb >= 64 * 512 * 4 / 1e6
    assert result.peak_memory_mb is not None and result.peak_memory_mb >= heavy.peak_memory_mb
    assert result.flops is not None and result.flops >= heavy.flops
    # Self times add up: the per-layer sum equals the profile's layer total.
    assert sum(x.self_ms for x in result.layers) == pytest.approx(result.layer_sum_ms)
    assert sum(x.share for x in result.layers) == pytest.approx(1.0)


def test_operators_are_grouped(result: ProfileResult) -> None:
    ops = {o.name: o for o in result.operators}
    mm = [o for name, o in ops.items() if name in ("aten::mm", "aten::matmul")]
    assert mm, sorted(ops)
    assert max(o.calls for o in mm) >= 8
    assert ops[result.operators[0].name].self_ms == max(o.self_ms for o in result.operators)


def test_trace_is_valid_chrome_trace_json(result: ProfileResult) -> None:
    assert result.trace is not None
    data = json.loads(Path(result.trace).read_text(encoding="utf-8"))
    events = data["traceEvents"]
    assert isinstance(events, list) and events
    names = {e.get("name") for e in events}
    assert f"{MODULE_PREFIX}heavy" in names
    assert all("ph" in e for e in events)


def test_json_keys_are_the_documented_ones(result: ProfileResult) -> None:
    from torchslim.profile import result as result_module

    d = result.to_dict()
    assert tuple(d) == result_module.JSON_KEYS
    doc = result_module.__doc__ or ""
    for key in d:
        assert f"``{key}``" in doc, key
    json.dumps(d)  # strict JSON-able


def test_public_entry_point_is_lazy_and_callable(known_net: torch.nn.Module) -> None:
    import torchslim.profile as package

    assert callable(torchslim.profile)
    assert callable(package)
    res = torchslim.profile(
        known_net,
        example_inputs=(torch.randn(4, 32),),
        iterations=2,
        peak=False,
        save=False,
        timing=FAST,
    )
    assert res.batch == 4  # from the inputs given
    assert res.layers


def test_unknown_runtime_and_bad_batch_are_clear_errors(known_net: torch.nn.Module) -> None:
    from torchslim.errors import TorchslimError

    with pytest.raises(TorchslimError, match="runtime"):
        profile(known_net, example_inputs=(torch.randn(2, 32),), runtime="tflite", save=False)
    with pytest.raises(TorchslimError, match="batch"):
        profile(known_net, example_inputs=(torch.randn(2, 32),), batch=0, save=False)
