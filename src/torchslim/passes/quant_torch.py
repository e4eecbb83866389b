"""PyTorch quantization backends: torch.ao dynamic INT8, PT2E static/QAT (X86InductorQuantizer),
torchao weight-only INT8/INT4, and FP16/BF16.

Every handler returns a PyTorch module. PT2E static/QAT return the converted INT8 graph
(uncompiled: reference kernels when run eagerly); the ``inductor`` runtime compiles it to oneDNN
INT8 kernels like any module (the pipeline picks that runtime when the recipe names none and
``QuantizeConfig.compile`` is true).

PT2E and shared modules: torchvision ResNets call one ``nn.ReLU`` instance twice per block, which
makes ``X86InductorQuantizer`` fail ("Input partition has more than one output node").
:func:`unshare_modules` gives every call of a parameter-free module its own copy before export,
so each call becomes its own partition; the numerics are unchanged.
"""

from __future__ import annotations

import copy
import logging
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from torchslim._scoped import quantized_engine
from torchslim.errors import ExportError, TorchslimError
from torchslim.passes.base import PassContext, PassResult
from torchslim.passes.quantize import (
    Calibration,
    QuantizeConfig,
    QuantMethod,
    QuantSession,
    Taps,
    calibration_set,
    example_inputs,
    quantizable_layers,
)

__all__ = [
    "CastIO",
    "drop_unused_tensors",
    "keep_float",
    "load_torchscript",
    "qat_session",
    "quantize_dynamic",
    "quantize_half",
    "quantize_qat",
    "quantize_static",
    "quantize_weight_only",
    "save_torchscript",
    "static_session",
    "unshare_modules",
]


