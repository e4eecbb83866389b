"""TensorRT keeps the runtime contract (``runtime.json`` names ``tensorrt`` and its config).

No TensorRT here: the TensorRT provider list is swapped for ONNX Runtime's CPU provider and the
machine probe is told the backend is present, so everything torchslim itself does (build, wrap,
save, manifest, load through the registry) runs on the CPU exactly as on a GPU machine.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from rt_helpers import cnn_inputs, small_cnn

from torchslim.config import config_from_dict
from torchslim.errors import BackendUnavailableError
from torchslim.runtimes import build, load_deployed
from torchslim.runtimes import tensorrt as trt
from torchslim.runtimes.configs import OrtConfig, TensorRTConfig

REAL_PROBE = trt.probe
CFG = TensorRTConfig(fp16=False, cache_dir=None, min_batch=1, opt_batch=2, max_batch=8)


@pytest.fixture
def cpu_tensorrt(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    """Pretend TensorRT is present; run its ONNX Runtime session on the CPU provider.

    Returns:
        The TensorRT profiles the runtime asked ONNX Runtime for, one per session created.
    """
    profiles: list[tuple[str, ...]] = []

    def cpu_config(config: TensorRTConfig, profile: tuple[str, ...] = ()) -> OrtConfig:
        profiles.append(tuple(profile))
        return OrtConfig(opset=config.opset)

    monkeypatch.setattr(trt, "probe", lambda: None)
    monkeypatch.setattr(trt, "ort_config", cpu_config)
    return profiles


def test_saved_manifest_names_tensorrt_and_its_config(
    cpu_tensorrt: list[tuple[str, ...]], tmp_path: Path
) -> None:
    model, x = small_cnn(), cnn_inputs(2)
    deployed = build(model, CFG, x)
    assert isinstance(deployed, trt.TensorRTDeployed)
    assert deployed.runtime == "tensorrt" and deployed.config == CFG
    assert deployed.info["precision"] == "fp32"
    assert cpu_tensorrt == [("input:1x1x12x12", "input:2x1x12x12", "input:8x1x12x12")]

    main = deployed.save(tmp_path / "saved")
    assert main == tmp_path / "saved" / "model.onnx" and main.is_file()
    meta = json.loads((tmp_path / "saved" / "runtime.json").read_text())
    assert meta["runtime"] == "tensorrt"
    assert config_from_dict(meta["config"]) == CFG
    assert meta["main_file"] == "model.onnx" and meta["input_names"] == ["input"]
    assert meta["info"]["trt_profile"] == list(cpu_tensorrt[0])

    again = load_deployed(tmp_path / "saved")
    assert type(again) is trt.TensorRTDeployed and again.config == CFG
    assert cpu_tensorrt[-1] == cpu_tensorrt[0]  # the load rebuilt the same engine profile
    for b in (1, 3):
        xb = cnn_inputs(b)
        torch.testing.assert_close(again(*xb), deployed(*xb), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(again(*xb), model(*xb), rtol=1e-4, atol=1e-5)


def test_wrapper_around_a_fake_session_writes_the_contract(tmp_path: Path) -> None:
    class FakeSession:
        def __init__(self) -> None:
            self.input_names = ["input_ids", "attention_mask"]
            self.build_seconds = 1.5
            self.info = {"providers": ["TensorrtExecutionProvider"], "precision": "fp32"}
            self.device = "cuda"

        def _write(self, directory: Path) -> str:
            (directory / "model.onnx").write_bytes(b"onnx")
            return "model.onnx"

        def __call__(self, *inputs: Any) -> Any:
            return inputs[0] * 2

    cfg = TensorRTConfig(fp16=True, cache_dir="/tmp/engines", opset=17)
    deployed = trt.TensorRTDeployed(FakeSession(), cfg, ("a:1x8", "a:4x8", "a:16x8"))
    assert deployed.device == "cuda" and deployed.build_seconds == 1.5
    assert torch.equal(deployed(torch.ones(2)), torch.full((2,), 2.0))
    deployed.save(tmp_path / "d")
    meta = json.loads((tmp_path / "d" / "runtime.json").read_text())
    assert meta["runtime"] == "tensorrt"
    assert config_from_dict(meta["config"]) == cfg
    assert meta["input_names"] == ["input_ids", "attention_mask"]
    assert meta["info"]["precision"] == "fp16"
    assert meta["info"]["trt_profile"] == ["a:1x8", "a:4x8", "a:16x8"]
    assert meta["info"]["providers"] == ["TensorrtExecutionProvider"]
    assert (tmp_path / "d" / "model.onnx").read_bytes() == b"onnx"


@pytest.mark.skipif(REAL_PROBE() is None, reason="TensorRT is available on this machine")
def test_saved_tensorrt_refuses_to_load_without_tensorrt(
    cpu_tensorrt: list[tuple[str, ...]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build(small_cnn(), CFG, cnn_inputs(2)).save(tmp_path / "saved")
    monkeypatch.setattr(trt, "probe", REAL_PROBE)  # this machine has no TensorRT
    with pytest.raises(BackendUnavailableError, match="tensorrt"):
        load_deployed(tmp_path / "saved")
