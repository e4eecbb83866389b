"""Typed, frozen configs of the built-in runtimes (light: imports no backend).

Each config selects one runtime (``build(module, OrtConfig(), inputs)`` builds for ONNX Runtime)
and round-trips through :func:`torchslim.config.config_to_dict`. Choices are string enums so they
print and serialise as plain words.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from torchslim.config import config_type

__all__ = [
    "RUNTIME_CONFIGS",
    "CompileMode",
    "EagerConfig",
    "EdgeQuantize",
    "ExecuTorchConfig",
    "ExportConfig",
    "GraphOptLevel",
    "InductorConfig",
    "OpenVINOConfig",
    "OrtConfig",
    "PerformanceHint",
    "Precision",
    "TensorRTConfig",
    "TorchScriptConfig",
    "TraceMethod",
]


class CompileMode(str, enum.Enum):
    """``torch.compile`` modes that make sense for CPU/GPU inference."""

    DEFAULT = "default"
    MAX_AUTOTUNE = "max-autotune"
    MAX_AUTOTUNE_NO_CUDAGRAPHS = "max-autotune-no-cudagraphs"
    REDUCE_OVERHEAD = "reduce-overhead"


class TraceMethod(str, enum.Enum):
    """How TorchScript captures the model."""

    TRACE = "trace"
    SCRIPT = "script"


class GraphOptLevel(str, enum.Enum):
    """ONNX Runtime graph optimisation level."""

    DISABLE = "disable"
    BASIC = "basic"
    EXTENDED = "extended"
    ALL = "all"


class PerformanceHint(str, enum.Enum):
    """OpenVINO performance hint."""

    LATENCY = "latency"
    THROUGHPUT = "throughput"


class Precision(str, enum.Enum):
    """Inference precision of a backend that may compute in reduced precision.

    ``DEFAULT`` lets the backend pick (OpenVINO picks BF16 on CPUs with AVX-512 BF16 or AMX, which
    changes numerics; the parity check then uses the BF16 tolerance and reports it).
    """

    DEFAULT = "default"
    F32 = "f32"
    BF16 = "bf16"
    F16 = "f16"


@config_type("EagerConfig")
@dataclass(frozen=True)
class EagerConfig:
    """Plain PyTorch, under ``torch.inference_mode``.

    Attributes:
        channels_last: Convert weights and 4-D float inputs to channels-last memory format.
        threads: Intra-op threads while the model runs (``None``: leave the process setting).
    """

    channels_last: bool = False
    threads: int | None = None


@config_type("InductorConfig")
@dataclass(frozen=True)
class InductorConfig:
    """``torch.compile`` with the Inductor backend.

    Attributes:
        mode: Compile mode.
        dynamic: ``True`` compiles one graph for all batch sizes; ``False`` specialises per shape
            (recompiling on a new shape); ``None`` lets dynamo decide.
        freezing: Constant-fold weights into the graph (Inductor ``freezing``; set only for this
            compile, never globally). Needs grad disabled, which the runtime ensures.
        fullgraph: Fail instead of falling back to eager on graph breaks.
        threads: Intra-op threads at compile and run time (``None``: the process setting).
            Inductor bakes the thread count into generated CPU kernels.
    """

    mode: CompileMode = CompileMode.DEFAULT
    dynamic: bool | None = False
    freezing: bool = True
    fullgraph: bool = False
    threads: int | None = None


@config_type("TorchScriptConfig")
@dataclass(frozen=True)
class TorchScriptConfig:
    """TorchScript (``torch.jit``).

    Attributes:
        method: Trace with the example inputs, or script the Python source.
        freeze: Inline weights and attributes as constants (``torch.jit.freeze``).
        optimize_for_inference: Run ``torch.jit.optimize_for_inference`` (folds Conv-BN, may
            pre-pack weights for oneDNN); implies freezing.
        threads: Intra-op threads while the model runs.
    """

    method: TraceMethod = TraceMethod.TRACE
    freeze: bool = True
    optimize_for_inference: bool = True
    threads: int | None = None


@config_type("ExportConfig")
@dataclass(frozen=True)
class ExportConfig:
    """``torch.export`` program, optionally compiled ahead of time with AOTInductor.

    Attributes:
        dynamic_batch: Export with a symbolic batch dimension (and sequence for token inputs).
        aot_inductor: Compile the program into an AOTInductor package (a ``.pt2`` with native
            code) instead of running the exported graph eagerly.
        threads: Intra-op threads while the model runs.
    """

    dynamic_batch: bool = True
    aot_inductor: bool = False
    threads: int | None = None


@config_type("OrtConfig")
@dataclass(frozen=True)
class OrtConfig:
    """ONNX Runtime.

    Attributes:
        opset: ONNX opset of the export.
        graph_optimization: Graph optimisation level.
        intra_op_threads: Threads inside an operator (``None``: the torch thread setting, so
            runtimes are compared at equal thread counts; ``0``: ONNX Runtime's default).
        inter_op_threads: Threads across operators (only used with parallel execution).
        parallel_execution: Run independent branches in parallel (``inter_op_threads``).
        providers: Execution providers in priority order; empty picks from ``device``: CPU, or
            CUDA then CPU.
        device: ``"cpu"`` or ``"cuda"``.
        dynamic: Export with dynamic batch (and sequence) axes.
        trt_fp16: With the TensorRT provider: allow FP16 kernels.
        engine_cache_dir: With the TensorRT provider: engine cache directory.
        trt_profile: With the TensorRT provider: ``(min, opt, max)`` shape strings such as
            ``"input:1x3x224x224"`` so one engine covers every batch size in the range (without
            them TensorRT rebuilds an engine for each new shape).
    """

    opset: int = 18
    graph_optimization: GraphOptLevel = GraphOptLevel.ALL
    intra_op_threads: int | None = None
    inter_op_threads: int = 1
    parallel_execution: bool = False
    providers: tuple[str, ...] = ()
    device: str = "cpu"
    dynamic: bool = True
    trt_fp16: bool = True
    engine_cache_dir: str | None = None
    trt_profile: tuple[str, ...] = ()


@config_type("OpenVINOConfig")
@dataclass(frozen=True)
class OpenVINOConfig:
    """OpenVINO.

    Attributes:
        source: Convert from the PyTorch module directly (``"torch"``) or through ONNX
            (``"onnx"``).
        performance_hint: ``latency`` (one request at a time) or ``throughput`` (several streams).
        precision: Inference precision; ``default`` lets OpenVINO choose (BF16 on this kind of
            CPU, which changes numerics and is checked with the BF16 tolerance).
        threads: ``INFERENCE_NUM_THREADS`` (``None``: the torch thread setting).
        cache_dir: Compiled-model cache directory (faster second start); ``None`` disables it.
        device: OpenVINO device name (``"CPU"``, ``"GPU"``).
        dynamic: Dynamic batch (and sequence) axes; ``False`` fixes the example shapes.
    """

    source: str = "torch"
    performance_hint: PerformanceHint = PerformanceHint.LATENCY
    precision: Precision = Precision.F32
    threads: int | None = None
    cache_dir: str | None = None
    device: str = "CPU"
    dynamic: bool = True


@config_type("TensorRTConfig")
@dataclass(frozen=True)
class TensorRTConfig:
    """TensorRT on an NVIDIA GPU, through ONNX Runtime's TensorRT execution provider.

    Attributes:
        fp16: Allow FP16 kernels.
        cache_dir: Engine cache directory (avoids rebuilding engines); ``None`` disables it.
        opset: ONNX opset of the export.
        min_batch: Smallest batch the engine accepts.
        opt_batch: Batch size TensorRT tunes for.
        max_batch: Largest batch the engine accepts.
    """

    fp16: bool = True
    cache_dir: str | None = None
    opset: int = 18
    min_batch: int = 1
    opt_batch: int = 8
    max_batch: int = 64


class EdgeQuantize(str, enum.Enum):
    """What the ``executorch`` runtime quantizes before lowering to XNNPACK."""

    NONE = "none"
    INT8 = "int8"


@config_type("ExecuTorchConfig")
@dataclass(frozen=True)
class ExecuTorchConfig:
    """ExecuTorch: a ``.pte`` program with the XNNPACK delegate, run through ``executorch.runtime``.

    ExecuTorch's thread pool is process-wide, one thread per core; it is not configurable here
    (see :func:`torchslim.runtimes.executorch.pool_threads`).

    Attributes:
        quantize: ``none`` (FP32) or ``int8`` (static INT8 through the XNNPACK quantizer, PT2E
            flow, calibrated on ``calib``).
        calib: Calibration data source for ``int8`` (e.g. ``torchslim:fashion_mnist``;
            bundled data sets use their training split).
        num_calibration_samples: Calibration samples used (a seeded subset).
        per_channel: Per-output-channel INT8 weight scales (per-tensor when false).
        dynamic_batch: Export with a symbolic batch axis bounded by ``max_batch``; when the
            program cannot keep it dynamic (or when false, or ``max_batch`` is 1) it is
            exported for batch 1 (recorded); larger batches then run as successive calls.
        max_batch: Largest batch a dynamic program accepts; memory is planned for it, so the
            planned arena grows with it.
        seed: Seed of the calibration subset.
    """

    quantize: EdgeQuantize = EdgeQuantize.NONE
    calib: str | None = None
    num_calibration_samples: int = 300
    per_channel: bool = True
    dynamic_batch: bool = True
    max_batch: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        from torchslim.errors import TorchslimError

        try:
            object.__setattr__(self, "quantize", EdgeQuantize(self.quantize))
        except ValueError:
            raise TorchslimError(
                f"Unknown ExecuTorch quantization '{self.quantize}'.", "Use none or int8."
            ) from None
        if self.max_batch < 1 or self.num_calibration_samples < 1:
            raise TorchslimError(
                "max_batch and num_calibration_samples must be at least 1.",
                "Give e.g. max_batch=8, num_calibration_samples=300.",
            )


RUNTIME_CONFIGS: dict[str, type] = {
    "eager": EagerConfig,
    "inductor": InductorConfig,
    "torchscript": TorchScriptConfig,
    "export": ExportConfig,
    "onnxruntime": OrtConfig,
    "openvino": OpenVINOConfig,
    "tensorrt": TensorRTConfig,
    "executorch": ExecuTorchConfig,
}
"""Runtime name → its config class (defaults build a sensible FP32 runtime)."""
