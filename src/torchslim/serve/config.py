"""The server's settings: one frozen value the CLI builds and the Python API takes."""

from __future__ import annotations

import math
from dataclasses import dataclass

from torchslim.errors import TorchslimError

__all__ = ["ServeConfig"]

API_KEY_ENV = "TORCHSLIM_API_KEY"
"""Environment variable holding the bearer token when ``--api-key`` is not given."""


@dataclass(frozen=True)
class ServeConfig:
    """How to serve an artifact.

    Attributes:
        artifact: The artifact directory to serve (the primary variant).
        host: Interface to bind; ``127.0.0.1`` (this machine only) unless told otherwise.
        port: TCP port (0: any free port).
        name: The model's name in URLs (default: the artifact directory's name).
        max_batch: Rows per model call at most (1: batching off).
        p99_target_ms: Adaptive batching held to this latency (``None``: fixed window).
        max_wait_ms: Fixed window (no target), or the cap on the adaptive window.
        queue_size: Requests waiting at most; more get 503.
        timeout_ms: Each request's deadline; a request that cannot make it gets 503.
        max_body_mb: Request bodies larger than this (MB, 10^6 bytes) get 413.
        cache_size: Response cache entries (0: off).
        cache_mb: Response cache MB at most.
        api_key: Bearer token every request but the health probes must carry (``None``: open).
        canary: A second artifact that gets a share of the traffic.
        split: ``(primary, canary)`` weights.
        shadow: A second artifact that gets a copy of every request; its answers are compared
            with the primary's and never returned.
        preferred_batch_sizes: Sizes the model runs best at (default: those the artifact was
            built for).
        verify: Check the artifacts' file hashes before loading them.
        warmup_repeats: Timed calls per batch size during warm-up.
        workers: Server processes sharing the port, each with its own model, batcher, cache and
            metrics (1: one process). Use more when one process cannot keep the cores busy
            (HTTP parsing and encoding run on one core per process).
    """

    artifact: str
    host: str = "127.0.0.1"
    port: int = 8000
    name: str | None = None
    max_batch: int = 32
    p99_target_ms: float | None = 50.0
    max_wait_ms: float | None = None
    queue_size: int = 256
    timeout_ms: float = 2000.0
    max_body_mb: float = 16.0
    cache_size: int = 0
    cache_mb: float = 64.0
    api_key: str | None = None
    canary: str | None = None
    split: tuple[int, int] = (90, 10)
    shadow: str | None = None
    preferred_batch_sizes: tuple[int, ...] | None = None
    verify: bool = True
    warmup_repeats: int = 5
    workers: int = 1

    def __post_init__(self) -> None:
        if not (0 <= self.port <= 65535):
            raise TorchslimError(f"Invalid port {self.port}.", "Give --port between 1 and 65535.")
        if not (math.isfinite(self.timeout_ms) and self.timeout_ms > 0):
            raise TorchslimError(
                f"--timeout-ms must be above 0, got {self.timeout_ms}.",
                "Give e.g. --timeout-ms 2000.",
            )
        if not (self.max_body_mb > 0):
            raise TorchslimError("--max-body-mb must be above 0.", "Give e.g. --max-body-mb 16.")
        if self.cache_size < 0:
            raise TorchslimError("--cache-size must be 0 or more.", "Give e.g. --cache-size 1024.")
        if not (1 <= self.workers <= 64):
            raise TorchslimError(
                f"--workers must be between 1 and 64, got {self.workers}.",
                "Give e.g. --workers 2 (about one per free core).",
            )
        if self.canary and self.shadow:
            raise TorchslimError(
                "--canary and --shadow cannot be used together.",
                "Shadow the candidate first (no user sees it), then canary it.",
            )
        if self.api_key is not None and not self.api_key.strip():
            raise TorchslimError("--api-key is empty.", f"Give a token, or unset {API_KEY_ENV}.")
