"""Loader settings from the machine, the thread/worker split, and the ``--batch-size auto`` probe.

* Workers vs intra-op threads (CPU): the cores are shared between loader workers (decoding) and
  the model's intra-op threads. What one sample costs to decode and what the model costs per
  sample on all cores and on one thread are measured; :func:`choose_split` then picks the split
  with the best predicted throughput (``min(workers / decode, 1 / model(threads))``; no workers
  means decoding and the model take turns). In-memory data costs next to nothing to "decode", so it gets no workers and
  every core goes to the model.
* ``pin_memory`` only with a GPU; ``prefetch_factor`` 4 and persistent workers when there are
  workers.
* :func:`probe_batch_size`: the optimal-batch-size search — doubling batch sizes on real samples,
  each timed briefly and its peak memory growth measured, stopping at the memory limit (sizes
  predicted to exceed it are not even tried) or when throughput stops improving (from batch 64
  on); the three best are re-timed interleaved and the largest within 3% of the best median
  wins; a size the artifact was compiled for wins when it is within 5% of that.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["BatchProbe", "LoaderPlan", "choose_split", "default_batch_size", "probe_batch_size"]

_PREFER_WITHIN = 0.05  # a compiled batch size wins when this close to the best throughput
_PLATEAU = 0.03  # stop doubling after two sizes that gain less than this
_MIN_PLATEAU_BATCH = 64  # ... but never before this size
_CONFIRM = 3  # the best sizes of the sweep re-timed, interleaved
_CONFIRM_ROUNDS = 3
_MAX_CALL_S = 1.0  # stop doubling once one call takes this long


def usable_cores() -> int:
    """CPUs this process may run on (affinity and container limits)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class LoaderPlan:
    """How batches are loaded and how the cores are shared.

    Attributes:
        workers: DataLoader worker processes (0: load in the main process).
        threads: Intra-op threads of the model (torch; ONNX Runtime / OpenVINO keep their own).
        pin_memory: Page-locked batches (GPU only).
        prefetch_factor: Batches each worker loads ahead.
        persistent_workers: Keep workers between passes.
        decode_ms_per_item: Measured cost of producing one sample (0 when not measured).
        model_ms_per_item: Measured model cost per sample at the chosen batch, all threads.
        reason: Why this split.
    """

    workers: int
    threads: int
    pin_memory: bool
    prefetch_factor: int | None
    persistent_workers: bool
    decode_ms_per_item: float = 0.0
    model_ms_per_item: float = 0.0
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict."""
        return asdict(self)

    def loader_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``torch.utils.data.DataLoader``."""
        kw: dict[str, Any] = {"num_workers": self.workers, "pin_memory": self.pin_memory}
        if self.workers:
            kw["prefetch_factor"] = self.prefetch_factor
            kw["persistent_workers"] = self.persistent_workers
        return kw


def choose_split(
    cores: int,
    decode_s: float,
    model_s: float,
    *,
    model_s_one_thread: float | None = None,
    workers: int | None = None,
    threads: int | None = None,
    gpu: bool = False,
) -> LoaderPlan:
    """Share ``cores`` between loader workers and intra-op threads.

    Args:
        cores: Usable cores.
        decode_s: Seconds to produce one sample in one process.
        model_s: Model seconds per sample with all ``cores`` as intra-op threads (on a GPU: the
            host-side cost per sample, near 0).
        model_s_one_thread: The same on one intra-op thread, when measured; between one thread
            and all cores the speed-up is interpolated linearly. Unmeasured, the model is assumed
            to scale linearly with threads (which favours threads over workers).
        workers: Fixed number of workers (``None``: choose).
        threads: Fixed intra-op threads (``None``: choose).
        gpu: Batches go to a GPU (pinned memory; the model does not need host cores).

    Returns:
        The plan, with the measured costs and the reason.
    """

    one = model_s_one_thread if model_s_one_thread is not None else model_s * cores
    speedup = one / max(model_s, 1e-12)  # at all cores, vs one thread

    def model_at(t: int) -> float:
        if cores <= 1:
            return model_s
        t = min(max(1, t), cores)
        return one / (1.0 + (speedup - 1.0) * (t - 1) / (cores - 1))

    def rate(w: int, t: int) -> float:
        m = 0.0 if gpu else model_at(t)
        if w == 0:
            return 1.0 / max(decode_s + m, 1e-12)
        return min(w / max(decode_s, 1e-12), 1.0 / max(m, 1e-12))

    options = []
    for w in range(cores + 1) if workers is None else [workers]:
        t = threads if threads is not None else max(1, cores - w if not gpu else cores)
        options.append((rate(w, t), -w, w, t))
    best = max(options)
    _, _, w, t = best
    # With no worker the pipeline is serial; say how the chosen split compares.
    serial = rate(0, threads or cores)
    measured = "" if model_s_one_thread is None else f" ({one * 1e3:.3f} on 1 thread)"
    reason = (
        f"decode {decode_s * 1e3:.3f} ms/item, model {model_s * 1e3:.3f} ms/item on {cores} "
        f"cores{measured}: {w} worker(s) + {t} thread(s) predicted at {best[0]:,.0f} items/s "
        f"(no workers: {serial:,.0f} items/s)"
    )
    if workers is not None or threads is not None:
        reason = "given: " + reason
    return LoaderPlan(
        workers=w,
        threads=t,
        pin_memory=gpu,
        prefetch_factor=4 if w else None,
        persistent_workers=bool(w),
        decode_ms_per_item=decode_s * 1e3,
        model_ms_per_item=model_s * 1e3,
        reason=reason,
    )


