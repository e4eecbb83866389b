"""OpenVINO profiling: the plugin's per-layer performance counters (``PERF_COUNT``).

The model is compiled again with the ``openvino`` runtime's own properties
(:func:`~torchslim.runtimes.ov.compile_properties`: hint, threads, inference precision) plus
``PERF_COUNT=True``, and run through one infer request like the runtime does. After each profiled
call, ``InferRequest.profiling_info`` gives every executed layer: name, type, execution type
(the kernel, e.g. ``brgconv_avx512_I8`` or ``jit_avx512_f32``) and time; the compiled model's
runtime graph adds the precision it ran in (``runtimePrecision``) and the original layers fused
into it (``originalLayersNames``).

Module mapping: the PyTorch frontend names layers ``__module.layer1.0.conv1/aten::_convolution/
Convolution``. A compiled layer takes the module of its own name, else (when conversion renamed
it while folding, e.g. a convolution that absorbed its BatchNorm becomes ``Multiply_4746``) the
convolution just before the first fused BatchNorm among its sibling modules, else the common
parent of the fused layers' modules.

Layers that did not run (``NOT_RUN``: fused into another) and parameters/results are left out.
Times are each layer's ``real_time``, a trimmed mean over the profiled calls (the slowest and
fastest fifth left out).
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any

from torchslim.profile._common import median, module_totals, trimmed_mean
from torchslim.profile.result import (
    LayerTime,
    OperatorTime,
    RuntimeProfile,
    op_kind,
    precision_name,
)

__all__ = ["module_from_names", "profile_openvino"]

_MODULE_RE = re.compile(r"__module\.([^/]+)/")
_SKIP_TYPES = {"Parameter", "Result", "Constant", "Input", "Output"}


def _module_in(name: str) -> str | None:
    m = _MODULE_RE.search(name)
    return m.group(1) if m else None


def _common_parent(paths: Sequence[str]) -> str:
    split = [p.split(".") for p in paths]
    out: list[str] = []
    for parts in zip(*split, strict=False):
        if all(p == parts[0] for p in parts):
            out.append(parts[0])
        else:
            break
    return ".".join(out)


def module_from_names(
    friendly: str, original: Sequence[str], modules: dict[str, str] | None = None
) -> str | None:
    """The ``nn.Module`` path of a compiled layer (see the module docstring for the order).

    Args:
        friendly: The compiled layer's name.
        original: Its ``originalLayersNames`` (the converted model's layers fused into it).
        modules: ``path -> class name`` of the original model, in ``named_modules()`` order: a
            convolution renamed after absorbing its BatchNorm maps to the convolution just
            before that BatchNorm among its siblings (``layer1.0.bn1`` → ``layer1.0.conv1``).
    """
    own = _module_in(friendly)
    if own is not None:
        return own
    paths = [p for p in (_module_in(n) for n in original) if p is not None]
    if not paths:
        return None
    first = paths[0]
    if modules and "norm" in modules.get(first, "").lower():
        before = _previous_sibling(first, modules)
        if before is not None:
            return before
    return _common_parent(paths) if len(paths) > 1 else first


def _previous_sibling(path: str, modules: dict[str, str]) -> str | None:
    parent = path.rpartition(".")[0]
    siblings = [
        p
        for p in modules
        if p and p.rpartition(".")[0] == parent and p.count(".") == path.count(".")
    ]
    if path not in siblings:
        return None
    i = siblings.index(path)
    if i == 0:
        return None
    before = siblings[i - 1]
    kind = op_kind(modules[before])
    return before if kind in ("conv", "matmul") else None


def _rt(info: Any, key: str) -> str:
    try:
        return str(info[key].astype(str))
    except Exception:  # key absent in this plugin version
        return ""


def profile_openvino(
    model: Any,
    config: Any,
    inputs: Sequence[Any],
    *,
    iterations: int = 20,
    warmup: int = 3,
    module_types: dict[str, str] | None = None,
) -> RuntimeProfile:
    """Profile an ``openvino.Model`` with the ``openvino`` runtime's compile properties.

    Args:
        model: The ``openvino.Model`` (the runtime's ``.model``).
        config: The :class:`~torchslim.runtimes.configs.OpenVINOConfig` it runs with.
        inputs: Torch tensors, one per model input.
        iterations: Profiled calls (after ``warmup``).
        warmup: Calls first, not counted.
        module_types: ``path -> class name`` for the module table.

    Returns:
        The :class:`~torchslim.profile.result.RuntimeProfile` (times per call).
    """
    from torchslim.lowering.openvino import openvino_module
    from torchslim.runtimes.ov import compile_properties

    ov = openvino_module()
    props = dict(compile_properties(config))
    props["PERF_COUNT"] = True
    compiled = ov.Core().compile_model(model, config.device, props)
    request = compiled.create_infer_request()
    arrays = [x.detach().contiguous().cpu().numpy() for x in inputs]
    for i, a in enumerate(arrays):
        request.set_input_tensor(i, ov.Tensor(a, shared_memory=True))
    for _ in range(warmup):
        request.infer()
    runs: dict[str, list[float]] = {}
    meta: dict[str, tuple[str, str]] = {}
    walls = []
    for _ in range(iterations):
        start = time.perf_counter()
        request.infer()
        walls.append((time.perf_counter() - start) * 1000.0)
        seen: dict[str, float] = {}
        for p in request.profiling_info:
            if p.node_type in _SKIP_TYPES or str(p.status).endswith("NOT_RUN"):
                continue
            seen[p.node_name] = seen.get(p.node_name, 0.0) + p.real_time.total_seconds() * 1e3
            meta[p.node_name] = (p.node_type, p.exec_type)
        for name, ms in seen.items():
            runs.setdefault(name, []).append(ms)

    runtime: dict[str, tuple[list[str], str]] = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        names = [n for n in _rt(info, "originalLayersNames").split(",") if n]
        runtime[op.get_friendly_name()] = (names, _rt(info, "runtimePrecision"))

    layers = []
    by_type: dict[str, list[float]] = {}
    for name, values in runs.items():
        values = values + [0.0] * (iterations - len(values))
        ms = trimmed_mean(values)
        node_type, exec_type = meta[name]
        original, rt_precision = runtime.get(name, ([], ""))
        precision = precision_name(rt_precision) or precision_name(exec_type)
        layers.append(
            LayerTime(
                name=name,
                type=node_type,
                self_ms=ms,
                total_ms=ms,
                calls=1,
                module=module_from_names(name, original, module_types),
                kind=op_kind(node_type),
                precision=precision,
                exec_type=exec_type,
                nodes=tuple(original),
            )
        )
        by_type.setdefault(node_type, []).append(ms)
    operators = [
        OperatorTime(name=t, self_ms=sum(v), total_ms=sum(v), calls=len(v))
        for t, v in by_type.items()
    ]
    return RuntimeProfile(
        layers=layers,
        operators=operators,
        profiled_ms=median(walls),
        iterations=iterations,
        modules=module_totals(layers, module_types),
    )
