"""``--batch-size auto`` respects its memory limit; the worker/thread split follows the measured
costs; loader settings follow the device."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from predict_helpers import DATA, MODEL

import torchslim
from torchslim.predict._tuning import choose_split, default_batch_size, probe_batch_size


def _allocating(mb_per_item: float) -> Callable[[int], Callable[[], Any]]:
    """A 'model' whose call touches ``mb_per_item`` MB per sample (real memory, measured) and
    has a fixed per-call cost, so larger batches have higher throughput until memory runs out."""

    def run(b: int) -> Callable[[], Any]:
        def call() -> float:
            time.sleep(0.03)  # dominates the allocation even on a busy machine
            buf = np.ones(int(b * mb_per_item * 1e6 / 8))
            return float(buf[-1])

        return call

    return run


def test_probe_stops_at_the_memory_limit() -> None:
    probe = probe_batch_size(
        _allocating(0.5), max_batch=1024, memory_limit_mb=20, time_per_size_s=0.02
    )
    fitting = [r for r in probe.rows if r["fits"]]
    assert fitting and all(r["memory_mb"] <= 20 for r in fitting)
    assert probe.chosen in [r["batch"] for r in fitting]
    assert probe.chosen <= 32
    over = [r for r in probe.rows if not r["fits"]]
    assert over and over[-1]["batch"] <= 64  # stopped at the first size over the limit
    # sizes predicted to exceed the limit are never run
    assert all(r["batch"] <= 128 for r in probe.rows)


def test_probe_on_the_real_model_respects_the_limit() -> None:
    from torchslim.predict import _prepare

    job = _prepare(
        MODEL,
        DATA,
        batch_size="auto",
        workers=0,
        threads=None,
        device="cpu",
        topk=5,
        memory_limit_mb=4,
        preprocess=None,
        limit=512,
        overlap=True,
        trust_code=False,
        verify=True,
    )
    assert job.probe is not None and job.probe.limit_mb == 4
    chosen = next(r for r in job.probe.rows if r["batch"] == job.batch_size)
    assert chosen["fits"] and chosen["memory_mb"] <= 4
    assert any(not r["fits"] for r in job.probe.rows), "the limit never bit"
    # the iterator uses the probed size
    first = next(iter(torchslim.predict(MODEL, DATA, limit=512, batch_size=job.batch_size)))
    assert len(first.index) == job.batch_size


def test_compiled_sizes_are_the_only_candidates_of_a_static_artifact() -> None:
    probe = probe_batch_size(
        _allocating(0.01),
        max_batch=512,
        memory_limit_mb=1000,
        compiled=(24,),
        dynamic=False,
        time_per_size_s=0.02,
    )
    assert [r["batch"] for r in probe.rows] == [24] and probe.chosen == 24


def test_split_gives_cores_to_decoding_only_when_it_costs() -> None:
    in_memory = choose_split(2, decode_s=2e-6, model_s=1e-3)
    assert (in_memory.workers, in_memory.threads) == (0, 2)
    assert not in_memory.pin_memory and in_memory.prefetch_factor is None
    decoding = choose_split(8, decode_s=4e-3, model_s=1e-3)
    assert decoding.workers >= 2 and decoding.workers + decoding.threads == 8
    assert decoding.persistent_workers and decoding.prefetch_factor
    gpu = choose_split(8, decode_s=1e-3, model_s=0.0, gpu=True)
    assert gpu.pin_memory and gpu.workers >= 1
    given = choose_split(2, decode_s=1e-3, model_s=1e-3, workers=1, threads=1)
    assert (given.workers, given.threads) == (1, 1) and given.reason.startswith("given")


def test_default_batch_size_fills_about_8_mb_up_to_64() -> None:
    assert default_batch_size(28 * 28 * 4) == 64  # 2,550 would fit 8 MB: capped
    assert default_batch_size(3 * 64 * 64 * 4) == 64
    assert default_batch_size(3 * 224 * 224 * 4) == 8
    assert default_batch_size(3 * 224 * 224 * 4, compiled=(4,), dynamic=False) == 4


def test_replicas_get_batches_round_robin_and_rows_come_back_in_order() -> None:
    """The multi-GPU path (one replica per device, one thread each) exercised with two CPU
    replicas: the batches are dealt round-robin, the rows come back in input order and equal
    the single-replica run's."""
    import copy

    from torchslim.predict import _all_spans, _iterate, _prepare
    from torchslim.predict._runner import Replica

    job = _prepare(
        MODEL,
        DATA,
        batch_size=16,
        workers=0,
        threads=1,
        device="cpu",
        topk=5,
        memory_limit_mb=None,
        preprocess=None,
        limit=200,
        overlap=True,
        trust_code=False,
        verify=True,
    )
    single = list(_iterate(job, _all_spans(200, 16)))
    seen: list[tuple[int, int]] = []

    class Spy(Replica):
        def run(self, batch, inputs=None):  # type: ignore[no-untyped-def]
            seen.append((id(self), batch.span[0]))
            return super().run(batch, inputs)

    first = job.replicas[0]
    job.replicas = [
        Spy(first.fn, "cpu", first.head),
        Spy(copy.deepcopy(first.fn), "cpu", first.head),
    ]
    double = list(_iterate(job, _all_spans(200, 16)))
    assert [r.span for r in double] == [r.span for r in single]
    assert np.array_equal(
        np.concatenate([r.scores for r in double]), np.concatenate([r.scores for r in single])
    )
    by_replica: dict[int, list[int]] = {}
    for rid, start in seen:
        by_replica.setdefault(rid, []).append(start)
    assert len(by_replica) == 2
    assert sorted(v[0] for v in by_replica.values()) == [0, 16]  # dealt 0,32,… and 16,48,…
    assert all(all(b - a == 32 for a, b in itertools.pairwise(v)) for v in by_replica.values())


@pytest.mark.gpu
def test_gpu_stream_overlap_gives_the_same_rows() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs an NVIDIA GPU")
    opts = {"limit": 512, "batch_size": 64, "workers": 0, "device": "cuda"}
    on = list(torchslim.predict(MODEL, DATA, overlap=True, **opts))
    off = list(torchslim.predict(MODEL, DATA, overlap=False, **opts))
    assert np.concatenate([b.index for b in on]).tolist() == list(range(512))
    np.testing.assert_allclose(
        np.concatenate([b.scores for b in on]), np.concatenate([b.scores for b in off]), atol=1e-6
    )


def test_split_uses_the_measured_one_thread_cost() -> None:
    # A model that barely gains from a second thread: a worker is worth more than the thread.
    flat = choose_split(2, decode_s=1e-3, model_s=1.0e-3, model_s_one_thread=1.1e-3)
    assert (flat.workers, flat.threads) == (1, 1)
    assert "on 1 thread" in flat.reason
    # One that scales perfectly: decoding in the main process between batches costs less.
    linear = choose_split(2, decode_s=1e-4, model_s=1.0e-3, model_s_one_thread=2.0e-3)
    assert (linear.workers, linear.threads) == (0, 2)
