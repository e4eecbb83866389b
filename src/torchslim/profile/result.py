"""Result types of :func:`torchslim.profile.profile` and the small vocabulary they share.

Units: times in ms **per call** (averaged over the profiled calls), shares as fractions of the
summed per-layer time, memory in MB (10⁶ bytes), FLOPs per call.

``ProfileResult.to_dict()`` is what ``torchslim profile --json`` prints. Its keys:

======================  ==========================================================================
``source``              the model source string
``runtime``             ``eager``, ``inductor``, ``onnxruntime`` or ``openvino``
``batch`` ``threads``   batch size and intra-op threads profiled at
``iterations``          profiled calls (after warm-up); times are per call
``latency_ms``          end-to-end median latency without the profiler (what ``bench`` measures)
``profiled_ms``         median wall time per call while the profiler ran
``layer_sum_ms``        the per-layer self times summed (the runtime's own counters)
``overhead_ms``         ``latency_ms - layer_sum_ms`` (≥ 0): per-call framework overhead
``overhead_share``      ``overhead_ms / latency_ms``
``profiler_overhead``   ``profiled_ms / latency_ms - 1``: what profiling itself costs
``flops``               FLOPs per call (multiply-add = 2), when known
``peak_memory_mb``      eager: peak allocation growth of one call (profiler memory events)
``peak_gflops``         the machine's measured GEMM peak used for ``percent_of_peak`` (or null)
``precision``           per precision (``fp32``, ``int8``, ``bf16`` …): ``layers``, ``ms``, ``share``
``layers``              every layer, slowest first: ``name``, ``type``, ``kind``, ``module``,
                        ``self_ms``, ``total_ms``, ``calls``, ``share``, ``flops``,
                        ``gflops_per_s``, ``percent_of_peak``, ``peak_memory_mb``, ``precision``,
                        ``exec_type``, ``nodes``, ``shapes``
``modules``             eager/ONNX Runtime/OpenVINO: time per ``nn.Module`` (every level of the
                        hierarchy, ``total_ms`` includes children; ``""`` is the whole model)
``operators``           time per operator type: ``name``, ``self_ms``, ``total_ms``, ``calls``,
                        ``share``, ``flops``, ``shapes``
``findings``            bottleneck advice: ``id``, ``severity``, ``title``, ``detail``,
                        ``recommendation``, ``numbers``
``trace``               the Chrome-trace file written (``--trace``), or null
``table``               the per-layer latency table saved for this machine and model, or null
``machine``             fingerprint of the machine it ran on
``notes``               caveats (e.g. module attribution unavailable in a compiled graph)
======================  ==========================================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "KINDS",
    "Advice",
    "LayerTime",
    "OperatorTime",
    "ProfileResult",
    "op_kind",
    "precision_name",
]

KINDS = ("conv", "matmul", "reorder", "norm", "activation", "pool", "elementwise", "other")
"""What a layer or operator does, for the advice rules (see :func:`op_kind`)."""

_KIND_WORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "reorder",
        ("reorder", "transpose", "permute", "contiguous", "copy", "clone", "aten::to", "convert"),
    ),
    ("conv", ("conv",)),
    (
        "matmul",
        ("linear", "gemm", "matmul", "fullyconnected", "addmm", "aten::mm", "bmm", "einsum"),
    ),
    ("norm", ("norm", "batchnorm", "layernorm", "mvn")),
    ("pool", ("pool", "reducemean", "mean")),
    (
        "activation",
        ("relu", "gelu", "sigmoid", "tanh", "softmax", "silu", "swish", "hardtanh", "clamp"),
    ),
    ("elementwise", ("add", "mul", "eltwise", "sub", "div")),
)


def op_kind(type_name: str) -> str:
    """Classify a layer/operator type (``Conv2d``, ``aten::addmm``, ``Transpose``, ``Reorder``).

    Returns:
        One of :data:`KINDS`.
    """
    t = type_name.lower()
    for kind, words in _KIND_WORDS:
        if any(w in t for w in words):
            return kind
    return "other"


def precision_name(text: str | None) -> str | None:
    """Normalise a runtime's precision text (``I8``, ``u8``, ``f32``, ``bf16``, ``float``) to
    ``int8``, ``fp32``, ``bf16``, ``fp16`` (``None`` when unknown)."""
    if not text:
        return None
    t = text.lower()
    if any(w in t for w in ("i8", "u8", "int8", "uint8")):
        return "int8"
    if "bf16" in t or "bfloat16" in t:
        return "bf16"
    if "f16" in t or "float16" in t:
        return "fp16"
    if "f32" in t or "float" in t or "fp32" in t:
        return "fp32"
    if "i32" in t or "i64" in t or "int64" in t or "int32" in t:
        return "int"
    return None


@dataclass(frozen=True)
class LayerTime:
    """One layer as the runtime ran it.

    Attributes:
        name: Eager: the module path (``layer3.0.conv1``, ``""`` for the model itself); ONNX
            Runtime: the node name in the optimised graph; OpenVINO: the compiled layer name.
        type: Module class (``Conv2d``), ONNX op type (``Conv``, ``QLinearConv``) or OpenVINO
            layer type (``Convolution``).
        kind: :func:`op_kind` of ``type``.
        module: The ``nn.Module`` path it maps to (``None`` when unknown).
        self_ms: Time in this layer itself per call (eager: excluding child modules).
        total_ms: Time including child modules (equal to ``self_ms`` for runtime layers).
        calls: Calls per model call.
        share: ``self_ms`` as a fraction of the summed self times.
        flops: FLOPs per call, when known.
        gflops_per_s: Achieved GFLOP/s (``flops / self_ms``).
        percent_of_peak: ``gflops_per_s`` against the machine's GEMM peak for ``precision``.
        peak_memory_mb: Eager: peak allocation growth while the layer ran.
        precision: Precision the kernel ran in (``fp32``, ``int8``, ``bf16``), when reported.
        exec_type: OpenVINO: the kernel (``brgconv_avx512_I8``); ONNX Runtime: the provider.
        nodes: The graph nodes fused into it (ONNX Runtime / OpenVINO original names).
        shapes: Input shapes, as the profiler recorded them.
    """

    name: str
    type: str
    self_ms: float
    total_ms: float
    calls: int = 1
    share: float = 0.0
    module: str | None = None
    kind: str = "other"
    flops: int | None = None
    gflops_per_s: float | None = None
    percent_of_peak: float | None = None
    peak_memory_mb: float | None = None
    precision: str | None = None
    exec_type: str | None = None
    nodes: tuple[str, ...] = ()
    shapes: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly copy."""
        d = asdict(self)
        d["nodes"] = list(self.nodes)
        return d


