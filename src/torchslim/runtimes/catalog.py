"""The built-in runtimes, registered once. Importing this module imports no backend.

Each runtime's module defines ``build(module, config, example_inputs) -> Deployed`` and
``load(directory) -> Deployed``; its config class (in :mod:`torchslim.runtimes.configs`) selects it.
"""

from __future__ import annotations

from torchslim.runtimes.base import register_runtime
from torchslim.runtimes.configs import (
    EagerConfig,
    ExecuTorchConfig,
    ExportConfig,
    InductorConfig,
    OpenVINOConfig,
    OrtConfig,
    TensorRTConfig,
    TorchScriptConfig,
)

register_runtime(
    "eager",
    "torchslim.runtimes.eager:build",
    config=EagerConfig,
    requires=("torch",),
    tags=("cpu", "cuda", "torch"),
    description="PyTorch eager (inference mode, channels-last option)",
)
register_runtime(
    "inductor",
    "torchslim.runtimes.inductor:build",
    config=InductorConfig,
    requires=("torch",),
    tags=("cpu", "cuda", "torch", "compile"),
    description="torch.compile / Inductor (mode, dynamic, freezing); saves via AOTInductor",
)
register_runtime(
    "torchscript",
    "torchslim.runtimes.torchscript:build",
    config=TorchScriptConfig,
    requires=("torch",),
    tags=("cpu", "cuda", "torch"),
    description="TorchScript trace/script + freeze + optimize_for_inference",
)
register_runtime(
    "export",
    "torchslim.runtimes.exported:build",
    config=ExportConfig,
    requires=("torch",),
    tags=("cpu", "cuda", "torch"),
    description="torch.export program (.pt2), optionally AOTInductor-compiled",
)
register_runtime(
    "onnxruntime",
    "torchslim.runtimes.ort:build",
    config=OrtConfig,
    requires=("onnxruntime", "onnx"),
    tags=("cpu", "cuda", "onnx"),
    description="ONNX Runtime (CPU, CUDA, TensorRT execution providers)",
)
register_runtime(
    "openvino",
    "torchslim.runtimes.ov:build",
    config=OpenVINOConfig,
    requires=("openvino",),
    extra="openvino",
    tags=("cpu", "intel", "bf16"),
    description="OpenVINO (from torch or ONNX; latency/throughput hint; precision; cache)",
)
register_runtime(
    "tensorrt",
    "torchslim.runtimes.tensorrt:build",
    config=TensorRTConfig,
    requires=("onnxruntime",),
    tags=("cuda", "gpu", "fp16"),
    probe="torchslim.runtimes.tensorrt:probe",
    description="TensorRT on an NVIDIA GPU (ONNX Runtime TensorRT provider)",
)
register_runtime(
    "executorch",
    "torchslim.runtimes.executorch:build",
    config=ExecuTorchConfig,
    requires=("executorch",),
    extra="edge",
    tags=("cpu", "edge", "mobile", "xnnpack", "int8"),
    description="ExecuTorch .pte with the XNNPACK delegate (FP32, or INT8 through the XNNPACK "
    "quantizer), run on the host through executorch.runtime",
)
