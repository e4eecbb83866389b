"""ONNX Runtime quantization: ``quantize_dynamic`` and QDQ ``quantize_static``.

The module is exported once (dynamic batch) with the one ONNX exporter
(:func:`torchslim.lowering.export_for_runtime`), pre-processed with ``quant_pre_process`` (shape
inference + graph optimisation) and quantized. The pass returns the quantized graph as an
:class:`~torchslim.lowering.OnnxModel` (``result.module``), never a session: the
``onnxruntime`` runtime builds from it with the recipe's settings (``OrtConfig()`` when the recipe
names none), and the accuracy-aware search evaluates it with ``OnnxModel.run``. Layers are named by their PyTorch module names: each ONNX
node carries the module it came from in its ``pkg.torch.onnx.name_scopes`` metadata.

Transformers: static QDQ with min-max ranges on every op wrecks MiniLM (cosine 0.62), so for
transformer models only ``MatMul``/``Gemm`` inputs are quantized (Softmax, LayerNorm, GELU and Add
stay float) and ``auto`` calibration is min-max with a moving average over batches. Measured on
MiniLM (64 polarity sentences, embedding cosine vs FP32): min-max + moving average 0.929,
min-max 0.927, percentile 99.999 0.928, percentile 99.99 (200 sentences) 0.80, per-tensor weights
0.89, symmetric activations 0.84. Static INT8 activations in ONNX Runtime stay well below
``dynamic`` (0.992) here: prefer ``dynamic/onnxruntime`` or ``static/openvino`` (0.998, NNCF's
transformer scheme with SmoothQuant) for transformers.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torchslim.errors import TorchslimError
from torchslim.lowering.onnx import OnnxModel, export_for_runtime, graph_input_names
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

    from torchslim.data import DataSet

__all__ = [
    "dynamic_session",
    "float_inputs",
    "layer_nodes",
    "quantize_dynamic",
    "quantize_static",
    "static_session",
]

_OPS = ("Conv", "MatMul", "Gemm")


def _export(module: nn.Module, ctx: PassContext, data: DataSet | None, workdir: Path) -> Path:
    inputs = example_inputs(ctx, data)
    raw = export_for_runtime(fold_batchnorm(module, inputs), inputs, workdir / "float.onnx")
    pre = workdir / "pre.onnx"
    # ONNX Runtime's pre-processing dumps files into the *current directory* when symbolic shape
    # inference fails (as it does on transformers); run it in a child process inside the work
    # directory so nothing lands in the user's folder.
    for flags in (
        [],
        ["--skip_symbolic_shape", "1"],
        ["--skip_optimization", "1", "--skip_symbolic_shape", "1"],
    ):
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "onnxruntime.quantization.preprocess",
                "--input",
                str(raw),
                "--output",
                str(pre),
                *flags,
            ],
            cwd=workdir,
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode == 0 and pre.exists():
            return pre
    return raw


def layer_nodes(onnx_path: Path) -> dict[str, list[str]]:
    """PyTorch module name → names of the ONNX nodes exported from it (Conv/MatMul/Gemm)."""
    import onnx

    out: dict[str, list[str]] = {}
    for node in onnx.load(str(onnx_path), load_external_data=False).graph.node:
        if node.op_type not in _OPS:
            continue
        meta = {p.key: p.value for p in node.metadata_props}
        scopes = meta.get("pkg.torch.onnx.name_scopes")
        layer = node.name
        if scopes:
            try:
                names = ast.literal_eval(scopes)
                if len(names) >= 2:
                    layer = str(names[-2])
            except (ValueError, SyntaxError):
                pass
        out.setdefault(layer, []).append(node.name)
    return out


def _split_layers(
    module: nn.Module, config: QuantizeConfig, nodes: dict[str, list[str]], ops: tuple[str, ...]
) -> tuple[list[str], dict[str, str], list[str]]:
    ignored = set(config.ignored_layers)
    torch_layers = quantizable_layers(module)
    quantized = [n for n in nodes if n not in ignored]
    float_layers = {n: "ignored by request" for n in nodes if n in ignored}
    for n in torch_layers:
        if n not in nodes and n not in float_layers:
            float_layers[n] = "no quantizable ONNX op (" + "/".join(ops) + ") found for it"
    exclude = [node for layer, names in nodes.items() if layer in ignored for node in names]
    return quantized, float_layers, exclude


def _lowered(path: Path, workdir: Any, report: dict[str, Any]) -> OnnxModel:
    """The quantized graph as the pass's result (``workdir`` owns it)."""
    return OnnxModel(path, graph_input_names(path), workdir, {"format": report["format"]})