@dataclass(frozen=True)
class OperatorTime:
    """Time per operator type (``aten::conv2d``, ``Conv``, ``Convolution``), all calls together.

    Attributes:
        name: Operator name.
        self_ms: Self time per model call.
        total_ms: Time including the operators it called, per model call.
        calls: Calls per model call.
        share: ``self_ms`` as a fraction of the summed self times.
        flops: FLOPs per model call, when the profiler knows them.
        shapes: The most frequent input shapes.
    """

    name: str
    self_ms: float
    total_ms: float
    calls: int
    share: float = 0.0
    flops: int | None = None
    shapes: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly copy."""
        return asdict(self)


@dataclass(frozen=True)
class Advice:
    """One bottleneck finding, in plain words, with its numbers and the next step.

    Attributes:
        id: Stable identifier (``conv-share``, ``reorder-share``, ``float-in-int8``,
            ``call-overhead``, ``matmul-share``).
        severity: ``info`` (an opportunity) or ``warn`` (time lost that need not be).
        title: One line with the number (``3 convolution layers take 61% of the time``).
        detail: The evidence (which layers, how many ms).
        recommendation: The next step, concretely.
        numbers: The numbers behind it (shares as fractions, times in ms).
    """

    id: str
    severity: str
    title: str
    detail: str = ""
    recommendation: str = ""
    numbers: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly copy."""
        d = asdict(self)
        d["numbers"] = dict(self.numbers)
        return d

    def to_finding(self) -> Any:
        """The same item as a :class:`torchslim.doctor.Finding` (for ``inspect``'s checklist)."""
        from torchslim.doctor import Finding

        sev = self.severity if self.severity in ("info", "warn", "fail") else "info"
        return Finding(
            f"profile-{self.id}",
            sev,  # type: ignore[arg-type]
            self.title,
            self.detail,
            self.recommendation,
        )


