"""ONNX Runtime profiling: the session's own profiler, mapped to ONNX nodes and modules."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from torchslim.profile import ProfileResult, profile
from torchslim.timing import TimingConfig

FAST = TimingConfig(min_samples=5, min_time_s=0.0, max_time_s=0.5, min_warmup_calls=2)


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> ProfileResult:
    trace = tmp_path_factory.mktemp("trace") / "ort.json"
    return profile(
        "torchslim:fashion_resnet",
        runtime="onnxruntime",
        iterations=5,
        peak=False,
        save=False,
        trace=trace,
        timing=FAST,
    )


def test_convolutions_map_to_their_modules(result: ProfileResult) -> None:
    import torchslim

    model = torchslim.load_model("torchslim:fashion_resnet").require_module()
    convs = {n for n, m in model.named_modules() if type(m).__name__ == "Conv2d"}
    mapped = {x.module for x in result.layers if x.type == "Conv"}
    # Every convolution ran as one (fused Conv+BN+ReLU) node and was mapped back to its Conv2d.
    assert mapped == convs
    gemm = [x for x in result.layers if x.type == "Gemm"]
    assert [x.module for x in gemm] == ["fc"]
    assert all(x.precision == "fp32" for x in result.layers)
    assert all(x.exec_type == "CPUExecutionProvider" for x in result.layers)
    # Module totals: each block's time is the sum of the layers mapped inside it.
    by_name = {m.name: m for m in result.modules}
    inside = sum(x.self_ms for x in result.layers if (x.module or "").startswith("layer3"))
    assert by_name["layer3"].total_ms == pytest.approx(inside)
    # FLOPs come from the module each node maps to.
    conv = next(x for x in result.layers if x.module == "layer1.0.conv1")
    assert conv.flops == 2 * 32 * 32 * 9 * 28 * 28


def test_nodes_name_the_exported_graph(result: ProfileResult, tmp_path: Path) -> None:
    import torch

    import torchslim
    from torchslim.lowering import export_for_runtime

    loaded = torchslim.load_model("torchslim:fashion_resnet")
    path = export_for_runtime(
        loaded.require_module(), (torch.randn(1, 1, 28, 28),), tmp_path / "m.onnx"
    )
    names = {n.name for n in onnx.load(str(path)).graph.node}
    nodes = [n for x in result.layers for n in x.nodes]
    assert nodes and set(nodes) <= names
    linear = next(x for x in result.layers if x.module == "fc")
    assert linear.nodes == (linear.name,)  # not fused: the same node as exported


def test_trace_is_chrome_trace_with_modules(result: ProfileResult) -> None:
    assert result.trace is not None
    data = json.loads(Path(result.trace).read_text(encoding="utf-8"))
    events = data["traceEvents"]
    nodes = [e for e in events if e.get("cat") == "Node"]
    assert nodes and all(e["ph"] == "X" and "dur" in e for e in nodes)
    assert {e["args"].get("module") for e in nodes} >= {"layer1.0.conv1", "fc"}
