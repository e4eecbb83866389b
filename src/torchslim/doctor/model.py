"""Model checks: summary, FLOPs, layer types, fusable patterns, quantizable share, export risks."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torchslim.doctor.findings import CheckResult, Finding

if TYPE_CHECKING:
    from torch import nn

    from torchslim.specs import InputSpec

__all__ = ["inspect_model"]

_QUANTIZABLE = ("Linear", "Conv1d", "Conv2d", "Conv3d", "LSTM", "GRU", "Embedding")
_CONV = ("Conv1d", "Conv2d", "Conv3d")
_BN = ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d")
_DROPOUT = ("Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout", "FeatureAlphaDropout")


@contextmanager
def _eval_then_restore(module: nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode for the probe, then restore each one's flag."""
    from torchslim._safe_load import eval_mode

    flags = [(m, m.training) for m in module.modules()]
    eval_mode(module)  # also modules from ExportedProgram.module(), which refuse .eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def _leaf_types(module: nn.Module) -> dict[str, str]:
    """Map the name of every module that owns parameters or has no children to its type name."""
    out = {}
    for name, m in module.named_modules():
        has_children = next(iter(m.children()), None) is not None
        owns_params = next(iter(m.parameters(recurse=False)), None) is not None
        if name and (not has_children or owns_params):
            out[name] = type(m).__name__
    if not out:
        out[""] = type(module).__name__
    return out


def _fmt_share(x: float) -> str:
    return f"{100 * x:.0f}%"


def _probe(
    module: nn.Module, inputs: tuple[Any, ...]
) -> tuple[int | None, dict[str, int], list[str], list[str], str | None]:
    """Run one forward pass counting FLOPs; spot in-place writes to inputs and custom Functions.

    Returns:
        Total FLOPs, FLOPs per module name, names of inputs written in place, names of custom
        autograd Functions met, and the error message if the forward pass failed.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    versions = [getattr(x, "_version", None) for x in inputs]
    counter = FlopCounterMode(display=False)
    try:
        with _eval_then_restore(module), torch.enable_grad(), counter:
            out = module(*inputs)
    except Exception as exc:
        return (
            None,
            {},
            [],
            [],
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
        )
    prefix = type(module).__name__ + "."
    per_module = {
        k.removeprefix(prefix): int(sum(v.values()))
        for k, v in counter.get_flop_counts().items()
        if k.startswith(prefix)
    }
    inplace = [
        f"input {i}"
        for i, (x, v) in enumerate(zip(inputs, versions, strict=True))
        if v is not None and x._version != v
    ]
    return int(counter.get_total_flops()), per_module, inplace, _custom_functions(out), None


def _custom_functions(out: Any) -> list[str]:
    """Names of user-defined ``torch.autograd.Function`` classes in ``out``'s autograd graph."""
    from torch.autograd.function import BackwardCFunction

    roots = []
    stack: list[Any] = [out]
    while stack:
        obj = stack.pop()
        if isinstance(obj, (list, tuple)):
            stack.extend(obj)
        elif isinstance(obj, Mapping):
            stack.extend(obj.values())
        elif getattr(obj, "grad_fn", None) is not None:
            roots.append(obj.grad_fn)
    found: set[str] = set()
    seen: set[int] = set()
    while roots and len(seen) < 100_000:
        fn = roots.pop()
        if fn is None or id(fn) in seen:
            continue
        seen.add(id(fn))
        if isinstance(fn, BackwardCFunction):
            cls = getattr(fn, "_forward_cls", None)
            if cls is not None and not cls.__module__.startswith("torch."):
                found.add(f"{cls.__module__}.{cls.__qualname__}")
        roots.extend(nxt for nxt, _ in getattr(fn, "next_functions", ()))
    return sorted(found)


def _is_relu(node: Any, modules: Mapping[str, Any]) -> bool:
    import torch
    import torch.nn.functional as F

    if node.op == "call_module":
        return type(modules.get(node.target)).__name__ == "ReLU"
    if node.op == "call_function":
        return node.target in (F.relu, torch.relu, torch.relu_)
    return node.op == "call_method" and node.target in ("relu", "relu_")


def _fx_patterns(graph_module: Any) -> list[dict[str, Any]]:
    """Conv-BN(-ReLU), Linear-ReLU and Linear-BN chains where each producer has one consumer."""
    modules = dict(graph_module.named_modules())

    def kind(node: Any) -> str:
        return type(modules.get(node.target)).__name__ if node.op == "call_module" else ""

    def only_user(node: Any) -> Any:
        users = list(node.users)
        return users[0] if len(users) == 1 else None

    found = []
    for node in graph_module.graph.nodes:
        head = kind(node)
        nxt = only_user(node)
        if head not in (*_CONV, "Linear") or nxt is None:
            continue
        if kind(nxt) in _BN:
            after = only_user(nxt)
            if head in _CONV and after is not None and _is_relu(after, modules):
                chain = [node.target, nxt.target, str(after.target)]
                found.append({"pattern": "Conv-BN-ReLU", "modules": chain})
            else:
                pattern = "Conv-BN" if head in _CONV else "Linear-BN"
                found.append({"pattern": pattern, "modules": [node.target, nxt.target]})
        elif head == "Linear" and _is_relu(nxt, modules):
            found.append({"pattern": "Linear-ReLU", "modules": [node.target, str(nxt.target)]})
    return found


