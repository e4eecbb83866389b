"""Lowering shared by passes and runtimes: the one ``torch.export`` policy, ONNX and OpenVINO
conversion, and the lowered representations a pass may produce.

Passes and runtimes never import each other; both use this package.

* :mod:`~torchslim.lowering.program` — :func:`export_program` is the only place torchslim calls
  ``torch.export.export`` on a user model: non-strict, with the batch axis dynamic (and the
  sequence axis for 2-D integer token inputs), traced at batch ≥ 2 so exporters keep the batch
  symbolic. Failures become a short :class:`~torchslim.errors.ExportError` naming the op or the
  user's line (:func:`export_error`).
* :mod:`~torchslim.lowering.onnx` — :func:`export_onnx` / :func:`export_for_runtime` and
  :class:`OnnxModel` (an ``.onnx`` file, for the ``onnxruntime`` runtime).
* :mod:`~torchslim.lowering.openvino` — :func:`convert_to_openvino` and :class:`OpenVINOModel`
  (an ``openvino.Model``, for the ``openvino`` runtime).

A pass returns a PyTorch module or one of these representations; the recipe's runtime builds from
it (``runtimes.build(representation, config, example_inputs)``). Each representation names its
runtime (``.runtime``) and has a small reference runner (``.run(*tensors)``) so a pass can
evaluate a candidate without importing a runtime.
"""

from __future__ import annotations

from typing import Any

from torchslim.lowering.onnx import DEFAULT_OPSET, OnnxModel, export_for_runtime, export_onnx
from torchslim.lowering.openvino import OpenVINOModel, convert_to_openvino
from torchslim.lowering.program import (
    dynamic_shapes_for,
    export_error,
    export_program,
    input_names_for,
    min_batch,
    prepare_module,
    quiet,
    trace_guard,
)

__all__ = [
    "DEFAULT_OPSET",
    "LOWERED",
    "OnnxModel",
    "OpenVINOModel",
    "convert_to_openvino",
    "dynamic_shapes_for",
    "export_error",
    "export_for_runtime",
    "export_onnx",
    "export_program",
    "input_names_for",
    "is_lowered",
    "min_batch",
    "prepare_module",
    "quiet",
    "reference_runner",
    "trace_guard",
]

LOWERED: tuple[type, ...] = (OnnxModel, OpenVINOModel)
"""The lowered representation types (everything a pass returns that is not a PyTorch module)."""


def is_lowered(obj: Any) -> bool:
    """True when ``obj`` is a lowered representation (:class:`OnnxModel`, :class:`OpenVINOModel`)."""
    return isinstance(obj, LOWERED)


def reference_runner(obj: Any) -> Any:
    """What evaluates ``obj``: a representation's ``run``, else ``obj`` itself (a module)."""
    return obj.run if is_lowered(obj) else obj
