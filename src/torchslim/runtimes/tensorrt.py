"""The ``tensorrt`` runtime: TensorRT on an NVIDIA GPU through ONNX Runtime's TensorRT provider.

Without a CUDA GPU and an ONNX Runtime that offers ``TensorrtExecutionProvider`` the runtime is
listed as unavailable (:func:`probe` says why) and building it raises
:class:`~torchslim.errors.BackendUnavailableError`; nothing is imported at registry time.

The built object is a :class:`TensorRTDeployed`: it runs an ONNX Runtime session but reports
``runtime == "tensorrt"`` and keeps its :class:`~torchslim.runtimes.configs.TensorRTConfig`, so
the saved ``runtime.json`` names this runtime and its config (the runtime contract) and
:func:`~torchslim.runtimes.load_deployed` comes back here.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torchslim.errors import BackendUnavailableError
from torchslim.runtimes._common import BaseDeployed
from torchslim.runtimes.configs import OrtConfig, TensorRTConfig

__all__ = ["TensorRTDeployed", "build", "load", "ort_config", "probe", "profile_shapes"]

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


class TensorRTDeployed(BaseDeployed):
    """A TensorRT build: an ONNX Runtime session whose first execution provider is TensorRT.

    Args:
        session: The ONNX Runtime deployed object (:class:`~torchslim.runtimes.ort.OrtDeployed`,
            built with :func:`ort_config`) that runs the model and writes ``model.onnx``.
        config: The :class:`TensorRTConfig` it was built with (saved in ``runtime.json``).
        profile: The ``(min, opt, max)`` TensorRT shape profile (see :func:`profile_shapes`);
            saved as ``info["trt_profile"]`` so a load rebuilds the same engine.

    Attributes:
        session: The wrapped ONNX Runtime deployed object.
        profile: The TensorRT shape profile, empty when none was set.
    """

    runtime = "tensorrt"

    def __init__(self, session: Any, config: TensorRTConfig, profile: Sequence[str] = ()) -> None:
        super().__init__(config, session.input_names, session.build_seconds)
        self.session = session
        self.profile = tuple(str(p) for p in profile)
        self.info = {
            **dict(session.info),
            "precision": "fp16" if config.fp16 else "fp32",
            "trt_profile": list(self.profile),
        }

    @property
    def device(self) -> str:
        """Where inputs must live: the session's device (``cuda``)."""
        return str(getattr(self.session, "device", "cuda"))

    def __call__(self, *inputs: Any) -> Any:
        return self.session(*inputs)

    def _write(self, directory: Path) -> str:
        main: str = self.session._write(directory)
        return main

    @classmethod
    def _read(cls, directory: Path, config: Any, meta: dict[str, Any]) -> TensorRTDeployed:
        from torchslim.runtimes import ort

        profile = tuple(meta.get("info", {}).get("trt_profile") or ())
        workdir = tempfile.TemporaryDirectory(prefix="torchslim-trt-")
        local = Path(workdir.name) / "model.onnx"
        shutil.copyfile(directory / meta.get("main_file", "model.onnx"), local)
        session = ort.build_from_onnx(local, ort_config(config, profile), workdir=workdir)
        return cls(session, config, profile)


def build(module: Any, config: TensorRTConfig, example_inputs: tuple[Any, ...]) -> TensorRTDeployed:
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
    session = ort.build(module, ort_config(config, profile), example_inputs)
    return TensorRTDeployed(session, config, profile)


def load(directory: str | Path) -> TensorRTDeployed:
    """Load a TensorRT build saved with :meth:`TensorRTDeployed.save` (rebuilds the engine)."""
    return TensorRTDeployed.load(directory)  # type: ignore[return-value]
