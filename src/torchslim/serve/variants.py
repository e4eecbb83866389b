"""Canary and shadow variants, and the evidence to promote one (``GET /v1/compare``).

* **Canary** (``--canary DIR --split 90:10``): requests are routed between the primary and the
  candidate in that proportion — deterministically interleaved (error diffusion, not dice), so a
  10% canary gets exactly one request in ten and the test of it is exact. Each response names the
  variant that answered (``X-Torchslim-Variant``).
* **Shadow** (``--shadow DIR``): every request the primary answers is also sent to the candidate
  *after* the primary's answer is ready; the response never waits for the shadow and never
  changes. The shadow's latency and its agreement with the primary on the same inputs are
  recorded: top-1 agreement per row (argmax of the first output's last axis) and the cosine
  similarity of the first output's rows.

:func:`compare_report` gives both variants' latency percentiles with distribution-free 95%
intervals, and the agreement with a Wilson interval (top-1) and a normal interval (mean cosine).
"""

from __future__ import annotations

import collections
import math
import statistics
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from torchslim.errors import TorchslimError
from torchslim.timing import percentile

__all__ = [
    "LatencyLog",
    "ShadowStats",
    "SplitRouter",
    "compare_report",
    "parse_split",
    "quantile_ci",
    "wilson",
]

_Z95 = 1.959963984540054


def parse_split(text: str) -> tuple[int, int]:
    """``"90:10"`` → ``(90, 10)``: primary and canary weights.

    Raises:
        TorchslimError: Not two non-negative integers with a positive sum.
    """
    parts = text.split(":")
    try:
        a, b = (int(p) for p in parts)
    except ValueError:
        a = b = -1
    if len(parts) != 2 or a < 0 or b < 0 or a + b == 0:
        raise TorchslimError(
            f"Invalid --split '{text}'.",
            "Give primary:canary weights, e.g. --split 90:10 (10% of requests to the canary).",
        )
    return a, b


class SplitRouter:
    """Deterministic weighted interleaving: after ``n`` requests each variant has had its share
    of ``n`` to within one request."""

    def __init__(self, weights: dict[str, int]) -> None:
        total = sum(weights.values())
        self._share = {k: v / total for k, v in weights.items() if v > 0}
        self._credit = dict.fromkeys(self._share, 0.0)
        self._lock = threading.Lock()

    def next(self) -> str:
        """The variant for the next request."""
        with self._lock:
            for k, share in self._share.items():
                self._credit[k] += share
            best = max(self._credit, key=lambda k: self._credit[k])
            self._credit[best] -= 1.0
            return best


