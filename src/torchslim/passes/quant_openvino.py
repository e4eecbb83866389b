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
    QuantSession,
    Taps,
    calibration_set,
    example_inputs,
    fold_batchnorm,
    is_transformer,
    quantizable_layers,
)

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "layer_ops",
    "quantize_half",
    "quantize_static",
    "quantize_weight_only",
    "static_session",
    "weight_only_session",
]

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
    """NNCF draws progress bars ("Statistics collection", "Applying Fast Bias correction") on
    rich's global console and logs tables through its logger: both are silenced for the block
    (and restored after), so a pass prints nothing, from the CLI or from Python. Anything else
    NNCF writes goes to stderr, keeping stdout clean."""
    log = logging.getLogger("nncf")
    old = log.level
    log.setLevel(logging.ERROR)
    console = _rich_console()
    quiet = console.quiet if console is not None else None
    try:
        if console is not None:
            console.quiet = True
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        if console is not None and quiet is not None:
            console.quiet = quiet
        log.setLevel(old)


def _rich_console() -> Any:
    try:
        import rich
    except ImportError:  # pragma: no cover - rich comes with typer
        return None
    return rich.get_console()


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


def _preset(config: QuantizeConfig) -> Any:
    import nncf

    if config.symmetric_activations:
        return nncf.QuantizationPreset.PERFORMANCE
    return nncf.QuantizationPreset.MIXED


def _nncf_quantize(
    model: Any, calib: Any, config: QuantizeConfig, ignored_ops: list[str], transformer: bool
) -> Any:
    """``nncf.quantize`` (the calibration): INT8 with weights left as FakeQuantize on float
    constants, so layers can be reverted to float afterwards; :func:`_compress` packs them."""
    import nncf

    items = [
        tuple(x[i : i + 1].contiguous().numpy() for x in calib.inputs) for i in range(len(calib))
    ]
    dataset = nncf.Dataset(items, lambda item: list(item))
    params = _range_params(config)
    if params is None:
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters

        params = AdvancedQuantizationParameters()
    params.backend_params["compress_weights"] = False
    with _quiet_nncf():
        return nncf.quantize(
            model,
            dataset,
            preset=_preset(config),
            subset_size=len(items),
            model_type=nncf.ModelType.TRANSFORMER if transformer else None,
            ignored_scope=nncf.IgnoredScope(names=ignored_ops, validate=False)
            if ignored_ops
            else None,
            advanced_parameters=params,
        )


def _compress(model: Any) -> Any:
    """INT8 constants for FakeQuantize'd weights (what ``nncf.quantize`` does by default)."""
    from openvino._offline_transformations import compress_quantize_weights_transformation

    compress_quantize_weights_transformation(model)
    return model


class _Reverter:
    """Reverts layers of an NNCF INT8 model to float with NNCF's own accuracy-control machinery
    (the quantizer removal of ``nncf.quantize_with_accuracy_control``): each group of
    quantizers that must go together, original weights and biases restored."""

    def __init__(self, float_model: Any, qmodel: Any) -> None:
        from nncf.common.factory import build_graph
        from nncf.quantization.algorithms.accuracy_control.algorithm import (
            QuantizationAccuracyRestorer,
        )
        from nncf.quantization.algorithms.accuracy_control.openvino_backend import (
            OVAccuracyControlAlgoBackend,
        )
        from nncf.quantization.algorithms.accuracy_control.ranker import Ranker

        self.backend = OVAccuracyControlAlgoBackend
        self.qmodel = qmodel
        with _quiet_nncf():
            self.graph = build_graph(qmodel)
            QuantizationAccuracyRestorer._collect_original_biases_and_weights(
                build_graph(float_model), self.graph, float_model, self.backend
            )
            self.groups = Ranker(1, None, self.backend, None).find_groups_of_quantizers_to_rank(  # type: ignore[arg-type]
                self.graph
            )

    def revert(self, op_names: set[str]) -> tuple[Any, set[str]]:
        """A copy of the INT8 model with the ops ``op_names`` in float; also the names of every
        op reverted (ops sharing a quantizer with them go too)."""
        from nncf.common.quantization.quantizer_removal import (
            revert_operations_to_floating_point_precision,
        )
        from nncf.quantization.advanced_parameters import RestoreMode

        chosen = [g for g in self.groups if any(o.node_name in op_names for o in g.operations)]
        ops = list({o.node_name: o for g in chosen for o in g.operations}.values())
        quantizers = list({q.node_name: q for g in chosen for q in g.quantizers}.values())
        with _quiet_nncf():
            model = revert_operations_to_floating_point_precision(
                ops,
                quantizers,
                self.qmodel,
                self.graph,
                RestoreMode.ACTIVATIONS_AND_WEIGHTS,
                self.backend.get_op_with_weights_metatypes(),
                self.backend.is_node_with_weight,
                self.backend.get_weight_tensor_port_ids,
            )
        return model, {o.node_name for o in ops}