def default_batch_size(
    sample_bytes: int, compiled: Sequence[int] = (), dynamic: bool = True
) -> int:
    """The batch size used without ``--batch-size``: a static artifact's own size, else the
    power of two that makes a batch about 8 MB of input, between 8 and 64.

    The cap: past 64 rows a CPU gains little (eager ``fashion_resnet`` alone on 2 cores: 1,108
    items/s at batch 64, 1,176 at 256) while the batch's memory grows 4× and the first rows
    come later; ``--batch-size auto`` measures instead of assuming."""
    if compiled and not dynamic:
        return max(compiled)
    target = 8_000_000 / max(1, sample_bytes)
    size = 2 ** math.floor(math.log2(max(1.0, target)))
    return int(min(64, max(8, size)))


@dataclass
class BatchProbe:
    """What ``--batch-size auto`` measured.

    Attributes:
        chosen: The batch size picked.
        limit_mb: The memory limit (MB of growth above the level before the probe).
        rows: Per candidate: ``batch``, ``items_per_s``, ``memory_mb``, ``fits`` and ``note``.
        reason: Why ``chosen``.
    """

    chosen: int
    limit_mb: float
    rows: list[dict[str, Any]] = field(default_factory=list)
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict."""
        return asdict(self)


def default_memory_limit_mb(device: str) -> float:
    """Half of the memory available now (CPU) or 80% of the GPU's free memory, in MB."""
    if device.startswith("cuda"):
        import torch

        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return 0.8 * free / 1e6
    import psutil

    return 0.5 * psutil.virtual_memory().available / 1e6


