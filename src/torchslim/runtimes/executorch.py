"""The ``executorch`` runtime: a ``.pte`` program with the XNNPACK delegate, for phones and boards.

Lowering is explicit stages, each inspectable::

    torch.export (lowering.export_program)  →  [INT8: XNNPACKQuantizer, prepare_pt2e → calibrate
    → convert_pt2e, exported again]  →  to_edge_transform_and_lower(XnnpackPartitioner)
    →  to_executorch()  →  model.pte

The ``.pte`` runs on this machine through ExecuTorch's Python runtime (``executorch.runtime``), so
parity, accuracy and latency are checked here like every other runtime. XNNPACK is built for ARM
first; on x86 it runs the same kernels' x86 paths.

Batch: the program is exported with a symbolic batch axis whose upper bound is
``ExecuTorchConfig.max_batch`` (ExecuTorch plans memory for the largest shape, so the bound sizes
the arena). A program that cannot keep the batch dynamic (or ``dynamic_batch=False``) is exported
for batch 1 (why is recorded). Either way what the program accepts is recorded in
``info["batch"]`` and in the saved ``runtime.json``; a larger batch runs as successive calls of
that size (the outputs concatenated), so evaluation at any batch size works and latency at a
large batch is what such a deployment would really see.

Report (``deployed.info``, saved in ``runtime.json``): program size in MB, the planned memory
arena in MB (ExecuTorch's memory plan for the tensors it owns: inputs, outputs and everything
between delegate calls and portable kernels; XNNPACK allocates its own workspace inside a
delegate call, which this number does not include), how many operators the XNNPACK delegate took, and each operator that stayed outside
it (it runs on ExecuTorch's portable kernels) with the modules it comes from and, when the
partitioner says, why it was not delegated.

INT8 (``quantize="int8"``) uses the XNNPACK quantizer (symmetric INT8, per-channel weights) in the
PT2E flow, calibrated on ``ExecuTorchConfig.calib``; the runtime owns this step (like Inductor owns
its INT8 compile) because the quantizer is specific to the XNNPACK delegate.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast

from torchslim.errors import BackendUnavailableError, ExportError, TorchslimError
from torchslim.runtimes._common import (
    BaseDeployed,
    input_names_for,
    pack_outputs,
    quiet,
)
from torchslim.runtimes.configs import EdgeQuantize, ExecuTorchConfig

__all__ = [
    "ExecuTorchDeployed",
    "build",
    "calibration_inputs",
    "load",
    "lower_to_pte",
    "quantize_int8",
]

_EXTRA = "edge"
_OTHERS = "onnxruntime, openvino or torchscript"
_BOOKKEEPING = {"getitem", "sym_size", "sym_size_int", "executorch_call_delegate"}
"""Graph nodes that are not operators (delegate calls, tuple access, symbolic sizes)."""


def _require() -> None:
    """Import the ExecuTorch pieces this runtime uses, or raise a clear unavailable error."""
    try:
        with quiet():
            import executorch.exir
            import executorch.runtime  # noqa: F401
            from executorch.backends.xnnpack.partition.xnnpack_partitioner import (  # noqa: F401
                XnnpackPartitioner,
            )
    except ImportError as exc:
        raise BackendUnavailableError("executorch", _EXTRA, f"needs executorch ({exc})") from exc


# ---- INT8 through the XNNPACK quantizer ----------------------------------------------------------


def calibration_inputs(config: ExecuTorchConfig, example_inputs: tuple[Any, ...]) -> Any:
    """The calibration :class:`~torchslim.data.DataSet` for an INT8 build (seeded subset).

    Raises:
        TorchslimError: INT8 without ``calib`` (names the option to give).
        DataError: The data cannot be loaded or holds NaN/Inf.
    """
    if not config.calib:
        raise TorchslimError(
            "ExecuTorch INT8 needs calibration data.",
            "Give --calib DATA (e.g. torchslim:fashion_mnist), or ExecuTorchConfig(calib=...).",
        )
    base = config.calib.split("?", 1)[0]
    if (
        not base.startswith(("torchslim:", "synthetic:"))
        and re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", base)
        and not Path(base).exists()
    ):
        raise TorchslimError(
            f"ExecuTorchConfig(calib='{config.calib}') names Python code, which a runtime config "
            "does not run.",
            "Give a data file or directory, or pass the samples in Python: "
            "build(module, config, inputs, calib=dataset).",
        )
    from torchslim.data import load_data
    from torchslim.specs import InputSpec, TensorSpec

    spec = InputSpec(
        tuple(
            TensorSpec(n, (1, *x.shape[1:]), str(x.dtype).removeprefix("torch."))
            for n, x in zip(input_names_for(example_inputs), example_inputs, strict=True)
        )
    )
    bundled = config.calib.startswith("torchslim:") and "split=" not in config.calib
    split = "train" if bundled else None
    data = load_data(config.calib, input_spec=spec, split=split, seed=config.seed)
    data.check_finite()
    return data.take(config.num_calibration_samples, seed=config.seed)


def quantize_int8(
    module: Any, example_inputs: tuple[Any, ...], calib: Any, *, per_channel: bool = True
) -> tuple[Any, dict[str, Any]]:
    """Quantize ``module`` to static INT8 with the XNNPACK quantizer (PT2E flow).

    Args:
        module: The float module (not modified).
        example_inputs: Example inputs (batch first) for the export.
        calib: A :class:`~torchslim.data.DataSet`, or a sequence of input tuples, to calibrate on.
        per_channel: Per-output-channel weight scales.

    Returns:
        ``(converted graph module, report)``.

    Raises:
        ExportError: Export or annotation failed (names the step and the op or line).
    """
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from torchslim.lowering import export_error, export_program, prepare_module

    start = time.perf_counter()
    graph = export_program(prepare_module(module), example_inputs, dynamic=True).module()
    quantizer = XNNPACKQuantizer().set_global(
        get_symmetric_quantization_config(is_per_channel=per_channel)
    )
    try:
        with quiet():
            prepared = prepare_pt2e(graph, quantizer)
    except Exception as exc:
        raise export_error("XNNPACK quantizer annotation", exc, _OTHERS) from exc
    batches = calib.batches(32) if hasattr(calib, "batches") else ((x, None) for x in calib)
    samples = 0
    with torch.no_grad(), quiet():
        for inputs, _ in batches:
            prepared(*inputs)
            samples += int(inputs[0].shape[0])
        converted = convert_pt2e(prepared)
    report = {
        "quantizer": "XNNPACKQuantizer (symmetric int8 activations, "
        + ("per-channel" if per_channel else "per-tensor")
        + " int8 weights)",
        "calibration_samples": samples,
        "calibration_seconds": round(time.perf_counter() - start, 3),
    }
    return converted, report


# ---- export, bounds, lowering ------------------------------------------------------------------


def _bound_dynamic_dims(ep: Any, max_batch: int) -> dict[str, int]:
    """Give the program's symbolic input dims finite upper bounds (ExecuTorch plans memory for the
    largest shape): the batch axis ``max_batch``, any other unbounded axis its traced size.

    Returns:
        ``{"max_batch": ..., "max_seq": ...}`` for the bounds set.
    """
    import torch
    from torch.utils._sympy.value_ranges import ValueRanges

    bounds: dict[str, int] = {}
    user = set(ep.graph_signature.user_inputs)
    for node in ep.graph.nodes:
        if node.op != "placeholder" or node.name not in user:
            continue
        val = node.meta.get("val")
        for dim, size in enumerate(getattr(val, "shape", ())):
            if not isinstance(size, torch.SymInt):
                continue
            sym, env = size.node.expr, size.node.shape_env
            if env is None or not getattr(sym, "is_Symbol", False):
                continue
            hint = int(cast("Any", size.node.hint) or 1)
            old = env.var_to_range.get(sym, ValueRanges(1, hint))
            if dim == 0:
                upper = max(int(old.lower), int(max_batch))
                bounds["max_batch"] = upper
            else:
                finite = old.upper.is_finite if hasattr(old.upper, "is_finite") else True
                upper = int(old.upper) if finite else hint
                bounds["max_seq"] = upper
            new = ValueRanges(old.lower, upper)
            env.var_to_range[sym] = new
            ep.range_constraints[sym] = new
    return bounds


class _WhyNot(logging.Handler):
    """Collects the XNNPACK partitioner's reasons for not delegating a node (``WhyNoPartition``)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.reasons: dict[str, list[str]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.msg  # the partitioner's WhyNoPartition, read now (it is reused)
        node, reason = getattr(msg, "node", None), getattr(msg, "reason", None)
        if node is not None and reason:
            seen = self.reasons.setdefault(str(node.name), [])
            if str(reason) not in seen:
                seen.append(str(reason))


