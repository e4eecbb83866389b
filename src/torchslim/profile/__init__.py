"""``torchslim.profile()``: where the time and memory of one model call go, per layer and per
operator, in the runtime the model is deployed to — measured by that runtime's own profiler.

=================  ==========================================================================
runtime            profiler (module)
=================  ==========================================================================
``eager``          ``torch.profiler`` with shapes, FLOPs and memory; grouped by operator and
                   by ``nn.Module`` (:mod:`torchslim.profile.eager`)
``inductor``       the same profiler on the ``torch.compile`` d model, by kernel
``onnxruntime``    the session's ``enable_profiling``, mapped to ONNX nodes and back to modules
                   (:mod:`torchslim.profile.ort`)
``openvino``       ``PERF_COUNT`` per-layer counters: layer, type, kernel, precision
                   (:mod:`torchslim.profile.ov`)
=================  ==========================================================================

Example::

    import torchslim

    result = torchslim.profile("torchslim:fashion_resnet", runtime="openvino")
    print(result.slowest().module, result.layer_sum_ms, result.latency_ms)
    for advice in result.findings:
        print(advice.title, "→", advice.recommendation)

An artifact directory is profiled in its own runtime (an INT8 OpenVINO artifact shows which
layers ran in int8 and which in float). Each profile also updates the per-layer latency table for
this machine and model (:mod:`torchslim.profile.table`). ``ProfileResult.to_dict()`` (what
``torchslim profile --json`` prints) is documented in :mod:`torchslim.profile.result`.
"""

from __future__ import annotations

import sys
import types
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torchslim.errors import ShapeError, TorchslimError
from torchslim.profile.result import (
    Advice,
    LayerTime,
    OperatorTime,
    ProfileResult,
    RuntimeProfile,
    precision_name,
)

if TYPE_CHECKING:
    from torchslim.specs import InputSpec
    from torchslim.timing import TimingConfig

__all__ = [
    "RUNTIMES",
    "Advice",
    "LayerTime",
    "OperatorTime",
    "ProfileResult",
    "profile",
]

RUNTIMES = ("eager", "inductor", "onnxruntime", "openvino")
"""The runtimes :func:`profile` can profile."""


def _loaded(model: Any, spec: Any, arch: str | None, trust_pickle: bool, verify: bool) -> Any:
    from torchslim.models import LoadedModel, declared_input_spec, load_model

    if isinstance(model, (str, Path)):
        return load_model(
            str(model), arch=arch, input_spec=spec, trust_pickle=trust_pickle, verify=verify
        )
    if isinstance(model, LoadedModel):
        return model
    import torch

    if isinstance(model, torch.nn.Module):
        if spec is None:
            declared = declared_input_spec(model)
            spec = declared[0] if declared else None
        if isinstance(spec, str):
            from torchslim.specs import parse_input_spec

            spec = parse_input_spec(spec)
        return LoadedModel(type(model).__name__, "module", model.eval(), spec)
    raise TorchslimError(
        f"Cannot profile a {type(model).__name__}.",
        "Give a model source string, a LoadedModel or an nn.Module.",
    )


def _default_runtime(loaded: Any) -> str:
    deployed = getattr(loaded, "deployed", None)
    if deployed is not None:
        return str(deployed.runtime)
    return "onnxruntime" if loaded.module is None else "eager"


def _deployed_for(loaded: Any, runtime: str, inputs: tuple[Any, ...], threads: int) -> Any:
    """The runtime object to profile: the artifact's own, else built from the model."""
    from torchslim.runtimes import build

    deployed = getattr(loaded, "deployed", None)
    if deployed is not None and str(deployed.runtime) == runtime:
        return deployed
    if runtime == "onnxruntime":
        from torchslim.runtimes.configs import OrtConfig

        if loaded.module is None and loaded.onnx_path is not None:
            from torchslim.lowering import OnnxModel

            return build(OnnxModel.from_file(loaded.onnx_path), OrtConfig(), inputs)
        return build(_module(loaded, runtime), OrtConfig(), inputs)
    if runtime == "openvino":
        from torchslim.runtimes.configs import OpenVINOConfig

        return build(_module(loaded, runtime), OpenVINOConfig(), inputs)
    if runtime == "inductor":
        from torchslim.runtimes.configs import InductorConfig

        return build(_module(loaded, runtime), InductorConfig(threads=threads), inputs)
    raise TorchslimError(  # pragma: no cover - checked by profile()
        f"Unknown runtime '{runtime}'.", f"Use one of {', '.join(RUNTIMES)}."
    )


