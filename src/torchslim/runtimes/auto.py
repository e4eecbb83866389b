"""Pick the fastest runtime for a model on this machine, per batch size.

:func:`autotune` builds every available runtime in a few settings (thread count 1 vs all cores,
OpenVINO latency vs throughput hint, optionally OpenVINO's BF16 default precision), checks each
build's parity against eager FP32 (a build that fails parity is recorded and never chosen),
measures p50 latency for every build and batch size **interleaved** (A B C A B C …, through
:func:`torchslim.measure.measure_models`) and returns the fastest per batch size with the whole
table as data. :func:`select_runtime` returns just the choice.

Shared work is done once: one ONNX export feeds every ONNX Runtime session, one OpenVINO
conversion every OpenVINO compile, and torch runtimes change threads per call without rebuilding
(except Inductor, which bakes its thread count into generated kernels and is compiled once, at the
process's thread count).
"""

from __future__ import annotations

import copy
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torchslim._safe_load import eval_mode
from torchslim.config import config_to_dict
from torchslim.errors import TorchslimError

if TYPE_CHECKING:
    from torch import nn

    from torchslim.measure import TimingConfig
    from torchslim.specs import InputSpec

__all__ = [
    "AUTO_TIMING",
    "AutoChoice",
    "AutotuneResult",
    "AutotuneRow",
    "Variant",
    "autotune",
    "build_variants",
    "cached_autotune",
    "candidate_variants",
    "choice_key",
    "select_runtime",
]

ProgressFn = Callable[[str, float], None]

DEFAULT_RUNTIMES = (
    "eager",
    "inductor",
    "torchscript",
    "onnxruntime",
    "openvino",
    "tensorrt",
    "executorch",
)
"""Runtimes tried by default (``export`` runs the same kernels as eager; ask for it by name)."""


def _auto_timing() -> TimingConfig:
    from torchslim.measure import TimingConfig

    return TimingConfig(
        min_samples=20, min_time_s=0.4, max_time_s=3.0, max_warmup_s=2.0, round_time_s=0.05
    )


AUTO_TIMING = _auto_timing
"""Factory of the (short) timing budget :func:`autotune` uses by default."""


@dataclass(frozen=True)
class Variant:
    """One runtime setting to try.

    Attributes:
        name: Display name, e.g. ``onnxruntime·t1`` or ``openvino·bf16·throughput``.
        runtime: Runtime name.
        config: The runtime config.
    """

    name: str
    runtime: str
    config: Any


@dataclass(frozen=True)
class AutotuneRow:
    """One variant at one batch size.

    Attributes:
        variant: Variant name.
        runtime: Runtime name.
        config: The runtime config as data (``config_to_dict``).
        batch_size: Batch size.
        p50_ms: Median latency per call.
        ci95_ms: 95% confidence interval of the median.
        first_call_ms: First call at this batch size (not in the median).
        build_seconds: Export/compile time of the variant.
        ratio_to_eager: ``p50 / p50 of eager (all threads)`` (< 1 is faster).
        precision: Precision the variant computes in.
        parity: The parity report (``ParityReport.to_dict``).
    """

    variant: str
    runtime: str
    config: dict[str, Any]
    batch_size: int
    p50_ms: float
    ci95_ms: tuple[float, float]
    first_call_ms: float
    build_seconds: float
    ratio_to_eager: float | None
    precision: str
    parity: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly values."""
        d = dict(self.__dict__)
        d["ci95_ms"] = list(self.ci95_ms)
        return d


@dataclass
class AutotuneResult:
    """What :func:`autotune` found.

    Attributes:
        rows: Every measured variant at every batch size.
        best: Batch size → the fastest row.
        failures: Variants that failed to build or failed parity: ``{variant, runtime, error}``.
        threads: The process's torch thread count ("all" in the variant names).
        machine: Fingerprint of the machine measured on.
        deployed: Variant name → the built runtime (kept so the winner can be used directly).
        measurements: The :class:`~torchslim.measure.Measurement` of every variant (throughput,
            first call, confidence intervals), in variant order.
    """

    rows: list[AutotuneRow] = field(default_factory=list)
    best: dict[int, AutotuneRow] = field(default_factory=dict)
    failures: list[dict[str, str]] = field(default_factory=list)
    threads: int = 1
    machine: dict[str, Any] = field(default_factory=dict)
    deployed: dict[str, Any] = field(default_factory=dict, repr=False)
    measurements: list[Any] = field(default_factory=list, repr=False)

    def best_config(self, batch_size: int) -> Any:
        """The runtime config of the fastest variant at ``batch_size``."""
        from torchslim.config import config_from_dict

        return config_from_dict(self.best[batch_size].config)

    def best_deployed(self, batch_size: int) -> Any:
        """The built runtime of the fastest variant at ``batch_size``."""
        return self.deployed[self.best[batch_size].variant]

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly values (without the built runtimes)."""
        return {
            "threads": self.threads,
            "best": {str(b): r.to_dict() for b, r in self.best.items()},
            "rows": [r.to_dict() for r in self.rows],
            "failures": list(self.failures),
            "machine": self.machine,
        }


