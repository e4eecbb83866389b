"""The dynamic batcher: requests stacked into one model call, off the event loop, held to a target.

Requests (NumPy arrays with a batch axis) enter a bounded queue; one worker thread takes them out
in batches, stacks them into one model call and hands each caller its own rows back, so the event
loop only parses and answers HTTP while the model runs.

When a batch is released, and why (recorded for every batch, ``/metrics`` counts them):

* ``full``: the batch reached the size the batcher was waiting for (``max_batch``, a preferred
  size, or, adaptively, the size that keeps up with the arrival rate);
* ``window``: the oldest request waited the whole window;
* ``idle``: no wait was worth it (window 0: low load, or batching turned off) so what was queued
  went at once.

Three policies (:class:`BatchPolicy`):

* **off** (``max_batch=1``): one request per call;
* **fixed window** (``max_wait_ms``, no target): wait up to the window for the batch to fill,
  as TorchServe's ``max_batch_delay`` and Triton's ``max_queue_delay``;
* **adaptive** (``p99_target_ms``): from the *measured* service time ``s(b)`` of each batch size
  (warm-up measures it; every batch updates it) and the measured arrival rate ``λ`` (rows/s), the
  batcher caps the batch at the largest ``b`` with ``2·s(b) ≤ 0.8·target`` (a request may arrive
  just after a batch started: one batch ahead plus its own), and waits only for the smallest batch
  ``b*`` whose throughput ``b*/s(b*)`` keeps up with ``1.25·λ``. At low load ``b* = 1``: no wait at
  all. At high load batches fill, and the window never exceeds ``0.8·target − 2·s(b*)``. When
  more rows wait than the cap allows, every 16th batch tries the next size up, so a size measured
  while the machine was busy gets measured again.

In every policy a batch is released early enough for its oldest request's deadline.

Backpressure: the queue is bounded (``queue_size`` requests). A request is refused at once
(:class:`Rejected`, answered 503 with ``Retry-After``) when the queue is full, when the work ahead
of it (estimated from the measured service times) cannot finish before its deadline, while warming
up or while draining; a queued request whose deadline passes is dropped before it runs. Nothing
waits forever: every request has a deadline.

Shutdown drains: :meth:`Batcher.stop` refuses new requests and finishes every queued one first.
"""

from __future__ import annotations

import bisect
import collections
import math
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from torchslim.errors import TorchslimError

__all__ = [
    "BatchPolicy",
    "BatchRecord",
    "Batcher",
    "Rejected",
    "ServiceModel",
]

RELEASE_REASONS = ("full", "window", "idle")
_HEADROOM = 0.8  # share of the p99 target the batcher plans to use (the rest: HTTP, jitter)


