"""Runtimes build from lowered representations (``torchslim.lowering``): an ONNX graph for
ONNX Runtime, an OpenVINO model for OpenVINO, a PT2E INT8 graph for Inductor. A representation
given to another runtime is a clear error; there is no ``rebuild``: a runtime hands back the
representation it runs, and any runtime of the same kind builds from it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from rt_helpers import cnn_inputs, small_cnn

import torchslim.runtimes
from _deps import need
from torchslim.errors import TorchslimError
from torchslim.lowering import (
    OnnxModel,
    OpenVINOModel,
    convert_to_openvino,
    export_for_runtime,
    is_lowered,
)
from torchslim.runtimes import build, default_config, load_deployed
from torchslim.runtimes.configs import (
    EagerConfig,
    GraphOptLevel,
    InductorConfig,
    OpenVINOConfig,
    OrtConfig,
    Precision,
)


def _onnx_model(tmp: Path) -> OnnxModel:
    path = export_for_runtime(small_cnn(), cnn_inputs(), tmp / "float.onnx")
    return OnnxModel.from_file(path)


def _ov_model(precision: str = "f32") -> OpenVINOModel:
    model, _ = convert_to_openvino(small_cnn(), cnn_inputs())
    return OpenVINOModel(model, ["input"], precision)


def test_rebuild_is_gone_and_default_config_needs_a_representation() -> None:
    assert not hasattr(torchslim.runtimes, "rebuild")
    with pytest.raises(TorchslimError, match="not a lowered representation"):
        default_config(small_cnn())


def test_onnxruntime_builds_from_an_onnx_model_exactly(tmp_path: Path) -> None:
    rep = _onnx_model(tmp_path)
    assert is_lowered(rep) and rep.runtime == "onnxruntime" and rep.input_names == ["input"]
    assert default_config(rep) == OrtConfig()
    x = cnn_inputs(5)
    d = build(rep, OrtConfig(), cnn_inputs())
    assert d.runtime == "onnxruntime"
    assert torch.equal(d(*x), rep.run(*x))
    torch.testing.assert_close(d(*x), small_cnn()(*x), atol=1e-5, rtol=1e-5)
    # the session works on its own copy: the representation's directory is left as it was
    assert d.onnx_path.parent != rep.path.parent
    assert sorted(p.name for p in rep.path.parent.iterdir()) == ["model.onnx"]


def test_onnxruntime_hands_back_its_graph_to_build_again(tmp_path: Path) -> None:
    d = build(small_cnn(), OrtConfig(), cnn_inputs())
    rep = d.representation()
    assert isinstance(rep, OnnxModel)
    again = build(rep, OrtConfig(graph_optimization=GraphOptLevel.BASIC, intra_op_threads=1), ())
    assert again.info["graph_optimization"] == "basic" and again.info["intra_op_threads"] == 1
    x = cnn_inputs(3)
    torch.testing.assert_close(again(*x), d(*x), atol=1e-5, rtol=1e-5)
    again.save(tmp_path / "rt")
    torch.testing.assert_close(load_deployed(tmp_path / "rt")(*x), d(*x), atol=1e-5, rtol=1e-5)


@pytest.mark.openvino
@pytest.mark.parametrize("precision", ["f32", "default", "bf16"])
def test_openvino_builds_from_an_openvino_model_exactly(precision: str) -> None:
    need("openvino")
    rep = _ov_model(precision)
    assert is_lowered(rep) and rep.runtime == "openvino"
    cfg = default_config(rep)
    assert cfg == OpenVINOConfig(precision=Precision(precision))
    d = build(rep, cfg, cnn_inputs())
    x = cnn_inputs(4)
    assert torch.equal(d(*x), rep.run(*x))
    again = build(d.representation(), cfg, cnn_inputs())
    assert torch.equal(again(*x), d(*x))


@pytest.mark.openvino
def test_a_representation_for_another_runtime_is_a_clear_error(tmp_path: Path) -> None:
    need("openvino")
    from torchslim.runtimes import ort, ov

    onnx_model, ov_model = _onnx_model(tmp_path), _ov_model()
    cases = [
        (lambda: build(onnx_model, OpenVINOConfig(), cnn_inputs()), "OnnxModel", "openvino"),
        (lambda: ov.build(onnx_model, OpenVINOConfig(), cnn_inputs()), "OnnxModel", "openvino"),
        (lambda: build(ov_model, OrtConfig(), cnn_inputs()), "OpenVINOModel", "onnxruntime"),
        (lambda: ort.build(ov_model, OrtConfig(), cnn_inputs()), "OpenVINOModel", "onnxruntime"),
        (lambda: build(onnx_model, EagerConfig(), cnn_inputs()), "OnnxModel", "eager"),
        (lambda: build(ov_model, InductorConfig(), cnn_inputs()), "OpenVINOModel", "inductor"),
    ]
    for make, kind, runtime in cases:
        with pytest.raises(TorchslimError) as err:
            make()
        text = str(err.value)
        have = "onnxruntime" if kind == "OnnxModel" else "openvino"
        assert kind in text and runtime in text and have in text, text


def test_inductor_compiles_a_pt2e_int8_graph_like_any_module() -> None:
    from torchslim.data import DataSet
    from torchslim.passes import PassContext, apply_pass
    from torchslim.passes.quantize import QuantizeConfig
    from torchslim.runtimes.inductor import Int8Inductor, is_int8_graph

    calib = DataSet("c", (torch.rand(32, 1, 12, 12, generator=torch.Generator().manual_seed(1)),))
    graph = apply_pass(
        small_cnn(), QuantizeConfig(method="static"), PassContext(calib=calib)
    ).module
    assert is_int8_graph(graph) and not is_int8_graph(small_cnn())
    d = build(graph, InductorConfig(), cnn_inputs())
    assert isinstance(d, Int8Inductor) and d.runtime == "inductor"
    x = cnn_inputs(4)
    ref = graph(*x)  # reference INT8 kernels, uncompiled
    cos = torch.nn.functional.cosine_similarity(d(*x).flatten(), ref.flatten(), dim=0)
    assert cos > 0.999
    import torch._inductor.config as inductor_config

    assert inductor_config.freezing is False  # the INT8 path's freezing patch is scoped
