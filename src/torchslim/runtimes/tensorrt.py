"""The ``tensorrt`` runtime: TensorRT on an NVIDIA GPU through ONNX Runtime's TensorRT provider.

Without a CUDA GPU and an ONNX Runtime that offers ``TensorrtExecutionProvider`` the runtime is
listed as unavailable (:func:`probe` says why) and building it raises
:class:`~torchslim.errors.BackendUnavailableError`; nothing is imported at registry time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torchslim.errors import BackendUnavailableError
from torchslim.runtimes.configs import OrtConfig, TensorRTConfig

__all__ = ["build", "load", "ort_config", "probe", "profile_shapes"]

_REASON = (
    "needs an NVIDIA GPU and onnxruntime-gpu with TensorrtExecutionProvider "
    "(TensorRT libraries installed)"
)


def probe() -> str | None:
    """``None`` when TensorRT can run here, else the reason it cannot."""
    import importlib.util

    if importlib.util.find_spec("onnxruntime") is None:
        return "needs onnxruntime-gpu"
    import onnxruntime as ort

    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        return _REASON
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU is visible"
    return None


def profile_shapes(
    config: TensorRTConfig, example_inputs: tuple[Any, ...], names: list[str]
) -> tuple[str, ...]:
    """``(min, opt, max)`` TensorRT profile strings: the example shapes at three batch sizes."""

    def at(batch: int) -> str:
        parts = []
        for name, x in zip(names, example_inputs, strict=True):
            dims = [batch, *list(x.shape)[1:]]
            parts.append(f"{name}:{'x'.join(str(d) for d in dims)}")
        return ",".join(parts)

    return (at(config.min_batch), at(config.opt_batch), at(config.max_batch))


def ort_config(config: TensorRTConfig, profile: tuple[str, ...] = ()) -> OrtConfig:
    """The ONNX Runtime config that runs ``config`` (TensorRT → CUDA → CPU providers)."""
    return OrtConfig(
        opset=config.opset,
        device="cuda",
        providers=("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
        trt_fp16=config.fp16,
        engine_cache_dir=config.cache_dir,
        trt_profile=profile,
    )


def build(module: Any, config: TensorRTConfig, example_inputs: tuple[Any, ...]) -> Any:
    """Build a TensorRT session (an ONNX Runtime session whose first provider is TensorRT).

    Raises:
        BackendUnavailableError: No GPU or no TensorRT provider here.
    """
    reason = probe()
    if reason is not None:
        raise BackendUnavailableError("tensorrt", None, reason)
    from torchslim.runtimes import ort
    from torchslim.runtimes._common import input_names_for

    names = input_names_for(example_inputs, module=module)
    profile = profile_shapes(config, example_inputs, names)
    deployed = ort.build(module, ort_config(config, profile), example_inputs)
    deployed.info["precision"] = "fp16" if config.fp16 else "fp32"
    return deployed


def load(directory: str | Path) -> Any:  # pragma: no cover - needs a GPU
    """Load a saved TensorRT build (saved as an ``onnxruntime`` runtime with TensorRT providers)."""
    from torchslim.runtimes import ort

    return ort.load(directory)
