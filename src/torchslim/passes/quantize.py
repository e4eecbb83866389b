"""Quantization pass: one :class:`QuantizeConfig`, one verb, several methods and backends.

Methods (``QuantizeConfig.method``):

=============  ===============================================================================
dynamic        INT8 weights, activations quantized on the fly (Linear/LSTM/GRU; Conv too in ORT)
static         INT8 weights and activations from calibration data (min-max, percentile,
               entropy/KL, MSE), per-tensor or per-channel weights
weight_only    INT8 / INT4 weights, float activations (Linear-heavy models)
fp16 / bf16    half-precision weights and compute
qat            fake-quantize, fine-tune a few steps on training data, convert to INT8
=============  ===============================================================================

Backends (``QuantizeConfig.backend``): ``torch`` (torch.ao / PT2E + X86InductorQuantizer /
torchao), ``onnxruntime`` (``onnxruntime.quantization``, QDQ) and ``openvino`` (NNCF).
What the pass returns is a model representation, never a runtime: a PyTorch module (torch), an
:class:`~torchslim.lowering.OnnxModel` (onnxruntime) or an
:class:`~torchslim.lowering.OpenVINOModel` (openvino); the recipe's runtime builds from it.
Which method runs on which backend is a small registry (:data:`QUANT_METHODS`, the same registry
mechanism as passes and runtimes), so tests and listings are generated from it.

Accuracy-aware mode: with ``max_drop`` set and evaluation data in the context, the pass measures
the metric drop, and when it is over budget ranks the layers by their own quantization error and
bisects on how many of the most sensitive to keep in float, all from one calibration (a
:class:`QuantSession`: calibrate once, build many) and within ``time_budget_s`` (see
:mod:`torchslim.passes.quant_accuracy`). It raises :class:`~torchslim.errors.AccuracyBudgetError`
with the best result when nothing meets the budget or the time runs out first — a model outside
the budget is never returned as if it passed.

Importing this module imports no backend.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torchslim._registry import Entry, Registry
from torchslim.config import config_type
from torchslim.errors import BackendUnavailableError, DataError, TorchslimError

if TYPE_CHECKING:
    from torch import nn

    from torchslim.data import DataSet
    from torchslim.passes.base import PassContext, PassResult

__all__ = [
    "QUANT_METHODS",
    "Calibration",
    "QuantBackend",
    "QuantMethod",
    "QuantSession",
    "QuantizeConfig",
    "calibration_set",
    "list_quant_methods",
    "module_taps",
    "open_session",
    "quant_entry",
    "quantizable_layers",
    "quantize_once",
]


class QuantMethod(str, enum.Enum):
    """What gets quantized and how."""

    DYNAMIC = "dynamic"
    STATIC = "static"
    WEIGHT_ONLY = "weight_only"
    FP16 = "fp16"
    BF16 = "bf16"
    QAT = "qat"


class QuantBackend(str, enum.Enum):
    """Which library quantizes (and runs) the model."""

    TORCH = "torch"
    ONNXRUNTIME = "onnxruntime"
    OPENVINO = "openvino"


class Calibration(str, enum.Enum):
    """How activation ranges are chosen from calibration data (static quantization).

    ``auto`` picks the backend's recommended method: mse (histogram) for torch, minmax in ONNX
    Runtime (with a moving average over batches for transformers), NNCF's defaults in OpenVINO.
    """

    AUTO = "auto"
    MINMAX = "minmax"
    PERCENTILE = "percentile"
    ENTROPY = "entropy"
    MSE = "mse"


_ALIASES = {
    "weight-only": "weight_only",
    "ort": "onnxruntime",
    "ov": "openvino",
    "kl": "entropy",
    "min-max": "minmax",
    "histogram": "mse",
    "pytorch": "torch",
}


def _enum(cls: type[enum.Enum], value: Any) -> Any:
    if isinstance(value, cls):
        return value
    text = str(value).strip().lower()
    text = _ALIASES.get(text, text)
    try:
        return cls(text)
    except ValueError:
        raise TorchslimError(
            f"Unknown {cls.__name__} '{value}'.",
            f"Use one of: {', '.join(m.value for m in cls)}.",  # type: ignore[attr-defined]
        ) from None


@config_type("QuantizeConfig")
@dataclass(frozen=True)
class QuantizeConfig:
    """Configuration of one quantization.

    Attributes:
        method: dynamic, static, weight_only, fp16, bf16 or qat.
        backend: torch, onnxruntime or openvino.
        calibration: Activation range method for static/QAT: auto (the backend's recommended
            one), minmax, percentile, entropy (KL) or mse. Not every backend offers every method (an error names the alternatives).
        percentile: Percentile for ``calibration="percentile"`` (e.g. 99.99).
        per_channel: Per-output-channel weight scales (per-tensor when false).
        symmetric_activations: Symmetric (signed) activation ranges instead of asymmetric.
        num_calibration_samples: How many calibration samples to use (a seeded, stratified
            subset when the data holds more).
        weight_bits: 8 or 4 (4 only for ``weight_only``).
        group_size: Group size for 4-bit weights.
        qat_steps: Fine-tuning steps for QAT.
        qat_lr: Learning rate for QAT.
        qat_batch_size: Batch size for QAT.
        max_drop: Accuracy budget: the largest allowed drop of the task metric, in points
            (1.0 = one percentage point of top-1), or in percent of the baseline when
            ``relative``. ``None`` disables accuracy-aware fallback. On data without labels the
            budget applies to top-1 agreement with the FP32 model.
        relative: Interpret ``max_drop`` as a percentage of the baseline metric.
        max_float_layers: Accuracy-aware mode keeps at most this many layers in float before
            giving up (``None``: no limit).
        time_budget_s: Accuracy-aware mode's time limit in seconds (calibration, sensitivity and
            search together; ``None``: no limit). When it runs out before the accuracy budget is
            met, :class:`~torchslim.errors.AccuracyBudgetError` carries the best result reached.
        ignored_layers: Module names (``model.named_modules()``) kept in float.
        transformer: Use transformer-aware settings (quantize MatMul/Linear only, keep
            Softmax/LayerNorm/GELU in float). ``None`` detects attention layers.
        compile: torch backend, static/QAT, when the recipe names no runtime: run the INT8
            graph on the Inductor runtime (``InductorConfig()``, oneDNN INT8 kernels: the fast
            path); when false it runs eagerly (reference kernels, slow). Read by the pipeline
            when it picks the runtime; the pass itself never compiles (it returns the graph).
        seed: Seed for calibration subsets and QAT.
    """

    method: QuantMethod = QuantMethod.DYNAMIC
    backend: QuantBackend = QuantBackend.TORCH
    calibration: Calibration = Calibration.AUTO
    percentile: float = 99.99
    per_channel: bool = True
    symmetric_activations: bool = False
    num_calibration_samples: int = 300
    weight_bits: int = 8
    group_size: int = 128
    qat_steps: int = 200
    qat_lr: float = 1e-5
    qat_batch_size: int = 64
    max_drop: float | None = None
    relative: bool = False
    max_float_layers: int | None = None
    time_budget_s: float | None = 300.0
    ignored_layers: tuple[str, ...] = ()
    transformer: bool | None = None
    compile: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "method", _enum(QuantMethod, self.method))
        object.__setattr__(self, "backend", _enum(QuantBackend, self.backend))
        object.__setattr__(self, "calibration", _enum(Calibration, self.calibration))
        object.__setattr__(self, "ignored_layers", tuple(self.ignored_layers))
        if not 50.0 < float(self.percentile) <= 100.0:
            raise TorchslimError(
                f"percentile must be in (50, 100], got {self.percentile}.", "Try 99.99."
            )
        if self.weight_bits not in (4, 8):
            raise TorchslimError(f"weight_bits must be 8 or 4, got {self.weight_bits}.")
        if self.weight_bits == 4 and self.method is not QuantMethod.WEIGHT_ONLY:
            raise TorchslimError(
                "4-bit weights are only offered for method 'weight_only'.",
                "Use --method weight-only --bits 4, or 8 bits for the other methods.",
            )
        if self.num_calibration_samples < 1:
            raise TorchslimError("num_calibration_samples must be at least 1.")
        if self.group_size < 1 or self.qat_steps < 0 or self.qat_batch_size < 1:
            raise TorchslimError("group_size, qat_steps and qat_batch_size must be positive.")
        if self.max_drop is not None and (not math.isfinite(self.max_drop) or self.max_drop < 0):
            raise TorchslimError(
                f"max_drop must be a non-negative number, got {self.max_drop}.",
                "Give the largest acceptable accuracy drop in points, e.g. --max-drop 1.0.",
            )
        if self.time_budget_s is not None:
            object.__setattr__(self, "time_budget_s", float(self.time_budget_s))
            if math.isnan(self.time_budget_s) or self.time_budget_s <= 0:
                raise TorchslimError(
                    f"time_budget_s must be a positive number of seconds, got {self.time_budget_s}.",
                    "Give e.g. --time-budget 5m (or None / --time-budget none for no limit).",
                )

    @property
    def name(self) -> str:
        """``method/backend``, the key of :data:`QUANT_METHODS`."""
        return f"{self.method.value}/{self.backend.value}"

    def with_ignored(self, layers: tuple[str, ...]) -> QuantizeConfig:
        """A copy with ``layers`` added to ``ignored_layers``."""
        from dataclasses import replace

        merged = tuple(dict.fromkeys((*self.ignored_layers, *layers)))
        return replace(self, ignored_layers=merged)


# ------------------------------------------------------------------------------------------------
# Which method runs on which backend: one registry entry each (lazy targets, no backend imported).
# ------------------------------------------------------------------------------------------------

QUANT_METHODS: Registry[Any] = Registry("quantization method")

_CALIB = ("calibration_data",)


def _reg(
    method: QuantMethod,
    backend: QuantBackend,
    target: str,
    *,
    needs: tuple[str, ...] = (),
    requires: tuple[str, ...] = (),
    extra: str | None = None,
    tags: tuple[str, ...] = (),
    description: str = "",
) -> None:
    QUANT_METHODS.register(
        Entry(
            f"{method.value}/{backend.value}",
            target,
            None,
            requires,
            extra,
            needs,
            tags,
            description,
        )
    )


_T = "torchslim.passes.quant_torch"
_O = "torchslim.passes.quant_ort"
_V = "torchslim.passes.quant_openvino"
_M, _B = QuantMethod, QuantBackend
_reg(
    _M.DYNAMIC,
    _B.TORCH,
    f"{_T}:quantize_dynamic",
    tags=("int8",),
    description="torch.ao dynamic INT8 (Linear, LSTM, GRU); Conv stays float",
)
_reg(
    _M.STATIC,
    _B.TORCH,
    f"{_T}:quantize_static",
    needs=_CALIB,
    tags=("int8", "inductor"),
    description="PT2E + X86InductorQuantizer (runs on the inductor runtime)",
)
_reg(
    _M.WEIGHT_ONLY,
    _B.TORCH,
    f"{_T}:quantize_weight_only",
    requires=("torchao",),
    tags=("int8", "int4"),
    description="torchao INT8/INT4 weight-only Linear",
)
_reg(
    _M.FP16,
    _B.TORCH,
    f"{_T}:quantize_half",
    tags=("fp16",),
    description="FP16 weights and compute (slow on CPUs without native FP16)",
)
_reg(
    _M.BF16,
    _B.TORCH,
    f"{_T}:quantize_half",
    tags=("bf16",),
    description="BF16 weights and compute (fast only with AVX-512 BF16 / AMX)",
)
_reg(
    _M.QAT,
    _B.TORCH,
    f"{_T}:quantize_qat",
    needs=("training_data",),
    tags=("int8", "inductor"),
    description="PT2E QAT: fake-quant, fine-tune, convert (runs on the inductor runtime)",
)
_reg(
    _M.DYNAMIC,
    _B.ONNXRUNTIME,
    f"{_O}:quantize_dynamic",
    requires=("onnxruntime",),
    tags=("int8",),
    description="ONNX Runtime quantize_dynamic (MatMul/Gemm/Conv)",
)
_reg(
    _M.STATIC,
    _B.ONNXRUNTIME,
    f"{_O}:quantize_static",
    needs=_CALIB,
    requires=("onnxruntime",),
    tags=("int8",),
    description="ONNX Runtime QDQ quantize_static (MinMax/Percentile/Entropy)",
)
_reg(
    _M.STATIC,
    _B.OPENVINO,
    f"{_V}:quantize_static",
    needs=_CALIB,
    requires=("openvino", "nncf"),
    extra="openvino",
    tags=("int8",),
    description="OpenVINO INT8 through nncf.quantize",
)
_reg(
    _M.WEIGHT_ONLY,
    _B.OPENVINO,
    f"{_V}:quantize_weight_only",
    requires=("openvino", "nncf"),
    extra="openvino",
    tags=("int8", "int4"),
    description="OpenVINO INT8/INT4 weights through nncf.compress_weights",
)
_reg(
    _M.BF16,
    _B.OPENVINO,
    f"{_V}:quantize_half",
    requires=("openvino",),
    extra="openvino",
    tags=("bf16",),
    description="OpenVINO with BF16 inference precision",
)


def list_quant_methods() -> list[Entry]:
    """Every registered ``method/backend`` combination (importing no backend)."""
    return QUANT_METHODS.list()


def quant_entry(config: QuantizeConfig) -> Entry:
    """The registry entry for ``config``, or a clear error listing what the backend offers."""
    if config.name not in QUANT_METHODS:
        offered = [
            e.name.split("/")[0]
            for e in QUANT_METHODS
            if e.name.endswith("/" + config.backend.value)
        ]
        backends = [
            e.name.split("/")[1]
            for e in QUANT_METHODS
            if e.name.startswith(config.method.value + "/")
        ]
        raise TorchslimError(
            f"Method '{config.method.value}' is not offered by backend '{config.backend.value}'.",
            f"Backend '{config.backend.value}' offers: {', '.join(offered)}; method "
            f"'{config.method.value}' runs on: {', '.join(backends) or 'none'}.",
        )
    return QUANT_METHODS.get(config.name)


# ------------------------------------------------------------------------------------------------
# Helpers shared by the backends
# ------------------------------------------------------------------------------------------------

_QUANTIZABLE = ("Linear", "Conv1d", "Conv2d", "Conv3d", "LSTM", "GRU", "ConvTranspose2d")


def quantizable_layers(module: nn.Module, kinds: tuple[str, ...] = _QUANTIZABLE) -> list[str]:
    """Names of the modules a quantizer may convert (Linear, Conv, LSTM/GRU), in call order."""
    return [n for n, m in module.named_modules() if n and type(m).__name__ in kinds]


def is_transformer(module: nn.Module) -> bool:
    """True when the model holds attention layers (transformer-aware settings apply)."""
    for m in module.modules():
        name = type(m).__name__.lower()
        if "attention" in name or "transformer" in name:
            return True
    return False


def calibration_set(ctx: PassContext, config: QuantizeConfig, *, what: str = "static") -> DataSet:
    """The calibration samples for ``config`` (seeded subset), checked for NaN/Inf.

    Raises:
        TorchslimError: No calibration data (suggests dynamic or synthetic calibration).
        DataError: NaN/Inf in the data.
    """
    data = ctx.calib
    if data is None:
        raise TorchslimError(
            f"{what.capitalize()} quantization needs calibration data.",
            "Give --calib DATA (e.g. torchslim:fashion_mnist?split=train), use --method dynamic "
            "(no calibration), or calibrate on synthetic data (--calib synthetic) for a "
            "fidelity-only result.",
        )
    data.check_finite()
    if len(data) == 0:
        raise DataError(f"Calibration data '{data.name}' is empty.", "Give at least one sample.")
    return data.take(config.num_calibration_samples, seed=config.seed)


def fold_batchnorm(module: nn.Module, inputs: tuple[Any, ...]) -> nn.Module:
    """A copy of ``module`` with BatchNorm folded into the preceding Conv/Linear.

    Backends fold BatchNorm anyway; doing it first keeps every Conv/MatMul named after its
    PyTorch module in the exported graph, so per-layer reports and ignored layers map correctly.
    """
    from torchslim.passes.base import PassContext, apply_pass
    from torchslim.passes.graph import FuseConfig

    return apply_pass(module, FuseConfig(), PassContext(example_inputs=inputs)).module  # type: ignore[no-any-return]


def example_inputs(
    ctx: PassContext, data: DataSet | None = None, batch: int = 2
) -> tuple[Any, ...]:
    """Example inputs (batch ``batch``) from the context or from ``data``."""
    if ctx.example_inputs is not None or ctx.input_spec is not None:
        xs = ctx.inputs()
    elif data is not None:
        xs = tuple(x[:batch] for x in data.inputs)
    elif ctx.calib is not None:
        xs = tuple(x[:batch] for x in ctx.calib.inputs)
    elif ctx.eval is not None:
        xs = tuple(x[:batch] for x in ctx.eval.inputs)
    else:
        raise TorchslimError(
            "Quantization needs example inputs to trace the model.",
            "Give calibration data (--calib), or --input-shape.",
        )
    if xs and len(xs[0]) < batch:
        xs = tuple(x.repeat(batch, *([1] * (x.dim() - 1)))[:batch] for x in xs)
    return tuple(x[:batch] for x in xs)


def _checked_entry(config: QuantizeConfig, ctx: PassContext) -> Entry:
    """The registry entry for ``config`` once its backend and data are known to be there."""
    entry = quant_entry(config)
    if not entry.available():
        missing = [
            m for m in entry.requires if __import__("importlib.util").util.find_spec(m) is None
        ]
        raise BackendUnavailableError(
            config.backend.value,
            entry.extra,
            f"method '{config.method.value}' needs {', '.join(missing)}",
        )
    if "calibration_data" in entry.needs:
        calibration_set(ctx, config, what=config.method.value)
    if "training_data" in entry.needs and ctx.train is None:
        raise TorchslimError(
            "Quantization-aware training needs training data.",
            "Give --train DATA (e.g. torchslim:fashion_mnist?split=train), or use --method static.",
        )
    if ctx.train is not None and "training_data" in entry.needs:
        ctx.train.check_finite()
    return entry


def _set_report_defaults(result: PassResult, config: QuantizeConfig) -> PassResult:
    result.report.setdefault("method", config.method.value)
    result.report.setdefault("backend", config.backend.value)
    result.report.setdefault("ignored_layers", list(config.ignored_layers))
    return result


def quantize_once(module: nn.Module, config: QuantizeConfig, ctx: PassContext) -> PassResult:
    """Run one quantization (no accuracy-aware search) on ``module`` (modified in place).

    Raises:
        TorchslimError: Unsupported combination, missing data, or backend not installed.
    """
    handler = _checked_entry(config, ctx).load()
    module.eval()
    result: PassResult = handler(module, config, ctx)
    return _set_report_defaults(result, config)


# ------------------------------------------------------------------------------------------------
# Sessions: calibrate once, build many (the accuracy-aware search)
# ------------------------------------------------------------------------------------------------

Taps = dict[str, tuple[Any, Any]]
"""Per layer name: ``(raw input, output)`` tensors of one batch (the input before the layer's own
quantizers, the output of its Conv/MatMul op)."""


class QuantSession:
    """One quantization prepared once (export, calibration, QAT training) and built many times.

    ``build(float_layers)`` returns what :func:`quantize_once` would return with ``float_layers``
    added to ``ignored_layers``, from the statistics gathered once. Backends with calibration
    subclass it (``quant_torch``, ``quant_ort``, ``quant_openvino``); the others use the base
    class, which re-runs the (calibration-free) handler on a copy of the model each time.

    ``taps(inputs, layers, result)`` gives each layer's raw input and output in the float model
    and in a build (by default the one with every layer quantized), so :meth:`layer_errors` can
    score each layer's own quantization error from one run of each (no evaluation per layer).

    Attributes:
        config: The quantization (``ignored_layers`` are always kept in float).
        calibrations: How many times calibration data went through the model.
    """

    def __init__(self, module: nn.Module, config: QuantizeConfig, ctx: PassContext) -> None:
        self.module = module.eval()
        self.config = config
        self.ctx = ctx
        self.calibrations = 0
        self._all: PassResult | None = None

    def build(self, float_layers: tuple[str, ...] = ()) -> PassResult:
        """The quantized model with ``float_layers`` (and ``config.ignored_layers``) in float."""
        extra = tuple(n for n in dict.fromkeys(float_layers) if n not in self.config.ignored_layers)
        config = self.config.with_ignored(extra)
        result = _set_report_defaults(self._build(config, extra), config)
        if not extra and self._all is None:
            self._all = result
        return result

    def all_quantized(self) -> PassResult:
        """The build with no extra layer in float (built once)."""
        return self._all if self._all is not None else self.build(())

    def _build(self, config: QuantizeConfig, extra: tuple[str, ...]) -> PassResult:
        import copy

        handler = quant_entry(config).load()
        return handler(copy.deepcopy(self.module), config, self.ctx)  # type: ignore[no-any-return]

    def taps(
        self, inputs: tuple[Any, ...], layers: list[str], result: PassResult | None
    ) -> Taps | None:
        """``(raw input, output)`` of each of ``layers`` on ``inputs``, in the float model
        (``result`` is ``None``) or in ``result`` (a build of this session); ``None``: this
        session cannot tap.

        The base class taps PyTorch modules with forward hooks (dynamic, weight-only, half).
        """
        from torch import nn

        if result is None:
            return module_taps(self.module, layers, inputs)
        rep = result.module
        if not isinstance(rep, nn.Module) or not _has_submodules(rep, layers):
            return None
        return module_taps(rep, layers, inputs)

    def layer_errors(
        self,
        data: DataSet,
        layers: list[str],
        result: PassResult | None = None,
        batch_size: int = 8,
    ) -> dict[str, dict[str, float]] | None:
        """Each layer's relative quantization error from one float run and one run of
        ``result`` (default: the build with every layer quantized).

        For every layer: ``input_error`` (noise power over signal power of its raw input, what
        upstream layers caused), ``output_error`` (the same at its output) and ``added_error``
        (``output_error - input_error``, clipped at 0: what quantizing this layer itself adds).
        Errors are per channel, then averaged over channels (:func:`channel_error`), so a few
        large channels cannot hide small ones being wiped out.

        Returns:
            The errors of the layers both runs could tap, or ``None`` when this session cannot
            tap (the caller falls back to trying each layer).
        """
        result = result if result is not None else self.all_quantized()
        sums: dict[str, list[Any]] = {}
        for inputs, _ in data.batches(batch_size):
            ref = self.taps(inputs, layers, None)
            if ref is None:
                return None
            got = self.taps(inputs, layers, result)
            if got is None:
                return None
            for name in layers:
                if name not in ref or name not in got:
                    continue
                pin, pout = _noise(ref[name][0], got[name][0]), _noise(ref[name][1], got[name][1])
                if pin is None or pout is None:
                    continue
                acc = sums.get(name)
                if acc is None:
                    sums[name] = [*pin, *pout]
                elif all(a.shape == b.shape for a, b in zip(acc, (*pin, *pout), strict=True)):
                    sums[name] = [a + b for a, b in zip(acc, (*pin, *pout), strict=True)]
        out: dict[str, dict[str, float]] = {}
        for name, (n_in, s_in, n_out, s_out) in sums.items():
            e_in, e_out = channel_error(n_in, s_in), channel_error(n_out, s_out)
            out[name] = {
                "input_error": e_in,
                "output_error": e_out,
                "added_error": max(e_out - e_in, 0.0),
            }
        return out

    def close(self) -> None:
        """Release what the session holds (temporary files, models)."""
        self._all = None


def _channel_dim(x: Any) -> int:
    """Channels: dim 1 (``N, C, ...``), the last dim for ``N, T, C`` sequences."""
    return x.dim() - 1 if x.dim() == 3 else min(1, x.dim() - 1)


def _noise(ref: Any, got: Any) -> tuple[Any, Any] | None:
    """Per-channel ``(sum (got - ref)^2, sum ref^2)``, or ``None`` when the tensors do not
    match."""
    import torch

    if not isinstance(ref, torch.Tensor) or not isinstance(got, torch.Tensor) or ref.dim() == 0:
        return None
    if ref.shape != got.shape:
        if ref.numel() != got.numel():
            return None
        got = got.reshape(ref.shape)
    a, b = ref.detach().double(), got.detach().double()
    dim = _channel_dim(a)
    dims = [d for d in range(a.dim()) if d != dim]
    if not dims:
        return ((b - a) ** 2), a**2
    return ((b - a) ** 2).sum(dims), (a**2).sum(dims)


def channel_error(noise: Any, signal: Any) -> float:
    """Mean over channels of noise power over signal power.

    A channel's signal is floored at 1% of the median channel's (a channel that is almost always
    zero in float does not count as infinitely wrong), and each channel's ratio is capped at 4.
    """
    floor = 1e-2 * float(signal.median()) + 1e-30
    ratio = noise / (signal + floor)
    return float(ratio.clamp(max=4.0).mean())


def _has_submodules(module: nn.Module, layers: list[str]) -> bool:
    names = {n for n, _ in module.named_modules()}
    return any(n in names or f"module.{n}" in names for n in layers)


def _first_tensor(value: Any) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)) and value:
        return _first_tensor(value[0])
    return None


def module_taps(module: nn.Module, layers: list[str], inputs: tuple[Any, ...]) -> Taps:
    """``(input, output)`` of the named submodules of a PyTorch module, by forward hooks.

    A submodule wrapped by :class:`~torchslim.passes.quant_torch.CastIO` (``module.<name>``) is
    found too; outputs are cast to float32.
    """
    import torch

    named = dict(module.named_modules())
    found: Taps = {}
    hooks = []

    def hook(name: str) -> Any:
        def fn(_m: Any, args: Any, out: Any) -> None:
            x, y = _first_tensor(args), _first_tensor(out)
            if x is not None and y is not None and x.is_floating_point():
                found[name] = (x.detach().float(), y.detach().float())

        return fn

    for name in layers:
        sub = named.get(name, named.get(f"module.{name}"))
        if sub is not None:
            hooks.append(sub.register_forward_hook(hook(name)))
    try:
        with torch.no_grad():
            module(*inputs)
    finally:
        for h in hooks:
            h.remove()
    return found


_SESSIONS: dict[str, str] = {
    "static/torch": f"{_T}:static_session",
    "qat/torch": f"{_T}:qat_session",
    "dynamic/onnxruntime": f"{_O}:dynamic_session",
    "static/onnxruntime": f"{_O}:static_session",
    "static/openvino": f"{_V}:static_session",
    "weight_only/openvino": f"{_V}:weight_only_session",
}
"""Backends that calibrate (or export) once per session; the others use :class:`QuantSession`."""


def open_session(module: nn.Module, config: QuantizeConfig, ctx: PassContext) -> QuantSession:
    """Prepare ``config`` on ``module`` once (export, calibration) for many builds.

    ``module`` is owned by the session (give a copy). Checks like :func:`quantize_once`.

    Raises:
        TorchslimError: Unsupported combination, missing data, or backend not installed.
    """
    import importlib

    _checked_entry(config, ctx)
    module.eval()
    target = _SESSIONS.get(config.name)
    if target is None:
        return QuantSession(module, config, ctx)
    mod_name, _, attr = target.partition(":")
    factory = getattr(importlib.import_module(mod_name), attr)
    return factory(module, config, ctx)  # type: ignore[no-any-return]
