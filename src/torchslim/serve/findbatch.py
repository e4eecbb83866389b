"""``--find-batch-size``: throughput and latency per batch size, and the settings they suggest.

Each batch size is timed with :func:`torchslim.timing.time_callable` (first call apart, warm-up
until stable, then repeated calls). The suggestion follows the batcher's own rule: the largest
batch whose p99 leaves room for one batch ahead plus its own within the target
(``2·p99(b) ≤ 0.8·target``), and a window of what is left of the target.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torchslim.serve.model import ServedModel

__all__ = ["BatchSizeReport", "find_batch_size"]


@dataclass(frozen=True)
class BatchSizeReport:
    """What :func:`find_batch_size` measured and suggests.

    Attributes:
        rows: Per batch size: ``{batch, p50_ms, p99_ms, items_per_s}``.
        p99_target_ms: The target the suggestion is for.
        max_batch: Suggested ``--max-batch``.
        max_wait_ms: Suggested fixed window (``--max-wait-ms``), when not batching adaptively.
        best_throughput_batch: The batch size with the most items/s.
    """

    rows: list[dict[str, float]]
    p99_target_ms: float
    max_batch: int
    max_wait_ms: float
    best_throughput_batch: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict."""
        return {
            "rows": self.rows,
            "p99_target_ms": self.p99_target_ms,
            "suggested": {"max_batch": self.max_batch, "max_wait_ms": self.max_wait_ms},
            "best_throughput_batch": self.best_throughput_batch,
        }


def find_batch_size(
    model: ServedModel,
    *,
    p99_target_ms: float = 50.0,
    max_batch: int = 256,
    min_time_s: float = 0.3,
    max_time_s: float = 2.0,
    progress: Any = None,
) -> BatchSizeReport:
    """Measure ``model`` at batch 1, 2, 4, ... up to ``max_batch`` and suggest settings.

    Stops early once one batch's p99 alone exceeds the target.
    """
    from torchslim.timing import TimingConfig, time_callable

    config = TimingConfig(
        min_samples=10, min_time_s=min_time_s, max_time_s=max_time_s, max_warmup_s=1.0
    )
    model.load()
    sizes = []
    b = 1
    while b <= max_batch:
        sizes.append(b)
        b *= 2
    rows: list[dict[str, float]] = []
    for b in sizes:
        if progress is not None:
            progress(f"batch {b}")
        inputs = model.example_batch(b)
        res = time_callable(lambda inputs=inputs: model.run(inputs), config)  # type: ignore[misc]
        lat = res.latency
        rows.append(
            {
                "batch": b,
                "p50_ms": lat.p50_ms,
                "p99_ms": lat.p99_ms,
                "items_per_s": b / (lat.p50_ms / 1e3) if lat.p50_ms > 0 else 0.0,
            }
        )
        if lat.p99_ms > p99_target_ms:
            break
    budget = 0.8 * p99_target_ms
    fitting = [r for r in rows if 2 * r["p99_ms"] <= budget] or rows[:1]
    best = max(fitting, key=lambda r: r["items_per_s"])
    wait = max(0.0, budget - 2 * best["p99_ms"])
    top = max(rows, key=lambda r: r["items_per_s"])
    return BatchSizeReport(
        rows, p99_target_ms, int(best["batch"]), round(wait, 2), int(top["batch"])
    )
