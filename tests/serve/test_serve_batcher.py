"""The dynamic batcher's mechanics, on a model call the test controls (blocked on an event), so
what is batched together, why a batch is released and what is refused are exact."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import numpy as np
import pytest

from torchslim.errors import TorchslimError
from torchslim.serve.batcher import Batcher, BatchPolicy, Rejected, ServiceModel


class Gate:
    """A model call (doubling its input) that blocks until released; records each call's rows."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.entered = threading.Event()
        self.calls: list[int] = []

    def __call__(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        self.entered.set()
        self.open.wait(10)
        self.calls.append(int(inputs[0].shape[0]))
        return [inputs[0] * 2.0]


def rows(value: float, n: int = 1) -> tuple[np.ndarray, ...]:
    return (np.full((n, 3), value, dtype=np.float32),)


FAR = 1e9  # a deadline that never passes


def started(gate: Gate, policy: BatchPolicy) -> Batcher:
    b = Batcher(gate, policy)
    b.start()
    assert b.wait_ready(5)
    return b


def test_queued_requests_go_in_one_call_and_each_gets_its_own_rows() -> None:
    gate = Gate()
    b = started(gate, BatchPolicy(max_batch=8, max_wait_ms=0, p99_target_ms=None))
    first = b.submit(rows(-1.0), FAR)
    assert gate.entered.wait(5)  # the worker is busy with the first request
    futures = [b.submit(rows(float(i), n=1 + i % 2), FAR) for i in range(5)]
    gate.open.set()
    assert first.result(5)[0].tolist() == [[-2.0] * 3]
    for i, f in enumerate(futures):
        out = f.result(5)[0]
        assert out.shape == (1 + i % 2, 3) and np.all(out == 2.0 * i)
    assert gate.calls == [1, 7]  # the five queued requests (7 rows) in one call
    assert b.stop(5)


def test_release_reasons_full_window_and_idle() -> None:
    gate = Gate()
    gate.open.set()
    full = started(gate, BatchPolicy(max_batch=2, max_wait_ms=10_000, p99_target_ms=None))
    a, c = full.submit(rows(1), FAR), full.submit(rows(2), FAR)
    a.result(5), c.result(5)
    assert [r.reason for r in full.history] == ["full"]  # it did not wait 10 s
    full.stop(5)

    window = started(gate, BatchPolicy(max_batch=8, max_wait_ms=30, p99_target_ms=None))
    window.submit(rows(1), FAR).result(5)
    assert [r.reason for r in window.history] == ["window"]
    window.stop(5)

    idle = started(gate, BatchPolicy(max_batch=8, p99_target_ms=50))  # adaptive, no load
    idle.submit(rows(1), FAR).result(5)
    assert [r.reason for r in idle.history] == ["idle"]
    idle.stop(5)


def test_a_full_queue_is_refused_at_once_with_a_retry_time() -> None:
    gate = Gate()
    b = started(gate, BatchPolicy(max_batch=1, queue_size=2, p99_target_ms=None))
    running = b.submit(rows(0), FAR)
    assert gate.entered.wait(5)
    waiting = [b.submit(rows(1), FAR), b.submit(rows(2), FAR)]
    with pytest.raises(Rejected) as info:
        b.submit(rows(3), FAR)
    assert info.value.reason == "queue_full" and info.value.retry_after_s >= 0
    gate.open.set()
    assert [f.result(5)[0][0, 0] for f in [running, *waiting]] == [0.0, 2.0, 4.0]
    b.stop(5)


def test_work_ahead_that_cannot_meet_the_deadline_is_refused() -> None:
    gate = Gate()
    b = started(gate, BatchPolicy(max_batch=1, queue_size=100, p99_target_ms=None))
    b.service.observe(1, 0.5)  # as measured: half a second per call
    b.submit(rows(0), FAR)
    assert gate.entered.wait(5)
    b.submit(rows(1), FAR)
    with pytest.raises(Rejected) as info:
        b.submit(rows(2), time.perf_counter() + 0.2)  # ~1 s of work is ahead of it
    assert info.value.reason == "deadline"
    gate.open.set()
    b.stop(5)


def test_a_request_whose_deadline_passes_in_the_queue_never_runs() -> None:
    gate = Gate()
    b = started(gate, BatchPolicy(max_batch=1, p99_target_ms=None))
    b.submit(rows(0), FAR)
    assert gate.entered.wait(5)
    late = b.submit(rows(1), time.perf_counter() + 0.05)
    time.sleep(0.1)
    gate.open.set()
    with pytest.raises(Rejected, match="deadline"):
        late.result(5)
    assert gate.calls == [1]
    b.stop(5)


def test_stop_finishes_every_queued_request_then_refuses() -> None:
    gate = Gate()
    b = started(gate, BatchPolicy(max_batch=2, p99_target_ms=None))
    futures = [b.submit(rows(float(i)), FAR) for i in range(7)]
    stopper = threading.Thread(target=b.stop, args=(10,))
    stopper.start()
    time.sleep(0.05)
    with pytest.raises(Rejected, match="shutting down"):
        b.submit(rows(9), FAR)
    gate.open.set()
    stopper.join(10)
    assert [f.result(0)[0][0, 0] for f in futures] == [2.0 * i for i in range(7)]
    assert sum(gate.calls) == 7


def test_not_ready_until_warm_up_returns() -> None:
    release = threading.Event()
    b = Batcher(lambda x: [x[0]], BatchPolicy(), warmup=lambda _: release.wait(5))
    b.start()
    assert not b.ready
    with pytest.raises(Rejected, match="warming up"):
        b.submit(rows(0), FAR)
    release.set()
    assert b.wait_ready(5) and b.ready
    b.stop(5)


def test_adaptive_plan_waits_only_when_the_load_needs_bigger_batches() -> None:
    b = Batcher(lambda x: [x[0]], BatchPolicy(max_batch=32, p99_target_ms=50))
    for size, ms in ((1, 1.0), (2, 1.2), (4, 1.5), (8, 2.0), (16, 3.0), (32, 30.0)):
        b.service.observe(size, ms / 1e3)
    cap, target, window = b.plan()
    assert (cap, target, window) == (16, 1, 0.0)  # no load: no wait; 2*s(32) > 40 ms: cap 16
    now = time.perf_counter()
    for i in range(200):  # 2,000 rows/s arriving: batch 1 (1,000/s) cannot keep up
        b._arrivals.add(now - 0.1 + i * 0.0005, 1)
    cap, target, window = b.plan(now)
    assert target > 1 and target / b.service.predict(target) >= 1.25 * 2000 * 0.9
    assert 0 < window <= 0.8 * 0.050 - 2 * b.service.predict(target) + 1e-9


def test_service_model_interpolates_between_measured_sizes() -> None:
    s = ServiceModel()
    s.observe(1, 0.001)
    s.observe(8, 0.008)
    assert s.predict(4) == pytest.approx(0.004)
    assert s.predict(16) == pytest.approx(0.016)


def test_policy_refuses_values_that_cannot_work() -> None:
    with pytest.raises(TorchslimError, match="max batch"):
        BatchPolicy(max_batch=0)
    with pytest.raises(TorchslimError, match="p99"):
        BatchPolicy(p99_target_ms=0)
    assert BatchPolicy(max_batch=1).mode == "off"
    assert BatchPolicy(p99_target_ms=None, max_wait_ms=5).mode == "fixed"


def test_batches_form_at_the_largest_preferred_size_the_queue_allows() -> None:
    gate = Gate()
    policy = BatchPolicy(
        max_batch=8, max_wait_ms=50, p99_target_ms=None, preferred_batch_sizes=(4,)
    )
    b = started(gate, policy)
    first = b.submit(rows(0), FAR)
    assert gate.entered.wait(5)
    futures = [b.submit(rows(float(i)), FAR) for i in range(1, 7)]
    gate.open.set()
    first.result(5)
    assert [f.result(5)[0][0, 0] for f in futures] == [2.0 * i for i in range(1, 7)]
    assert gate.calls == [1, 4, 2]  # 6 queued: a batch of 4 at once, the other 2 after the window
    assert [r.reason for r in b.history] == ["window", "full", "window"]
    b.stop(5)
