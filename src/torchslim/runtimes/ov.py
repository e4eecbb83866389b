"""The ``openvino`` runtime (needs the ``openvino`` extra).

The model is converted from the PyTorch module (``openvino.convert_model``) or through ONNX, then
compiled with a performance hint (latency/throughput), an inference precision and optionally a
compiled-model cache directory.

Precision: with ``Precision.DEFAULT`` OpenVINO computes in BF16 on CPUs with AVX-512 BF16 or AMX
(and reports it), which changes numerics; torchslim's default is ``F32``. The precision actually
used is read back from the compiled model (``info["precision"]``) so parity is checked with the
matching tolerance.

Calls use one infer request directly: inputs are wrapped as shared-memory ``ov.Tensor`` views
(no copy), ``infer()`` runs with no arguments, and outputs are copied out once. That bare path
costs about a third of the convenience ``compiled_model(inputs)`` call, which matters for small
models at batch 1.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from torchslim.errors import BackendUnavailableError, ExportError
from torchslim.runtimes._common import (
    BaseDeployed,
    export_error,
    input_names_for,
    pack_outputs,
    resolve_threads,
    trace_guard,
)
from torchslim.runtimes.configs import OpenVINOConfig, PerformanceHint, Precision

__all__ = ["OpenVINODeployed", "build", "compile_properties", "convert", "load"]


def _ov() -> Any:
    try:
        import openvino as ov
    except ImportError as exc:
        raise BackendUnavailableError("openvino", "openvino", "openvino is not installed") from exc
    return ov


def compile_properties(config: OpenVINOConfig) -> dict[str, Any]:
    """OpenVINO compile properties for ``config``."""
    props: dict[str, Any] = {
        "PERFORMANCE_HINT": PerformanceHint(config.performance_hint).value.upper(),
        "INFERENCE_NUM_THREADS": resolve_threads(config.threads),
    }
    precision = Precision(config.precision)
    if precision is not Precision.DEFAULT:
        props["INFERENCE_PRECISION_HINT"] = precision.value
    if config.cache_dir:
        Path(config.cache_dir).mkdir(parents=True, exist_ok=True)
        props["CACHE_DIR"] = str(config.cache_dir)
    return props


def _partial_shapes(example_inputs: Sequence[Any], dynamic: bool) -> list[Any]:
    ov = _ov()
    shapes = []
    for x in example_inputs:
        dims = list(x.shape)
        if dynamic and dims:
            dims[0] = -1
            if not x.is_floating_point() and len(dims) == 2:
                dims[1] = -1
        shapes.append(ov.PartialShape(dims))
    return shapes


def convert(
    module: nn.Module, example_inputs: Sequence[Any], config: OpenVINOConfig
) -> tuple[Any, float]:
    """Convert ``module`` to an ``openvino.Model``; returns it and the conversion time.

    Raises:
        ExportError: Conversion failed (names the op, suggests another runtime).
    """
    from torchslim.lowering import prepare_module

    ov = _ov()
    start = time.perf_counter()
    work = prepare_module(module)
    if config.source == "onnx":
        from torchslim.runtimes.ort import export_for_runtime

        with tempfile.TemporaryDirectory(prefix="torchslim-ov-") as tmp:
            path = export_for_runtime(
                work, example_inputs, Path(tmp) / "model.onnx", dynamic=config.dynamic
            )
            model = ov.Core().read_model(str(path))
            if not config.dynamic:
                model.reshape({i: s for i, s in enumerate(_partial_shapes(example_inputs, False))})
    else:
        try:
            with (
                trace_guard(
                    "OpenVINO conversion", "openvino with source='onnx', onnxruntime or inductor"
                ),
                torch.no_grad(),
            ):
                model = ov.convert_model(
                    work,
                    example_input=tuple(example_inputs),
                    input=_partial_shapes(example_inputs, config.dynamic),
                )
        except ExportError:
            raise
        except Exception as exc:
            raise export_error(
                "OpenVINO conversion", exc, "openvino with source='onnx', onnxruntime or inductor"
            ) from exc
    names = input_names_for(example_inputs, module=module)
    for port, name in zip(model.inputs, names, strict=False):
        port.get_tensor().set_names({name})
    return model, time.perf_counter() - start


class OpenVINODeployed(BaseDeployed):
    """A compiled OpenVINO model called through one infer request.

    Args:
        model: The ``openvino.Model`` (kept for saving).
        compiled: The ``CompiledModel``.
        config: Its :class:`OpenVINOConfig`.
        input_names: Input names in call order.
        build_seconds: Conversion + compilation time.
    """

    runtime = "openvino"

    def __init__(
        self,
        model: Any,
        compiled: Any,
        config: OpenVINOConfig,
        input_names: Sequence[str],
        build_seconds: float,
        convert_seconds: float = 0.0,
    ) -> None:
        super().__init__(config, input_names, build_seconds)
        self._ov = _ov()
        self.model = model
        self.compiled = compiled
        self.request = compiled.create_infer_request()
        self._n_out = len(compiled.outputs)
        self.static_shapes = not config.dynamic
        precision = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
        self.info = {
            "precision": _precision_name(precision),
            "performance_hint": str(compiled.get_property("PERFORMANCE_HINT")),
            "threads": int(compiled.get_property("INFERENCE_NUM_THREADS")),
            "streams": int(compiled.get_property("NUM_STREAMS")),
            "optimal_requests": int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")),
            "convert_seconds": round(convert_seconds, 3),
            "source": config.source,
        }

    def __call__(self, *inputs: Any) -> Any:
        req = self.request
        tensor = self._ov.Tensor
        for i, x in enumerate(inputs):
            req.set_input_tensor(i, tensor(x.detach().contiguous().numpy(), shared_memory=True))
        req.infer()
        return pack_outputs(
            [torch.from_numpy(req.get_output_tensor(i).data.copy()) for i in range(self._n_out)]
        )

    def _write(self, directory: Path) -> str:
        self._ov.save_model(self.model, str(directory / "model.xml"), compress_to_fp16=False)
        return "model.xml"

    @classmethod
    def _read(cls, directory: Path, config: Any, meta: dict[str, Any]) -> OpenVINODeployed:
        ov = _ov()
        core = ov.Core()
        model = core.read_model(str(directory / meta.get("main_file", "model.xml")))
        compiled = core.compile_model(model, config.device, compile_properties(config))
        return cls(model, compiled, config, meta.get("input_names", ["input"]), 0.0)


def _precision_name(text: str) -> str:
    """``"fp32"``, ``"bf16"`` or ``"fp16"`` from an OpenVINO element type's text."""
    t = text.lower()
    if "bf16" in t or "bfloat16" in t:
        return "bf16"
    if "f16" in t or "float16" in t:
        return "fp16"
    return "fp32"