class Rejected(Exception):
    """A request refused before it ran (answered 503 with ``Retry-After``).

    Attributes:
        reason: ``queue_full``, ``deadline``, ``not_ready``, ``shutting_down``.
        retry_after_s: Seconds after which a retry is likely to be served.
    """

    def __init__(self, reason: str, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class BatchPolicy:
    """How the batcher forms batches and how much it queues.

    Attributes:
        max_batch: Rows per model call at most (1: batching off).
        max_wait_ms: Fixed window: how long the oldest request may wait for the batch to fill
            (0: take what is queued, never wait). With ``p99_target_ms`` it caps the adaptive
            window.
        p99_target_ms: Adaptive: the latency the window and batch size are planned for.
        queue_size: Requests waiting at most; more are refused with 503.
        preferred_batch_sizes: Sizes the model runs best at (those it was built for); a batch
            that reaches the largest one that fits is released at once, and every batch is
            formed at the largest preferred size the queue allows.
    """

    max_batch: int = 32
    max_wait_ms: float | None = None
    p99_target_ms: float | None = 50.0
    queue_size: int = 256
    preferred_batch_sizes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise TorchslimError(
                f"max batch must be at least 1, got {self.max_batch}.",
                "Give --max-batch 1 (batching off) or more.",
            )
        if self.queue_size < 1:
            raise TorchslimError(
                f"queue size must be at least 1, got {self.queue_size}.",
                "Give --queue-size 1 or more.",
            )
        if self.max_wait_ms is not None and not (
            math.isfinite(self.max_wait_ms) and self.max_wait_ms >= 0
        ):
            raise TorchslimError(
                f"max wait must be 0 ms or more, got {self.max_wait_ms}.",
                "Give e.g. --max-wait-ms 5.",
            )
        if self.p99_target_ms is not None and not (
            math.isfinite(self.p99_target_ms) and self.p99_target_ms > 0
        ):
            raise TorchslimError(
                f"p99 target must be above 0 ms, got {self.p99_target_ms}.",
                "Give e.g. --p99-target-ms 50.",
            )

    @property
    def mode(self) -> str:
        """``off``, ``fixed`` or ``adaptive``."""
        if self.max_batch == 1:
            return "off"
        return "adaptive" if self.p99_target_ms is not None else "fixed"


class ServiceModel:
    """Measured seconds per model call, by batch size: the median of the last ``window`` calls
    of each size (robust to the odd call a busy machine stretches), interpolated between sizes."""

    def __init__(self, window: int = 15) -> None:
        self._window = window
        self._calls: dict[int, collections.deque[float]] = {}
        self._s: dict[int, float] = {}
        self._lock = threading.Lock()

    def observe(self, rows: int, seconds: float) -> None:
        """Record one call of ``rows`` rows that took ``seconds``."""
        with self._lock:
            calls = self._calls.setdefault(rows, collections.deque(maxlen=self._window))
            calls.append(seconds)
            ordered = sorted(calls)
            self._s[rows] = ordered[len(ordered) // 2]

    def predict(self, rows: int) -> float:
        """Expected seconds for ``rows`` rows (0 before anything was measured)."""
        with self._lock:
            if not self._s:
                return 0.0
            if rows in self._s:
                return self._s[rows]
            sizes = sorted(self._s)
            if len(sizes) == 1:
                return self._s[sizes[0]] * rows / sizes[0]
            i = bisect.bisect_left(sizes, rows)
            if i == 0:
                lo, hi = sizes[0], sizes[1]
            elif i == len(sizes):
                lo, hi = sizes[-2], sizes[-1]
            else:
                lo, hi = sizes[i - 1], sizes[i]
            slope = (self._s[hi] - self._s[lo]) / (hi - lo)
            return max(1e-6, self._s[lo] + slope * (rows - lo))

    def to_dict(self) -> dict[str, float]:
        """Batch size → milliseconds per call, as measured."""
        with self._lock:
            return {str(b): round(s * 1e3, 4) for b, s in sorted(self._s.items())}


class _Arrivals:
    """Rows per second arriving, over the last ``span_s`` seconds."""

    def __init__(self, span_s: float = 1.0) -> None:
        self._span = span_s
        self._events: collections.deque[tuple[float, int]] = collections.deque()
        self._rows = 0

    def add(self, now: float, rows: int) -> None:
        self._events.append((now, rows))
        self._rows += rows
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self._events and self._events[0][0] < now - self._span:
            self._rows -= self._events.popleft()[1]

    def rate(self, now: float) -> float:
        self._trim(now)
        if len(self._events) < 2:
            return 0.0
        span = max(now - self._events[0][0], 1e-3)
        return (self._rows - self._events[0][1]) / span


@dataclass
class _Item:
    inputs: tuple[np.ndarray, ...]
    rows: int
    enqueued: float
    deadline: float
    future: Future[list[np.ndarray]] = field(default_factory=Future)


@dataclass(frozen=True)
class BatchRecord:
    """One model call: its rows, requests, why it was released, the window and its service time."""

    rows: int
    requests: int
    reason: str
    window_ms: float
    service_ms: float


def _claim(item: _Item) -> bool:
    """Mark a request as running; False when its caller cancelled it first."""
    if item.future.running():
        return True
    return item.future.set_running_or_notify_cancel()


Observer = Callable[[int, str, float, float, int], None]


class Batcher:
    """A bounded queue and one worker thread that runs ``run_batch`` on stacked requests.

    Args:
        run_batch: Runs one stacked batch (arrays with the same first axis) and returns the
            outputs, each with that first axis.
        policy: How batches form (:class:`BatchPolicy`).
        name: The variant's name (threads, messages).
        observer: Called after each batch with ``(rows, reason, service_s, window_s, queued)``.
        on_reject: Called with the reason of every refused or dropped request.
        warmup: Called in the worker thread before it serves (it may call :meth:`measure`);
            the batcher is ready after it returns.
    """

    def __init__(
        self,
        run_batch: Callable[[Sequence[np.ndarray]], list[np.ndarray]],
        policy: BatchPolicy,
        *,
        name: str = "primary",
        observer: Observer | None = None,
        on_reject: Callable[[str], None] | None = None,
        warmup: Callable[[Batcher], None] | None = None,
    ) -> None:
        self.run_batch = run_batch
        self.policy = policy
        self.name = name
        self.service = ServiceModel()
        self.history: collections.deque[BatchRecord] = collections.deque(maxlen=4096)
        self._observer = observer
        self._on_reject = on_reject
        self._warmup = warmup
        self._queue: collections.deque[_Item] = collections.deque()
        self._queued_rows = 0
        self._cond = threading.Condition()
        self._arrivals = _Arrivals()
        self._stopping = False
        self._ready = threading.Event()
        self._failed: BaseException | None = None
        self._running_rows = 0
        self._running_since = 0.0
        self._probes = 0
        self.admitted = 0
        self.completed = 0
        self._thread = threading.Thread(
            target=self._main, name=f"torchslim-batcher-{name}", daemon=True
        )

    # --------------------------------------------------------------------------------------------
    # Life cycle
    # --------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker thread (it warms up first, then serves)."""
        self._thread.start()

    @property
    def ready(self) -> bool:
        """Whether warm-up has finished and requests are served."""
        return self._ready.is_set() and not self._stopping

    @property
    def warmup_error(self) -> BaseException | None:
        """The exception warm-up raised, if it failed (the batcher then never becomes ready)."""
        return self._failed

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until ready (or ``timeout`` seconds); returns whether it is."""
        return self._ready.wait(timeout) and self._failed is None

    def stop(self, timeout: float | None = None) -> bool:
        """Refuse new requests, finish every queued one, stop the worker; True when it ended."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def queued(self) -> int:
        """Requests waiting."""
        return len(self._queue)

    # --------------------------------------------------------------------------------------------
    # Planning
    # --------------------------------------------------------------------------------------------

    def _sizes(self) -> list[int]:
        cap = self.policy.max_batch
        sizes = {cap, *(b for b in self.policy.preferred_batch_sizes if b <= cap)}
        b = 1
        while b < cap:
            sizes.add(b)
            b *= 2
        return sorted(sizes)

    def plan(self, now: float | None = None) -> tuple[int, int, float]:
        """``(cap, target, window_s)``: rows per call at most, rows worth waiting for, the wait.

        Fixed: ``(max_batch, largest preferred size or max_batch, max_wait)``. Adaptive: see the
        module docstring.
        """
        p = self.policy
        if p.mode == "off":
            return 1, 1, 0.0
        if p.mode == "fixed":
            target = max(
                (b for b in p.preferred_batch_sizes if b <= p.max_batch), default=p.max_batch
            )
            return p.max_batch, target, (p.max_wait_ms or 0.0) / 1e3
        now = time.perf_counter() if now is None else now
        budget = float(p.p99_target_ms or 0.0) / 1e3 * _HEADROOM
        s = self.service.predict
        sizes = self._sizes()
        cap = 1
        for b in sizes:
            if 2 * s(b) <= budget:
                cap = b
        lam = self._arrivals.rate(now)
        if lam <= 0:
            return cap, 1, 0.0
        target = cap
        for b in sizes:
            if b > cap:
                break
            if b / max(s(b), 1e-6) >= 1.25 * lam:
                target = b
                break
        if target <= 1:
            return cap, 1, 0.0
        window = min(budget - 2 * s(target), (target - 1) / lam)
        if p.max_wait_ms is not None:
            window = min(window, p.max_wait_ms / 1e3)
        return cap, target, max(0.0, window)

    def estimate_wait(self, rows: int, now: float | None = None) -> float:
        """Seconds until a request of ``rows`` rows submitted now would have its result."""
        now = time.perf_counter() if now is None else now
        cap = self.plan(now)[0]
        s = self.service.predict
        ahead = self._queued_rows + rows
        full, rest = divmod(ahead, cap)
        est = full * s(cap) + (s(rest) if rest else 0.0)
        if self._running_rows:
            est += max(0.0, s(self._running_rows) - (now - self._running_since))
        return est  # a batch that does not fill is released early enough for its oldest deadline

    # --------------------------------------------------------------------------------------------
    # Submitting
    # --------------------------------------------------------------------------------------------

    def submit(self, inputs: tuple[np.ndarray, ...], deadline: float) -> Future[list[np.ndarray]]:
        """Queue one request (arrays with a batch axis); its future gets the output rows.

        Args:
            inputs: The request's arrays, in the model's input order.
            deadline: ``time.perf_counter()`` value by which the result is needed.

        Raises:
            Rejected: Not ready, draining, the queue is full, or the deadline cannot be met.
        """
        rows = int(inputs[0].shape[0])
        now = time.perf_counter()
        with self._cond:
            if self._stopping:
                self._reject("shutting_down")
                raise Rejected("shutting_down", "The server is shutting down.", 5.0)
            if not self._ready.is_set():
                self._reject("not_ready")
                raise Rejected("not_ready", "The model is still warming up.", 1.0)
            if len(self._queue) >= self.policy.queue_size:
                self._reject("queue_full")
                raise Rejected(
                    "queue_full",
                    f"The queue is full ({self.policy.queue_size} requests waiting).",
                    self.estimate_wait(rows, now),
                )
            est = self.estimate_wait(rows, now)
            if now + est > deadline:
                self._reject("deadline")
                raise Rejected(
                    "deadline",
                    f"The work queued ahead (~{est * 1e3:.0f} ms) cannot finish within this "
                    f"request's deadline ({(deadline - now) * 1e3:.0f} ms).",
                    est,
                )
            item = _Item(inputs, rows, now, deadline)
            self._queue.append(item)
            self._queued_rows += rows
            self._arrivals.add(now, rows)
            self.admitted += 1
            self._cond.notify()
        return item.future

    def _reject(self, reason: str) -> None:
        if self._on_reject is not None:
            self._on_reject(reason)

    # --------------------------------------------------------------------------------------------
    # Worker
    # --------------------------------------------------------------------------------------------

    def measure(
        self,
        rows_list: Sequence[int],
        example: Callable[[int], tuple[np.ndarray, ...]],
        repeats: int = 3,
    ) -> None:
        """Time each batch size (median of ``repeats`` calls after an untimed one) into :attr:`service`."""
        for rows in rows_list:
            inputs = example(rows)
            self.run_batch(inputs)
            for _ in range(max(1, repeats)):
                t0 = time.perf_counter()
                self.run_batch(inputs)
                self.service.observe(rows, time.perf_counter() - t0)

    def _main(self) -> None:
        try:
            if self._warmup is not None:
                self._warmup(self)
        except BaseException as exc:  # reported through warmup_error; never ready
            self._failed = exc
            self._ready.set()
            with self._cond:
                self._stopping = True
            return
        self._ready.set()
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if not self._queue and self._stopping:
                    return
                items, reason, window = self._collect()
                if items:
                    self._running_rows = sum(it.rows for it in items)
                    self._running_since = time.perf_counter()
            if items:
                self._run(items, reason, window)
                with self._cond:
                    self._running_rows = 0

    def _drop_expired(self, now: float) -> None:
        while self._queue and (self._queue[0].deadline < now or self._queue[0].future.cancelled()):
            item = self._queue.popleft()
            self._queued_rows -= item.rows
            if _claim(item):
                self._reject("deadline")
                item.future.set_exception(
                    Rejected("deadline", "The request's deadline passed while it was queued.", 1.0)
                )

    def _collect(self) -> tuple[list[_Item], str, float]:
        """Wait (holding the lock) until a batch is due; pop it. Returns items, reason, window."""
        reason = "idle"
        window = 0.0
        while True:
            now = time.perf_counter()
            self._drop_expired(now)
            if not self._queue:
                return [], reason, window
            cap, target, window = self.plan(now)
            if self._queued_rows >= cap or (target > 1 and self._queued_rows >= target):
                reason = "full"
                break
            if self._stopping or window <= 0:
                reason = "idle"
                break
            head = self._queue[0]
            # never let the window eat the oldest request's deadline
            latest = head.deadline - 1.5 * self.service.predict(self._queued_rows) - 1e-3
            left = min(head.enqueued + window, latest) - now
            if left <= 0:
                reason = "window"
                break
            self._cond.wait(left)
        limit = self._probe(cap)
        fits = [b for b in self.policy.preferred_batch_sizes if b <= min(limit, self._queued_rows)]
        if fits:  # form the largest preferred size the queue allows
            limit = max(fits)
        items: list[_Item] = []
        rows = 0
        while self._queue and (not items or rows + self._queue[0].rows <= limit):
            item = self._queue.popleft()
            self._queued_rows -= item.rows
            if not _claim(item):
                continue  # its caller gave up
            items.append(item)
            rows += item.rows
        return items, reason, window

    def _probe(self, cap: int) -> int:
        """Adaptive: now and then, with more rows queued than the cap, try the next size up.

        The cap comes from measured service times; a size measured while the machine was busy
        would otherwise never be measured again and the cap could stay low for good.
        """
        if (
            self.policy.mode != "adaptive"
            or self._queued_rows <= cap
            or cap >= self.policy.max_batch
        ):
            return cap
        self._probes += 1
        if self._probes % 16:
            return cap
        return next((b for b in self._sizes() if b > cap), cap)

    def _run(self, items: list[_Item], reason: str, window: float) -> None:
        now = time.perf_counter()
        live = []
        for item in items:
            if item.deadline < now:
                self._reject("deadline")
                item.future.set_exception(
                    Rejected("deadline", "The request's deadline passed while it was queued.", 1.0)
                )
            else:
                live.append(item)
        if not live:
            return
        n_inputs = len(live[0].inputs)
        if len(live) == 1:
            stacked: list[np.ndarray] = list(live[0].inputs)
        else:
            stacked = [np.concatenate([it.inputs[k] for it in live]) for k in range(n_inputs)]
        rows = int(stacked[0].shape[0])
        t0 = time.perf_counter()
        try:
            outputs = self.run_batch(stacked)
        except Exception as exc:
            for item in live:
                item.future.set_exception(exc)
            return
        service_s = time.perf_counter() - t0
        self.service.observe(rows, service_s)
        start = 0
        for item in live:
            end = start + item.rows
            item.future.set_result([o[start:end] for o in outputs])
            start = end
        self.completed += len(live)
        self.history.append(BatchRecord(rows, len(live), reason, window * 1e3, service_s * 1e3))
        if self._observer is not None:
            self._observer(rows, reason, service_s, window, len(self._queue))

    def stats(self) -> dict[str, Any]:
        """Policy, measured service times, release counts and the current plan (``/v1/stats``)."""
        cap, target, window = self.plan()
        reasons = collections.Counter(r.reason for r in self.history)
        rows = [r.rows for r in self.history]
        return {
            "mode": self.policy.mode,
            "max_batch": self.policy.max_batch,
            "max_wait_ms": self.policy.max_wait_ms,
            "p99_target_ms": self.policy.p99_target_ms,
            "queue_size": self.policy.queue_size,
            "preferred_batch_sizes": list(self.policy.preferred_batch_sizes),
            "queued": self.queued,
            "admitted": self.admitted,
            "completed": self.completed,
            "service_ms_by_batch": self.service.to_dict(),
            "plan": {"cap": cap, "target": target, "window_ms": round(window * 1e3, 3)},
            "batches": len(rows),
            "mean_batch_rows": (sum(rows) / len(rows)) if rows else None,
            "release_reasons": {k: reasons.get(k, 0) for k in RELEASE_REASONS},
        }