_NOISY_LOGGERS = ("torch.utils._pytree", "torch.utils.cpp_extension", "torchao")
"""Loggers that print third-party chatter on normal runs (torchao's pytree ``register_constant``
deprecation at import, Inductor's "No CUDA runtime is found" on CPU-only machines)."""


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence third-party warnings and :data:`_NOISY_LOGGERS` below ERROR in the block only.

    The warning filters and logger levels are restored on exit, also on error; nothing is
    silenced globally.
    """
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


# ------------------------------------------------------------------------------------------------
# dynamic INT8 (torch.ao)
# ------------------------------------------------------------------------------------------------


def _best_engine() -> str:
    """The quantized engine to pack dynamic INT8 weights for (x86 first); nothing is set."""
    engines = torch.backends.quantized.supported_engines
    for name in ("x86", "fbgemm", "onednn", "qnnpack"):
        if name in engines:
            return name
    return str(torch.backends.quantized.engine)


def quantize_dynamic(module: nn.Module, config: QuantizeConfig, ctx: PassContext) -> PassResult:
    """INT8 weights, activations quantized per call (Linear, LSTM, GRU); Conv stays float.

    ``torch.backends.quantized.engine`` is set to the best engine only for the conversion and
    restored afterwards (also on error), so it never leaks into later candidates. That is enough:
    the engine picks the kernels when the weights are *packed*; a packed module runs its own
    engine's kernels whatever the global engine is at call time (and ``torch.jit.trace``/``save``
    keep them). Only re-packing (``copy.deepcopy``, ``torch.jit.load``) reads the engine again;
    wrap those in ``quantized_engine(report["engine"])`` (:mod:`torchslim._scoped`).
    """
    from torch.ao.quantization import (
        default_dynamic_qconfig,
        per_channel_dynamic_qconfig,
    )
    from torch.ao.quantization import (
        quantize_dynamic as ao_quantize_dynamic,
    )

    engine = _best_engine()
    qconfig = per_channel_dynamic_qconfig if config.per_channel else default_dynamic_qconfig
    ignored = set(config.ignored_layers)
    targets = quantizable_layers(module, ("Linear", "LSTM", "GRU"))
    chosen = [n for n in targets if n not in ignored]
    unsupported = [n for n in quantizable_layers(module) if n not in targets]
    spec: dict[str | type, Any] = {n: qconfig for n in chosen}
    with quantized_engine(engine), _quiet():
        out = ao_quantize_dynamic(module, spec, dtype=torch.qint8, inplace=True)
    report = {
        "quantized_layers": chosen,
        "float_layers": {
            **{n: "ignored by request" for n in targets if n in ignored},
            **{n: "not supported by torch dynamic quantization (Conv)" for n in unsupported},
        },
        "engine": engine,
        "weights": "int8 per-channel" if config.per_channel else "int8 per-tensor",
        "activations": "int8 dynamic (per call)",
        "format": "torchscript",
    }
    return PassResult(out, report)


def save_torchscript(module: nn.Module, example_inputs: tuple[Any, ...], path: Any) -> None:
    """Trace a dynamic INT8 module and save it as TorchScript, without third-party warnings.

    ``torch.jit.trace``/``save`` print deprecation ``FutureWarning``\\ s on every normal run;
    they are silenced for this call only (:func:`_quiet`). The packed weights are saved as they
    are, whatever the current quantized engine.

    Args:
        module: The module returned by :func:`quantize_dynamic`.
        example_inputs: Inputs for the trace.
        path: The ``.ts`` file to write.
    """
    with _quiet(), torch.no_grad():
        traced = torch.jit.trace(module, example_inputs, check_trace=False)
        torch.jit.save(traced, str(path))


def load_torchscript(path: Any, engine: str | None = None) -> Any:
    """Load a module written by :func:`save_torchscript`, quietly, under ``engine``.

    Loading re-packs the INT8 weights with the quantized engine current at load time; give the
    engine the module was quantized with (``report["engine"]``) to get the same kernels back.
    The previous engine is restored afterwards.

    Args:
        path: The ``.ts`` file.
        engine: Quantized engine to re-pack with; ``None`` keeps the current one.

    Returns:
        The loaded ``torch.jit.ScriptModule`` (on CPU).
    """
    supported = torch.backends.quantized.supported_engines
    with quantized_engine(engine if engine in supported else None), _quiet():
        return torch.jit.load(str(path), map_location="cpu")


# ------------------------------------------------------------------------------------------------
# PT2E static / QAT
# ------------------------------------------------------------------------------------------------


class _Unshared(nn.Module):
    """Holds one copy of a stateless module per call site; the i-th call uses the i-th copy."""

    def __init__(self, module: nn.Module, calls: int) -> None:
        super().__init__()
        self.copies = nn.ModuleList(copy.deepcopy(module) for _ in range(calls))
        self.calls = 0

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        mod = self.copies[self.calls % len(self.copies)]
        self.calls += 1
        return mod(*args, **kwargs)


def _reset_unshared(root: nn.Module, _args: Any) -> None:
    for m in root.modules():
        if isinstance(m, _Unshared):
            m.calls = 0


def unshare_modules(module: nn.Module, inputs: tuple[Any, ...]) -> list[str]:
    """Give each call of a parameter-free module called several times per forward its own copy.

    Args:
        module: Modified in place.
        inputs: Example inputs for one forward pass that counts the calls.

    Returns:
        Names of the modules that were shared.
    """
    counts: Counter[str] = Counter()
    hooks = []
    for name, m in module.named_modules():
        if (
            name
            and not list(m.children())
            and not any(True for _ in m.parameters())
            and not any(True for _ in m.buffers())
        ):
            hooks.append(m.register_forward_hook(lambda _m, _i, _o, n=name: counts.update([n])))
    try:
        with torch.no_grad():
            module(*inputs)
    finally:
        for h in hooks:
            h.remove()
    shared = [n for n, c in counts.items() if c > 1]
    for name in shared:
        parent_name, _, leaf = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, leaf, _Unshared(getattr(parent, leaf), counts[name]))
    if shared:
        module.register_forward_pre_hook(_reset_unshared)
    return shared


def _dynamic_shapes(inputs: tuple[Any, ...]) -> tuple[dict[int, Any], ...]:
    batch = torch.export.Dim("batch", min=1, max=4096)
    seq = torch.export.Dim("seq", min=2, max=4096)
    shapes = []
    for x in inputs:
        dims: dict[int, Any] = {0: batch}
        if not x.is_floating_point() and x.dim() == 2:
            dims[1] = seq
        shapes.append(dims)
    return tuple(shapes)


def _export(module: nn.Module, inputs: tuple[Any, ...]) -> Any:
    """Export with a dynamic batch (and sequence) axis; fall back to fewer dynamic axes.

    Hugging Face encoders guard the sequence length (position table of 512, attention-mask
    broadcasts), so a dynamic sequence axis fails there; a dynamic batch with the example's
    sequence length works (inputs are padded to a fixed length anyway).
    """
    dynamic = _dynamic_shapes(inputs)
    batch_only = tuple({0: d[0]} for d in dynamic)
    first_exc: Exception | None = None
    for shapes in (dynamic, batch_only, None):
        if shapes is batch_only and batch_only == dynamic:
            continue
        try:
            with _quiet():
                return torch.export.export(
                    module, inputs, dynamic_shapes=shapes, strict=False
                ).module()
        except Exception as exc:
            first_exc = first_exc or exc
    assert first_exc is not None
    first = (str(first_exc).strip().splitlines() or [type(first_exc).__name__])[0]
    raise ExportError(
        f"torch.export failed before PT2E quantization: {first[:240]}",
        "Use --backend onnxruntime or openvino, or --method dynamic.",
    ) from first_exc


def _quantizer(config: QuantizeConfig, qat: bool) -> Any:
    import dataclasses

    with _quiet():
        import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq

    if config.symmetric_activations:
        raise TorchslimError(
            "The torch (X86 Inductor) backend quantizes activations as asymmetric uint8.",
            "Drop --symmetric-activations, or use --backend onnxruntime/openvino.",
        )
    if config.calibration in (Calibration.PERCENTILE, Calibration.ENTROPY):
        raise TorchslimError(
            f"The torch backend offers minmax and mse (histogram) calibration, not "
            f"'{config.calibration.value}'.",
            "Use --calibration minmax|mse, or --backend onnxruntime (percentile, entropy).",
        )
    # X86 Inductor lowers per-channel symmetric INT8 weights only (per_channel=False is noted).
    qconfig = xiq.get_default_x86_inductor_quantization_config(is_qat=qat)
    if config.calibration is Calibration.MINMAX and not qat:  # auto/mse: histogram observer
        from torchao.quantization.pt2e.observer import MinMaxObserver

        act = dataclasses.replace(
            qconfig.input_activation,
            observer_or_fake_quant_ctr=MinMaxObserver.with_args(eps=2**-12),
        )
        qconfig = dataclasses.replace(qconfig, input_activation=act, output_activation=act)
    quantizer = xiq.X86InductorQuantizer()
    quantizer.set_global(qconfig)
    for name in config.ignored_layers:
        quantizer.set_module_name_qconfig(name, None)
    return quantizer


def _pt2e_report(module: nn.Module, config: QuantizeConfig, shared: list[str]) -> dict[str, Any]:
    layers = quantizable_layers(module)
    ignored = set(config.ignored_layers)
    return {
        "quantized_layers": [n for n in layers if n not in ignored],
        "float_layers": {n: "ignored by request" for n in layers if n in ignored},
        "unshared_modules": shared,
        "weights": "int8 per-channel (X86 Inductor lowers per-channel weights only)",
        "activations": f"uint8 static ({config.calibration.value})",
        "format": "pt2",
    }


def drop_unused_tensors(graph_module: nn.Module) -> int:
    """Delete parameters and buffers the graph no longer reads; returns how many.

    ``convert_pt2e`` folds each float weight into a new int8 constant (``_frozen_param*``) but
    leaves the float original attached to the module, so a saved program held both (the saved
    fashion_cnn INT8 ``.pt2`` was 2.2 MB against 1.7 MB of FP32 weights).
    """
    graph = getattr(graph_module, "graph", None)
    if graph is None:
        return 0
    used = {str(n.target) for n in graph.nodes if n.op == "get_attr"}
    called = {str(n.target) for n in graph.nodes if n.op == "call_module"}
    dropped = 0
    names = [n for n, _ in graph_module.named_parameters()]
    names += [n for n, _ in graph_module.named_buffers()]
    for name in names:
        if name in used or any(name.startswith(c + ".") for c in called):
            continue
        parent, _, leaf = name.rpartition(".")
        owner = graph_module.get_submodule(parent) if parent else graph_module
        owner._parameters.pop(leaf, None)
        owner._buffers.pop(leaf, None)
        dropped += 1
    return dropped


def _prepare(prepare: Any, graph: Any, quantizer: Any) -> Any:
    """``prepare_pt2e``/``prepare_qat_pt2e`` with a clear error when annotation fails.

    X86InductorQuantizer fails inside its pattern matching on some graphs (e.g. the Hugging Face
    BERT encoder of MiniLM: ``IndexError`` in ``partition.output_nodes``).
    """
    try:
        return prepare(graph, quantizer)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise TorchslimError(
            f"X86InductorQuantizer could not annotate this model ({type(exc).__name__}: {first}).",
            "Use --backend openvino (static) or onnxruntime (dynamic) for this model.",
        ) from exc


def _run_batches(fn: Any, data: Any, batch_size: int = 32) -> None:
    with torch.no_grad():
        for inputs, _ in data.batches(batch_size):
            fn(*inputs)


def quantize_static(module: nn.Module, config: QuantizeConfig, ctx: PassContext) -> PassResult:
    """PT2E post-training INT8 with ``X86InductorQuantizer`` (the inductor runtime compiles it)."""
    return _PT2ESession(module, config, ctx, qat=False, once=True).build(())


def static_session(module: nn.Module, config: QuantizeConfig, ctx: PassContext) -> QuantSession:
    """PT2E static INT8 calibrated once; each build keeps other layers in float."""
    return _PT2ESession(module, config, ctx, qat=False)


def qat_session(module: nn.Module, config: QuantizeConfig, ctx: PassContext) -> QuantSession:
    """PT2E QAT trained once; each build keeps other layers in float."""
    return _PT2ESession(module, config, ctx, qat=True)


def _is_observer(gm: nn.Module, node: Any) -> bool:
    """True for a PT2E observer / fake-quantize ``call_module`` node."""
    if node.op != "call_module":
        return False
    with _quiet():
        from torchao.quantization.pt2e import FakeQuantizeBase, ObserverBase
    try:
        mod = gm.get_submodule(str(node.target))
    except AttributeError:
        return False
    return isinstance(mod, (ObserverBase, FakeQuantizeBase))


def _node_layer(node: Any) -> str | None:
    """The module a PT2E graph node was traced from (``nn_module_stack``), if any."""
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return None
    return str(list(stack.values())[-1][0])


def keep_float(prepared: nn.Module, layers: set[str] | None) -> int:
    """Keep ``layers`` of a prepared (calibrated) PT2E graph in float, in place.

    Every observer (or fake-quantize) feeding an op of those layers is bypassed for that op
    only, so ``convert_pt2e`` inserts no quantize/dequantize pair on their inputs and weights;
    an observer other ops still read stays for them. ``None`` bypasses every observer (the
    float graph, with BatchNorm folded as PT2E folds it).

    Returns:
        How many inputs were rewired.
    """
    graph: Any = prepared.graph
    rewired = 0
    for node in list(graph.nodes):
        if node.op not in ("call_function", "call_method", "output"):
            continue
        if layers is not None and _node_layer(node) not in layers:
            continue
        for arg in list(node.all_input_nodes):
            if _is_observer(prepared, arg) and arg.args:
                node.replace_input_with(arg, arg.args[0])
                rewired += 1
    if rewired:
        for node in reversed(list(graph.nodes)):
            if not node.users and _is_observer(prepared, node):
                graph.erase_node(node)
        prepared.recompile()  # type: ignore[operator,unused-ignore]
    return rewired


_MAIN_OPS = ("conv", "linear", "addmm", "matmul", "mm")
_QDQ = (
    "quantize_per_tensor",
    "dequantize_per_tensor",
    "quantize_per_channel",
    "dequantize_per_channel",
    "choose_qparams",
)


def _op_name(node: Any) -> str:
    target = node.target
    return str(getattr(target, "__name__", target))


def _tap_nodes(gm: nn.Module, layers: list[str]) -> dict[str, tuple[str, str]]:
    """Layer → (name of its raw input node, name of its Conv/Linear node) in a PT2E graph."""
    last: dict[str, Any] = {}
    wanted = set(layers)
    graph: Any = gm.graph
    for node in graph.nodes:
        layer = _node_layer(node)
        if node.op != "call_function" or layer not in wanted:
            continue
        name = _op_name(node)
        if any(name.startswith(op) for op in _MAIN_OPS) and not any(q in name for q in _QDQ):
            last[layer] = node
    out: dict[str, tuple[str, str]] = {}
    for layer, node in last.items():
        src = node.args[0] if node.args else None
        while (
            src is not None
            and getattr(src, "op", None) == "call_function"
            and any(q in _op_name(src) for q in _QDQ)
        ):
            src = src.args[0] if src.args else None
        if src is not None and hasattr(src, "name"):
            out[layer] = (src.name, node.name)
    return out


def _record(gm: nn.Module, inputs: tuple[Any, ...], names: set[str]) -> dict[str, torch.Tensor]:
    """Run ``gm`` node by node and keep the float tensors of the nodes in ``names``."""

    class _Recorder(torch.fx.Interpreter):
        def run_node(self, n: Any) -> Any:
            out = super().run_node(n)
            if n.name in names and isinstance(out, torch.Tensor) and out.is_floating_point():
                values[n.name] = out.detach().float()
            return out

    values: dict[str, torch.Tensor] = {}
    with torch.no_grad(), _quiet():
        _Recorder(gm).run(*inputs)
    return values


class _PT2ESession(QuantSession):
    """Export and calibrate (or train, for QAT) once; each build bypasses the observers of the
    layers kept in float (:func:`keep_float`) in a copy of the prepared graph and converts it."""

    def __init__(
        self,
        module: nn.Module,
        config: QuantizeConfig,
        ctx: PassContext,
        *,
        qat: bool,
        once: bool = False,
    ) -> None:
        super().__init__(module, config, ctx)
        self.qat = qat
        self.once = once
        self._float: nn.Module | None = None
        self._plans: dict[int | None, tuple[Any, dict[str, tuple[str, str]]]] = {}
        if qat:
            self._train()
        else:
            self._calibrate()

    def _calibrate(self) -> None:
        with _quiet():
            from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

        calib = calibration_set(self.ctx, self.config)
        self.inputs = example_inputs(self.ctx, calib)
        quantizer = _quantizer(self.config, qat=False)
        self.shared = unshare_modules(self.module, self.inputs)
        start = time.perf_counter()
        graph = _export(self.module, self.inputs)
        with _quiet():
            self.prepared = _prepare(prepare_pt2e, graph, quantizer)
            _run_batches(self.prepared, calib)
        self.calibrations += 1
        self.extra_report: dict[str, Any] = {
            "calibration_seconds": round(time.perf_counter() - start, 3),
            "calibration_samples": len(calib),
        }

    def _train(self) -> None:
        with _quiet():
            from torchao.quantization.pt2e import (
                move_exported_model_to_eval,
                move_exported_model_to_train,
            )
            from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

        ctx, config, module = self.ctx, self.config, self.module
        assert ctx.train is not None
        self.inputs = example_inputs(ctx, ctx.train)
        teacher = None if ctx.train.has_labels else copy.deepcopy(module).eval()
        quantizer = _quantizer(config, qat=True)
        self.shared = unshare_modules(module, self.inputs)
        start = time.perf_counter()
        module.train()
        graph = _export(module, self.inputs)
        with _quiet():
            self.prepared = _prepare(prepare_qat_pt2e, graph, quantizer)
            move_exported_model_to_train(self.prepared)
            with torch.enable_grad():
                training = train_steps(self.prepared, teacher, config, ctx)
            move_exported_model_to_eval(self.prepared)
        module.eval()
        self.calibrations += 1
        self.extra_report = {
            "activations": "uint8 static (QAT fake-quant ranges)",
            "qat": training,
            "qat_seconds": round(time.perf_counter() - start, 3),
        }

    def _build(self, config: QuantizeConfig, extra: tuple[str, ...]) -> PassResult:
        with _quiet():
            from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

        if self.once:
            prepared, self.prepared = self.prepared, None
        else:
            prepared = copy.deepcopy(self.prepared)
        if extra:
            keep_float(prepared, set(extra))
        with _quiet():
            converted = convert_pt2e(prepared)
        dropped = drop_unused_tensors(converted)
        report = _pt2e_report(self.module, config, self.shared)
        report["dropped_float_tensors"] = dropped
        report.update(self.extra_report)
        report["example_inputs"] = [list(x.shape) for x in self.inputs]
        return PassResult(converted, report)

    def _float_graph(self) -> nn.Module:
        if self._float is None:
            self._float = copy.deepcopy(self.prepared)
            keep_float(self._float, None)
        return self._float

    def taps(
        self, inputs: tuple[Any, ...], layers: list[str], result: PassResult | None
    ) -> Taps | None:
        if self.prepared is None:
            return None
        gm = result.module if result is not None else self._float_graph()
        key = None if result is None else id(gm)
        cached = self._plans.get(key)
        if cached is not None and cached[0] is gm:
            plan = cached[1]
        else:
            if key is not None:  # keep the float plan and the latest build's
                self._plans = {k: v for k, v in self._plans.items() if k is None}
            plan = _tap_nodes(gm, layers)
            self._plans[key] = (gm, plan)
        values = _record(gm, inputs, {n for pair in plan.values() for n in pair})
        return {
            layer: (values[src], values[out])
            for layer, (src, out) in plan.items()
            if src in values and out in values
        }

    def close(self) -> None:
        super().close()
        self.prepared = None
        self._float = None


def _loss_fn(out: Any, target: Any) -> Any:
    out = out if isinstance(out, torch.Tensor) else out[0]
    if target.dtype == torch.long and out.dim() == 2:
        return nn.functional.cross_entropy(out, target)
    return nn.functional.mse_loss(out, target)


def train_steps(
    model: nn.Module, teacher: nn.Module | None, config: QuantizeConfig, ctx: PassContext
) -> dict[str, Any]:
    """Fine-tune ``model`` for ``config.qat_steps`` steps on ``ctx.train``.

    Uses cross-entropy with the labels when they exist, else the FP32 teacher's outputs (MSE).
    """
    data = ctx.train
    assert data is not None
    gen = torch.Generator().manual_seed(config.seed)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config.qat_lr)
    use_labels = data.has_labels
    losses = []
    n = len(data)
    for _step in range(config.qat_steps):
        idx = torch.randint(0, n, (min(config.qat_batch_size, n),), generator=gen)
        xs = tuple(x[idx] for x in data.inputs)
        if use_labels:
            assert data.labels is not None
            target = data.labels[idx]
        else:
            assert teacher is not None
            with torch.no_grad():
                t = teacher(*xs)
                target = t if isinstance(t, torch.Tensor) else t[0]
        loss = _loss_fn(model(*xs), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    head = losses[: max(1, len(losses) // 10)]
    tail = losses[-max(1, len(losses) // 10) :]
    return {
        "steps": config.qat_steps,
        "loss": "cross-entropy (labels)" if use_labels else "mse to FP32 outputs (no labels)",
        "loss_start": round(sum(head) / len(head), 4) if losses else None,
        "loss_end": round(sum(tail) / len(tail), 4) if losses else None,
    }


def quantize_qat(module: nn.Module, config: QuantizeConfig, ctx: PassContext) -> PassResult:
    """PT2E quantization-aware training: fake-quant, fine-tune, convert to INT8."""
    return _PT2ESession(module, config, ctx, qat=True, once=True).build(())


# ------------------------------------------------------------------------------------------------
# weight-only (torchao)
# ------------------------------------------------------------------------------------------------


def quantize_weight_only(module: nn.Module, config: QuantizeConfig, ctx: PassContext) -> PassResult:
    """torchao weight-only INT8 (per-channel) or INT4 (grouped) on Linear layers."""
    with _quiet():
        from torchao.quantization import Int8WeightOnlyConfig, IntxWeightOnlyConfig, quantize_
        from torchao.quantization.granularity import PerGroup

    ignored = set(config.ignored_layers)
    linears = quantizable_layers(module, ("Linear",))
    chosen = [
        n
        for n in linears
        if n not in ignored
        and int(getattr(module.get_submodule(n), "in_features", 0))
        % (config.group_size if config.weight_bits == 4 else 1)
        == 0
    ]
    chosen_set = set(chosen)
    if config.weight_bits == 8:
        ao_cfg: Any = Int8WeightOnlyConfig()
        weights = "int8 per-channel"
    else:
        ao_cfg = IntxWeightOnlyConfig(
            weight_dtype=torch.int4,  # type: ignore[attr-defined]
            granularity=PerGroup(config.group_size),
        )
        weights = f"int4 groups of {config.group_size}"
    with _quiet():
        quantize_(
            module, ao_cfg, filter_fn=lambda m, fqn: isinstance(m, nn.Linear) and fqn in chosen_set
        )
    float_layers = {n: "ignored by request" for n in linears if n in ignored}
    float_layers.update(
        {
            n: f"in_features not divisible by group size {config.group_size}"
            for n in linears
            if n not in ignored and n not in chosen_set
        }
    )
    float_layers.update(
        {
            n: "weight-only quantization covers Linear layers only"
            for n in quantizable_layers(module)
            if n not in linears
        }
    )
    report = {
        "quantized_layers": chosen,
        "float_layers": float_layers,
        "weights": weights,
        "activations": "float32",
        "format": "pt2",
    }
    return PassResult(module, report)


# ------------------------------------------------------------------------------------------------
# FP16 / BF16
# ------------------------------------------------------------------------------------------------


class CastIO(nn.Module):
    """Runs ``module`` in ``dtype``: float inputs are cast in, outputs cast back to float32."""

    def __init__(self, module: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.module = module.to(dtype)
        self.dtype = dtype

    def forward(self, *inputs: Any) -> Any:
        cast = [x.to(self.dtype) if x.is_floating_point() else x for x in inputs]
        out = self.module(*cast)
        if isinstance(out, torch.Tensor):
            return out.float()
        if isinstance(out, (tuple, list)):
            return type(out)(o.float() if isinstance(o, torch.Tensor) else o for o in out)
        return out


def cpu_flags() -> set[str]:
    """CPU feature flags from ``/proc/cpuinfo`` (empty when unknown)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def native_half(method: QuantMethod) -> bool:
    """True when this CPU has native kernels for the half type of ``method``."""
    flags = cpu_flags()
    if method is QuantMethod.BF16:
        return bool(flags & {"avx512_bf16", "amx_bf16"})
    return bool(flags & {"avx512_fp16", "amx_fp16"})


def quantize_half(module: nn.Module, config: QuantizeConfig, ctx: PassContext) -> PassResult:
    """FP16 or BF16 weights and compute (inputs cast in, outputs cast back to float32)."""
    dtype = torch.bfloat16 if config.method is QuantMethod.BF16 else torch.float16
    native = native_half(config.method)
    out = CastIO(module, dtype).eval()
    report = {
        "quantized_layers": quantizable_layers(module),
        "float_layers": {},
        "weights": str(dtype).replace("torch.", ""),
        "activations": str(dtype).replace("torch.", ""),
        "native_support": native,
        "note": (
            "this CPU has native kernels for it"
            if native
            else "this CPU has no native kernels for it: expect it to be SLOWER than FP32; "
            "not recommended here"
        ),
        "format": "pt2",
    }
    return PassResult(out, report)
