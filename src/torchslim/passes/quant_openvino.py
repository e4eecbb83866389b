"""OpenVINO quantization through NNCF: static INT8 (``nncf.quantize``), weight-only INT8/INT4
(``nncf.compress_weights``) and BF16 inference precision.

The module is converted with the one OpenVINO converter
(:func:`torchslim.lowering.convert_to_openvino`) and the pass returns the quantized model as an
:class:`~torchslim.lowering.OpenVINOModel` (``result.module``) with the inference precision it is
meant for, never a compiled model: the ``openvino`` runtime builds from it with the recipe's
settings (its default config at that precision when the recipe names none), and the
accuracy-aware search evaluates it with ``OpenVINOModel.run``. Layers are named by their PyTorch module names: OpenVINO's PyTorch frontend names each op
``__module.<name>/aten::...``, which gives the map to NNCF ignored scopes.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from torchslim.errors import TorchslimError
from torchslim.lowering import OpenVINOModel, convert_to_openvino, input_names_for
from torchslim.passes.base import PassContext, PassResult
from torchslim.passes.quantize import (
    Calibration,
    QuantizeConfig,
    calibration_set,
    example_inputs,
    fold_batchnorm,
    is_transformer,
    quantizable_layers,
)

if TYPE_CHECKING:
    from torch import nn

__all__ = ["layer_ops", "quantize_half", "quantize_static", "quantize_weight_only"]

_OPS = ("Convolution", "GroupConvolution", "MatMul", "ConvolutionBackpropData")


def layer_ops(model: Any) -> dict[str, list[str]]:
    """PyTorch module name → friendly names of its Convolution/MatMul ops in ``model``."""
    out: dict[str, list[str]] = {}
    for op in model.get_ops():
        if op.get_type_name() not in _OPS:
            continue
        name = op.get_friendly_name()
        head = name.split("/", 1)[0]
        layer = head[len("__module.") :] if head.startswith("__module.") else head
        out.setdefault(layer, []).append(name)
    return out


def _convert(module: nn.Module, ctx: PassContext, data: Any) -> tuple[Any, list[str], float]:
    inputs = example_inputs(ctx, data)
    model, seconds = convert_to_openvino(fold_batchnorm(module, inputs), inputs)
    return model, input_names_for(inputs, module=module), seconds


def _layers(
    module: nn.Module, config: QuantizeConfig, ops: dict[str, list[str]]
) -> tuple[list[str], dict[str, str], list[str]]:
    ignored = set(config.ignored_layers)
    quantized = [n for n in ops if n not in ignored]
    float_layers = {n: "ignored by request" for n in ops if n in ignored}
    for n in quantizable_layers(module):
        if n not in ops and n not in float_layers:
            float_layers[n] = "no Convolution/MatMul op found for it in the OpenVINO graph"
    names = [op for layer, names in ops.items() if layer in ignored for op in names]
    return quantized, float_layers, names


@contextlib.contextmanager
def _quiet_nncf() -> Iterator[None]:
    """NNCF prints progress bars on stdout and tables through its logger: keep stdout clean."""
    log = logging.getLogger("nncf")
    old = log.level
    log.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        log.setLevel(old)


def _range_params(config: QuantizeConfig) -> Any:
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import (
        AggregatorType,
        RangeEstimatorParameters,
        RangeEstimatorParametersSet,
        StatisticsCollectorParameters,
        StatisticsType,
    )

    cal = config.calibration
    if cal is Calibration.AUTO:
        return None
    if cal is Calibration.ENTROPY:
        raise TorchslimError(
            "OpenVINO (NNCF) offers minmax, percentile and mse (histogram) calibration, not "
            "entropy.",
            "Use --calibration percentile, or --backend onnxruntime for entropy.",
        )
    if cal is Calibration.MINMAX:
        est = RangeEstimatorParametersSet.MINMAX
    elif cal is Calibration.MSE:
        est = RangeEstimatorParametersSet.HISTOGRAM
    else:
        prob = max(1.0 - config.percentile / 100.0, 1e-12)
        est = RangeEstimatorParameters(
            min=StatisticsCollectorParameters(
                StatisticsType.QUANTILE, AggregatorType.MEAN, quantile_outlier_prob=prob
            ),
            max=StatisticsCollectorParameters(
                StatisticsType.QUANTILE, AggregatorType.MEAN, quantile_outlier_prob=prob
            ),
        )
    return AdvancedQuantizationParameters(activations_range_estimator_params=est)


def quantize_static(module: nn.Module, config: QuantizeConfig, ctx: PassContext) -> PassResult:
    """OpenVINO INT8 through ``nncf.quantize`` (presets, ignored scopes, range estimators)."""
    import nncf

    calib = calibration_set(ctx, config)
    model, names, convert_s = _convert(module, ctx, calib)
    ops = layer_ops(model)
    quantized, float_layers, ignored_ops = _layers(module, config, ops)
    transformer = is_transformer(module) if config.transformer is None else config.transformer
    items = [
        tuple(x[i : i + 1].contiguous().numpy() for x in calib.inputs) for i in range(len(calib))
    ]
    dataset = nncf.Dataset(items, lambda item: list(item))
    preset = (
        nncf.QuantizationPreset.PERFORMANCE
        if config.symmetric_activations
        else nncf.QuantizationPreset.MIXED
    )
    start = time.perf_counter()
    with _quiet_nncf():
        qmodel = nncf.quantize(
            model,
            dataset,
            preset=preset,
            subset_size=len(items),
            model_type=nncf.ModelType.TRANSFORMER if transformer else None,
            ignored_scope=nncf.IgnoredScope(names=ignored_ops, validate=False)
            if ignored_ops
            else None,
            advanced_parameters=_range_params(config),
        )
    seconds = time.perf_counter() - start
    if not config.per_channel:
        note = "NNCF always uses per-channel weight scales for Conv/MatMul on CPU"
    else:
        note = None
    # The ops NNCF leaves in float run at OpenVINO's own default precision (BF16 on CPUs with
    # AVX-512 BF16/AMX), as they would for a user compiling the NNCF model by hand; the result
    # is validated against FP32 like every quantized model, and the runtime built from it
    # reports the precision it used (``info["precision"]``).
    lowered = OpenVINOModel(qmodel, names, "default", {"convert_seconds": round(convert_s, 3)})
    report = {
        "quantized_layers": quantized,
        "float_layers": float_layers,
        "inference_precision": "default (OpenVINO's choice for the float remainder)",
        "weights": "int8 per-channel",
        "activations": f"int8/uint8 static ({config.calibration.value}, preset {preset.value})",
        "model_type": "transformer" if transformer else "default",
        "calibration_seconds": round(seconds, 3),
        "convert_seconds": round(convert_s, 3),
        "calibration_samples": len(calib),
        "format": "openvino ir",
    }
    if note:
        report["note"] = note
    return PassResult(lowered, report)


def quantize_weight_only(module: nn.Module, config: QuantizeConfig, ctx: PassContext) -> PassResult:
    """OpenVINO INT8 (asymmetric, per-channel) or INT4 (symmetric, grouped) weights."""
    import nncf

    model, names, _ = _convert(module, ctx, ctx.calib or ctx.eval)
    ops = layer_ops(model)
    quantized, float_layers, ignored_ops = _layers(module, config, ops)
    if config.weight_bits == 8:
        mode, kwargs = nncf.CompressWeightsMode.INT8_ASYM, {}
    else:
        mode = nncf.CompressWeightsMode.INT4_SYM
        kwargs = {"group_size": config.group_size, "ratio": 1.0}
    with _quiet_nncf():
        qmodel = nncf.compress_weights(
            model,
            mode=mode,
            ignored_scope=nncf.IgnoredScope(names=ignored_ops, validate=False)
            if ignored_ops
            else None,
            **kwargs,
        )
    lowered = OpenVINOModel(qmodel, names, "f32")
    report = {
        "quantized_layers": quantized,
        "float_layers": float_layers,
        "weights": "int8 asymmetric per-channel"
        if config.weight_bits == 8
        else f"int4 symmetric, groups of {config.group_size} (NNCF keeps some layers int8)",
        "activations": "float32",
        "format": "openvino ir",
    }
    return PassResult(lowered, report)


def quantize_half(module: nn.Module, config: QuantizeConfig, ctx: PassContext) -> PassResult:
    """OpenVINO with BF16 inference precision (weights and compute)."""
    from torchslim.passes.quant_torch import native_half

    model, names, _ = _convert(module, ctx, ctx.calib or ctx.eval)
    lowered = OpenVINOModel(model, names, "bf16")
    native = native_half(config.method)
    report = {
        "quantized_layers": quantizable_layers(module),
        "float_layers": {},
        "weights": "bf16",
        "activations": "bf16",
        "native_support": native,
        "inference_precision": "bf16",
        "note": "native BF16 kernels"
        if native
        else "no native BF16 on this CPU: expect it to be slower than FP32; not recommended here",
        "format": "openvino ir",
    }
    return PassResult(lowered, report)