def _order_patterns(types: Mapping[str, str]) -> list[dict[str, Any]]:
    """The same patterns, guessed from module registration order (used when tracing fails)."""
    names = list(types)
    found = []
    i = 0
    while i < len(names) - 1:
        a, b = types[names[i]], types[names[i + 1]]
        c = types[names[i + 2]] if i + 2 < len(names) else ""
        if a in _CONV and b in _BN and c == "ReLU":
            found.append({"pattern": "Conv-BN-ReLU", "modules": names[i : i + 3]})
            i += 3
            continue
        pattern = {
            (True, "bn"): "Conv-BN",
            (False, "bn"): "Linear-BN",
            (False, "relu"): "Linear-ReLU",
        }.get((a in _CONV, "bn" if b in _BN else "relu" if b == "ReLU" else ""))
        if (a in _CONV or a == "Linear") and pattern:
            found.append({"pattern": pattern, "modules": names[i : i + 2]})
            i += 2
            continue
        i += 1
    return found


def _trace(module: nn.Module) -> tuple[Any, str | None]:
    """``(GraphModule, None)`` or ``(None, reason)`` from :func:`torch.fx.symbolic_trace`."""
    import torch

    if isinstance(module, torch.fx.GraphModule):
        return module, None
    if isinstance(module, torch.jit.ScriptModule):
        return None, "TorchScript modules cannot be traced by torch.fx"
    try:
        return torch.fx.symbolic_trace(module), None
    except Exception as exc:
        lines = [s.strip() for s in str(exc).splitlines() if s.strip()]
        return None, f"{type(exc).__name__}: {lines[0][:300] if lines else ''}"


