"""ONNX Runtime: session settings honoured, optimised graph saved, dynamic axes, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from rt_helpers import DataDependent, cnn_inputs, small_cnn

from torchslim.errors import ExportError
from torchslim.runtimes import build, load_deployed
from torchslim.runtimes.configs import GraphOptLevel, OrtConfig


@pytest.fixture(scope="module")
def built():
    return build(small_cnn(), OrtConfig(intra_op_threads=1, opset=17), cnn_inputs())


def test_thread_and_level_settings_are_honoured(built) -> None:
    so = built.session.get_session_options()
    assert so.intra_op_num_threads == 1
    assert so.inter_op_num_threads == 1
    assert built.info["intra_op_threads"] == 1
    assert built.info["providers"] == ["CPUExecutionProvider"]


def test_default_threads_follow_torch() -> None:
    from torchslim.runtimes.ort import session_options

    with torch.inference_mode():
        assert session_options(OrtConfig()).intra_op_num_threads == torch.get_num_threads()
    assert session_options(OrtConfig(intra_op_threads=0)).intra_op_num_threads == 0
    level = session_options(OrtConfig(graph_optimization=GraphOptLevel.BASIC))
    import onnxruntime as ort

    assert level.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC


def test_dynamic_batch_and_opset(built) -> None:
    import onnx

    proto = onnx.load(str(built.onnx_path))
    assert any(o.domain in ("", "ai.onnx") and o.version == 17 for o in proto.opset_import)
    dim0 = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_param  # symbolic batch
    for b in (1, 7):
        assert built(*cnn_inputs(b)).shape == (b, 5)


def test_saves_only_the_portable_graph(built, tmp_path: Path) -> None:
    built.save(tmp_path / "ort")
    names = sorted(p.name for p in (tmp_path / "ort").iterdir())
    assert names == ["model.onnx", "runtime.json"]  # the optimised graph is a session cache
    again = load_deployed(tmp_path / "ort")
    assert again.session.get_session_options().intra_op_num_threads == 1
    torch.testing.assert_close(again(*cnn_inputs(3)), built(*cnn_inputs(3)))


def test_outputs_are_torch_tensors_without_copy(built) -> None:
    out = built(*cnn_inputs(2))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32


def test_data_dependent_control_flow_gives_a_clear_error() -> None:
    with pytest.raises(ExportError) as info:
        build(DataDependent().eval(), OrtConfig(), (torch.rand(2, 4),))
    msg = str(info.value)
    assert "data-dependent control flow" in msg
    assert "rt_helpers.py" in msg and "(forward)" in msg
    assert "Try another runtime" in msg
    assert len(info.value.message) < 400
