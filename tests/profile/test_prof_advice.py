"""Advice rules fire on crafted profiles and stay quiet on others."""

from __future__ import annotations

from torchslim.profile.advice import (
    advise,
    call_overhead,
    compute_share,
    float_in_int8,
    reorder_share,
)
from torchslim.profile.result import LayerTime, ProfileResult, op_kind


def layer(name: str, type_: str, ms: float, precision: str | None = None) -> LayerTime:
    return LayerTime(
        name=name,
        type=type_,
        self_ms=ms,
        total_ms=ms,
        module=name,
        kind=op_kind(type_),
        precision=precision,
    )


def result(
    layers: list[LayerTime],
    *,
    latency: float | None = None,
    batch: int = 1,
    runtime: str = "eager",
) -> ProfileResult:
    total = sum(x.self_ms for x in layers)
    return ProfileResult(
        source="m",
        runtime=runtime,
        batch=batch,
        threads=2,
        iterations=10,
        layers=tuple(sorted(layers, key=lambda x: -x.self_ms)),
        operators=(),
        latency_ms=total if latency is None else latency,
        profiled_ms=total,
        layer_sum_ms=total,
    )


def test_conv_share_names_the_blocks_to_prune() -> None:
    r = result(
        [
            layer("layer4.0.conv1", "Conv2d", 3.0),
            layer("layer3.1.conv2", "Conv2d", 2.0),
            layer("layer1.0.conv1", "Conv2d", 1.1),
            layer("fc", "Linear", 0.5),
            layer("layer1.0.bn1", "BatchNorm2d", 3.4),
        ]
    )
    found = compute_share(r, "conv")
    assert found is not None
    assert found.numbers["layers"] == 3
    assert found.numbers["share"] == 6.1 / 10.0
    assert "3 convolution layers take 61% of the time" in found.title
    assert "`layer4` and `layer3`" in found.title
    assert "torchslim prune m" in found.recommendation
    assert compute_share(r, "matmul") is None


def test_conv_share_quiet_below_half() -> None:
    r = result([layer("c", "Conv2d", 0.4), layer("n", "LayerNorm", 0.6)])
    assert compute_share(r, "conv") is None


def test_matmul_share_for_transformers() -> None:
    r = result([layer("encoder.0.q", "Linear", 0.6), layer("encoder.0.ln", "LayerNorm", 0.4)])
    found = compute_share(r, "matmul")
    assert found is not None and found.id == "matmul-share"


def test_reorder_share_fires_from_ten_percent() -> None:
    conv = layer("conv", "Convolution", 0.85)
    hot = result(
        [conv, layer("t1", "Transpose", 0.1), layer("r", "Reorder", 0.05)], runtime="openvino"
    )
    found = reorder_share(hot)
    assert found is not None
    assert found.numbers["layers"] == 2
    assert found.title.startswith("15% of the time is in reorders/transposes")
    cold = result([conv, layer("t1", "Transpose", 0.05)])
    assert reorder_share(cold) is None


def test_float_layers_inside_int8_and_their_cost() -> None:
    r = result(
        [
            layer("conv1", "Convolution", 0.2, "int8"),
            layer("conv2", "Convolution", 0.3, "int8"),
            layer("fc2", "FullyConnected", 0.25, "fp32"),
            layer("pool", "MaxPool", 0.25, "fp32"),  # not a compute layer: not counted
        ],
        runtime="openvino",
    )
    found = float_in_int8(r)
    assert found is not None
    assert found.numbers["names"] == ["fc2"]
    assert found.numbers["ms"] == 0.25
    assert "1 layer ran in fp32 inside the INT8 model" in found.title
    all_int8 = result([layer("c", "Convolution", 1.0, "int8")])
    no_int8 = result([layer("c", "Convolution", 1.0, "fp32"), layer("f", "MatMul", 1.0, "fp32")])
    assert float_in_int8(all_int8) is None
    assert float_in_int8(no_int8) is None


def test_call_overhead_at_batch_1_only() -> None:
    layers = [layer("a", "Linear", 0.3), layer("b", "Relu", 0.3)]
    found = call_overhead(result(layers, latency=1.0))
    assert found is not None
    assert abs(found.numbers["share"] - 0.4) < 1e-9
    assert "per-call overhead is 40% of batch-1 latency" in found.title
    assert "Batch requests" in found.recommendation
    assert call_overhead(result(layers, latency=0.7)) is None  # 14%: below the bar
    assert call_overhead(result(layers, latency=1.0, batch=8)) is None


def test_advise_runs_every_rule_in_order() -> None:
    r = result(
        [layer("c", "Conv2d", 0.6), layer("t", "permute", 0.4)], latency=2.0, runtime="eager"
    )
    ids = [a.id for a in advise(r)]
    assert ids == ["conv-share", "reorder-share", "call-overhead"]
    finding = advise(r)[0].to_finding()
    assert finding.id == "profile-conv-share" and finding.severity == "info"


def test_blocks_go_below_a_single_wrapper_module() -> None:
    r = result(
        [
            layer("backbone.encoder.layer.3.output.dense", "Linear", 0.5),
            layer("backbone.encoder.layer.0.output.dense", "Linear", 0.3),
            layer("backbone.encoder.layer.1.output.dense", "Linear", 0.1),
            layer("backbone.embeddings.norm", "LayerNorm", 0.1),
        ]
    )
    found = compute_share(r, "matmul")
    assert found is not None
    assert "`backbone.encoder.layer.3` and `backbone.encoder.layer.0`" in found.title


def test_int8_masks_do_not_make_a_float_model_int8() -> None:
    r = result([layer("mask", "Convert", 0.1, "int8"), layer("fc", "FullyConnected", 1.0, "fp32")])
    assert float_in_int8(r) is None
