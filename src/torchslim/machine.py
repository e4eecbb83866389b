"""Which machine a measurement was taken on, and how fast that machine can multiply matrices.

Two things live here:

* :func:`machine_info` — a :class:`MachineInfo` fingerprint: CPU model, physical/logical cores,
  the ISA features that decide which kernels run (AVX2, AVX-512 VNNI/BF16, AMX, ...), OS,
  Python, library versions and the GPU (only when CUDA is available). Every
  :class:`~torchslim.measure.Measurement` carries one, so numbers are never quoted without the
  conditions they were taken under.
* :func:`machine_peak` — a :class:`PeakFlops`: a short GEMM micro-benchmark (fp32, bf16 and int8)
  at the current thread count, cached per fingerprint and thread count as JSON under
  ``$TORCHSLIM_CACHE_DIR`` (default ``~/.cache/torchslim``). Dividing a model's achieved FLOP/s
  by it gives a roofline-style efficiency (``percent_of_peak``).

Nothing here imports torch at module import time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = [
    "ISA_FEATURES",
    "MachineInfo",
    "PeakFlops",
    "cache_dir",
    "machine_info",
    "machine_peak",
    "measure_peak",
    "parse_cpuinfo",
]

#: CPU flags reported in the fingerprint (x86 names from ``/proc/cpuinfo``, then Arm names).
ISA_FEATURES: tuple[str, ...] = (
    "fma",
    "avx2",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "avx_vnni",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "asimd",
    "asimddp",
    "sve",
    "sve2",
    "i8mm",
    "bf16",
)

_VERSIONED_PACKAGES = ("torch", "onnxruntime", "openvino", "numpy", "torchslim")

#: Bump when the micro-benchmark changes so old cache files are not reused.
_PEAK_VERSION = 1


@dataclass(frozen=True)
class MachineInfo:
    """A fingerprint of the machine and software a measurement ran on.

    Attributes:
        cpu_model: CPU model name (``/proc/cpuinfo`` ``model name``, else ``platform``).
        physical_cores: Physical cores (``None`` when unknown).
        logical_cores: Logical CPUs in the machine.
        usable_cores: CPUs this process may run on (affinity / container limits).
        isa: The :data:`ISA_FEATURES` this CPU has, sorted.
        os: Operating system and kernel (``platform.platform()``).
        arch: Machine architecture (``x86_64``, ``aarch64``, ...).
        python: Python version.
        versions: Installed versions of torch, onnxruntime, openvino, numpy and torchslim
            (``None`` for packages that are not installed).
        gpu: ``{"name", "capability", "memory_gb", "count"}`` when CUDA is available, else
            ``None``.
    """

    cpu_model: str
    physical_cores: int | None
    logical_cores: int
    usable_cores: int
    isa: tuple[str, ...]
    os: str
    arch: str
    python: str
    versions: Mapping[str, str | None] = field(default_factory=dict)
    gpu: Mapping[str, Any] | None = None

    @property
    def fingerprint(self) -> str:
        """A short stable hash of what decides speed: CPU, cores, ISA, arch, torch, GPU."""
        key = {
            "cpu": self.cpu_model,
            "phys": self.physical_cores,
            "logical": self.logical_cores,
            "usable": self.usable_cores,
            "isa": list(self.isa),
            "arch": self.arch,
            "system": self.os.split("-")[0],
            "torch": self.versions.get("torch"),
            "gpu": (self.gpu or {}).get("name"),
        }
        blob = json.dumps(key, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def summary(self) -> str:
        """One line for people, e.g. ``AMD EPYC · 2 cores (2 usable) · avx2 avx512f ...``."""
        cores = f"{self.physical_cores or '?'} cores/{self.logical_cores} threads"
        if self.usable_cores != self.logical_cores:
            cores += f" ({self.usable_cores} usable)"
        isa = " ".join(self.isa) or "no SIMD flags found"
        parts = [self.cpu_model, cores, isa, self.os, f"python {self.python}"]
        parts.append(f"torch {self.versions.get('torch') or 'n/a'}")
        if self.gpu:
            parts.append(f"GPU {self.gpu.get('name')} (sm {self.gpu.get('capability')})")
        return " · ".join(parts) + f" · id {self.fingerprint}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (including ``fingerprint``)."""
        d = asdict(self)
        d["isa"] = list(self.isa)
        d["versions"] = dict(self.versions)
        d["gpu"] = dict(self.gpu) if self.gpu else None
        d["fingerprint"] = self.fingerprint
        return d


