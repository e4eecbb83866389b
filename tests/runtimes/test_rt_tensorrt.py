"""TensorRT: GPU only. Without one it is listed as unavailable and refuses cleanly."""

from __future__ import annotations

import pytest
import torch
from rt_helpers import cnn_inputs, small_cnn

from torchslim.errors import BackendUnavailableError
from torchslim.runtimes import RUNTIMES, build, list_runtimes
from torchslim.runtimes.configs import OrtConfig, TensorRTConfig
from torchslim.runtimes.tensorrt import ort_config, probe

HAVE_TRT = probe() is None


@pytest.mark.skipif(HAVE_TRT, reason="TensorRT is available on this machine")
def test_unavailable_without_gpu() -> None:
    list_runtimes()
    entry = RUNTIMES.get("tensorrt")
    assert entry.available() is False
    assert "GPU" in (entry.reason() or "") or "Tensorrt" in (entry.reason() or "")
    with pytest.raises(BackendUnavailableError, match="tensorrt"):
        build(small_cnn(), TensorRTConfig(), cnn_inputs())


def test_ort_config_puts_tensorrt_first() -> None:
    cfg = ort_config(TensorRTConfig(fp16=False, cache_dir="/tmp/x"))
    assert cfg.providers[0] == "TensorrtExecutionProvider" and cfg.device == "cuda"
    assert cfg.trt_fp16 is False and cfg.engine_cache_dir == "/tmp/x"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_ort_cuda_provider_refused_without_gpu() -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu installed")
    with pytest.raises(BackendUnavailableError, match="onnxruntime-gpu"):
        build(small_cnn(), OrtConfig(device="cuda"), cnn_inputs())


@pytest.mark.gpu
@pytest.mark.skipif(not HAVE_TRT, reason="needs an NVIDIA GPU with TensorRT")
def test_tensorrt_builds_and_matches() -> None:  # pragma: no cover - GPU only
    from torchslim.parity import check_parity

    model, x = small_cnn(), cnn_inputs()
    deployed = build(model, TensorRTConfig(), x)
    assert check_parity(deployed, model, x).passed


def test_profile_covers_the_batch_range() -> None:
    from torchslim.runtimes.tensorrt import profile_shapes

    cfg = TensorRTConfig(min_batch=1, opt_batch=4, max_batch=16)
    xs = (torch.zeros(2, 8), torch.zeros(2, 8, dtype=torch.long))
    assert profile_shapes(cfg, xs, ["input_ids", "attention_mask"]) == (
        "input_ids:1x8,attention_mask:1x8",
        "input_ids:4x8,attention_mask:4x8",
        "input_ids:16x8,attention_mask:16x8",
    )
    assert ort_config(cfg, ("a", "b", "c")).trt_profile == ("a", "b", "c")