def quantize_dynamic(module: nn.Module, config: QuantizeConfig, ctx: PassContext) -> PassResult:
    """ONNX Runtime dynamic INT8 (weights INT8, activations quantized per call)."""
    return _OrtSession(module, config, ctx, static=False).build(())


def dynamic_session(module: nn.Module, config: QuantizeConfig, ctx: PassContext) -> QuantSession:
    """ONNX Runtime dynamic INT8, exported once; each build keeps other layers in float."""
    return _OrtSession(module, config, ctx, static=False)


def quantize_static(module: nn.Module, config: QuantizeConfig, ctx: PassContext) -> PassResult:
    """ONNX Runtime QDQ static INT8 with MinMax, Percentile or Entropy calibration."""
    return _OrtSession(module, config, ctx, static=True).build(())


def static_session(module: nn.Module, config: QuantizeConfig, ctx: PassContext) -> QuantSession:
    """ONNX Runtime QDQ static INT8, exported and calibrated once (ONNX Runtime's calibration
    cache); each build keeps other layers in float."""
    return _OrtSession(module, config, ctx, static=True)


def _transformer(module: nn.Module, config: QuantizeConfig) -> bool:
    return is_transformer(module) if config.transformer is None else bool(config.transformer)


def _even_batch(n: int, most: int = 16) -> int:
    """The largest batch size ``<= most`` that divides ``n`` (all batches the same size)."""
    return next(b for b in range(min(most, max(n, 1)), 0, -1) if n % b == 0)


class _Reader:
    """``CalibrationDataReader`` over a :class:`DataSet`.

    Every batch has the same size: ONNX Runtime's histogram calibrators (percentile, entropy)
    stack the per-batch activations and fail on a shorter last batch.
    """

    def __init__(self, data: DataSet, names: list[str], batch_size: int = 16) -> None:
        batch_size = _even_batch(len(data), batch_size)
        self._batches = [
            {n: x.contiguous().numpy() for n, x in zip(names, inputs, strict=True)}
            for inputs, _ in data.batches(batch_size)
        ]
        self._i = 0

    def get_next(self) -> dict[str, Any] | None:
        if self._i >= len(self._batches):
            return None
        self._i += 1
        return self._batches[self._i - 1]

    def rewind(self) -> None:
        self._i = 0


def _calibration_method(config: QuantizeConfig) -> Calibration:
    calibration = config.calibration
    if calibration is Calibration.AUTO:
        calibration = Calibration.MINMAX  # transformers: with a moving average (see above)
    if calibration not in (Calibration.MINMAX, Calibration.PERCENTILE, Calibration.ENTROPY):
        raise TorchslimError(
            f"ONNX Runtime offers minmax, percentile and entropy calibration, not "
            f"'{calibration.value}'.",
            "Use --calibration percentile (or --backend torch for mse).",
        )
    return calibration


def _has_calibration_cache() -> bool:
    """True when ``quantize_static`` takes ``calibration_cache_path`` (recent ONNX Runtime; older
    ones calibrate again in each build, counted in ``calibrations``)."""
    import inspect

    from onnxruntime.quantization import quantize_static as ort_quantize_static

    return "calibration_cache_path" in inspect.signature(ort_quantize_static).parameters


_SKIP = ("QuantizeLinear", "DequantizeLinear")


def float_inputs(path: Path, nodes: set[str]) -> int:
    """Feed the excluded ``nodes`` of a QDQ graph their float activations, in place.

    QDQ quantizes a Conv/Gemm's *output* for its consumers, so a node left out of quantization
    still reads a quantize/dequantize pair on its input when its producer is quantized (a layer
    "kept in float" whose input is INT8). Each such input is rewired to the tensor before the
    pair; a pair no other node reads is removed.

    Returns:
        How many inputs were rewired.
    """
    import onnx

    proto = onnx.load(str(path))
    graph = proto.graph
    inits = {i.name for i in graph.initializer}
    produced = {o: n for n in graph.node for o in n.output}
    rewired = 0
    for node in graph.node:
        if node.name not in nodes:
            continue
        for i, name in enumerate(node.input):
            dq = produced.get(name)
            if dq is None or dq.op_type != "DequantizeLinear" or not dq.input:
                continue
            q = produced.get(dq.input[0])
            if q is None or q.op_type != "QuantizeLinear" or not q.input or q.input[0] in inits:
                continue
            node.input[i] = q.input[0]
            rewired += 1
    if not rewired:
        return 0
    outputs = {o.name for o in graph.output}
    changed = True
    while changed:  # drop Q/DQ nodes nobody reads any more
        changed = False
        read = {i for n in graph.node for i in n.input} | outputs
        for n in list(graph.node):
            if n.op_type in _SKIP and not any(o in read for o in n.output):
                graph.node.remove(n)
                changed = True
    onnx.save(proto, str(path))
    return rewired


