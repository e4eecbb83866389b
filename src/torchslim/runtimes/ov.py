"""The ``openvino`` runtime (needs the ``openvino`` extra).

The runtime builds from a PyTorch module, converted with
:func:`~torchslim.lowering.openvino.convert_to_openvino` (``openvino.convert_model`` or through
ONNX), or from an :class:`~torchslim.lowering.OpenVINOModel` a pass lowered the model to (e.g.
NNCF INT8 quantization). The model is compiled with a performance hint (latency/throughput), an inference precision and optionally a
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

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from torchslim.lowering import OpenVINOModel, convert_to_openvino, input_names_for
from torchslim.lowering.openvino import openvino_module
from torchslim.runtimes._common import BaseDeployed, pack_outputs, resolve_threads
from torchslim.runtimes.base import lowered_for
from torchslim.runtimes.configs import OpenVINOConfig, PerformanceHint, Precision

__all__ = [
    "OpenVINODeployed",
    "build",
    "build_from_model",
    "compile_properties",
    "convert",
    "default_config",
    "load",
]


def _ov() -> Any:
    return openvino_module()


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


def convert(
    module: nn.Module, example_inputs: Sequence[Any], config: OpenVINOConfig
) -> tuple[Any, float]:
    """Convert ``module`` to an ``openvino.Model`` with ``config``'s source and dynamic axes
    (:func:`~torchslim.lowering.openvino.convert_to_openvino`); returns it and the time taken.

    Raises:
        ExportError: Conversion failed (names the op, suggests another runtime).
    """
    return convert_to_openvino(module, example_inputs, source=config.source, dynamic=config.dynamic)


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
        self._queue: Any = None  # AsyncInferQueue, made on the first multi-stream call
        self._by_shape: dict[tuple[tuple[int, ...], ...], Any] = {}  # static: shape → request
        precision = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
        self.info = {
            "precision": _precision_name(precision),
            "performance_hint": str(compiled.get_property("PERFORMANCE_HINT")),
            "threads": int(compiled.get_property("INFERENCE_NUM_THREADS")),
            "streams": int(compiled.get_property("NUM_STREAMS")),
            "optimal_requests": int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")),
            "convert_seconds": round(convert_seconds, 3),
            "source": config.source,
            "static_shapes": self.static_shapes,
        }

    def __call__(self, *inputs: Any) -> Any:
        req = self.request
        if self.static_shapes and inputs and inputs[0].shape[0] != self._static_batch():
            specialised = self._request_for(inputs)
            if specialised is None:
                return self._call_in_compiled_batches(inputs)
            req = specialised
        streams = self.info["streams"]
        if not self.static_shapes and streams > 1 and inputs and inputs[0].shape[0] >= streams:
            return self._call_on_streams(inputs, streams)
        tensor = self._ov.Tensor
        for i, x in enumerate(inputs):
            req.set_input_tensor(i, tensor(x.detach().contiguous().numpy(), shared_memory=True))
        req.infer()
        return pack_outputs(
            [torch.from_numpy(req.get_output_tensor(i).data.copy()) for i in range(self._n_out)]
        )

    def _call_on_streams(self, inputs: tuple[Any, ...], streams: int) -> Any:
        """THROUGHPUT hint: the compiled model has several streams, which one synchronous
        request cannot use — split the batch into one slice per stream and run the slices as
        concurrent asynchronous requests (OpenVINO's ``AsyncInferQueue``), then concatenate."""
        ov = self._ov
        if self._queue is None:
            self._queue = ov.AsyncInferQueue(self.compiled, streams)
        queue = self._queue
        n = int(inputs[0].shape[0])
        bounds = [round(i * n / streams) for i in range(streams + 1)]
        results: list[list[Any]] = [[] for _ in range(streams)]

        def done(request: Any, index: int) -> None:
            results[index] = [
                torch.from_numpy(request.get_output_tensor(i).data.copy())
                for i in range(self._n_out)
            ]

        queue.set_callback(done)
        arrays = [x.detach().contiguous().numpy() for x in inputs]
        for k in range(streams):
            lo, hi = bounds[k], bounds[k + 1]
            queue.start_async(
                {i: ov.Tensor(a[lo:hi], shared_memory=True) for i, a in enumerate(arrays)}, k
            )
        queue.wait_all()
        return pack_outputs([torch.cat([r[i] for r in results], dim=0) for i in range(self._n_out)])

    _MAX_SHAPES = 8
    """Static shapes: at most this many shape-specialised compilations; other batches run in
    padded chunks of the first one."""

    def _request_for(self, inputs: tuple[Any, ...]) -> Any:
        """Static shapes: an infer request of the model compiled for exactly these shapes
        (reshaped and compiled on the first call with them, then kept), or ``None`` past
        :attr:`_MAX_SHAPES`."""
        key = tuple(tuple(x.shape) for x in inputs)
        req = self._by_shape.get(key)
        if req is None and len(self._by_shape) < self._MAX_SHAPES:
            ov = self._ov
            model = self.model.clone()
            model.reshape({i: ov.PartialShape(list(s)) for i, s in enumerate(key)})
            compiled = ov.Core().compile_model(
                model, self.config.device, compile_properties(self.config)
            )
            req = self._by_shape[key] = compiled.create_infer_request()
        return req

    def _static_batch(self) -> int:
        return int(self.compiled.inputs[0].get_partial_shape()[0].get_length())

    def _call_in_compiled_batches(self, inputs: tuple[Any, ...]) -> Any:
        """Past the shape-specialised compilations, a static-shape model takes only its compiled
        batch: other batches run in chunks of it, the last one zero-padded (the padding's outputs
        are dropped)."""
        b = self._static_batch()
        n = int(inputs[0].shape[0])
        parts: list[Any] = []
        for start in range(0, n, b):
            chunk = [x[start : start + b] for x in inputs]
            k = int(chunk[0].shape[0])
            if k < b:
                chunk = [torch.cat([c, c.new_zeros((b - k, *c.shape[1:]))], dim=0) for c in chunk]
            out = self(*chunk)
            parts.append(tuple(o[:k] for o in out) if isinstance(out, (tuple, list)) else out[:k])
        if isinstance(parts[0], tuple):
            return tuple(torch.cat([p[i] for p in parts], dim=0) for i in range(len(parts[0])))
        return torch.cat(parts, dim=0)

    def representation(self) -> OpenVINOModel:
        """The ``openvino.Model`` this runs, as a representation (to build it again)."""
        return OpenVINOModel(
            self.model, list(self.input_names), Precision(self.config.precision).value
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
    model: nn.Module | OpenVINOModel, config: OpenVINOConfig, example_inputs: tuple[Any, ...]
) -> OpenVINODeployed:
    """Compile ``model`` with OpenVINO: a module (converted first) or an
    :class:`~torchslim.lowering.OpenVINOModel` (compiled with ``config``'s settings).

    Raises:
        ExportError: Conversion failed.
        BackendUnavailableError: OpenVINO is not installed.
        TorchslimError: ``model`` is a representation lowered for another runtime.
    """
    lowered = lowered_for(model, OpenVINODeployed.runtime)
    if lowered is not None:
        ov_model = lowered.model
        if not config.dynamic:  # fix the shapes of a (dynamic) pass output to the examples
            ov_model = ov_model.clone()
            ov_model.reshape(
                {i: _ov().PartialShape(list(x.shape)) for i, x in enumerate(example_inputs)}
            )
        return build_from_model(ov_model, config, lowered.input_names)
    module = cast("nn.Module", model)
    converted, convert_seconds = convert(module, example_inputs, config)
    return build_from_model(
        converted, config, input_names_for(example_inputs, module=module), convert_seconds
    )


def default_config(representation: OpenVINOModel) -> OpenVINOConfig:
    """The config an OpenVINO model from a pass runs with when the recipe names no runtime:
    the defaults at the model's own inference precision (OpenVINO's default for NNCF INT8, so
    the float remainder runs as it would for a user compiling the model by hand)."""
    return OpenVINOConfig(precision=Precision(representation.inference_precision))


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
