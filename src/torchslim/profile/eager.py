"""Eager (and Inductor) profiling with ``torch.profiler``: per operator and per ``nn.Module``.

How it works: every module of the model gets a forward pre-/post-hook that opens and closes a
``torch.profiler.record_function`` range named ``torchslim.module::PATH`` — the profiler times
those ranges itself, together with every ATen operator (with input shapes, FLOPs and memory
events). Each operator's self time is attributed to the innermost module range around it, so:

* a layer's ``self_ms`` is the operator time inside that module and not inside a child module
  (a ``BasicBlock``'s residual ``add`` counts for the block, its convolutions for their ``Conv2d``);
* a module's ``total_ms`` is the profiler's duration of its range (children, Python code and the
  hooks included);
* the time outside any operator (Python, dispatch) is not in any layer: it is the per-call
  overhead that ``latency_ms - layer_sum_ms`` reports.

Peak memory per layer comes from the profiler's allocation events: the running total of allocated
bytes on the timeline, its highest point inside the layer's range minus its value at the start.

A compiled model (``inductor``) runs fused kernels inside compiled regions, where module hooks do
not fire: it is profiled by operator (kernel) only, and the result says so.

The first profiled call is discarded (``torch.profiler.schedule`` warm-up step).
"""

from __future__ import annotations

import bisect
import contextlib
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from torchslim.profile._common import ancestors, median, shapes_text, trimmed_mean
from torchslim.profile.result import LayerTime, OperatorTime, RuntimeProfile, op_kind

__all__ = ["MODULE_PREFIX", "profile_callable"]

MODULE_PREFIX = "torchslim.module::"
"""Name prefix of the module ranges in the profile (and in the Chrome trace)."""
CALL_LABEL = "torchslim.call"
"""Name of the range around one whole model call."""

_MB = 1e6


class _ModuleRanges:
    """Forward hooks that open/close one ``record_function`` range per module call."""

    def __init__(self, module: Any) -> None:
        import torch

        # The C++ range (what torch.compile uses for its own ranges) costs well under a
        # microsecond; the Python ``record_function`` dispatches an operator per enter/exit,
        # which under the profiler costs tens of microseconds per module.
        self._rf = getattr(torch._C._profiler, "_RecordFunctionFast", None) or (
            torch.profiler.record_function
        )
        self._handles: list[Any] = []
        self._stack: list[Any] = []
        self.types: dict[str, str] = {}
        self.leaves: set[str] = set()
        for path, mod in module.named_modules():
            self.types[path] = type(mod).__name__
            if not any(True for _ in mod.children()):
                self.leaves.add(path)
            self._handles.append(mod.register_forward_pre_hook(self._enter(path)))
            self._handles.append(mod.register_forward_hook(self._exit, always_call=True))

    def _enter(self, path: str) -> Callable[..., None]:
        label = MODULE_PREFIX + path

        def hook(mod: Any, args: Any) -> None:
            rf = self._rf(label)
            rf.__enter__()
            self._stack.append(rf)

        return hook

    def _exit(self, mod: Any, args: Any, out: Any) -> None:
        if self._stack:
            self._stack.pop().__exit__(None, None, None)

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


def _innermost_module(event: Any) -> str | None:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith(MODULE_PREFIX):
            return str(parent.name[len(MODULE_PREFIX) :])
        parent = parent.cpu_parent
    return None


def _call_of(event: Any) -> Any:
    """The model-call range ``event`` ran inside, or ``None``."""
    parent = event.cpu_parent
    while parent is not None:
        if parent.name == CALL_LABEL:
            return parent
        parent = parent.cpu_parent
    return None


class _PerCall:
    """Sums per model call, reduced to their trimmed mean over the profiled calls (robust to
    the odd call a busy machine slows down)."""

    def __init__(self, n_calls: int) -> None:
        self.n = n_calls
        self.sums: dict[str, dict[int, float]] = {}

    def add(self, key: str, call: int, value: float) -> None:
        per = self.sums.setdefault(key, {})
        per[call] = per.get(call, 0.0) + value

    def value(self, key: str) -> float:
        per = self.sums.get(key, {})
        return trimmed_mean([per.get(i, 0.0) for i in range(self.n)])


_HASH = re.compile(r"\s*\b[0-9a-z]{24,}\b")


def _clean(name: str) -> str:
    """``## Call CompiledFxGraph f5a…(52 chars) ##`` → ``Call CompiledFxGraph``."""
    if name.startswith("## ") and name.endswith(" ##"):
        name = name[3:-3]
    return _HASH.sub("", name).strip() or name