def parse_cpuinfo(text: str) -> tuple[str | None, frozenset[str]]:
    """Read the CPU model and the flags out of ``/proc/cpuinfo`` text.

    Works for x86 (``model name`` / ``flags``) and Arm (``Hardware`` or ``CPU part`` /
    ``Features``); only the first processor block is read.

    Args:
        text: The file's contents.

    Returns:
        ``(model, flags)``; ``model`` is ``None`` when the text names none.
    """
    model: str | None = None
    flags: frozenset[str] = frozenset()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip().lower(), value.strip()
        if key in ("model name", "hardware", "cpu model") and model is None and value:
            model = value
        elif key in ("flags", "features") and not flags:
            flags = frozenset(value.split())
    return model, flags


def _read_cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return ""


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _gpu_info() -> dict[str, Any] | None:
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    return {
        "name": props.name,
        "capability": f"{props.major}.{props.minor}",
        "memory_gb": round(props.total_memory / 2**30, 1),
        "count": torch.cuda.device_count(),
    }


def machine_info(*, cpuinfo: str | None = None, include_gpu: bool = True) -> MachineInfo:
    """Fingerprint this machine.

    Args:
        cpuinfo: ``/proc/cpuinfo`` text to parse instead of the real file (for tests).
        include_gpu: Look for a CUDA GPU (imports torch).

    Returns:
        The :class:`MachineInfo`.
    """
    model, flags = parse_cpuinfo(_read_cpuinfo() if cpuinfo is None else cpuinfo)
    physical: int | None
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
    except ImportError:  # pragma: no cover - psutil is a dependency
        physical = None
    logical = os.cpu_count() or 1
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = logical
    return MachineInfo(
        cpu_model=model or platform.processor() or platform.machine() or "unknown CPU",
        physical_cores=physical,
        logical_cores=logical,
        usable_cores=usable,
        isa=tuple(sorted(f for f in ISA_FEATURES if f in flags)),
        os=platform.platform(),
        arch=platform.machine(),
        python=platform.python_version(),
        versions={p: _version(p) for p in _VERSIONED_PACKAGES},
        gpu=_gpu_info() if include_gpu else None,
    )