def probe_batch_size(
    run: Callable[[int], Callable[[], Any]],
    *,
    max_batch: int,
    device: str = "cpu",
    memory_limit_mb: float | None = None,
    compiled: Sequence[int] = (),
    dynamic: bool = True,
    time_per_size_s: float = 0.3,
) -> BatchProbe:
    """Find the batch size with the best throughput whose memory growth stays under the limit.

    Args:
        run: ``run(batch) -> call``: builds the inputs for a batch size and returns a zero-argument
            callable running the model once on them.
        max_batch: Largest size worth trying (the number of samples).
        device: ``"cpu"`` (RSS growth) or a CUDA device (allocator peak).
        memory_limit_mb: Most memory growth allowed, MB (default
            :func:`default_memory_limit_mb`).
        compiled: Batch sizes the artifact was built and checked for (preferred).
        dynamic: Whether other sizes work; if not, only ``compiled`` sizes are tried.
        time_per_size_s: Timing budget per candidate.

    Returns:
        The :class:`BatchProbe`.
    """
    from torchslim._memory import _MemoryProbe

    limit = memory_limit_mb if memory_limit_mb is not None else default_memory_limit_mb(device)
    sizes = sorted({b for b in compiled if 1 <= b <= max(1, max_batch)})
    if dynamic or not sizes:
        doubling = [b for b in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024) if b <= max_batch]
        sizes = sorted(set(doubling) | set(sizes)) or [1]
    sync = None
    if device.startswith("cuda"):
        import torch

        sync = torch.cuda.synchronize
    rows: list[dict[str, Any]] = []
    per_item_mb: float | None = None
    weak = 0
    best_rate = 0.0
    run(sizes[0])()  # one-off allocations (kernel caches, thread pools) are not the batch's
    with _MemoryProbe("cuda" if device.startswith("cuda") else "cpu") as probe:
        for b in sizes:
            if per_item_mb is not None and per_item_mb * b > limit:
                rows.append(
                    {
                        "batch": b,
                        "items_per_s": None,
                        "memory_mb": round(per_item_mb * b, 2),
                        "fits": False,
                        "note": "predicted over the memory limit; not run",
                    }
                )
                break
            tag = f"b{b}"
            probe.set_baseline(tag)
            probe.begin(tag)
            call = run(b)
            t0 = time.perf_counter()
            call()
            first_s = time.perf_counter() - t0
            probe.end()
            mem = probe.growth_mb(tag) or 0.0
            mem *= 2**20 / 1e6  # MiB -> MB
            per_item_mb = max(per_item_mb or 0.0, mem / b)
            if mem > limit:
                rows.append(
                    {
                        "batch": b,
                        "items_per_s": None,
                        "memory_mb": round(mem, 2),
                        "fits": False,
                        "note": "over the memory limit",
                    }
                )
                break
            rate = b / _median_call_s(call, sync, time_per_size_s, first_s)
            rows.append(
                {
                    "batch": b,
                    "items_per_s": round(rate, 2),
                    "memory_mb": round(mem, 2),
                    "fits": True,
                    "note": "",
                }
            )
            if rate < best_rate * (1 + _PLATEAU):
                weak += 1
                # a plateau counts only past the sizes where per-call overhead dominates
                if weak >= 2 and b >= _MIN_PLATEAU_BATCH and not any(c > b for c in compiled):
                    break
            else:
                weak = 0
            best_rate = max(best_rate, rate)
            if b >= 16 and b / rate > _MAX_CALL_S:  # calls this long: nothing more to gain
                break
        fitting = [r for r in rows if r["fits"]]
        _confirm(fitting, run, sync)
    fitting = [r for r in rows if r["fits"]]
    if not fitting:
        smallest = sizes[0]
        return BatchProbe(
            smallest, limit, rows, f"nothing fits in {limit:.0f} MB; using {smallest}"
        )
    top = max(r["items_per_s"] for r in fitting)
    # the largest size within noise of the best: fewer calls, steadier under load
    best = max(
        (r for r in fitting if r["items_per_s"] >= top * (1 - _PLATEAU)), key=lambda r: r["batch"]
    )
    chosen, reason = best["batch"], f"best throughput within {limit:,.0f} MB"
    preferred = [
        r
        for r in fitting
        if r["batch"] in compiled and r["items_per_s"] >= best["items_per_s"] * (1 - _PREFER_WITHIN)
    ]
    if preferred and chosen not in compiled:
        pick = max(preferred, key=lambda r: r["items_per_s"])
        chosen = pick["batch"]
        reason = (
            f"compiled batch size within {_PREFER_WITHIN:.0%} of the best ({best['batch']}: "
            f"{best['items_per_s']:,.0f} items/s) within {limit:,.0f} MB"
        )
    return BatchProbe(chosen, limit, rows, reason)


def _median_call_s(call: Any, sync: Any, budget_s: float, first_s: float) -> float:
    """Median seconds of a call (already warmed up by its first call): at least two timed
    calls, more until ``budget_s`` is spent; none more when the first call alone exceeded it."""
    if first_s > budget_s:
        return first_s
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 2 or time.perf_counter() - start < budget_s:
        t0 = time.perf_counter()
        call()
        if sync is not None:
            sync()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def _confirm(fitting: list[dict[str, Any]], run: Any, sync: Any) -> None:
    """Re-time the best few sizes interleaved (A B C A B C ...) and keep each one's median, so
    one noisy measurement during the sweep does not decide the batch size."""
    top = sorted(fitting, key=lambda r: r["items_per_s"], reverse=True)[:_CONFIRM]
    if len(top) < 2:
        return
    calls = {r["batch"]: run(r["batch"]) for r in top}
    rates: dict[int, list[float]] = {r["batch"]: [r["items_per_s"]] for r in top}
    for _ in range(_CONFIRM_ROUNDS):
        for b, call in calls.items():
            t0 = time.perf_counter()
            call()
            if sync is not None:
                sync()
            rates[b].append(b / max(time.perf_counter() - t0, 1e-12))
    for r in top:
        vals = sorted(rates[r["batch"]])
        r["items_per_s"] = round(vals[len(vals) // 2], 2)
        r["note"] = f"median of {len(vals)} interleaved timings"
