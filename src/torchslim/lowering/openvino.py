"""Lowering to OpenVINO: the one PyTorch → ``openvino.Model`` conversion and the
:class:`OpenVINOModel` representation.

:func:`convert_to_openvino` converts from the PyTorch module directly (``openvino.convert_model``,
traced under :func:`~torchslim.lowering.program.trace_guard`) or through ONNX
(:func:`~torchslim.lowering.onnx.export_for_runtime`), with dynamic batch (and sequence) axes, and
names the inputs after ``forward``'s parameters.

:class:`OpenVINOModel` is what a pass that lowers to OpenVINO (NNCF quantization) produces: the
``openvino.Model`` and the inference precision it is meant to run at. The ``openvino`` runtime
builds from it; its :meth:`OpenVINOModel.run` compiles it plainly (``ov.Core().compile_model``)
for evaluating a candidate inside a pass.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from torchslim.errors import BackendUnavailableError, ExportError
from torchslim.lowering.program import export_error, input_names_for, prepare_module, trace_guard

if TYPE_CHECKING:
    from torch import nn

__all__ = ["PRECISIONS", "OpenVINOModel", "convert_to_openvino", "openvino_module"]

PRECISIONS = ("default", "f32", "bf16", "f16")
"""Inference precisions an :class:`OpenVINOModel` may ask for (``default``: OpenVINO's choice,
BF16 on CPUs with AVX-512 BF16 / AMX)."""

_OTHERS = "openvino with source='onnx', onnxruntime or inductor"


def openvino_module() -> Any:
    """The ``openvino`` package, or :class:`~torchslim.errors.BackendUnavailableError`."""
    try:
        import openvino as ov
    except ImportError as exc:
        raise BackendUnavailableError("openvino", "openvino", "openvino is not installed") from exc
    return ov


def partial_shapes(example_inputs: Sequence[Any], dynamic: bool) -> list[Any]:
    """``openvino.PartialShape`` per input: batch (and 2-D integer sequence) dynamic."""
    ov = openvino_module()
    shapes = []
    for x in example_inputs:
        dims = list(x.shape)
        if dynamic and dims:
            dims[0] = -1
            if not x.is_floating_point() and len(dims) == 2:
                dims[1] = -1
        shapes.append(ov.PartialShape(dims))
    return shapes


def convert_to_openvino(
    module: nn.Module,
    example_inputs: Sequence[Any],
    *,
    source: str = "torch",
    dynamic: bool = True,
) -> tuple[Any, float]:
    """Convert ``module`` to an ``openvino.Model``; returns it and the conversion time.

    Args:
        module: The model (not modified: a private eval-mode copy is converted).
        example_inputs: One tensor per input.
        source: ``"torch"`` (``openvino.convert_model`` on the module) or ``"onnx"`` (through
            :func:`~torchslim.lowering.onnx.export_for_runtime`).
        dynamic: Dynamic batch (and sequence) axes; ``False`` fixes the example shapes.

    Raises:
        ExportError: Conversion failed (names the op, suggests another runtime).
        BackendUnavailableError: OpenVINO is not installed.
    """
    import torch

    ov = openvino_module()
    start = time.perf_counter()
    work = prepare_module(module)
    if source == "onnx":
        from torchslim.lowering.onnx import export_for_runtime

        with tempfile.TemporaryDirectory(prefix="torchslim-ov-") as tmp:
            path = export_for_runtime(
                work, example_inputs, Path(tmp) / "model.onnx", dynamic=dynamic
            )
            model = ov.Core().read_model(str(path))
            if not dynamic:
                model.reshape({i: s for i, s in enumerate(partial_shapes(example_inputs, False))})
    else:
        try:
            with trace_guard("OpenVINO conversion", _OTHERS), torch.no_grad():
                model = ov.convert_model(
                    work,
                    example_input=tuple(example_inputs),
                    input=partial_shapes(example_inputs, dynamic),
                )
        except ExportError:
            raise
        except Exception as exc:
            raise export_error("OpenVINO conversion", exc, _OTHERS) from exc
    names = input_names_for(example_inputs, module=module)
    for port, name in zip(model.inputs, names, strict=False):
        port.get_tensor().set_names({name})
    return model, time.perf_counter() - start


@dataclass(eq=False)
class OpenVINOModel:
    """A model lowered to an ``openvino.Model``, for the ``openvino`` runtime.

    Attributes:
        model: The ``openvino.Model``.
        input_names: Input names, in call order.
        inference_precision: The precision it is meant to run at, one of :data:`PRECISIONS`:
            ``default`` for NNCF INT8 models (the float remainder runs at OpenVINO's own
            default, as it would for a user compiling the model by hand), ``bf16`` for a BF16
            lowering, else ``f32``. The ``openvino`` runtime's default config for this model
            uses it; an explicit runtime config decides for itself.
        info: Facts about the lowering (e.g. ``{"convert_seconds": 0.4}``).
        runtime: ``"openvino"``, the runtime that builds from it.
    """

    model: Any
    input_names: list[str]
    inference_precision: str = "f32"
    info: dict[str, Any] = field(default_factory=dict)
    runtime: ClassVar[str] = "openvino"
    _compiled: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.inference_precision not in PRECISIONS:
            raise ValueError(
                f"inference_precision must be one of {PRECISIONS}, got {self.inference_precision!r}"
            )

    def compile_properties(self) -> dict[str, Any]:
        """The compile properties of :meth:`run`: latency hint, the torch thread count, and the
        inference precision unless ``default`` (those of the runtime's default config)."""
        import torch

        props: dict[str, Any] = {
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": int(torch.get_num_threads()),
        }
        if self.inference_precision != "default":
            props["INFERENCE_PRECISION_HINT"] = self.inference_precision
        return props

    def run(self, *inputs: Any) -> Any:
        """Reference run on torch tensors: ``ov.Core().compile_model`` on CPU, compiled once.

        For deployment, build the ``openvino`` runtime instead.
        """
        import torch

        from torchslim.compare import pack_outputs

        if self._compiled is None:
            ov = openvino_module()
            self._compiled = ov.Core().compile_model(self.model, "CPU", self.compile_properties())
        compiled = self._compiled
        result = compiled([x.detach().contiguous().cpu().numpy() for x in inputs])
        return pack_outputs(
            [
                torch.from_numpy(result[compiled.output(i)].copy())
                for i in range(len(compiled.outputs))
            ]
        )
