"""Timing one callable honestly: warm-up until stable, first call apart, robust statistics.

This is the statistical core of :mod:`torchslim.measure` (which re-exports these names): the
timing budget (:class:`TimingConfig`), percentiles and the distribution-free confidence interval
on the median, and :func:`time_callable`, which takes an injectable clock so the statistics can be
tested exactly.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from torchslim.errors import TorchslimError

__all__ = [
    "Clock",
    "LatencyStats",
    "TimingConfig",
    "TimingResult",
    "latency_stats",
    "median_ci",
    "percentile",
    "time_callable",
]

Clock = Callable[[], float]


@dataclass(frozen=True)
class TimingConfig:
    """How long to warm up and how many samples to take.

    Attributes:
        warmup_window: Calls per warm-up window.
        warmup_tolerance: Warm-up ends when consecutive window medians differ by less than this
            fraction.
        min_warmup_calls: Warm-up calls at least (after the first call).
        max_warmup_calls: Warm-up calls at most; warm-up then ends as "not stable".
        max_warmup_s: Warm-up seconds at most.
        min_samples: Measured calls at least.
        min_time_s: Measured seconds at least.
        max_time_s: Measured seconds at most (wins over ``min_samples``).
        max_samples: Measured calls at most.
        round_time_s: Length of one model's block when several models are interleaved.
    """

    warmup_window: int = 5
    warmup_tolerance: float = 0.05
    min_warmup_calls: int = 10
    max_warmup_calls: int = 200
    max_warmup_s: float = 5.0
    min_samples: int = 30
    min_time_s: float = 1.0
    max_time_s: float = 10.0
    max_samples: int = 100_000
    round_time_s: float = 0.1

    def __post_init__(self) -> None:
        ints = ("warmup_window", "min_samples", "max_samples")
        if any(getattr(self, n) < 1 for n in ints) or self.max_warmup_calls < 0:
            raise TorchslimError(
                "Timing needs at least one warm-up window call and one sample.",
                "Give --repeats 1 or more.",
            )
        if self.min_time_s < 0 or self.max_time_s <= 0 or self.round_time_s < 0:
            raise TorchslimError(
                f"Invalid timing budget (min_time_s={self.min_time_s}, "
                f"max_time_s={self.max_time_s}).",
                "Give a non-negative --min-time and a positive --max-time.",
            )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict."""
        return asdict(self)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-quantile (0..1) of sorted values, by linear interpolation (NumPy's default).

    Args:
        sorted_values: Values in ascending order (at least one).
        q: Quantile in ``[0, 1]``.
    """
    n = len(sorted_values)
    if n == 0:
        raise ValueError("percentile of no values")
    pos = (n - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * frac


def _median_ci_ranks(n: int, confidence: float) -> tuple[int, int, float]:
    """0-based order-statistic indices ``(lo, hi)`` of a CI on the median, and its coverage.

    The interval ``[x_(l), x_(n+1-l)]`` (1-based) covers the median with probability
    ``1 - 2·P(B ≤ l-1)`` for ``B ~ Binomial(n, 1/2)``, whatever the distribution. ``l`` is the
    largest rank whose coverage is still at least ``confidence``; with too few samples for that,
    the interval is ``[min, max]`` and the returned coverage is lower than asked.
    """
    alpha = 1.0 - confidence
    if n > 1000:
        z = statistics.NormalDist().inv_cdf(1.0 - alpha / 2.0)
        l_rank = max(1, math.floor(n / 2.0 - z * math.sqrt(n) / 2.0))
        return l_rank - 1, n - l_rank, confidence
    total = 2**n
    l_rank = 1
    cdf = 1  # numerator of P(B <= l_rank - 1) = C(n, 0)
    term = 1  # C(n, l_rank - 1)
    while l_rank < (n + 1) // 2:
        nxt_term = term * (n - l_rank + 1) // l_rank  # C(n, l_rank)
        if 2 * (cdf + nxt_term) / total > alpha:
            break
        cdf += nxt_term
        term = nxt_term
        l_rank += 1
    return l_rank - 1, n - l_rank, 1.0 - 2.0 * cdf / total


def median_ci(
    sorted_values: Sequence[float], confidence: float = 0.95
) -> tuple[float, float, float]:
    """Distribution-free confidence interval on the median.

    Args:
        sorted_values: Samples in ascending order.
        confidence: Wanted coverage.

    Returns:
        ``(low, high, coverage)``; ``coverage`` is below ``confidence`` only when there are too
        few samples (fewer than 6 for 95%), in which case the interval is ``[min, max]``.
    """
    lo, hi, cov = _median_ci_ranks(len(sorted_values), confidence)
    return sorted_values[lo], sorted_values[hi], cov


@dataclass(frozen=True)
class LatencyStats:
    """Steady-state latency statistics, in milliseconds.

    Attributes:
        n: Number of samples.
        p50_ms: Median.
        p90_ms: 90th percentile.
        p99_ms: 99th percentile.
        mean_ms: Mean.
        std_ms: Sample standard deviation (0 for one sample).
        min_ms: Fastest call.
        max_ms: Slowest call.
        ci95_low_ms: Lower end of the 95% CI on the median.
        ci95_high_ms: Upper end of the 95% CI on the median.
        ci_coverage: Actual coverage of that interval (below 0.95 only with < 6 samples).
    """

    n: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    ci95_low_ms: float
    ci95_high_ms: float
    ci_coverage: float

    def to_dict(self) -> dict[str, Any]:
        """``{p50, p90, p99, mean, std, min, max, n, ci95: [lo, hi]}`` in ms."""
        return {
            "p50": self.p50_ms,
            "p90": self.p90_ms,
            "p99": self.p99_ms,
            "mean": self.mean_ms,
            "std": self.std_ms,
            "min": self.min_ms,
            "max": self.max_ms,
            "n": self.n,
            "ci95": [self.ci95_low_ms, self.ci95_high_ms],
            "ci_coverage": round(self.ci_coverage, 4),
        }


def latency_stats(samples_s: Sequence[float]) -> LatencyStats:
    """Compute :class:`LatencyStats` from per-call durations in **seconds**."""
    if not samples_s:
        raise ValueError("no latency samples")
    ms = sorted(s * 1e3 for s in samples_s)
    lo, hi, cov = median_ci(ms)
    return LatencyStats(
        n=len(ms),
        p50_ms=percentile(ms, 0.50),
        p90_ms=percentile(ms, 0.90),
        p99_ms=percentile(ms, 0.99),
        mean_ms=statistics.fmean(ms),
        std_ms=statistics.stdev(ms) if len(ms) > 1 else 0.0,
        min_ms=ms[0],
        max_ms=ms[-1],
        ci95_low_ms=lo,
        ci95_high_ms=hi,
        ci_coverage=cov,
    )


@dataclass(frozen=True)
class TimingResult:
    """What :func:`time_callable` measured.

    Attributes:
        first_call_ms: The very first call, kept out of the statistics.
        warmup_calls: Calls spent warming up (after the first).
        warmup_stable: Whether warm-up ended because timings settled (else a bound hit).
        latency: Statistics of the measured calls.
        samples_ms: The measured durations, in call order.
    """

    first_call_ms: float
    warmup_calls: int
    warmup_stable: bool
    latency: LatencyStats
    samples_ms: tuple[float, ...] = field(repr=False)

    def to_dict(self, *, include_samples: bool = False) -> dict[str, Any]:
        """A JSON-friendly dict (raw samples only when asked)."""
        d: dict[str, Any] = {
            "first_call_ms": self.first_call_ms,
            "warmup_calls": self.warmup_calls,
            "warmup_stable": self.warmup_stable,
            "latency_ms": self.latency.to_dict(),
        }
        if include_samples:
            d["samples_ms"] = list(self.samples_ms)
        return d


class _Timer:
    """The timing state machine for one callable; steps can be interleaved with other timers."""

    def __init__(
        self,
        fn: Callable[[], Any],
        config: TimingConfig,
        clock: Clock,
        sync: Callable[[], Any] | None,
    ) -> None:
        self.fn, self.config, self.clock, self.sync = fn, config, clock, sync
        self.first_s: float | None = None
        self.warmup_calls = 0
        self.warmup_stable = False
        self.samples: list[float] = []
        self.measured_s = 0.0

    def call(self) -> float:
        t0 = self.clock()
        self.fn()
        if self.sync is not None:
            self.sync()
        return self.clock() - t0

    def first(self) -> None:
        self.first_s = self.call()

    def warm_up(self) -> None:
        c = self.config
        spent = 0.0
        previous: float | None = None
        while self.warmup_calls < c.max_warmup_calls and spent < c.max_warmup_s:
            window = []
            for _ in range(min(c.warmup_window, c.max_warmup_calls - self.warmup_calls)):
                window.append(self.call())
            self.warmup_calls += len(window)
            spent += sum(window)
            median = statistics.median(window)
            if previous is not None and self.warmup_calls >= c.min_warmup_calls:
                change = abs(median - previous) / previous if previous > 0 else 0.0
                if change < c.warmup_tolerance:
                    self.warmup_stable = True
                    return
            previous = median

    @property
    def done(self) -> bool:
        c, n = self.config, len(self.samples)
        return (
            n >= c.max_samples
            or self.measured_s >= c.max_time_s
            or (n >= c.min_samples and self.measured_s >= c.min_time_s)
        )

    @property
    def fraction(self) -> float:
        """Progress of the measured phase, 0..1."""
        if self.done:
            return 1.0
        c, n = self.config, len(self.samples)
        need = min(n / c.min_samples, self.measured_s / c.min_time_s if c.min_time_s else 1.0)
        return min(1.0, max(need, self.measured_s / c.max_time_s, n / c.max_samples))

    def run_block(self, block_s: float) -> int:
        """Measure calls until done or ``block_s`` seconds of calls; return how many ran."""
        spent, calls = 0.0, 0
        while not self.done:
            s = self.call()
            self.samples.append(s)
            self.measured_s += s
            spent += s
            calls += 1
            if spent >= block_s:
                break
        return calls

    def result(self) -> TimingResult:
        return TimingResult(
            first_call_ms=(self.first_s or 0.0) * 1e3,
            warmup_calls=self.warmup_calls,
            warmup_stable=self.warmup_stable,
            latency=latency_stats(self.samples),
            samples_ms=tuple(s * 1e3 for s in self.samples),
        )


@contextlib.contextmanager
def _inference_mode() -> Iterator[None]:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        yield
        return
    with torch.inference_mode():
        yield


def time_callable(
    fn: Callable[[], Any],
    config: TimingConfig | None = None,
    *,
    clock: Clock = time.perf_counter,
    sync: Callable[[], Any] | None = None,
) -> TimingResult:
    """Time ``fn()``: first call apart, warm-up until stable, then measured runs.

    Args:
        fn: What to time, called without arguments (bind inputs beforehand).
        config: Budgets (default :class:`TimingConfig`).
        clock: Seconds as a float; tests inject a fake one.
        sync: Called after each call before reading the clock (``torch.cuda.synchronize`` on
            GPU).

    Returns:
        The :class:`TimingResult`.
    """
    timer = _Timer(fn, config or TimingConfig(), clock, sync)
    with _inference_mode():
        timer.first()
        timer.warm_up()
        while not timer.done:
            timer.run_block(math.inf)
    return timer.result()
