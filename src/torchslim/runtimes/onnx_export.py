"""The ONNX exporter, kept under its old name: it lives in :mod:`torchslim.lowering.onnx` (shared
by the runtimes and the passes, which never import each other)."""

from __future__ import annotations

from torchslim.lowering.onnx import DEFAULT_OPSET, export_onnx

__all__ = ["DEFAULT_OPSET", "export_onnx"]
