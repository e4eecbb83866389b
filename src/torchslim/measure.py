"""Honest speed, memory and size measurements.

How a latency is measured (:func:`time_callable`, :func:`measure_models`):

1. **First call** is timed on its own and reported as ``first_call_ms``; it never enters the
   steady-state statistics (it pays for lazy initialisation, allocator growth, kernel selection).
2. **Warm-up** runs windows of ``warmup_window`` calls until the medians of two consecutive
   windows differ by less than ``warmup_tolerance`` (bounded by ``min_warmup_calls``,
   ``max_warmup_calls`` and ``max_warmup_s``).
3. **Measured runs** continue until there are at least ``min_samples`` samples *and*
   ``min_time_s`` seconds of them, or ``max_time_s`` / ``max_samples`` is reached. Every call is
   timed individually (with CUDA synchronised on GPU) under ``torch.inference_mode``.
4. **Statistics**: p50/p90/p99 (linear interpolation), mean, sample std, min, max, and a
   distribution-free 95% confidence interval on the median from order statistics (exact binomial
   ranks up to 1000 samples, normal approximation above).

Several models are measured **interleaved** (A B A B … in blocks of about ``round_time_s``), so
machine drift (other processes, thermal throttling) hits them all alike; compare them by ratio.

Throughput is ``batch_size / mean latency`` (sustained items per second). Peak memory is the
growth above the level before the model's first call at that batch size — RSS on CPU (a
background psutil sampler, refined by the kernel's high-water mark on Linux), the CUDA
allocator's peak on GPU — so it covers activations and workspace, not weights or inputs. FLOPs
come from :class:`torch.utils.flop_counter.FlopCounterMode` (matmuls and convolutions it knows;
quantised kernels are not counted). ``percent_of_peak`` divides the achieved FLOP/s by the
machine's GEMM peak (:func:`torchslim.machine.machine_peak`) for the model's dominant dtype.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torchslim._memory import _MemoryProbe
from torchslim._safe_load import eval_mode
from torchslim.errors import BackendUnavailableError, ShapeError, SourceError, TorchslimError
from torchslim.timing import (
    Clock,
    LatencyStats,
    TimingConfig,
    TimingResult,
    _inference_mode,
    _Timer,
    latency_stats,
    median_ci,
    percentile,
    time_callable,
)

if TYPE_CHECKING:
    from torch import nn

    from torchslim.machine import MachineInfo, PeakFlops
    from torchslim.models import InputSpec, LoadedModel

__all__ = [
    "BatchMeasurement",
    "BenchTarget",
    "LatencyStats",
    "Measurement",
    "TimingConfig",
    "TimingResult",
    "count_flops",
    "deployment_bytes",
    "deployment_size_mb",
    "latency_stats",
    "measure_models",
    "measurements_to_dict",
    "median_ci",
    "percentile",
    "time_callable",
]

ProgressFn = Callable[[str, float], None]


# --------------------------------------------------------------------------------------------
# What to measure
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchTarget:
    """One model to measure.

    Attributes:
        name: Display name and JSON key (unique within a run).
        predict: Runs the model: ``predict(*make_inputs(batch_size))``.
        make_inputs: Builds the inputs for a batch size, in the form ``predict`` takes.
        module: The ``nn.Module``, when there is one (for params, FLOPs and dtype).
        path: The model file, when loaded from one (for the on-disk size).
        device: ``"cpu"`` or ``"cuda"``; CUDA is synchronised after every call.
        threads: Intra-op threads the predictor was built with (ONNX Runtime), else ``None``
            (torch's global setting applies).
        params: Parameter count when there is no module (ONNX initializers).
        dtype: Dominant compute dtype (``fp32``, ``bf16``, ``fp16``, ``int8``); inferred from the
            module's weights when ``None``.
        files: The files a deployment of this model needs (their size wins over ``path``).
    """

    name: str
    predict: Callable[..., Any]
    make_inputs: Callable[[int], tuple[Any, ...]]
    module: nn.Module | None = None
    path: Path | None = None
    device: str = "cpu"
    threads: int | None = None
    params: int | None = None
    dtype: str | None = None
    files: tuple[Path, ...] = ()

    @classmethod
    def from_module(
        cls,
        module: nn.Module,
        inputs: InputSpec | Callable[[int], tuple[Any, ...]],
        *,
        name: str,
        path: Path | None = None,
        device: str = "cpu",
    ) -> BenchTarget:
        """Wrap an ``nn.Module``.

        Args:
            module: The model (put in eval mode, moved to ``device``).
            inputs: An :class:`~torchslim.models.InputSpec` (synthetic inputs) or a function
                ``batch_size -> tuple of tensors`` (e.g. slices of real data).
            name: Display name.
            path: Model file for the on-disk size.
            device: Where to run.
        """
        module = eval_mode(module).to(device)  # also ExportedProgram.module()s
        factory = inputs if callable(inputs) else inputs.example_inputs

        def make_inputs(batch_size: int) -> tuple[Any, ...]:
            return tuple(x.to(device) if hasattr(x, "to") else x for x in factory(batch_size))

        return cls(name, module, make_inputs, module=module, path=path, device=device)

    @classmethod
    def from_loaded(
        cls,
        loaded: LoadedModel,
        *,
        name: str | None = None,
        threads: int | None = None,
        device: str = "cpu",
    ) -> BenchTarget:
        """Build a target from :func:`torchslim.models.load_model`'s result.

        ONNX sources run in an ONNX Runtime session with ``threads`` intra-op threads.

        Raises:
            ShapeError: The model's input shapes are unknown (pass an input spec when loading).
        """
        spec = loaded.input_spec
        if spec is None:
            raise ShapeError(
                f"Input shapes of '{loaded.source}' are unknown.",
                "Give --input-shape, e.g. --input-shape 1x3x224x224.",
            )
        files = tuple(Path(f) for f in loaded.metadata.get("deployment_files", ()))
        deployed = getattr(loaded, "deployed", None)
        if deployed is not None:
            return cls(
                name or loaded.name,
                deployed,
                spec.example_inputs,
                device=device,
                dtype=str(getattr(deployed, "info", {}).get("precision") or "fp32"),
                files=files,
            )
        if loaded.module is not None and files:
            target = cls.from_module(loaded.module, spec, name=name or loaded.name, device=device)
            return replace(target, files=files)
        if loaded.module is not None:
            return cls.from_module(
                loaded.module, spec, name=name or loaded.name, path=loaded.path, device=device
            )
        if loaded.onnx_path is None:
            raise SourceError(f"'{loaded.source}' has neither a module nor an ONNX graph.")
        predict = _onnx_predictor(loaded.onnx_path, threads=threads, device=device)
        params = _onnx_facts(loaded.onnx_path)[0]

        def make_inputs(batch_size: int) -> tuple[Any, ...]:
            return tuple(x.numpy() for x in spec.example_inputs(batch_size))

        return cls(
            name or loaded.name,
            predict,
            make_inputs,
            path=loaded.onnx_path,
            device=device,
            threads=threads,
            params=params,
            dtype="fp32",
        )


def _onnx_predictor(
    path: Path, *, threads: int | None = None, device: str = "cpu"
) -> Callable[..., Any]:
    """A minimal ONNX Runtime predictor ``predict(*numpy_arrays) -> list of outputs``."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise BackendUnavailableError("onnxruntime", reason="the package is not installed") from exc
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    providers = ["CPUExecutionProvider"]
    if device == "cuda":
        providers.insert(0, "CUDAExecutionProvider")
    try:
        session = ort.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:  # ORT raises its own exception hierarchy
        raise SourceError(
            f"ONNX Runtime cannot load '{path}': {str(exc).splitlines()[0][:200]}.",
            "Check the opset is supported by the installed onnxruntime, or re-export the model.",
        ) from exc
    names = [i.name for i in session.get_inputs()]

    def predict(*arrays: Any) -> Any:
        return session.run(None, dict(zip(names, arrays, strict=True)))

    return predict


def _onnx_facts(path: Path) -> tuple[int | None, list[Path]]:
    """Parameter count (initializer elements) and external-data files of an ONNX graph."""
    try:
        import onnx

        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # the file was already validated by load_model
        return None, []
    params, files = 0, set()
    for init in proto.graph.initializer:
        params += math.prod(init.dims)
        for entry in init.external_data:
            if entry.key == "location":
                files.add(path.parent / entry.value)
    return params, sorted(files)


def deployment_bytes(*paths: str | Path) -> int:
    """Bytes of the files a deployment needs: each file (an ``.onnx`` with its external-data
    files), or every file under a directory. The one size function: every size torchslim reports
    comes from here, in MB (10⁶ bytes) via :func:`deployment_size_mb`."""
    from torchslim._io import tree_bytes

    total = 0
    seen: set[Path] = set()
    for given in paths:
        path = Path(given)
        files = [path]
        if path.is_file() and path.suffix.lower() == ".onnx":
            files += [p for p in _onnx_facts(path)[1] if p.exists()]
        for f in files:
            key = f.resolve()
            if key not in seen:
                seen.add(key)
                total += tree_bytes(f)
    return total


def deployment_size_mb(*paths: str | Path) -> float:
    """:func:`deployment_bytes` in MB (10⁶ bytes)."""
    from torchslim._io import MB

    return deployment_bytes(*paths) / MB


def _size_bytes(target: BenchTarget) -> int | None:
    if target.files:
        return deployment_bytes(*target.files)
    if target.path is not None and target.path.exists():
        return deployment_bytes(target.path)
    if target.module is not None:
        from torchslim.models import state_dict_bytes

        try:
            return state_dict_bytes(target.module)
        except Exception:  # exotic modules may not serialise
            return None
    return None


def count_flops(module: nn.Module, inputs: Sequence[Any]) -> int | None:
    """FLOPs of one forward pass, counted by ``torch.utils.flop_counter.FlopCounterMode``.

    A multiply-add counts as 2 FLOPs (``Linear(4, 3)`` on a batch of 2: ``2·2·4·3 = 48``).

    Returns:
        The count, or ``None`` when counting failed or found nothing in a model that has
        weights (e.g. quantised kernels the counter does not know).
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    try:
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            module(*inputs)
    except Exception:  # scripted/exotic modules may not support the mode
        return None
    total = int(counter.get_total_flops())
    if total == 0 and any(True for _ in module.state_dict()):
        return None
    return total


def _dominant_dtype(module: nn.Module) -> str:
    """``fp32``/``bf16``/``fp16``/``int8``: the dtype holding most weight elements."""
    import torch

    names = {
        torch.float32: "fp32",
        torch.float64: "fp32",
        torch.bfloat16: "bf16",
        torch.float16: "fp16",
        torch.int8: "int8",
        torch.qint8: "int8",
        torch.quint8: "int8",
        torch.uint8: "int8",
    }
    counts: dict[str, int] = {}

    def add(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            key = names.get(value.dtype)
            if key:
                counts[key] = counts.get(key, 0) + value.numel()
        elif isinstance(value, (tuple, list)):
            for v in value:
                add(v)

    try:
        for value in module.state_dict().values():
            add(value)
    except Exception:
        return "fp32"
    return max(counts, key=lambda k: counts[k]) if counts else "fp32"


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchMeasurement:
    """One model at one batch size.

    Attributes:
        batch_size: Items per call.
        latency: Steady-state statistics per call (whole batch).
        throughput_per_s: Items per second, ``batch_size / mean latency``.
        peak_memory_mb: Peak memory growth in MiB while running (``None`` if not measured).
        first_call_ms: The first call at this batch size, apart from the statistics.
        flops: FLOPs per call (whole batch), ``None`` when unknown.
        percent_of_peak: Achieved FLOP/s as a percentage of the machine's GEMM peak.
        warmup_calls: Warm-up calls made.
        warmup_stable: Whether warm-up ended because timings settled.
    """

    batch_size: int
    latency: LatencyStats
    throughput_per_s: float
    peak_memory_mb: float | None
    first_call_ms: float
    flops: int | None
    percent_of_peak: float | None
    warmup_calls: int
    warmup_stable: bool

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict."""
        return {
            "batch_size": self.batch_size,
            "latency_ms": self.latency.to_dict(),
            "first_call_ms": self.first_call_ms,
            "throughput_per_s": self.throughput_per_s,
            "peak_memory_mb": self.peak_memory_mb,
            "flops": self.flops,
            "percent_of_peak": self.percent_of_peak,
            "warmup_calls": self.warmup_calls,
            "warmup_stable": self.warmup_stable,
        }


@dataclass(frozen=True)
class Measurement:
    """Everything measured about one model, with the conditions it was measured under.

    Attributes:
        name: The target's name.
        params: Parameter count (``None`` when unknown).
        size_bytes: On-disk size: the model file, else the serialised state_dict.
        flops_per_item: FLOPs per item (from the smallest batch), ``None`` when unknown.
        batches: Results per batch size.
        threads: Intra-op threads used.
        device: ``"cpu"`` or ``"cuda"``.
        dtype: Dominant compute dtype, which selects the peak for ``percent_of_peak``.
        machine: :meth:`~torchslim.machine.MachineInfo.to_dict` of the machine.
        peak_gflops: The GEMM peak used for ``percent_of_peak`` (``None`` if none given).
        position: Index in the interleaving order (0 = measured first in every round).
        schedule: The whole run's blocks in execution order: ``(batch, name, calls)``.
        load_avg: The machine's 1-minute load average before and after the run (``None`` where
            the OS has none); above the core count, expect noisy absolute numbers.
    """

    name: str
    params: int | None
    size_bytes: int | None
    flops_per_item: float | None
    batches: Mapping[int, BatchMeasurement]
    threads: int
    device: str
    dtype: str
    machine: Mapping[str, Any]
    peak_gflops: float | None = None
    position: int = 0
    schedule: tuple[tuple[int, str, int], ...] = field(default=(), repr=False)
    load_avg: tuple[float, float] | None = None

    @property
    def size_mb(self) -> float | None:
        """On-disk size in MB (10⁶ bytes)."""
        from torchslim._io import MB

        return None if self.size_bytes is None else self.size_bytes / MB

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (batch keys become strings)."""
        return {
            "name": self.name,
            "params": self.params,
            "size_mb": self.size_mb,
            "size_bytes": self.size_bytes,
            "flops_per_item": self.flops_per_item,
            "dtype": self.dtype,
            "threads": self.threads,
            "device": self.device,
            "peak_gflops": self.peak_gflops,
            "machine": dict(self.machine),
            "load_avg": list(self.load_avg) if self.load_avg else None,
            "batches": {str(b): m.to_dict() for b, m in self.batches.items()},
        }


# --------------------------------------------------------------------------------------------
# Measuring several models
# --------------------------------------------------------------------------------------------


def measure_models(
    targets: Sequence[BenchTarget],
    batch_sizes: Sequence[int] = (1,),
    *,
    threads: int | None = None,
    config: TimingConfig | None = None,
    progress: ProgressFn | None = None,
    peak: PeakFlops | None = None,
    machine: MachineInfo | None = None,
    memory: bool = True,
    clock: Clock = time.perf_counter,
) -> list[Measurement]:
    """Measure several models, interleaved, at each batch size.

    Per batch size: each model gets its first call and warm-up in turn (with its memory baseline
    taken just before), then measured blocks run round-robin — A B A B … — until every model
    has met its :class:`TimingConfig` budget, so drift hits all models alike.

    Args:
        targets: Models to measure; the first is the baseline for ratios.
        batch_sizes: Batch sizes, each measured for every model.
        threads: ``torch.set_num_threads`` for the run (restored afterwards).
        config: Timing budgets.
        progress: Called as ``progress(message, fraction_done)``.
        peak: Machine GEMM peak for ``percent_of_peak`` (none computed when ``None``).
        machine: Fingerprint to record (default :func:`torchslim.machine.machine_info`).
        memory: Measure peak memory.
        clock: Time source.

    Returns:
        One :class:`Measurement` per target, in the given order.
    """
    import torch

    from torchslim.machine import machine_info

    if not targets:
        raise TorchslimError("No models to measure.", "Give at least one model source.")
    names = [t.name for t in targets]
    if len(set(names)) != len(names):
        raise TorchslimError(f"Model names must be unique, got {names}.", "Rename the targets.")
    if not batch_sizes or any(int(b) <= 0 for b in batch_sizes):
        raise TorchslimError(f"Invalid batch sizes {list(batch_sizes)}.", "Give e.g. 1,8,32.")
    config = config or TimingConfig()
    info = machine or machine_info(include_gpu=any(t.device == "cuda" for t in targets))
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    torch_threads = torch.get_num_threads()
    load_before = _loadavg()
    device = "cuda" if any(t.device == "cuda" for t in targets) else "cpu"
    units = len(targets) * len(batch_sizes)
    done_units = 0.0
    schedule: list[tuple[int, str, int]] = []
    results: dict[str, dict[int, tuple[TimingResult, float | None, int | None]]] = {
        n: {} for n in names
    }

    def report(message: str, extra: float) -> None:
        if progress is not None:
            progress(message, min(1.0, (done_units + extra) / units))

    try:
        probe = _MemoryProbe(device) if memory else None
        with contextlib.ExitStack() as stack, _inference_mode():
            if probe is not None:
                stack.enter_context(probe)
            for b in batch_sizes:
                timers: list[_Timer] = []
                flops: list[int | None] = []
                for t in targets:
                    tag = f"{t.name}@{b}"
                    report(f"{t.name} · batch {b} · warm-up", 0.0)
                    inputs = t.make_inputs(b)
                    flops.append(count_flops(t.module, inputs) if t.module is not None else None)
                    sync = torch.cuda.synchronize if t.device == "cuda" else None
                    timer = _Timer(_bind(t.predict, inputs), config, clock, sync)
                    if probe is not None:
                        probe.set_baseline(tag)
                        probe.begin(tag)
                    try:
                        timer.first()
                    # AssertionError: an exported program's shape guard (static batch)
                    except (RuntimeError, ValueError, TypeError, IndexError, AssertionError) as exc:
                        shapes = [tuple(getattr(x, "shape", ())) for x in inputs]
                        raise ShapeError(
                            f"'{t.name}' failed on inputs of shape {shapes}: "
                            f"{str(exc).strip().splitlines()[0][:200]}",
                            "Check --input-shape (or the input spec) matches what the model "
                            "expects.",
                        ) from exc
                    timer.warm_up()
                    if probe is not None:
                        probe.end()
                    timers.append(timer)
                    done_units += 0.2
                while not all(tm.done for tm in timers):
                    for t, timer in zip(targets, timers, strict=True):
                        if timer.done:
                            continue
                        if probe is not None:
                            probe.begin(f"{t.name}@{b}")
                        calls = timer.run_block(config.round_time_s)
                        if probe is not None:
                            probe.end()
                        schedule.append((int(b), t.name, calls))
                    mean_fraction = sum(tm.fraction for tm in timers) / len(timers)
                    report(f"batch {b} · measuring", 0.8 * mean_fraction * len(timers))
                done_units += 0.8 * len(timers)
                for t, timer, fl in zip(targets, timers, flops, strict=True):
                    mem = probe.growth_mb(f"{t.name}@{b}") if probe is not None else None
                    results[t.name][int(b)] = (timer.result(), mem, fl)
        report("done", 0.0)
    finally:
        torch.set_num_threads(old_threads)
    load_after = _loadavg()
    load = (load_before, load_after) if load_before is not None and load_after is not None else None
    return [
        _assemble(t, i, results[t.name], torch_threads, info, peak, tuple(schedule), load)
        for i, t in enumerate(targets)
    ]


def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


def _bind(predict: Callable[..., Any], inputs: tuple[Any, ...]) -> Callable[[], Any]:
    def call() -> Any:
        return predict(*inputs)

    return call


def _assemble(
    target: BenchTarget,
    position: int,
    per_batch: Mapping[int, tuple[TimingResult, float | None, int | None]],
    torch_threads: int,
    info: MachineInfo,
    peak: PeakFlops | None,
    schedule: tuple[tuple[int, str, int], ...],
    load: tuple[float, float] | None,
) -> Measurement:
    dtype = target.dtype or (
        _dominant_dtype(target.module) if target.module is not None else "fp32"
    )
    chosen = peak.for_dtype(dtype) if peak is not None else None
    peak_gflops = chosen[1] if chosen else None
    batches: dict[int, BatchMeasurement] = {}
    for b, (timing, mem, flops) in sorted(per_batch.items()):
        mean_s = timing.latency.mean_ms / 1e3
        throughput = b / mean_s if mean_s > 0 else math.inf
        pct = None
        if flops and peak_gflops and mean_s > 0:
            pct = 100.0 * (flops / mean_s) / (peak_gflops * 1e9)
        batches[b] = BatchMeasurement(
            batch_size=b,
            latency=timing.latency,
            throughput_per_s=throughput,
            peak_memory_mb=mem,
            first_call_ms=timing.first_call_ms,
            flops=flops,
            percent_of_peak=pct,
            warmup_calls=timing.warmup_calls,
            warmup_stable=timing.warmup_stable,
        )
    smallest = min(batches) if batches else None
    fpi = None
    if smallest is not None and batches[smallest].flops is not None:
        fpi = batches[smallest].flops / smallest  # type: ignore[operator]
    params = target.params
    if params is None and target.module is not None:
        params = sum(p.numel() for p in target.module.parameters())
    return Measurement(
        name=target.name,
        params=params,
        size_bytes=_size_bytes(target),
        flops_per_item=fpi,
        batches=batches,
        threads=target.threads or torch_threads,
        device=target.device,
        dtype=chosen[0] if chosen else dtype,
        machine=info.to_dict(),
        peak_gflops=peak_gflops,
        position=position,
        schedule=schedule,
        load_avg=load,
    )


def _ratio(base: BatchMeasurement, other: BatchMeasurement) -> dict[str, Any]:
    """Latency ratio ``other / base`` of the medians with a conservative 95% interval.

    The interval divides the ends of the two medians' 95% CIs crosswise
    (``[lo_o / hi_b, hi_o / lo_b]``), which covers the true ratio with probability ≥ 90%, and
    usually far more. ``speedup`` is the inverse (``> 1`` means faster than the first model).
    """
    b, o = base.latency, other.latency

    def div(a: float, c: float) -> float | None:
        return a / c if c > 0 else None

    r = div(o.p50_ms, b.p50_ms)
    lo = div(o.ci95_low_ms, b.ci95_high_ms) if other is not base else 1.0
    hi = div(o.ci95_high_ms, b.ci95_low_ms) if other is not base else 1.0
    return {
        "latency_p50": r,
        "latency_p50_ci95": [lo, hi],
        "speedup": div(1.0, r) if r else None,
        "speedup_ci95": [div(1.0, hi) if hi else None, div(1.0, lo) if lo else None],
        "throughput": div(other.throughput_per_s, base.throughput_per_s),
    }


def measurements_to_dict(
    measurements: Sequence[Measurement],
    *,
    peak: PeakFlops | None = None,
    config: TimingConfig | None = None,
) -> dict[str, Any]:
    """The JSON report of a run: per model and batch size, with ratios against the first model.

    Each ``models[name]["batches"][str(batch)]`` entry is self-contained: ``latency_ms``
    (p50/p90/p99/mean/std/min/max/n/ci95), ``first_call_ms``, ``throughput_per_s``,
    ``peak_memory_mb``, ``size_mb``, ``params``, ``flops``, ``percent_of_peak``, ``threads``,
    ``machine`` (fingerprint id) and ``ratio_vs_first``.
    """
    if not measurements:
        return {"models": {}}
    first = measurements[0]
    schedule = first.schedule
    rounds: dict[str, int] = {}
    for b, name, _ in schedule:
        if name == first.name:
            rounds[str(b)] = rounds.get(str(b), 0) + 1
    models: dict[str, Any] = {}
    for m in measurements:
        entry = m.to_dict()
        entry.pop("machine")
        entry["machine"] = m.machine.get("fingerprint")
        for b, bm in m.batches.items():
            rec = entry["batches"][str(b)]
            rec.update(
                size_mb=m.size_mb,
                params=m.params,
                threads=m.threads,
                machine=m.machine.get("fingerprint"),
                ratio_vs_first=_ratio(first.batches[b], bm) if b in first.batches else None,
            )
        models[m.name] = entry
    return {
        "machine": dict(first.machine),
        "threads": first.threads,
        "device": first.device,
        "load_avg": list(first.load_avg) if first.load_avg else None,
        "peak": peak.to_dict() if peak is not None else None,
        "timing": (config or TimingConfig()).to_dict(),
        "interleaving": {"order": [m.name for m in measurements], "rounds": rounds},
        "baseline": first.name,
        "models": models,
    }