def candidate_variants(
    runtimes: Sequence[str] | None = None,
    *,
    threads: Sequence[int] | None = None,
    allow_reduced_precision: bool = False,
    image_inputs: bool = False,
) -> list[Variant]:
    """The settings :func:`autotune` tries.

    Args:
        runtimes: Runtime names (default :data:`DEFAULT_RUNTIMES`); unavailable ones are skipped.
        threads: Thread counts to try (default: 1 and the process's torch thread count).
        allow_reduced_precision: Also try OpenVINO at its default precision (BF16 on CPUs that
            support it), checked with the BF16 tolerance.
        image_inputs: The model takes 4-D images (adds eager channels-last).
    """
    import torch

    from torchslim.runtimes import configs as c
    from torchslim.runtimes.base import RUNTIMES, list_runtimes

    list_runtimes()
    names = list(runtimes) if runtimes else list(DEFAULT_RUNTIMES)
    all_threads = torch.get_num_threads()
    counts = sorted(set(threads or (1, all_threads)), reverse=True)
    out: list[Variant] = []
    for rt in names:
        if rt not in RUNTIMES:
            raise TorchslimError(
                f"Unknown runtime '{rt}'.", f"Known: {', '.join(e.name for e in RUNTIMES)}."
            )
        if not RUNTIMES.get(rt).available():
            continue
        if rt == "eager":
            out += [Variant(f"eager·t{t}", rt, c.EagerConfig(threads=t)) for t in counts]
            if image_inputs:
                out.append(
                    Variant(
                        f"eager·cl·t{counts[0]}",
                        rt,
                        c.EagerConfig(channels_last=True, threads=counts[0]),
                    )
                )
        elif rt == "inductor":
            out.append(Variant(f"inductor·t{all_threads}", rt, c.InductorConfig()))
        elif rt == "torchscript":
            out += [
                Variant(f"torchscript·t{t}", rt, c.TorchScriptConfig(threads=t)) for t in counts
            ]
        elif rt == "export":
            out.append(Variant(f"export·t{counts[0]}", rt, c.ExportConfig(threads=counts[0])))
        elif rt == "onnxruntime":
            out += [
                Variant(f"onnxruntime·t{t}", rt, c.OrtConfig(intra_op_threads=t)) for t in counts
            ]
        elif rt == "openvino":
            precisions = [c.Precision.F32] + (
                [c.Precision.DEFAULT] if allow_reduced_precision else []
            )
            for p in precisions:
                for t in counts:
                    for hint in (c.PerformanceHint.LATENCY, c.PerformanceHint.THROUGHPUT):
                        tag = "f32" if p is c.Precision.F32 else "default"
                        out.append(
                            Variant(
                                f"openvino·{tag}·{hint.value}·t{t}",
                                rt,
                                c.OpenVINOConfig(performance_hint=hint, precision=p, threads=t),
                            )
                        )
        elif rt == "tensorrt":
            out.append(Variant("tensorrt", rt, c.TensorRTConfig()))
        elif rt == "executorch":
            # one variant: ExecuTorch's thread pool is process-wide (one thread per core)
            out.append(Variant("executorch", rt, c.ExecuTorchConfig()))
    return out