def _module(loaded: Any, runtime: str) -> Any:
    if loaded.module is None:
        have = _default_runtime(loaded)
        raise TorchslimError(
            f"'{loaded.source}' holds no PyTorch module to build the {runtime} runtime from.",
            f"Profile it in its own runtime (--runtime {have}), or profile the model it came from.",
        )
    return loaded.module


def _module_flops(module: Any, inputs: tuple[Any, ...]) -> dict[str, int]:
    """FLOPs per ``nn.Module`` path (``FlopCounterMode``; children included)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    try:
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            module(*inputs)
    except Exception:  # exotic modules: FLOPs are optional
        return {}
    out: dict[str, int] = {}
    for key, per_op in counter.get_flop_counts().items():
        if key == "Global":
            continue
        path = key.partition(".")[2]
        out[path] = int(sum(per_op.values()))
    return out


def _attach_flops(
    layers: list[LayerTime], flops: dict[str, int], leaves: set[str]
) -> list[LayerTime]:
    """Give each module's FLOPs to the slowest compute layer mapped to it (runtime layers)."""
    done: set[str] = set()
    out = []
    for x in sorted(layers, key=lambda x: -x.self_ms):
        if (
            x.flops is None
            and x.module in leaves
            and x.module not in done
            and x.kind in ("conv", "matmul")
            and flops.get(x.module)
        ):
            done.add(x.module)
            x = replace(x, flops=flops[x.module])
        out.append(x)
    return out


def _with_peak(layers: list[LayerTime], peak: Any, default_dtype: str) -> list[LayerTime]:
    out = []
    for x in layers:
        if x.flops and x.self_ms > 0:
            gflops = x.flops / (x.self_ms * 1e-3) / 1e9
            ref = peak.for_dtype(x.precision or default_dtype) if peak is not None else None
            pct = 100.0 * gflops / ref[1] if ref else None
            x = replace(x, gflops_per_s=gflops, percent_of_peak=pct)
        out.append(x)
    return out


def _eager_precisions(layers: list[LayerTime], module: Any) -> list[LayerTime]:
    mods = dict(module.named_modules())
    out = []
    for x in layers:
        mod = mods.get(x.module or "")
        p = next(iter(mod.parameters(recurse=False)), None) if mod is not None else None
        out.append(replace(x, precision=precision_name(str(p.dtype))) if p is not None else x)
    return out


def _precision_summary(layers: tuple[LayerTime, ...]) -> dict[str, dict[str, float]]:
    total = sum(x.self_ms for x in layers)
    out: dict[str, dict[str, float]] = {}
    for x in layers:
        rec = out.setdefault(x.precision or "unknown", {"layers": 0, "ms": 0.0, "share": 0.0})
        rec["layers"] += 1
        rec["ms"] += x.self_ms
    for rec in out.values():
        rec["share"] = rec["ms"] / total if total > 0 else 0.0
    return out


