"""Prometheus metrics of one server (``GET /metrics``), labelled by model variant.

Each server has its own registry, so several servers (tests, canaries) in one process never mix
their counts. Names (all prefixed ``torchslim_``):

=================================  =========  =====================================================
``requests_total``                 counter    answered requests, by variant, route and HTTP status
``request_latency_seconds``        histogram  time in the server, request read → response ready
``queue_depth``                    gauge      requests waiting in the batcher's queue
``batch_size``                     histogram  rows per model call
``batch_release_total``            counter    batches by why they were released (full/window/idle)
``batch_window_seconds``           gauge      the batcher's current wait window
``service_seconds``                histogram  time of one model call
``cache_hits_total``/``misses``    counter    response cache
``rejections_total``               counter    requests refused (queue_full, deadline, not_ready ...)
``errors_total``                   counter    requests that failed (bad_input, model, timeout)
``shadow_top1_agreement``          gauge      shadow variant: running top-1 agreement with primary
=================================  =========  =====================================================
"""

from __future__ import annotations

from typing import Any

__all__ = ["ServerMetrics"]

_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class ServerMetrics:
    """The Prometheus metrics of one server, in their own registry."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "torchslim_requests", "Answered requests.", ("variant", "route", "status"), registry=r
        )
        self.latency = Histogram(
            "torchslim_request_latency_seconds",
            "Time a request spent in the server.",
            ("variant",),
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "torchslim_queue_depth", "Requests waiting in the batcher.", ("variant",), registry=r
        )
        self.batch_size = Histogram(
            "torchslim_batch_size",
            "Rows per model call.",
            ("variant",),
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.release = Counter(
            "torchslim_batch_release",
            "Batches by why they were released.",
            ("variant", "reason"),
            registry=r,
        )
        self.window = Gauge(
            "torchslim_batch_window_seconds",
            "The batcher's current wait window.",
            ("variant",),
            registry=r,
        )
        self.service = Histogram(
            "torchslim_service_seconds",
            "Time of one model call.",
            ("variant",),
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.cache_hits = Counter(
            "torchslim_cache_hits", "Response cache hits.", ("variant",), registry=r
        )
        self.cache_misses = Counter(
            "torchslim_cache_misses", "Response cache misses.", ("variant",), registry=r
        )
        self.rejections = Counter(
            "torchslim_rejections", "Refused requests.", ("variant", "reason"), registry=r
        )
        self.errors = Counter(
            "torchslim_errors", "Failed requests.", ("variant", "kind"), registry=r
        )
        self.agreement = Gauge(
            "torchslim_shadow_top1_agreement",
            "Top-1 agreement of the shadow variant with the primary so far.",
            ("variant",),
            registry=r,
        )

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def batch_observer(self, variant: str) -> Any:
        """A callback for the batcher: ``(rows, reason, service_s, window_s, depth)``."""
        size = self.batch_size.labels(variant)
        service = self.service.labels(variant)
        window = self.window.labels(variant)
        depth = self.queue_depth.labels(variant)

        def observe(rows: int, reason: str, service_s: float, window_s: float, queued: int) -> None:
            size.observe(rows)
            self.release.labels(variant, reason).inc()
            service.observe(service_s)
            window.set(window_s)
            depth.set(queued)

        return observe