def _reused_modules(graph_module: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in graph_module.graph.nodes:
        if node.op == "call_module":
            counts[node.target] = counts.get(node.target, 0) + 1
    return {k: v for k, v in counts.items() if v > 1}


def inspect_model(
    module: nn.Module,
    input_spec: InputSpec | None,
    *,
    source: str | None = None,
    path: str | Path | None = None,
    check_training: bool = True,
) -> CheckResult:
    """Summarise a model and list what stands between it and fast, exportable inference.

    The module is inspected as given: Dropout/BatchNorm in training mode are reported (set
    ``check_training=False`` when a loader already called ``eval()``). One forward pass at batch 1
    runs in eval mode (flags are restored afterwards) to count FLOPs and spot in-place writes to
    inputs and custom autograd Functions.

    Args:
        module: The model.
        input_spec: Its inputs; without it FLOPs and the runtime checks are skipped.
        source: The source string, for display.
        path: The file it came from, for the on-disk size.
        check_training: Report submodules left in training mode.

    Returns:
        Summary keys: ``source``, ``type``, ``params_total``, ``params_trainable``,
        ``size_fp32_bytes``, ``size_bytes``, ``file_bytes``, ``input_spec``, ``flops``,
        ``flops_note``, ``layers`` (type → count/params/flops), ``fusable_patterns``,
        ``pattern_method`` (``"fx"`` or ``"module_order"``), ``fx_traceable``,
        ``quantizable`` (params/FLOPs share), ``training_modules``.
    """
    params = {id(p): p for p in module.parameters()}
    n_params = sum(p.numel() for p in params.values())
    n_train = sum(p.numel() for p in params.values() if p.requires_grad)
    buffers = list(module.buffers())
    size = sum(p.numel() * p.element_size() for p in params.values())
    size += sum(b.numel() * b.element_size() for b in buffers)
    size_fp32 = 4 * n_params + sum(
        b.numel() * (4 if b.is_floating_point() else b.element_size()) for b in buffers
    )
    file_bytes = Path(path).stat().st_size if path and Path(path).is_file() else None

    types = _leaf_types(module)
    named = dict(module.named_modules())
    flops = None
    per_module: dict[str, int] = {}
    inplace: list[str] = []
    custom: list[str] = []
    run_error = None
    if input_spec is not None:
        flops, per_module, inplace, custom, run_error = _probe(
            module, input_spec.example_inputs(batch_size=1)
        )

    layers: dict[str, dict[str, int]] = {}
    for name, tname in types.items():
        entry = layers.setdefault(tname, {"count": 0, "params": 0, "flops": 0})
        entry["count"] += 1
        entry["params"] += sum(p.numel() for p in named[name].parameters(recurse=False))
        entry["flops"] += per_module.get(name, 0) if name else (flops or 0)
    layers = dict(sorted(layers.items(), key=lambda kv: (-kv[1]["params"], kv[0])))

    gm, trace_error = _trace(module)
    patterns = _fx_patterns(gm) if gm is not None else _order_patterns(types)
    reused = _reused_modules(gm) if gm is not None else {}

    q_params = sum(v["params"] for k, v in layers.items() if k in _QUANTIZABLE)
    q_flops = sum(v["flops"] for k, v in layers.items() if k in _QUANTIZABLE)
    conv_flops = sum(v["flops"] for k, v in layers.items() if k in _CONV)
    training = sorted(
        name
        for name, m in module.named_modules()
        if m.training and type(m).__name__ in (*_DROPOUT, *_BN)
    )
    uncounted = sorted({t for t in types.values() if t in ("LSTM", "GRU", "RNN")})
    summary: dict[str, Any] = {
        "source": source,
        "type": type(module).__name__,
        "params_total": n_params,
        "params_trainable": n_train,
        "size_fp32_bytes": size_fp32,
        "size_bytes": size,
        "file_bytes": file_bytes,
        "input_spec": input_spec.to_dict() if input_spec is not None else None,
        "flops": flops,
        "flops_note": "FLOPs at batch 1 from torch.utils.flop_counter (1 multiply-add = 2 FLOPs)"
        + (f"; {', '.join(uncounted)} not counted" if uncounted else ""),
        "layers": layers,
        "fusable_patterns": patterns,
        "pattern_method": "fx" if gm is not None else "module_order",
        "fx_traceable": gm is not None,
        "fx_error": trace_error,
        "quantizable": {
            "params": q_params,
            "params_share": q_params / n_params if n_params else 0.0,
            "flops": q_flops,
            "flops_share": q_flops / flops if flops else None,
        },
        "training_modules": training,
        "reused_modules": reused,
        "custom_autograd_functions": custom,
    }
    findings = _model_findings(summary, module, check_training, run_error, inplace, conv_flops)
    return CheckResult(summary, tuple(findings))


def _model_findings(
    s: Mapping[str, Any],
    module: nn.Module,
    check_training: bool,
    run_error: str | None,
    inplace: Sequence[str],
    conv_flops: int,
) -> list[Finding]:
    out: list[Finding] = []
    if s["input_spec"] is None:
        out.append(
            Finding(
                "no-input-spec",
                "warn",
                "Input shape unknown: FLOPs and runtime checks skipped",
                "The source does not say what inputs the model takes.",
                "Give --input-shape, e.g. --input-shape 1x3x224x224.",
            )
        )
    elif run_error:
        out.append(
            Finding(
                "forward-fails",
                "fail",
                "The model does not run on example inputs",
                run_error,
                "Check --input-shape (shape and dtype) matches what forward() expects.",
            )
        )
    if check_training and s["training_modules"]:
        out.append(training_finding(s["training_modules"], "as given"))
    flops = s["flops"]
    q = s["quantizable"]
    if flops and q["flops_share"] is not None and q["flops_share"] >= 0.5:
        conv_heavy = conv_flops >= 0.5 * flops
        how = (
            "static INT8 with calibration data (torchslim QuantizeConfig; OpenVINO/ONNX Runtime)"
            if conv_heavy
            else "dynamic INT8 first (no calibration data), static INT8 for more speed"
        )
        out.append(
            Finding(
                "quantizable",
                "info",
                f"Quantize: {_fmt_share(q['flops_share'])} of FLOPs are in Linear/Conv layers",
                f"{_fmt_share(q['params_share'])} of {s['params_total']:,} parameters are in "
                f"quantizable layers ({', '.join(_QUANTIZABLE)}).",
                f"INT8: {how}; weights shrink ~4x.",
            )
        )
    elif flops and q["flops_share"] is not None:
        out.append(
            Finding(
                "quantizable",
                "info",
                f"Only {_fmt_share(q['flops_share'])} of FLOPs are in quantizable layers",
                "Most work happens in ops INT8 kernels do not cover.",
                "Expect little speed-up from INT8; try pruning, low-rank or torch.compile instead.",
            )
        )
    elif q["params_share"] >= 0.5:
        out.append(
            Finding(
                "quantizable",
                "info",
                f"{_fmt_share(q['params_share'])} of parameters are in quantizable layers",
                "FLOPs were not counted (no input shape or recurrent/embedding layers).",
                "Dynamic INT8 (Linear/LSTM/GRU) or weight-only INT8 (Embedding) shrinks them ~4x.",
            )
        )
    if s["fusable_patterns"]:
        counts: dict[str, int] = {}
        for p in s["fusable_patterns"]:
            counts[p["pattern"]] = counts.get(p["pattern"], 0) + 1
        how = "fx graph" if s["pattern_method"] == "fx" else "module order (tracing failed)"
        out.append(
            Finding(
                "fusable-patterns",
                "info",
                f"{len(s['fusable_patterns'])} fusable pattern(s): "
                + ", ".join(f"{n}× {k}" for k, n in counts.items()),
                f"Found in the {how}; e.g. {' → '.join(s['fusable_patterns'][0]['modules'])}.",
                "Fuse before quantizing: torchslim does it with FuseConfig, or "
                "torch.ao.quantization.fuse_modules; ONNX Runtime/OpenVINO fuse Conv-BN on export.",
            )
        )
    if conv_flops and flops and conv_flops >= 0.5 * flops and _has_4d_contiguous_conv(module):
        out.append(
            Finding(
                "channels-last",
                "info",
                "Conv-heavy model in NCHW (contiguous) memory format",
                f"{_fmt_share(conv_flops / flops)} of FLOPs are convolutions.",
                "Use channels_last for conv-heavy models on CPU: "
                "model.to(memory_format=torch.channels_last) and the same for inputs.",
            )
        )
    if not s["fx_traceable"]:
        out.append(
            Finding(
                "fx-trace-failed",
                "warn",
                "torch.fx cannot trace the model (export risk)",
                str(s["fx_error"]),
                "Data-dependent Python control flow breaks tracing and export: replace "
                "`if x.sum() > 0` style branches with torch.where / torch.cond, or export with "
                "torch.export (strict=False) and check the graph.",
            )
        )
    if inplace:
        out.append(
            Finding(
                "inplace-input",
                "warn",
                "forward() writes into its inputs in place",
                f"Modified after one forward pass: {', '.join(inplace)}.",
                "Use out-of-place ops on inputs (x = x + 1, not x.add_(1)): exporters and batching "
                "servers reuse input buffers.",
            )
        )
    if s["custom_autograd_functions"]:
        out.append(
            Finding(
                "custom-autograd",
                "warn",
                "Custom autograd Functions in forward()",
                ", ".join(s["custom_autograd_functions"]),
                "ONNX/TorchScript export cannot see inside them: give them a symbolic() or "
                "register a custom op (torch.library), or replace them with standard ops for "
                "inference.",
            )
        )
    rnn = [t for t in ("LSTM", "GRU", "RNN") if t in s["layers"]]
    if rnn:
        out.append(
            Finding(
                "recurrent-layers",
                "warn",
                f"Recurrent layers ({', '.join(rnn)}) need care to export",
                "Static INT8 and PT2E quantizers skip them; some exporters (TensorRT, older "
                "OpenVINO/ONNX opsets) handle them poorly; FlopCounterMode does not count them.",
                "Use dynamic INT8 (torch.ao.quantization.quantize_dynamic) for LSTM/GRU, and check "
                "ONNX export with a parity test.",
            )
        )
    if s["reused_modules"]:
        names = ", ".join(f"{k} ×{v}" for k, v in list(s["reused_modules"].items())[:5])
        out.append(
            Finding(
                "reused-modules",
                "info",
                "Some modules are called more than once per forward pass",
                f"{names} (a Python loop or a shared layer).",
                "Give each call its own module before static quantization: one observer per call "
                "site (PT2E quantizers fail on a shared ReLU).",
            )
        )
    params = list(module.parameters())
    if any(str(p.dtype) == "torch.float64" for p in params):
        out.append(
            Finding(
                "float64",
                "warn",
                "Parameters are float64",
                "Double precision is 2x the size and much slower on every backend.",
                "Convert with model.float() before optimising.",
            )
        )
    return out


def _has_4d_contiguous_conv(module: nn.Module) -> bool:
    """True if some Conv2d weight (with more than one input channel) is not channels_last."""
    import torch
    from torch import nn

    return any(
        isinstance(m, nn.Conv2d)
        and m.weight.dim() == 4
        and m.weight.shape[1] > 1
        and not m.weight.is_contiguous(memory_format=torch.channels_last)
        for m in module.modules()
    )


def training_finding(names: Sequence[str] | bool, when: str) -> Finding:
    detail = (
        f"{len(names)} Dropout/BatchNorm module(s) in training mode {when}: "
        + ", ".join(list(names)[:6])
        + (" …" if len(names) > 6 else "")
        if not isinstance(names, bool)
        else f"The model was in training mode {when}."
    )
    return Finding(
        "train-mode",
        "fail",
        "Dropout/BatchNorm left in training mode",
        detail,
        "Call model.eval() before export, calibration or benchmarking: in training mode Dropout "
        "is random and BatchNorm uses batch statistics.",
    )