def profile(
    model: Any,
    *,
    runtime: str | None = None,
    batch: int = 1,
    iterations: int | None = None,
    warmup: int = 3,
    threads: int | None = None,
    trace: str | Path | None = None,
    input_spec: InputSpec | str | None = None,
    example_inputs: tuple[Any, ...] | None = None,
    arch: str | None = None,
    trust_pickle: bool = False,
    verify: bool = True,
    peak: bool = True,
    save: bool = True,
    timing: TimingConfig | None = None,
    cache_dir: str | Path | None = None,
) -> ProfileResult:
    """Profile one model call, per layer and per operator, in a runtime's own profiler.

    Args:
        model: A model source (``torchslim:fashion_resnet``, an artifact directory, ``x.onnx``
            …), a :class:`~torchslim.models.LoadedModel` or an ``nn.Module``.
        runtime: ``eager``, ``inductor``, ``onnxruntime`` or ``openvino`` (default: an
            artifact's own runtime, ``onnxruntime`` for an ONNX file, else ``eager``).
        batch: Batch size of the inputs (taken from ``example_inputs`` when given).
        iterations: Profiled calls (default: about one second of calls, 10 to 100).
        warmup: Calls before profiling, not counted.
        threads: Intra-op threads (default: torch's current setting).
        trace: Write a Chrome-trace JSON here (eager, inductor, onnxruntime); open it in
            Perfetto or ``chrome://tracing``.
        input_spec: Input shapes, when the source does not state them.
        example_inputs: The inputs themselves (batch first); wins over ``input_spec``.
        arch: Architecture for weights-only checkpoints.
        trust_pickle: Allow unpickling a full module (only for your own files).
        verify: Check an artifact's hashes before loading it.
        peak: Compare achieved FLOP/s with this machine's GEMM peak
            (:func:`torchslim.machine.machine_peak`, measured once per machine and cached).
        save: Update the per-layer latency table for this machine and model
            (:mod:`torchslim.profile.table`).
        timing: Budget of the end-to-end latency measurement (default: ≥ 20 calls, 0.5–3 s).
        cache_dir: Where the latency table lives (default :func:`torchslim.machine.cache_dir`).

    Returns:
        The :class:`~torchslim.profile.result.ProfileResult` (``findings`` holds the advice).

    Raises:
        ShapeError: The input shapes are unknown (give ``input_spec``).
        TorchslimError: Unknown runtime, a batch below 1, or a runtime that cannot be built
            from what the source holds.
        BackendUnavailableError: The runtime's backend is not installed.
    """
    import torch

    from torchslim.machine import machine_info, machine_peak
    from torchslim.profile import _common
    from torchslim.profile.advice import advise
    from torchslim.timing import TimingConfig, time_callable

    if batch < 1:
        raise TorchslimError(f"--batch must be at least 1, got {batch}.", "Give --batch 1 or more.")
    loaded = _loaded(model, input_spec, arch, trust_pickle, verify)
    rt = runtime or _default_runtime(loaded)
    if rt not in RUNTIMES:
        raise TorchslimError(
            f"Cannot profile runtime '{rt}'.", f"Use --runtime {', '.join(RUNTIMES)}."
        )
    if example_inputs is None:
        if loaded.input_spec is None:
            raise ShapeError(
                f"Input shapes of '{loaded.source}' are unknown.",
                "Give --input-shape, e.g. --input-shape 1x3x224x224.",
            )
        example_inputs = tuple(loaded.input_spec.example_inputs(batch))
    else:
        first = example_inputs[0] if example_inputs else None
        if first is not None and int(getattr(first, "ndim", 0) or 0) > 0:
            batch = int(first.shape[0])
    inputs = tuple(example_inputs)
    saved_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        used_threads = torch.get_num_threads()
        module = loaded.module
        target = module if rt == "eager" else _deployed_for(loaded, rt, inputs, used_threads)
        if target is None:
            _module(loaded, rt)
        config = timing or TimingConfig(min_samples=20, min_time_s=0.5, max_time_s=3.0)
        latency = time_callable(lambda: target(*inputs), config).latency.p50_ms
        n = iterations or int(min(100, max(10, round(1000.0 / max(latency, 1e-3)))))
        raw = _run_profiler(rt, target, module, inputs, n, warmup, trace, used_threads)
    finally:
        torch.set_num_threads(saved_threads)

    layers = list(raw.layers)
    if module is not None:
        if rt == "eager":
            layers = _eager_precisions(layers, module)
        else:
            leaves = {p for p, m in module.named_modules() if not any(True for _ in m.children())}
            layers = _attach_flops(layers, _module_flops(module, inputs), leaves)
    info = machine_info(include_gpu=False)
    peak_flops = None
    if peak:
        peak_flops = machine_peak(threads=used_threads, info=info)
    compute_int8 = any(x.precision == "int8" and x.kind in ("conv", "matmul") for x in layers)
    dominant = "int8" if compute_int8 else "fp32"
    layers = _with_peak(layers, peak_flops, dominant)
    ordered, operators, layer_sum = _common.with_shares(layers, raw.operators)
    flops = raw.flops
    if flops is None:
        known = [x.flops for x in ordered if x.flops]
        flops = sum(known) if known else None
    ref = peak_flops.for_dtype(dominant) if peak_flops is not None else None
    result = ProfileResult(
        source=loaded.source,
        runtime=rt,
        batch=batch,
        threads=used_threads,
        iterations=raw.iterations,
        layers=ordered,
        operators=operators,
        latency_ms=latency,
        profiled_ms=raw.profiled_ms,
        layer_sum_ms=layer_sum,
        modules=tuple(raw.modules),
        flops=flops,
        peak_memory_mb=raw.peak_memory_mb,
        peak_gflops=ref[1] if ref else None,
        precision=_precision_summary(ordered),
        trace=raw.trace,
        machine=info.fingerprint,
        notes=tuple(raw.notes),
    )
    notes = list(result.notes)
    if result.profiler_overhead > 1.0:
        notes.append(
            f"calls ran {result.profiled_ms / max(latency, 1e-9):.1f}× slower under the profiler "
            "than without it: per-layer times are inflated. On a busy machine with several "
            "intra-op threads the profiler's bookkeeping competes with the worker threads; "
            "rerun with --threads 1 or on a quiet machine."
        )
    if any((x.percent_of_peak or 0) > 100 for x in ordered):
        notes.append(
            "some layers ran above 100% of the measured GEMM peak: the peak was probably "
            "measured while the machine was busy (torchslim bench --refresh-peak re-measures it "
            "on a quiet machine), or the kernel does fewer operations than the FLOP count "
            "(e.g. Winograd convolutions)."
        )
    result = replace(result, notes=tuple(notes))
    result = replace(result, findings=advise(result))
    if save:
        from torchslim.profile.table import model_hash, save_table

        try:
            path = save_table(result, model_hash(loaded), directory=cache_dir)
            result = replace(result, table=str(path))
        except OSError as exc:
            result = replace(result, notes=(*result.notes, f"latency table not saved: {exc}"))
    return result