def wilson(successes: int, n: int, z: float = _Z95) -> tuple[float, float]:
    """Wilson score interval for a proportion (95% by default)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return lo, hi


def quantile_ci(sorted_values: Sequence[float], q: float) -> tuple[float, float] | None:
    """Distribution-free ~95% interval for the ``q``-quantile (order statistics, normal ranks)."""
    n = len(sorted_values)
    if n < 2:
        return None
    half = _Z95 * math.sqrt(n * q * (1 - q))
    lo = max(0, math.floor(n * q - half) - 1)
    hi = min(n - 1, math.ceil(n * q + half))
    return sorted_values[lo], sorted_values[hi]


class LatencyLog:
    """The last ``maxlen`` latencies of one variant, in ms, thread-safe."""

    def __init__(self, maxlen: int = 20_000) -> None:
        self._ms: collections.deque[float] = collections.deque(maxlen=maxlen)
        self._lock = threading.Lock()
        self.count = 0

    def add(self, ms: float) -> None:
        """Record one latency."""
        with self._lock:
            self._ms.append(ms)
            self.count += 1

    def summary(self) -> dict[str, Any]:
        """``{n, p50, p90, p99, mean, p50_ci95, p99_ci95}`` in ms (``n`` only when empty)."""
        with self._lock:
            ms = sorted(self._ms)
        if not ms:
            return {"n": 0}
        return {
            "n": len(ms),
            "p50": percentile(ms, 0.5),
            "p90": percentile(ms, 0.9),
            "p99": percentile(ms, 0.99),
            "mean": statistics.fmean(ms),
            "p50_ci95": quantile_ci(ms, 0.5),
            "p99_ci95": quantile_ci(ms, 0.99),
        }


@dataclass
class _Agreement:
    rows: int = 0
    top1_equal: int = 0
    cos_n: int = 0
    cos_sum: float = 0.0
    cos_sq: float = 0.0
    cos_min: float = 1.0
    max_abs: float = 0.0


class ShadowStats:
    """Agreement of a shadow variant with the primary, and the shadow's own latency."""

    def __init__(self) -> None:
        self._a = _Agreement()
        self._lock = threading.Lock()
        self.latency = LatencyLog()
        self.dropped = 0
        self.failed = 0

    def record(self, primary: Sequence[np.ndarray], shadow: Sequence[np.ndarray]) -> float | None:
        """Compare one request's outputs; returns the running top-1 agreement (or ``None``)."""
        p = np.asarray(primary[0], dtype=np.float64)
        s = np.asarray(shadow[0], dtype=np.float64)
        if p.shape != s.shape or p.ndim == 0:
            with self._lock:
                self.failed += 1
            return None
        rows = p.reshape(p.shape[0], -1)
        srows = s.reshape(s.shape[0], -1)
        num = (rows * srows).sum(axis=1)
        den = np.linalg.norm(rows, axis=1) * np.linalg.norm(srows, axis=1)
        cos = np.where(den > 0, num / np.where(den > 0, den, 1.0), 1.0)
        top1 = None
        if p.ndim >= 2 and p.shape[-1] > 1:
            top1 = p.reshape(-1, p.shape[-1]).argmax(-1) == s.reshape(-1, s.shape[-1]).argmax(-1)
        with self._lock:
            a = self._a
            if top1 is not None:
                a.rows += int(top1.size)
                a.top1_equal += int(top1.sum())
            a.cos_n += int(cos.size)
            a.cos_sum += float(cos.sum())
            a.cos_sq += float((cos * cos).sum())
            a.cos_min = min(a.cos_min, float(cos.min()))
            a.max_abs = max(a.max_abs, float(np.abs(p - s).max()))
            return a.top1_equal / a.rows if a.rows else None

    def summary(self) -> dict[str, Any]:
        """Top-1 agreement (Wilson 95% CI), mean cosine (normal 95% CI), latency, drops."""
        with self._lock:
            a = _Agreement(**vars(self._a))
        out: dict[str, Any] = {
            "compared_rows": a.cos_n,
            "dropped": self.dropped,
            "failed": self.failed,
        }
        if a.rows:
            out["top1_agreement"] = a.top1_equal / a.rows
            out["top1_agreement_ci95"] = list(wilson(a.top1_equal, a.rows))
        if a.cos_n:
            mean = a.cos_sum / a.cos_n
            var = max(0.0, a.cos_sq / a.cos_n - mean * mean) * a.cos_n / max(1, a.cos_n - 1)
            half = _Z95 * math.sqrt(var / a.cos_n)
            out["cosine_mean"] = mean
            out["cosine_mean_ci95"] = [max(-1.0, mean - half), min(1.0, mean + half)]
            out["cosine_min"] = a.cos_min
            out["max_abs_diff"] = a.max_abs
        return out


def compare_report(
    latencies: dict[str, LatencyLog],
    models: dict[str, str],
    shadow: ShadowStats | None,
    split: tuple[int, int] | None,
) -> dict[str, Any]:
    """The ``/v1/compare`` body: per variant its artifact and latency, and the shadow agreement."""
    variants: dict[str, Any] = {}
    for name, log in latencies.items():
        variants[name] = {
            "artifact": models.get(name),
            "requests": log.count,
            "latency_ms": log.summary(),
        }
    report: dict[str, Any] = {"variants": variants}
    if split is not None:
        total = sum(split)
        report["split"] = {"primary": split[0] / total, "canary": split[1] / total}
    if shadow is not None:
        report["shadow"] = shadow.summary()
        report["shadow"]["latency_ms"] = shadow.latency.summary()
    base = variants.get("primary", {}).get("latency_ms", {})
    for name, v in variants.items():
        lat = v["latency_ms"]
        if name != "primary" and lat.get("n") and base.get("n"):
            v["p50_ratio_to_primary"] = lat["p50"] / base["p50"] if base["p50"] else None
    report["note"] = (
        "latency_ms: time in the server per request (p50/p90/p99 with distribution-free 95% "
        "intervals); shadow agreement is on the same inputs as the primary (top-1: Wilson 95% "
        "interval; cosine: normal 95% interval of the mean)."
    )
    return report