class _Builder:
    """Builds variants, sharing exports between settings of the same backend."""

    def __init__(self, module: nn.Module, example: tuple[Any, ...]) -> None:
        self.module = module
        self.example = example
        self._tmp = tempfile.TemporaryDirectory(prefix="torchslim-auto-")
        self._onnx: tuple[Path, float] | None = None
        self._ov: tuple[Any, float] | None = None
        self._torch: dict[tuple[str, str], Any] = {}

    def build(self, variant: Variant) -> Any:
        from torchslim.runtimes import build

        cfg = variant.config
        if variant.runtime == "onnxruntime":
            from torchslim.runtimes import ort

            if self._onnx is None:
                start = time.perf_counter()
                path = ort.export_for_runtime(
                    self.module, self.example, Path(self._tmp.name) / "model.onnx"
                )
                self._onnx = (path, time.perf_counter() - start)
            path, secs = self._onnx
            return ort.build_from_onnx(path, cfg, workdir=self._tmp, export_seconds=secs)
        if variant.runtime == "openvino":
            from torchslim.runtimes import ov

            if self._ov is None:
                self._ov = ov.convert(self.module, self.example, cfg)
            model, secs = self._ov
            from torchslim.runtimes._common import input_names_for

            names = input_names_for(self.example, module=self.module)
            return ov.build_from_model(model, cfg, names, secs)
        if variant.runtime in ("eager", "torchscript", "export") and getattr(cfg, "threads", None):
            # threads apply per call: build once per setting without threads, then re-wrap
            base_cfg = replace(cfg, threads=None)
            key = (variant.runtime, repr(base_cfg))
            if key not in self._torch:
                self._torch[key] = build(self.module, base_cfg, self.example)
            dep = copy.copy(self._torch[key])
            dep.config = cfg
            return dep
        return build(self.module, cfg, self.example)


def build_variants(
    module: nn.Module,
    inputs: InputSpec | Sequence[Any],
    variants: Sequence[Variant],
    *,
    progress: ProgressFn | None = None,
) -> tuple[list[tuple[Variant, Any, Any]], list[dict[str, str]]]:
    """Build every variant and check its parity; failures are recorded, never raised.

    Args:
        module: The eager FP32 model.
        inputs: An :class:`~torchslim.models.InputSpec` or example tensors (batch first).
        variants: What to build (see :func:`candidate_variants`).
        progress: ``progress(message, fraction)`` callback.

    Returns:
        ``(built, failures)``: ``(variant, deployed, ParityReport)`` for each build that passed
        parity, and ``{variant, runtime, error}`` for each that did not.
    """
    from torchslim.parity import check_parity
    from torchslim.specs import InputSpec

    spec = inputs if isinstance(inputs, InputSpec) else None
    example = (
        spec.example_inputs(batch_size=2) if spec is not None else tuple(inputs)  # type: ignore[arg-type]
    )
    builder = _Builder(eval_mode(module), example)  # also ExportedProgram.module()s
    built: list[tuple[Variant, Any, Any]] = []
    failures: list[dict[str, str]] = []
    for i, v in enumerate(variants):
        if progress is not None:
            progress(f"building {v.name}", i / max(1, len(variants)))
        try:
            dep = builder.build(v)
            report = check_parity(dep, module, spec if spec is not None else example)
        except TorchslimError as exc:
            failures.append({"variant": v.name, "runtime": v.runtime, "error": str(exc)})
            continue
        except Exception as exc:
            failures.append(
                {
                    "variant": v.name,
                    "runtime": v.runtime,
                    "error": f"{type(exc).__name__}: {str(exc)[:300]}",
                }
            )
            continue
        built.append((v, dep, report))
    return built, failures