def _run_profiler(
    runtime: str,
    target: Any,
    module: Any,
    inputs: tuple[Any, ...],
    iterations: int,
    warmup: int,
    trace: str | Path | None,
    threads: int,
) -> RuntimeProfile:
    types_ = (
        {p: type(m).__name__ for p, m in module.named_modules()} if module is not None else None
    )
    if runtime == "onnxruntime":
        from torchslim.profile.ort import profile_ort

        return profile_ort(
            target.onnx_path,
            target.config,
            inputs,
            iterations=iterations,
            warmup=warmup,
            trace=trace,
            module_paths=set(types_) if types_ else None,
            module_types=types_,
        )
    if runtime == "openvino":
        from torchslim.profile.ov import profile_openvino

        raw = profile_openvino(
            target.model,
            target.config,
            inputs,
            iterations=iterations,
            warmup=warmup,
            module_types=types_,
        )
        if trace is not None:
            raw.notes.append(
                "--trace: OpenVINO has no timeline trace; its per-layer counters are in the "
                "table and in --json"
            )
        return raw
    from torchslim.profile.eager import profile_callable

    return profile_callable(
        target,
        inputs,
        module=module if runtime == "eager" else None,
        iterations=iterations,
        warmup=warmup,
        trace=trace,
    )


class _CallableModule(types.ModuleType):
    """Lets ``torchslim.profile(...)`` call :func:`profile` even once the ``torchslim.profile``
    package itself is bound to that name (importing a subpackage sets the attribute)."""

    def __call__(self, *args: Any, **kwargs: Any) -> ProfileResult:
        return profile(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