@dataclass(frozen=True)
class PeakFlops:
    """Measured GEMM throughput of this machine, per data type.

    Attributes:
        gflops: Best GFLOP/s (GOP/s for int8) per dtype name (``"fp32"``, ``"bf16"``, ``"int8"``,
            ``"fp16"`` on GPU); a dtype whose kernel failed is absent.
        sizes: The square matrix size used per dtype.
        threads: torch intra-op threads during the benchmark.
        device: ``"cpu"`` or ``"cuda"``.
        fingerprint: :attr:`MachineInfo.fingerprint` of the machine it ran on.
        seconds: Wall time the micro-benchmark took.
        cached: ``True`` when read from the cache rather than measured now.
        load_avg: 1-minute load average just before it was measured (``None`` if unknown).
    """

    gflops: Mapping[str, float]
    sizes: Mapping[str, int]
    threads: int
    device: str
    fingerprint: str
    seconds: float = 0.0
    cached: bool = False
    load_avg: float | None = None

    def busy(self, cores: int) -> bool:
        """Whether other work was competing for ``cores`` CPUs when this was measured."""
        return self.load_avg is not None and self.load_avg > cores + 1

    def for_dtype(self, dtype: str) -> tuple[str, float] | None:
        """The peak to compare a model of ``dtype`` against: its own, else fp32.

        Returns:
            ``(dtype_used, gflops)`` or ``None`` if nothing was measured.
        """
        for name in (dtype, "fp32"):
            if self.gflops.get(name):
                return name, float(self.gflops[name])
        return None

    def summary(self) -> str:
        """One line for people, e.g. ``fp32 188 · bf16 410 · int8 864 GFLOP/s at 2 threads``."""
        vals = " · ".join(f"{k} {v:,.0f}" for k, v in self.gflops.items())
        src = "cached" if self.cached else f"measured in {self.seconds:.1f} s"
        if self.load_avg is not None and not self.cached:
            src += f", load {self.load_avg:.1f}"
        return f"{vals} GFLOP/s peak ({self.device}, {self.threads} threads, {src})"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict."""
        return {
            "gflops": dict(self.gflops),
            "sizes": dict(self.sizes),
            "threads": self.threads,
            "device": self.device,
            "fingerprint": self.fingerprint,
            "seconds": self.seconds,
            "cached": self.cached,
            "load_avg": self.load_avg,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PeakFlops:
        """Inverse of :meth:`to_dict`."""
        return cls(
            gflops={str(k): float(v) for k, v in d["gflops"].items()},
            sizes={str(k): int(v) for k, v in d.get("sizes", {}).items()},
            threads=int(d["threads"]),
            device=str(d["device"]),
            fingerprint=str(d["fingerprint"]),
            seconds=float(d.get("seconds", 0.0)),
            cached=bool(d.get("cached", False)),
            load_avg=None if d.get("load_avg") is None else float(d["load_avg"]),
        )


def cache_dir() -> Path:
    """``$TORCHSLIM_CACHE_DIR`` if set, else ``~/.cache/torchslim``."""
    env = os.environ.get("TORCHSLIM_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "torchslim"


def _gemm_seconds(
    dtype: str, n: int, device: str, min_time_s: float, clock: Callable[[], float]
) -> float:
    """Best seconds per ``n×n @ n×n`` product of ``dtype`` (one untimed warm-up call first)."""
    import torch

    gen = torch.Generator().manual_seed(0)
    if dtype == "int8":
        a = torch.randint(-128, 128, (n, n), generator=gen, dtype=torch.int8).to(device)
        b = torch.randint(-128, 128, (n, n), generator=gen, dtype=torch.int8).to(device)

        def op() -> Any:
            return torch._int_mm(a, b)

    else:
        tdt = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
        a = torch.randn(n, n, generator=gen).to(device=device, dtype=tdt)
        b = torch.randn(n, n, generator=gen).to(device=device, dtype=tdt)

        def op() -> Any:
            return torch.mm(a, b)

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    with torch.inference_mode():
        op()
        sync()
        best = float("inf")
        start = clock()
        calls = 0
        while calls < 2 or clock() - start < min_time_s:
            t0 = clock()
            op()
            sync()
            best = min(best, clock() - t0)
            calls += 1
    return best


def measure_peak(
    *,
    threads: int | None = None,
    size: int | None = None,
    dtypes: Iterable[str] | None = None,
    device: str = "cpu",
    min_time_s: float = 0.25,
    max_call_s: float = 2.0,
    fingerprint: str | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> PeakFlops:
    """Run the GEMM micro-benchmark now (no cache).

    For each dtype, a small probe (512²) predicts how long one ``size²`` product takes; the size
    is halved until one call fits in ``max_call_s``, so slow kernels (e.g. bf16 on a CPU without
    native support) cannot stall the run. Then the best of repeated calls over ``min_time_s``
    gives the peak: ``2·n³ / seconds``.

    Args:
        threads: torch intra-op threads to use (restored afterwards); default: current.
        size: Square matrix size (default 2048 on CPU, 8192 on CUDA).
        dtypes: Which of ``fp32``, ``bf16``, ``int8`` (and ``fp16``) to run; default
            ``fp32, bf16, int8`` (+ ``fp16`` on CUDA).
        device: ``"cpu"`` or ``"cuda"``.
        min_time_s: Time spent per dtype after the warm-up call.
        max_call_s: Longest one product may take; larger sizes are skipped.
        fingerprint: Machine fingerprint to record (default: :func:`machine_info`'s).
        clock: Time source.

    Returns:
        The measured :class:`PeakFlops`.
    """
    import torch

    size = size or (8192 if device == "cuda" else 2048)
    names = tuple(
        dtypes
        or (("fp32", "fp16", "bf16", "int8") if device == "cuda" else ("fp32", "bf16", "int8"))
    )
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    started = clock()
    gflops: dict[str, float] = {}
    sizes: dict[str, int] = {}
    try:
        for name in names:
            try:
                probe_n = min(512, size)
                probe = _gemm_seconds(name, probe_n, device, 0.05, clock)
                n = size
                while n > probe_n and probe * (n / probe_n) ** 3 > max_call_s:
                    n //= 2
                secs = probe if n == probe_n else _gemm_seconds(name, n, device, min_time_s, clock)
            except (RuntimeError, NotImplementedError):
                continue  # kernel not available on this machine/build
            gflops[name] = round(2.0 * n**3 / secs / 1e9, 1)
            sizes[name] = n
        used_threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(old_threads)
    return PeakFlops(
        gflops=gflops,
        sizes=sizes,
        threads=used_threads,
        device=device,
        fingerprint=fingerprint or machine_info(include_gpu=device == "cuda").fingerprint,
        seconds=round(clock() - started, 3),
    )


def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


def _atomic_write_json(path: Path, obj: Any) -> None:
    """Write JSON to ``path`` via a temp file in the same folder and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def machine_peak(
    *,
    threads: int | None = None,
    device: str = "cpu",
    info: MachineInfo | None = None,
    refresh: bool = False,
    directory: Path | None = None,
    measure: Callable[..., PeakFlops] | None = None,
) -> PeakFlops:
    """This machine's GEMM peak at ``threads``, from the cache or measured (a second or two).

    The cache file is ``<cache_dir>/peak-<fingerprint>-<device>-t<threads>.json``, written
    atomically, so concurrent runs never read a half-written file. A peak measured while the
    load average exceeds the core count by more than one is returned but not cached (it would
    understate the machine).

    Args:
        threads: Thread count the peak is for (default: torch's current).
        device: ``"cpu"`` or ``"cuda"``.
        info: Fingerprint to key the cache on (default: :func:`machine_info`).
        refresh: Measure again even if cached; the stored value only ever rises (a peak is a
            maximum, and a busy machine measures low).
        directory: Cache folder (default: :func:`cache_dir`).
        measure: The benchmark to run on a miss (default :func:`measure_peak`).

    Returns:
        The :class:`PeakFlops`; ``cached`` tells whether it came from the cache.
    """
    import torch

    threads = threads or torch.get_num_threads()
    info = info or machine_info(include_gpu=device == "cuda")
    fp = info.fingerprint
    path = (directory or cache_dir()) / f"peak-{fp}-{device}-t{threads}.json"
    if not refresh and path.exists():
        try:
            data = json.loads(path.read_text())
            if data.get("version") == _PEAK_VERSION and data["peak"]["fingerprint"] == fp:
                peak = PeakFlops.from_dict(data["peak"])
                if peak.threads == threads and peak.device == device and peak.gflops:
                    return replace(peak, cached=True)
        except (OSError, ValueError, KeyError, TypeError):
            pass  # unreadable or old cache: measure again and overwrite it
    previous: PeakFlops | None = None
    if path.exists():
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            data = json.loads(path.read_text())
            if data.get("version") == _PEAK_VERSION:
                previous = PeakFlops.from_dict(data["peak"])
    load = _loadavg()
    peak = (measure or measure_peak)(threads=threads, device=device, fingerprint=fp)
    peak = replace(peak, load_avg=load)
    if previous is not None and previous.fingerprint == fp:
        # A peak is a maximum: a re-measurement on a busy machine must not lower it.
        best = {k: max(v, previous.gflops.get(k, 0.0)) for k, v in peak.gflops.items()}
        peak = replace(peak, gflops=best)
    if peak.busy(info.usable_cores):
        return peak  # measured low on a busy machine: use it now, but do not keep it
    with contextlib.suppress(OSError):  # a read-only home must not stop a benchmark
        _atomic_write_json(
            path, {"version": _PEAK_VERSION, "machine": info.to_dict(), "peak": peak.to_dict()}
        )
    return peak