def autotune(
    module: nn.Module,
    inputs: InputSpec | Sequence[Any],
    *,
    runtimes: Sequence[str] | None = None,
    batch_sizes: Sequence[int] = (1,),
    threads: Sequence[int] | None = None,
    allow_reduced_precision: bool = False,
    timing: TimingConfig | None = None,
    progress: ProgressFn | None = None,
) -> AutotuneResult:
    """Build, parity-check and time every available runtime; return the fastest per batch size.

    Args:
        module: The eager FP32 model (not modified).
        inputs: An :class:`~torchslim.models.InputSpec` or example tensors (batch first).
        runtimes: Runtime names to try (default: eager, inductor, torchscript, onnxruntime,
            openvino, tensorrt — those available here).
        batch_sizes: Batch sizes to choose for.
        threads: Thread counts to try (default: 1 and the process's torch thread count).
        allow_reduced_precision: Also try OpenVINO's default precision (BF16 here); its parity is
            checked with the BF16 tolerance and its rows say ``precision="bf16"``.
        timing: Timing budget per variant and batch (default: a short one, :data:`AUTO_TIMING`).
        progress: ``progress(message, fraction)`` callback.

    Returns:
        The :class:`AutotuneResult` (``best[b]`` is the fastest parity-checked variant).

    Raises:
        TorchslimError: No variant could be built and passed parity.
    """
    import torch

    from torchslim.measure import BenchTarget, measure_models
    from torchslim.specs import InputSpec

    def say(msg: str, frac: float) -> None:
        if progress is not None:
            progress(msg, frac)

    module = eval_mode(module)  # also ExportedProgram.module()s, which refuse .eval()
    spec = inputs if isinstance(inputs, InputSpec) else None
    example = (
        spec.example_inputs(batch_size=2) if spec is not None else tuple(inputs)  # type: ignore[arg-type]
    )
    image = any(getattr(x, "dim", lambda: 0)() == 4 and x.is_floating_point() for x in example)
    variants = candidate_variants(
        runtimes,
        threads=threads,
        allow_reduced_precision=allow_reduced_precision,
        image_inputs=image,
    )
    result = AutotuneResult(threads=torch.get_num_threads())
    built, result.failures = build_variants(
        module, inputs, variants, progress=(lambda m, f: say(m, 0.4 * f)) if progress else None
    )
    result.deployed = {v.name: dep for v, dep, _ in built}
    if not built:
        raise TorchslimError(
            "No runtime could be built and pass parity for this model.",
            "See the failures with --json, or rerun with --debug.",
        )

    def make_inputs_for(b: int) -> tuple[Any, ...]:
        if spec is not None:
            return spec.example_inputs(batch_size=b)
        from torchslim.parity import parity_inputs

        return parity_inputs(example, batch_sizes=(b,), seq_lens=None)[0][2]

    targets = [
        BenchTarget(v.name, dep, make_inputs_for, device=str(getattr(dep, "device", "cpu")))
        for v, dep, _ in built
    ]
    say("measuring (interleaved)", 0.4)
    measured = measure_models(
        targets,
        batch_sizes,
        config=timing or _auto_timing(),
        memory=False,
        progress=(lambda m, f: say(m, 0.4 + 0.6 * f)) if progress else None,
    )
    result.machine = dict(measured[0].machine)
    result.measurements = list(measured)
    eagers = [v for v, _, _ in built if v.runtime == "eager" and not v.config.channels_last]
    eager_name = max(eagers, key=lambda v: v.config.threads or 0).name if eagers else None
    by_name = {m.name: m for m in measured}
    for b in batch_sizes:
        base = by_name[eager_name].batches[int(b)].latency.p50_ms if eager_name else None
        for v, dep, report in built:
            bm = by_name[v.name].batches[int(b)]
            p50 = bm.latency.p50_ms
            row = AutotuneRow(
                variant=v.name,
                runtime=v.runtime,
                config=config_to_dict(v.config),
                batch_size=int(b),
                p50_ms=p50,
                ci95_ms=(bm.latency.ci95_low_ms, bm.latency.ci95_high_ms),
                first_call_ms=bm.first_call_ms,
                build_seconds=float(dep.build_seconds),
                ratio_to_eager=(p50 / base) if base else None,
                precision=report.precision,
                parity={
                    "passed": report.passed,
                    "max_rel_error": report.max_rel_error,
                    "min_cosine": report.min_cosine,
                    "precision": report.precision,
                },
            )
            result.rows.append(row)
        rows_b = [r for r in result.rows if r.batch_size == int(b) and math.isfinite(r.p50_ms)]
        result.best[int(b)] = min(rows_b, key=lambda r: r.p50_ms)
    say("done", 1.0)
    return result


def select_runtime(
    module: nn.Module, inputs: InputSpec | Sequence[Any], batch_size: int = 1, **kwargs: Any
) -> tuple[Any, AutotuneResult]:
    """The fastest parity-checked runtime config for ``batch_size``, and the full result.

    Keyword arguments go to :func:`autotune`.
    """
    result = autotune(module, inputs, batch_sizes=(batch_size,), **kwargs)
    return result.best_config(batch_size), result


# --------------------------------------------------------------------------------------------
# The choice, cached per machine and model so that `--runtime auto` elsewhere reuses it
# --------------------------------------------------------------------------------------------