def _layer_of(op_name: str) -> str:
    head = op_name.split("/", 1)[0]
    return head[len("__module.") :] if head.startswith("__module.") else head


class _OVSession(QuantSession):
    """Convert once; static INT8 is calibrated once (``nncf.quantize``) and each build reverts
    the layers kept in float with NNCF's quantizer removal; weight-only compresses a copy of
    the converted model with more layers ignored (no data)."""

    def __init__(
        self, module: nn.Module, config: QuantizeConfig, ctx: PassContext, *, static: bool
    ) -> None:
        super().__init__(module, config, ctx)
        self.static = static
        self.calib = calibration_set(ctx, config) if static else None
        data = self.calib if static else (ctx.calib or ctx.eval)
        self.float_model, self.names, self.convert_s = _convert(module, ctx, data)
        self.ops = layer_ops(self.float_model)
        self.transformer = bool(
            is_transformer(module) if config.transformer is None else config.transformer
        )
        self.qmodel: Any = None
        self._reverter: _Reverter | None = None
        self._revert_failed = False
        self._tapped: dict[int | None, tuple[Any, OpenVINOModel, dict[str, tuple[int, int]]]] = {}
        if static:
            self.qmodel = self._quantize(list(config.ignored_layers))

    def _quantize(self, ignored_layers: list[str]) -> Any:
        assert self.calib is not None
        ignored = set(ignored_layers)
        ignored_ops = [op for layer, names in self.ops.items() if layer in ignored for op in names]
        start = time.perf_counter()
        qmodel = _nncf_quantize(
            self.float_model, self.calib, self.config, ignored_ops, self.transformer
        )
        self.calibrations += 1
        self.calibration_seconds = round(time.perf_counter() - start, 3)
        return qmodel

    def _revert(self, extra: tuple[str, ...]) -> tuple[Any, set[str]] | None:
        """The INT8 model with ``extra`` reverted, or ``None`` when NNCF's machinery fails."""
        if self._revert_failed:
            return None
        try:
            if self._reverter is None:
                self._reverter = _Reverter(self.float_model, self.qmodel)
            wanted = {op for layer in extra for op in self.ops.get(layer, [])}
            model, reverted = self._reverter.revert(wanted)
        except (ImportError, AttributeError, TypeError, KeyError, ValueError, RuntimeError):
            self._revert_failed = True  # another NNCF version: re-quantize per build instead
            return None
        return model, {_layer_of(op) for op in reverted}

    def _build(self, config: QuantizeConfig, extra: tuple[str, ...]) -> PassResult:
        if not self.static:
            return self._weight_only(config)
        coupled: set[str] = set()
        if not extra:
            model = self.qmodel.clone()
        else:
            reverted = self._revert(extra)
            if reverted is None:
                model = self._quantize(list(config.ignored_layers))
            else:
                model, layers = reverted
                coupled = layers - set(config.ignored_layers)
        model = _compress(model)
        quantized, float_layers, _ = _layers(self.module, config, self.ops)
        if coupled:
            why = (
                f"reverted to float with {', '.join(extra[:3])}"
                f"{' ...' if len(extra) > 3 else ''} (they share a quantizer)"
            )
            quantized = [n for n in quantized if n not in coupled]
            float_layers.update({n: why for n in sorted(coupled) if n not in float_layers})
        note = (
            None
            if config.per_channel
            else ("NNCF always uses per-channel weight scales for Conv/MatMul on CPU")
        )
        # The ops NNCF leaves in float run at OpenVINO's own default precision (BF16 on CPUs
        # with AVX-512 BF16/AMX), as they would for a user compiling the NNCF model by hand; the
        # result is validated against FP32 like every quantized model, and the runtime built
        # from it reports the precision it used (``info["precision"]``).
        lowered = OpenVINOModel(
            model, self.names, "default", {"convert_seconds": round(self.convert_s, 3)}
        )
        preset = _preset(config)
        report = {
            "quantized_layers": quantized,
            "float_layers": float_layers,
            "inference_precision": "default (OpenVINO's choice for the float remainder)",
            "weights": "int8 per-channel",
            "activations": f"int8/uint8 static ({config.calibration.value}, preset {preset.value})",
            "model_type": "transformer" if self.transformer else "default",
            "calibration_seconds": self.calibration_seconds,
            "convert_seconds": round(self.convert_s, 3),
            "calibration_samples": len(self.calib) if self.calib is not None else 0,
            "format": "openvino ir",
        }
        if note:
            report["note"] = note
        return PassResult(lowered, report)

    def _weight_only(self, config: QuantizeConfig) -> PassResult:
        import nncf

        quantized, float_layers, ignored_ops = _layers(self.module, config, self.ops)
        if config.weight_bits == 8:
            mode, kwargs = nncf.CompressWeightsMode.INT8_ASYM, {}
        else:
            mode = nncf.CompressWeightsMode.INT4_SYM
            kwargs = {"group_size": config.group_size, "ratio": 1.0}
        with _quiet_nncf():
            qmodel = nncf.compress_weights(
                self.float_model.clone(),
                mode=mode,
                ignored_scope=nncf.IgnoredScope(names=ignored_ops, validate=False)
                if ignored_ops
                else None,
                **kwargs,
            )
        lowered = OpenVINOModel(qmodel, self.names, "f32")
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

    def _tap_model(
        self, result: PassResult | None, layers: list[str]
    ) -> tuple[OpenVINOModel, dict[str, tuple[int, int]]]:
        """A copy of the model with each layer's raw input and op output added as outputs."""
        source = self.float_model if result is None else result.module.model
        key = None if result is None else id(source)
        cached = self._tapped.get(key)
        if cached is not None and cached[0] is source:
            return cached[1], cached[2]
        if key is not None:  # keep the float one and the latest build's
            self._tapped = {k: v for k, v in self._tapped.items() if k is None}
        model = source.clone()
        by_name = {op.get_friendly_name(): op for op in model.get_ops()}
        index: dict[tuple[str, int], int] = {}
        plan: dict[str, tuple[int, int]] = {}

        def output_index(port: Any) -> int | None:
            key = (port.get_node().get_friendly_name(), port.get_index())
            if key not in index:
                before = len(model.outputs)
                model.add_outputs([port])
                if len(model.outputs) == before:
                    return None
                index[key] = before
            return index[key]

        for layer in layers:
            names = [n for n in self.ops.get(layer, []) if n in by_name]
            if not names:
                continue
            first, last = by_name[names[0]], by_name[names[-1]]
            raw = first.input_value(0)
            if raw.get_node().get_type_name() == "FakeQuantize":
                raw = raw.get_node().input_value(0)
            i, o = output_index(raw), output_index(last.output(0))
            if i is not None and o is not None:
                plan[layer] = (i, o)
        rep = OpenVINOModel(model, self.names, "f32")
        self._tapped[key] = (source, rep, plan)
        return rep, plan

    def taps(
        self, inputs: tuple[Any, ...], layers: list[str], result: PassResult | None
    ) -> Taps | None:
        rep, plan = self._tap_model(result, layers)
        values = rep.run(*inputs)
        values = values if isinstance(values, tuple) else (values,)
        return {
            layer: (values[i].float(), values[o].float())
            for layer, (i, o) in plan.items()
            if i < len(values) and o < len(values)
        }

    def close(self) -> None:
        super().close()
        self._tapped.clear()
        self._reverter = None
        self.qmodel = None


def quantize_static(module: nn.Module, config: QuantizeConfig, ctx: PassContext) -> PassResult:
    """OpenVINO INT8 through ``nncf.quantize`` (presets, ignored scopes, range estimators)."""
    return _OVSession(module, config, ctx, static=True).build(())


def static_session(module: nn.Module, config: QuantizeConfig, ctx: PassContext) -> QuantSession:
    """OpenVINO static INT8 calibrated once; each build reverts other layers to float."""
    return _OVSession(module, config, ctx, static=True)


def quantize_weight_only(module: nn.Module, config: QuantizeConfig, ctx: PassContext) -> PassResult:
    """OpenVINO INT8 (asymmetric, per-channel) or INT4 (symmetric, grouped) weights."""
    return _OVSession(module, config, ctx, static=False).build(())


def weight_only_session(
    module: nn.Module, config: QuantizeConfig, ctx: PassContext
) -> QuantSession:
    """OpenVINO weight-only, converted once; each build compresses with more layers ignored."""
    return _OVSession(module, config, ctx, static=False)


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