@dataclass(frozen=True)
class ProfileResult:
    """Where the time and memory of one model call go, in one runtime (see the module docstring
    for the meaning and units of every field; ``to_dict()`` is the ``--json`` output)."""

    source: str
    runtime: str
    batch: int
    threads: int
    iterations: int
    layers: tuple[LayerTime, ...]
    operators: tuple[OperatorTime, ...]
    latency_ms: float
    profiled_ms: float
    layer_sum_ms: float
    modules: tuple[LayerTime, ...] = ()
    flops: int | None = None
    peak_memory_mb: float | None = None
    peak_gflops: float | None = None
    precision: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    findings: tuple[Advice, ...] = ()
    trace: str | None = None
    table: str | None = None
    machine: str | None = None
    notes: tuple[str, ...] = ()

    @property
    def overhead_ms(self) -> float:
        """Per-call time outside the layers: ``latency_ms - layer_sum_ms``, at least 0."""
        return max(0.0, self.latency_ms - self.layer_sum_ms)

    @property
    def overhead_share(self) -> float:
        """:attr:`overhead_ms` as a fraction of :attr:`latency_ms`."""
        return self.overhead_ms / self.latency_ms if self.latency_ms > 0 else 0.0

    @property
    def profiler_overhead(self) -> float:
        """What profiling costs: ``profiled_ms / latency_ms - 1`` (0.3 = 30% slower)."""
        return self.profiled_ms / self.latency_ms - 1.0 if self.latency_ms > 0 else 0.0

    def top(self, k: int = 10) -> tuple[LayerTime, ...]:
        """The ``k`` slowest layers (by self time)."""
        return self.layers[:k]

    def slowest(self) -> LayerTime:
        """The slowest layer."""
        return self.layers[0]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (what ``torchslim profile --json`` prints)."""
        return {
            "source": self.source,
            "runtime": self.runtime,
            "batch": self.batch,
            "threads": self.threads,
            "iterations": self.iterations,
            "latency_ms": self.latency_ms,
            "profiled_ms": self.profiled_ms,
            "layer_sum_ms": self.layer_sum_ms,
            "overhead_ms": self.overhead_ms,
            "overhead_share": self.overhead_share,
            "profiler_overhead": self.profiler_overhead,
            "flops": self.flops,
            "peak_memory_mb": self.peak_memory_mb,
            "peak_gflops": self.peak_gflops,
            "precision": {k: dict(v) for k, v in self.precision.items()},
            "layers": [x.to_dict() for x in self.layers],
            "modules": [x.to_dict() for x in self.modules],
            "operators": [x.to_dict() for x in self.operators],
            "findings": [f.to_dict() for f in self.findings],
            "trace": self.trace,
            "table": self.table,
            "machine": self.machine,
            "notes": list(self.notes),
        }


JSON_KEYS = (
    "source",
    "runtime",
    "batch",
    "threads",
    "iterations",
    "latency_ms",
    "profiled_ms",
    "layer_sum_ms",
    "overhead_ms",
    "overhead_share",
    "profiler_overhead",
    "flops",
    "peak_memory_mb",
    "peak_gflops",
    "precision",
    "layers",
    "modules",
    "operators",
    "findings",
    "trace",
    "table",
    "machine",
    "notes",
)
"""The top-level keys of :meth:`ProfileResult.to_dict` (documented in the module docstring)."""


@dataclass
class RuntimeProfile:
    """What one runtime's profiler produced, before shares, advice and the latency table
    (internal to :mod:`torchslim.profile`; :func:`~torchslim.profile.profile` turns it into a
    :class:`ProfileResult`).

    Attributes:
        layers: Per-layer times (shares not yet computed).
        operators: Per-operator times.
        profiled_ms: Median wall time per call while profiling.
        iterations: Profiled calls.
        modules: Per-module totals (eager: every level of the hierarchy).
        peak_memory_mb: Peak allocation growth per call, when the profiler records memory.
        flops: FLOPs per call counted by the profiler, when known.
        notes: Caveats to show the user.
        trace: The Chrome-trace file written, if any.
    """

    layers: list[LayerTime]
    operators: list[OperatorTime]
    profiled_ms: float
    iterations: int
    modules: list[LayerTime] = field(default_factory=list)
    peak_memory_mb: float | None = None
    flops: int | None = None
    notes: list[str] = field(default_factory=list)
    trace: str | None = None