@contextlib.contextmanager
def _partitioner_reasons() -> Iterator[_WhyNot]:
    handler = _WhyNot()
    names = (
        "executorch.backends.xnnpack.partition.config.xnnpack_config",
        "executorch.backends.xnnpack.partition.config.gemm_configs",
        "executorch.backends.xnnpack.partition.config.generic_node_configs",
        "executorch.backends.xnnpack.partition.config.node_configs",
    )
    loggers = [logging.getLogger(n) for n in names]
    old = [(lg.level, lg.propagate) for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
        lg.propagate = False
    try:
        yield handler
    finally:
        for lg, (level, prop) in zip(loggers, old, strict=True):
            lg.removeHandler(handler)
            lg.setLevel(level)
            lg.propagate = prop


def _module_of(node: Any) -> str | None:
    """``path (Type)`` of the innermost ``nn.Module`` a graph node came from."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return None
    path, kind = list(stack.values())[-1]
    name = getattr(kind, "__name__", None) or str(kind).rsplit(".", 1)[-1].rstrip("'>")
    path = re.sub(r"^L\['self'\]\.?|^L__self___", "", str(path)) or "(model)"
    return f"{path} ({name})"


def _op_name(target: Any) -> str:
    """``aten.view_copy.default`` for an edge/aten op target."""
    if type(target).__name__ == "EdgeOpOverload":
        return str(target.__name__)
    if hasattr(target, "_schema"):  # torch OpOverload: str() is namespace.op.overload
        return str(target)
    return str(getattr(target, "__name__", target))


def _modules_using(ep: Any, op_text: str) -> list[str]:
    """Modules whose graph nodes call the operator ``op_text`` (``ns::op`` or ``ns.op[.overload]``)."""
    parts = [p for p in op_text.replace("::", ".").split(".") if p]
    key = ".".join(parts[:2])
    out: list[str] = []
    for node in ep.graph.nodes:
        if node.op != "call_function":
            continue
        name = _op_name(node.target)
        if key and (name == key or name.startswith(key + ".")):
            where = _module_of(node)
            if where and where not in out:
                out.append(where)
    return out


def _lowering_error(step: str, exc: BaseException, ep: Any) -> ExportError:
    """A short error naming the operator that failed to lower and the module it comes from."""
    text = "\n".join(str(e) for e in (exc, exc.__cause__, exc.__context__) if e is not None)
    m = re.search(
        r"(?:Operator|operator|op|kernel|variants?:?)\s*[:\[{]*\s*'?([\w.:]+::?[\w.]+)", text
    )
    op = m.group(1) if m else None
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(exc).__name__)
    where = _modules_using(ep, op) if op else []
    msg = f"ExecuTorch {step} failed"
    if op:
        msg += f" on operator {op}"
    if where:
        msg += f" in {', '.join(where[:3])}"
    return ExportError(
        f"{msg}: {first[:240]}",
        f"Replace that operator in the model, or use another runtime ({_OTHERS}); rerun with "
        "--debug for the full trace.",
    )


def lower_to_pte(ep: Any) -> tuple[bytes, dict[str, Any], Any]:
    """Lower an exported program to an XNNPACK-delegated ``.pte``.

    Returns:
        ``(program bytes, report, edge program)``: the report holds the planned memory and the
        delegated / fallback operators (see the module docstring).

    Raises:
        ExportError: An operator cannot be lowered or has no ExecuTorch kernel (names the
            operator and its module).
    """
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    with _partitioner_reasons() as why:
        try:
            with quiet():
                edge = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()])
        except Exception as exc:
            raise _lowering_error("lowering (to_edge_transform_and_lower)", exc, ep) from exc
    edge_ep = edge.exported_program()
    report = _delegation_report(edge_ep, why.reasons)  # before to_executorch rewrites the graph
    try:
        with quiet():
            program = edge.to_executorch()
    except Exception as exc:
        raise _lowering_error("program emission (to_executorch)", exc, edge_ep) from exc
    data = bytes(program.buffer)
    from torchslim._io import MB

    plan = program.executorch_program.execution_plan[0]
    arena = sum(int(s) for s in plan.non_const_buffer_sizes[1:])
    report["planned_memory_mb"] = arena / MB
    report["portable_kernels"] = sorted(
        {f"{o.name}.{o.overload}" if o.overload else o.name for o in plan.operators}
    )
    return data, report, edge


def _has_symbolic_arg(node: Any) -> bool:
    """True when a node's arguments include a symbolic integer (e.g. a ``sym_size`` result)."""
    import torch

    stack = list(node.args)
    while stack:
        a = stack.pop()
        if isinstance(a, (list, tuple)):
            stack.extend(a)
        elif isinstance(a, torch.fx.Node) and isinstance(a.meta.get("val"), torch.SymInt):
            return True
    return False


def _delegation_report(edge_ep: Any, reasons: dict[str, list[str]]) -> dict[str, Any]:
    delegated: Counter[str] = Counter()
    subgraphs = 0
    gm = edge_ep.graph_module
    fallback: dict[str, dict[str, Any]] = {}
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        name = _op_name(node.target)
        if "executorch_call_delegate" in name:
            subgraphs += 1
            lowered = getattr(gm, str(node.args[0].target))
            for inner in lowered.original_module.graph.nodes:
                if inner.op == "call_function":
                    op = _op_name(inner.target)
                    if op.split(".")[-2 if "." in op else -1] not in _BOOKKEEPING:
                        delegated[op] += 1
            continue
        short = name.split(".")[-2] if name.count(".") >= 2 else name.split(".")[-1]
        if short in _BOOKKEEPING or name.startswith(("_operator", "operator")):
            continue
        rec = fallback.setdefault(name, {"op": name, "count": 0, "modules": [], "reason": None})
        rec["count"] += 1
        where = _module_of(node)
        if where and where not in rec["modules"]:
            rec["modules"].append(where)
        if rec["reason"] is None:
            said = "; ".join(reasons.get(str(node.name), []))
            if _has_symbolic_arg(node):
                said = (
                    "it takes a symbolic size (the dynamic batch), and XNNPACK lowers this "
                    "operator with static sizes only" + (f" (partitioner: {said})" if said else "")
                )
            rec["reason"] = said or None
    for rec in fallback.values():
        if rec["reason"] is None:
            rec["reason"] = "the XNNPACK partitioner has no support for this operator"
    return {
        "delegate": "XnnpackBackend",
        "delegated_subgraphs": subgraphs,
        "delegated_ops": dict(sorted(delegated.items())),
        "delegated_op_count": sum(delegated.values()),
        "fallback_ops": list(fallback.values()),
        "fallback_op_count": sum(r["count"] for r in fallback.values()),
    }


def _export(
    module: Any, example_inputs: tuple[Any, ...], config: ExecuTorchConfig
) -> tuple[Any, dict[str, Any]]:
    """Export with a bounded dynamic batch, else for batch 1; returns ``(program, batch record)``."""
    from torchslim.lowering import export_program

    reason = None
    if config.dynamic_batch and config.max_batch >= 2:
        try:
            ep = export_program(module, example_inputs, dynamic=True)
            bounds = _bound_dynamic_dims(ep, config.max_batch)
            if "max_batch" in bounds:
                return ep, {"dynamic": True, **bounds}
            reason = "the exported program specialised the batch axis"
        except ExportError as exc:
            reason = exc.message
    elif config.dynamic_batch:
        reason = "max_batch is 1"
    else:
        reason = "dynamic_batch=False"
    one = tuple(x[:1] for x in example_inputs)
    ep = export_program(module, one, dynamic=False)
    return ep, {"dynamic": False, "batch": 1, "why_static": reason}


# ---- the deployed program ------------------------------------------------------------------


class ExecuTorchDeployed(BaseDeployed):
    """A ``.pte`` program loaded in ExecuTorch's Python runtime (XNNPACK delegate).

    Args:
        program: The ``.pte`` bytes.
        config: Its :class:`ExecuTorchConfig`.
        input_names: Input names in call order.
        build_seconds: Export + quantization + lowering time.
        info: The build report (precision, size, planned memory, delegation, batch).
    """

    runtime = "executorch"

    def __init__(
        self,
        program: bytes,
        config: ExecuTorchConfig,
        input_names: Sequence[str],
        build_seconds: float = 0.0,
        info: dict[str, Any] | None = None,
    ) -> None:
        from executorch.runtime import Runtime

        from torchslim._io import MB

        super().__init__(config, input_names, build_seconds)
        self.program = program
        with quiet():
            self._program = Runtime.get().load_program(program)
        try:
            self._method = self._program.load_method("forward")
        except Exception as exc:
            raise TorchslimError(
                f"ExecuTorch could not load the program: {exc}.",
                "An operator without a kernel in this ExecuTorch build is the usual cause; "
                "re-export with this torchslim and executorch, or use another runtime.",
            ) from exc
        self.info = dict(info or {})
        self.info["program_mb"] = len(program) / MB
        self.info["threads"] = pool_threads()
        batch = self.info.get("batch") or {"dynamic": False, "batch": 1}
        self._dynamic = bool(batch.get("dynamic", False))
        self._max_batch = int(batch.get("max_batch") or batch.get("batch") or 1)

    def __call__(self, *inputs: Any) -> Any:
        import torch

        n = int(inputs[0].shape[0]) if inputs and getattr(inputs[0], "dim", lambda: 0)() else 1
        step = self._max_batch
        xs = [x.detach().contiguous() if isinstance(x, torch.Tensor) else x for x in inputs]
        if n <= step and (self._dynamic or n == step):
            return pack_outputs(self._run(xs))
        # larger batches run as successive calls of the planned size (memory is planned for it)
        parts = [self._run([x[i : i + step] for x in xs]) for i in range(0, n, step)]
        return pack_outputs([torch.cat(col) for col in zip(*parts, strict=True)])

    def _run(self, xs: list[Any]) -> list[Any]:
        import torch

        outs = self._method.execute(xs)
        return [o.clone() if isinstance(o, torch.Tensor) else o for o in outs]

    def _write(self, directory: Path) -> str:
        (directory / "model.pte").write_bytes(self.program)
        return "model.pte"

    @classmethod
    def _read(cls, directory: Path, config: Any, meta: dict[str, Any]) -> ExecuTorchDeployed:
        _require()
        data = (directory / meta.get("main_file", "model.pte")).read_bytes()
        info = dict(meta.get("info") or {})
        return cls(data, config, meta.get("input_names", ["input"]), 0.0, info)


def pool_threads() -> int:
    """Threads in ExecuTorch's process-wide thread pool (one per core, as ExecuTorch sizes it).

    The pool is left as ExecuTorch creates it: its only resize call in executorch 1.5.1
    (``_unsafe_reset_threadpool``) hung the next call or corrupted memory in processes that also
    run torch (measured here), so torchslim never calls it.
    """
    from executorch.extension.pybindings import portable_lib

    return int(portable_lib._threadpool_get_thread_count())


def build(
    module: Any,
    config: ExecuTorchConfig,
    example_inputs: tuple[Any, ...],
    *,
    calib: Any = None,
) -> ExecuTorchDeployed:
    """Export ``module``, quantize it when asked, lower it to an XNNPACK ``.pte`` and load it.

    Args:
        module: The float module (a pruned, distilled or low-rank one too); not modified.
        config: The :class:`ExecuTorchConfig`.
        example_inputs: Example inputs, batch first.
        calib: INT8 calibration samples given in Python (a :class:`~torchslim.data.DataSet` or
            a sequence of input tuples); default: load ``config.calib``.

    Raises:
        BackendUnavailableError: ExecuTorch is not installed (names ``torchslim[edge]``).
        TorchslimError: INT8 without calibration data.
        ExportError: Export, quantization or lowering failed (names the operator and module).
    """
    from torchslim.lowering import prepare_module

    _require()
    start = time.perf_counter()
    examples = tuple(example_inputs)
    names = input_names_for(examples, module=module)
    work = prepare_module(module)
    info: dict[str, Any] = {"precision": "fp32"}
    if EdgeQuantize(config.quantize) is EdgeQuantize.INT8:
        data = calib if calib is not None else calibration_inputs(config, examples)
        work, qreport = quantize_int8(work, examples, data, per_channel=config.per_channel)
        source = config.calib if calib is None else getattr(calib, "name", "given in Python")
        info.update(precision="int8", quantization={**qreport, "calib": source})
    ep, batch = _export(work, examples, config)
    info["batch"] = batch
    data, report, _edge = lower_to_pte(ep)
    info.update(report)
    deployed = ExecuTorchDeployed(data, config, names, 0.0, info)
    deployed.build_seconds = time.perf_counter() - start
    deployed.info["build_seconds"] = round(deployed.build_seconds, 3)
    return deployed


def load(directory: str | Path) -> ExecuTorchDeployed:
    """Load an ``executorch`` runtime saved with :meth:`ExecuTorchDeployed.save`."""
    return ExecuTorchDeployed.load(directory)  # type: ignore[return-value]