def _is_annotation(name: str) -> bool:
    return name.startswith(MODULE_PREFIX) or name == CALL_LABEL or name.startswith("ProfilerStep")


@contextlib.contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Silence what the profiler's native library writes straight to file descriptor 2 when it
    starts and stops (``profiler_start``/``profiler_stop`` lines, a GPU probe failing on
    CPU-only machines). Python-level output is unaffected outside this block."""
    import os
    import sys

    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2 (embedded interpreters): leave it alone
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _memory_timeline(prof: Any) -> tuple[list[float], list[int]]:
    """``(timestamps in µs on the events' clock, running allocated bytes)`` on the CPU."""
    try:
        results = prof.profiler.kineto_results
        start_ns = results.trace_start_ns()
        events = [
            (float((k.start_ns() - start_ns) / 1000.0), int(k.nbytes()))
            for k in results.events()
            if k.name() == "[memory]" and "cpu" in str(k.device_type()).lower()
        ]
    except Exception:  # private API: memory per layer is best effort
        return [], []
    events.sort()
    ts, running, total = [], [], 0
    for t, n in events:
        total += n
        ts.append(t)
        running.append(total)
    return ts, running


def _peak_growth(ts: list[float], running: list[int], start: float, end: float) -> int:
    """Highest running allocation inside ``[start, end]`` minus its value just before ``start``."""
    if not ts:
        return 0
    i = bisect.bisect_left(ts, start)
    j = bisect.bisect_right(ts, end)
    base = running[i - 1] if i > 0 else 0
    if j <= i:
        return 0
    return max(0, max(running[i:j]) - base)


def profile_callable(
    fn: Callable[..., Any],
    inputs: Sequence[Any],
    *,
    module: Any = None,
    iterations: int = 10,
    warmup: int = 2,
    device: str = "cpu",
    trace: str | Path | None = None,
) -> RuntimeProfile:
    """Profile ``fn(*inputs)`` with ``torch.profiler``.

    Args:
        fn: The model call (an ``nn.Module``, or a compiled/deployed callable).
        inputs: Its inputs.
        module: The ``nn.Module`` whose hierarchy to attribute time to (``None``: by operator
            only, e.g. for a compiled graph).
        iterations: Profiled calls (after ``warmup`` unprofiled calls and one discarded
            profiled call).
        warmup: Unprofiled calls first.
        device: ``cpu`` or ``cuda`` (adds CUDA activity and synchronises).
        trace: Write the Chrome-trace JSON here.

    Returns:
        The :class:`~torchslim.profile.result.RuntimeProfile` (times per call).
    """
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function, schedule

    activities = [ProfilerActivity.CPU]
    if device == "cuda":
        activities.append(ProfilerActivity.CUDA)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    ranges = _ModuleRanges(module) if module is not None else None
    try:
        with torch.inference_mode():
            for _ in range(warmup):
                fn(*inputs)
            sync()
            with (
                _quiet_native_stderr(),
                profile(
                    activities=activities,
                    record_shapes=True,
                    profile_memory=True,
                    with_flops=True,
                    schedule=schedule(wait=0, warmup=1, active=iterations, repeat=1),
                    acc_events=True,
                ) as prof,
            ):
                for _ in range(iterations + 1):
                    with record_function(CALL_LABEL):
                        fn(*inputs)
                    sync()
                    prof.step()
    finally:
        if ranges is not None:
            ranges.remove()
    if trace is not None:
        Path(trace).parent.mkdir(parents=True, exist_ok=True)
        prof.export_chrome_trace(str(trace))
    return _summarise(prof, ranges, iterations, device, str(trace) if trace else None)


def _summarise(
    prof: Any, ranges: _ModuleRanges | None, iterations: int, device: str, trace: str | None
) -> RuntimeProfile:
    events = [e for e in prof.events() if e.name != "[memory]"]
    calls = sorted((e for e in events if e.name == CALL_LABEL), key=lambda e: e.time_range.start)
    index = {id(c): i for i, c in enumerate(calls)}
    n = max(1, len(calls))
    ts, running = _memory_timeline(prof)

    def self_us(e: Any) -> float:
        if device == "cuda":
            return float(e.self_cpu_time_total) + float(getattr(e, "self_device_time_total", 0))
        return float(e.self_cpu_time_total)

    # Operators: every ATen/kernel event inside a model call, with the call it belongs to.
    op_events: list[tuple[Any, int]] = []
    for e in events:
        if _is_annotation(e.name):
            continue
        call = _call_of(e)
        if call is not None:
            op_events.append((e, index[id(call)]))

    op_self, op_total = _PerCall(n), _PerCall(n)
    ops: dict[str, dict[str, Any]] = {}
    for e, i in op_events:
        name = _clean(e.name)
        rec = ops.setdefault(name, {"calls": 0, "flops": 0, "shapes": Counter()})
        op_self.add(name, i, self_us(e))
        op_total.add(name, i, float(e.cpu_time_total))
        rec["calls"] += 1
        rec["flops"] += int(getattr(e, "flops", 0) or 0)
        s = shapes_text(e.input_shapes)
        if s:
            rec["shapes"][s] += 1
    operators = [
        OperatorTime(
            name=name,
            self_ms=op_self.value(name) / 1000.0,
            total_ms=op_total.value(name) / 1000.0,
            calls=round(r["calls"] / n),
            flops=round(r["flops"] / n) or None,
            shapes=r["shapes"].most_common(1)[0][0] if r["shapes"] else None,
        )
        for name, r in ops.items()
    ]
    flops_total = sum(int(getattr(e, "flops", 0) or 0) for e, _ in op_events)

    layers: list[LayerTime] = []
    modules: list[LayerTime] = []
    notes: list[str] = []
    if ranges is None:
        # By operator only: each operator type is a "layer" of the compiled graph.
        layers = [
            LayerTime(
                name=o.name,
                type=o.name,
                self_ms=o.self_ms,
                total_ms=o.total_ms,
                calls=o.calls,
                kind=op_kind(o.name),
                flops=o.flops,
                shapes=o.shapes,
            )
            for o in operators
        ]
        notes.append(
            "compiled graph: time is attributed to kernels, not to nn.Modules (module hooks do not "
            "run inside compiled regions); profile --runtime eager for the module view"
        )
    else:
        own_self = _PerCall(n)
        own: dict[str, dict[str, Any]] = {}
        for e, i in op_events:
            path = _innermost_module(e)
            if path is None:
                continue
            rec = own.setdefault(path, {"flops": 0, "shapes": None})
            own_self.add(path, i, self_us(e))
            rec["flops"] += int(getattr(e, "flops", 0) or 0)
            parent = e.cpu_parent
            direct = parent is not None and parent.name.startswith(MODULE_PREFIX)
            if rec["shapes"] is None and direct:
                rec["shapes"] = shapes_text(e.input_shapes)
        span_total = _PerCall(n)
        spans: dict[str, dict[str, Any]] = {}
        for e in events:
            if not e.name.startswith(MODULE_PREFIX):
                continue
            call = _call_of(e)
            if call is None:
                continue
            path = e.name[len(MODULE_PREFIX) :]
            rec = spans.setdefault(path, {"calls": 0, "peak": 0})
            span_total.add(path, index[id(call)], float(e.cpu_time_total))
            rec["calls"] += 1
            rng = e.time_range
            rec["peak"] = max(rec["peak"], _peak_growth(ts, running, rng.start, rng.end))
        subtree_flops: dict[str, int] = {}
        for path, r in own.items():
            for a in ancestors(path):
                subtree_flops[a] = subtree_flops.get(a, 0) + r["flops"]
        for path, span in spans.items():
            mine = own.get(path)
            type_name = ranges.types.get(path, "module")
            self_ms = own_self.value(path) / 1000.0
            row = LayerTime(
                name=path,
                type=type_name,
                self_ms=self_ms,
                total_ms=span_total.value(path) / 1000.0,
                calls=max(1, round(span["calls"] / n)),
                module=path,
                kind=op_kind(type_name),
                flops=round((mine["flops"] if mine else 0) / n) or None,
                peak_memory_mb=span["peak"] / _MB if ts else None,
                shapes=mine["shapes"] if mine else None,
            )
            if mine is not None and self_ms > 0:
                layers.append(row)
            modules.append(replace(row, flops=round(subtree_flops.get(path, 0) / n) or None))
        modules.sort(key=lambda r: (-r.total_ms, r.name))
    call_peaks = [_peak_growth(ts, running, c.time_range.start, c.time_range.end) for c in calls]
    return RuntimeProfile(
        layers=layers,
        operators=operators,
        profiled_ms=median([float(c.cpu_time_total) / 1000.0 for c in calls]),
        iterations=len(calls),
        modules=modules,
        peak_memory_mb=max(call_peaks) / _MB if call_peaks and ts else None,
        flops=round(flops_total / n) or None,
        notes=notes,
        trace=trace,
    )
