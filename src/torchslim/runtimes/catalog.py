"""The built-in runtimes, registered once. Importing this module imports no backend."""

from __future__ import annotations

# Registrations are added here as backends land, e.g.:
# register_runtime("onnxruntime", "torchslim.runtimes.onnxruntime:build", config=OrtConfig,
#                  requires=("onnxruntime",), description="ONNX Runtime (CPU, CUDA, TensorRT EPs)")