class _OrtSession(QuantSession):
    """Export (and, for static, calibrate) once; each build quantizes the exported graph with
    more nodes excluded. Static calibration runs in the first build and is kept in ONNX
    Runtime's calibration cache (a ranges file in the session's work directory) for the next."""

    def __init__(
        self, module: nn.Module, config: QuantizeConfig, ctx: PassContext, *, static: bool
    ) -> None:
        import onnx

        super().__init__(module, config, ctx)
        self.static = static
        self.transformer = _transformer(module, config)
        calib = None
        if static:
            self.calibration = _calibration_method(config)
            calib = calibration_set(ctx, config)
        self.calib = calib
        self.workdir = tempfile.TemporaryDirectory(prefix="torchslim-ortq-")
        wd = Path(self.workdir.name)
        self.pre = _export(module, ctx, calib if static else (ctx.calib or ctx.eval), wd)
        self.ops: tuple[str, ...] = ("MatMul", "Gemm") if self.transformer else _OPS
        self.nodes = layer_nodes(self.pre)
        self.input_names = [
            i.name for i in onnx.load(str(self.pre), load_external_data=False).graph.input
        ]
        self.cache = wd / "calibration.json" if static and _has_calibration_cache() else None
        self.calibration_seconds: float | None = None
        self._tapped: dict[str | None, tuple[OnnxModel, list[str], dict[str, tuple[str, str]]]] = {}

    def _build(self, config: QuantizeConfig, extra: tuple[str, ...]) -> PassResult:
        quantized, float_layers, exclude = _split_layers(self.module, config, self.nodes, self.ops)
        workdir = tempfile.TemporaryDirectory(prefix="torchslim-ortq-")
        out = Path(workdir.name) / "model.onnx"
        if self.static:
            report = self._static(config, exclude, out)
        else:
            report = self._dynamic(config, exclude, out)
        report = {"quantized_layers": quantized, "float_layers": float_layers, **report}
        return PassResult(_lowered(out, workdir, report), report)

    def _dynamic(self, config: QuantizeConfig, exclude: list[str], out: Path) -> dict[str, Any]:
        from onnxruntime.quantization import QuantType
        from onnxruntime.quantization import quantize_dynamic as ort_quantize_dynamic

        # quantize_dynamic first rewrites each Gemm as MatMul (+ Add) named "<gemm>_MatMul":
        # exclude those too, or an ignored Linear (exported as Gemm) would still be quantized.
        exclude = [*exclude, *(f"{name}_MatMul" for name in exclude)]
        ort_quantize_dynamic(
            str(self.pre),
            str(out),
            weight_type=QuantType.QInt8,
            per_channel=config.per_channel,
            nodes_to_exclude=exclude,
            op_types_to_quantize=list(self.ops),
            extra_options={"MatMulConstBOnly": True},
        )
        return {
            "weights": "int8 per-channel" if config.per_channel else "int8 per-tensor",
            "activations": "uint8 dynamic (per call)",
            "op_types": list(self.ops),
            "format": "onnx",
        }

    def _static(self, config: QuantizeConfig, exclude: list[str], out: Path) -> dict[str, Any]:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType
        from onnxruntime.quantization import quantize_static as ort_quantize_static

        calib, calibration, transformer = self.calib, self.calibration, self.transformer
        assert calib is not None
        methods = {
            Calibration.MINMAX: CalibrationMethod.MinMax,
            Calibration.PERCENTILE: CalibrationMethod.Percentile,
            Calibration.ENTROPY: CalibrationMethod.Entropy,
        }
        cached = self.cache is not None and self.cache.is_file()
        reader = None if cached else _Reader(calib, self.input_names[: len(calib.inputs)])
        kwargs: dict[str, Any] = {}
        if self.cache is not None:
            kwargs["calibration_cache_path"] = str(self.cache)
        start = time.perf_counter()
        ort_quantize_static(
            str(self.pre),
            str(out),
            reader,
            quant_format=QuantFormat.QDQ,
            per_channel=config.per_channel,
            activation_type=QuantType.QInt8 if config.symmetric_activations else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=methods[calibration],
            nodes_to_exclude=exclude,
            op_types_to_quantize=list(self.ops) if transformer else None,
            extra_options={
                "ActivationSymmetric": bool(config.symmetric_activations),
                "CalibPercentile": float(config.percentile),
                "CalibMovingAverage": calibration is Calibration.MINMAX and transformer,
            },
            **kwargs,
        )
        if reader is not None:
            self.calibrations += 1
            self.calibration_seconds = round(time.perf_counter() - start, 3)
        if exclude:
            float_inputs(out, set(exclude))
        report: dict[str, Any] = {
            "weights": "int8 per-channel" if config.per_channel else "int8 per-tensor",
            "activations": (
                "int8 symmetric" if config.symmetric_activations else "uint8 asymmetric"
            )
            + f" static ({calibration.value})",
            "op_types": list(self.ops) if transformer else "all supported",
            "calibration_seconds": self.calibration_seconds,
            "calibration_samples": len(calib),
            "format": "onnx (QDQ)",
        }
        if transformer:
            report["note"] = (
                "static INT8 activations in ONNX Runtime lose fidelity on transformers (MiniLM: "
                "cosine ~0.93 vs FP32); dynamic/onnxruntime or static/openvino keep >= 0.99"
            )
        return report

    def _tap_model(
        self, result: PassResult | None, layers: list[str]
    ) -> tuple[OnnxModel, list[str], dict[str, tuple[str, str]]]:
        """The graph with each layer's raw input and output added as graph outputs."""
        import onnx

        key = None if result is None else str(result.module.path)
        if key in self._tapped:
            return self._tapped[key]
        if key is not None:  # keep the float one and the latest build's
            self._tapped = {k: v for k, v in self._tapped.items() if k is None}
        quantized = key is not None
        src = Path(key) if key is not None else self.pre
        proto = onnx.load(str(src))
        graph = proto.graph
        produced = {o: n for n in graph.node for o in n.output}
        by_name = {n.name: n for n in graph.node}
        known = set(produced) | {i.name for i in graph.input}
        float_nodes = {
            n.name: n for n in onnx.load(str(self.pre), load_external_data=False).graph.node
        }
        plan: dict[str, tuple[str, str]] = {}
        for layer in layers:
            names = self.nodes.get(layer)
            if not names:
                continue
            first, last = float_nodes.get(names[0]), float_nodes.get(names[-1])
            if first is None or last is None or not first.input or not last.output:
                continue
            if last.name in by_name and first.name in by_name:  # QDQ keeps the node names
                raw, out = by_name[first.name].input[0], by_name[last.name].output[0]
                while raw in produced and produced[raw].op_type in _SKIP and produced[raw].input:
                    raw = produced[raw].input[0]
            else:  # dynamic renames nodes but keeps the tensor names around them
                raw, out = first.input[0], last.output[0]
            if raw in known and out in known:
                plan[layer] = (raw, out)
        outputs = [o.name for o in graph.output]
        for name in dict.fromkeys(t for pair in plan.values() for t in pair):
            if name not in outputs:
                graph.output.append(onnx.ValueInfoProto(name=name))
                outputs.append(name)
        path = Path(self.workdir.name) / f"taps-{'int8' if quantized else 'float'}.onnx"
        onnx.save(proto, str(path))
        self._tapped[key] = (OnnxModel(path, graph_input_names(path)), outputs, plan)
        return self._tapped[key]

    def taps(
        self, inputs: tuple[Any, ...], layers: list[str], result: PassResult | None
    ) -> Taps | None:
        rep, outputs, plan = self._tap_model(result, layers)
        values = rep.run(*inputs)
        values = values if isinstance(values, tuple) else (values,)
        got = dict(zip(outputs, values, strict=False))
        return {
            layer: (got[raw].float(), got[out].float())
            for layer, (raw, out) in plan.items()
            if raw in got and out in got and got[raw].is_floating_point()
        }

    def close(self) -> None:
        super().close()
        self._tapped.clear()
        self.workdir.cleanup()