@dataclass
class AutoChoice:
    """The fastest runtime per batch size for one model on this machine.

    Attributes:
        choices: Batch size → ``{"variant", "runtime", "config"}`` (config as data).
        cached: True when read from the cache instead of measured now.
        key: The cache key (machine fingerprint, threads, model weights, input shapes).
        result: The full :class:`AutotuneResult` when measured now.
        deployed: Batch size → the built runtime for that choice.
    """

    choices: dict[int, dict[str, Any]]
    cached: bool
    key: str
    result: AutotuneResult | None = None
    deployed: dict[int, Any] = field(default_factory=dict, repr=False)

    def deployed_by_batch(self) -> dict[int, tuple[str, Any]]:
        """Batch size → ``(variant name, built runtime)``."""
        return {b: (self.choices[b]["variant"], d) for b, d in self.deployed.items()}

    def config(self, batch_size: int) -> Any:
        """The chosen runtime config for ``batch_size``."""
        from torchslim.config import config_from_dict

        return config_from_dict(self.choices[batch_size]["config"])

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly values."""
        return {
            "key": self.key,
            "cached": self.cached,
            "choices": {str(b): c for b, c in self.choices.items()},
            "autotune": self.result.to_dict() if self.result is not None else None,
        }


def choice_key(module: nn.Module, inputs: InputSpec, *, source: str | None = None) -> str:
    """Cache key of a model on this machine: fingerprint, threads, weights and input shapes."""
    import hashlib

    import torch

    from torchslim.machine import machine_info

    h = hashlib.sha256()
    h.update(machine_info(include_gpu=False).fingerprint.encode())
    h.update(f"threads={torch.get_num_threads()};inputs={inputs};src={source}".encode())
    h.update(type(module).__qualname__.encode())
    for name, t in module.state_dict().items():
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        if t.numel():
            h.update(t.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:24]


def _cache_file(key: str) -> Path:
    from torchslim.machine import cache_dir

    return cache_dir() / "auto" / f"{key}.json"


def cached_autotune(
    module: nn.Module,
    inputs: InputSpec,
    *,
    batch_sizes: Sequence[int] = (1,),
    source: str | None = None,
    refresh: bool = False,
    **kwargs: Any,
) -> AutoChoice:
    """:func:`autotune` once per machine and model; later calls rebuild the cached choice.

    A cached choice is rebuilt and parity-checked again (never trusted blindly); if it no longer
    builds here, the model is autotuned afresh.

    Args:
        module: The eager FP32 model.
        inputs: Its input spec.
        batch_sizes: Batch sizes to choose for.
        source: The model's source string (part of the key).
        refresh: Ignore the cache and measure again.
        **kwargs: Passed to :func:`autotune`.
    """
    import json
    import os

    from torchslim.config import config_from_dict
    from torchslim.parity import check_parity
    from torchslim.runtimes import build

    key = choice_key(module, inputs, source=source)
    path = _cache_file(key)
    cached: dict[str, Any] = {}
    if path.exists() and not refresh:
        try:
            cached = json.loads(path.read_text()).get("choices", {})
        except (OSError, ValueError):
            cached = {}
    if cached and all(str(b) in cached for b in batch_sizes):
        choice = AutoChoice({int(b): cached[str(b)] for b in batch_sizes}, True, key)
        example = inputs.example_inputs(batch_size=2)
        try:
            built: dict[str, Any] = {}
            for b in batch_sizes:
                c = choice.choices[int(b)]
                if c["variant"] not in built:
                    dep = build(module, config_from_dict(c["config"]), example)
                    check_parity(dep, module, inputs)
                    built[c["variant"]] = dep
                choice.deployed[int(b)] = built[c["variant"]]
            return choice
        except TorchslimError:
            pass  # the cached choice no longer works here: measure again
    result = autotune(module, inputs, batch_sizes=batch_sizes, **kwargs)
    choices: dict[int, dict[str, Any]] = {
        int(b): {"variant": r.variant, "runtime": r.runtime, "config": r.config}
        for b, r in result.best.items()
    }
    choice = AutoChoice(choices, False, key, result)
    choice.deployed = {b: result.deployed[c["variant"]] for b, c in choices.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    merged = {**cached, **{str(b): c for b, c in choices.items()}}
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"source": source, "choices": merged}, indent=2))
    os.replace(tmp, path)
    return choice