def build(
    module: nn.Module, config: OpenVINOConfig, example_inputs: tuple[Any, ...]
) -> OpenVINODeployed:
    """Convert and compile ``module`` with OpenVINO.

    Raises:
        ExportError: Conversion failed.
        BackendUnavailableError: OpenVINO is not installed.
    """
    model, convert_seconds = convert(module, example_inputs, config)
    return build_from_model(
        model, config, input_names_for(example_inputs, module=module), convert_seconds
    )


def build_from_model(
    model: Any, config: OpenVINOConfig, input_names: Sequence[str], convert_seconds: float = 0.0
) -> OpenVINODeployed:
    """Compile an already converted ``openvino.Model`` (lets callers try several settings)."""
    ov = _ov()
    start = time.perf_counter()
    compiled = ov.Core().compile_model(model, config.device, compile_properties(config))
    seconds = time.perf_counter() - start + convert_seconds
    return OpenVINODeployed(model, compiled, config, input_names, seconds, convert_seconds)


def load(directory: str | Path) -> OpenVINODeployed:
    """Load an ``openvino`` runtime saved with :meth:`OpenVINODeployed.save`."""
    return OpenVINODeployed.load(directory)  # type: ignore[return-value]


def rebuild(deployed: OpenVINODeployed, config: OpenVINOConfig) -> OpenVINODeployed:
    """Compile ``deployed``'s OpenVINO model again with ``config``'s settings (hint, threads)."""
    return build_from_model(deployed.model, config, deployed.input_names)
