"""What a search records: one :class:`SearchRecord` per candidate and the :class:`OptimizeResult`,
in one set of units (fractions, points, MB, ms), and the score candidates are ranked by."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["OptimizeResult", "SearchRecord", "speedup_score"]


@dataclass
class SearchRecord:
    """One candidate of a search, in one set of units (fractions, points, MB, ms).

    Attributes:
        recipe: The recipe (its ``recipe.yaml`` form).
        steps: One line per step and the runtime.
        status: ``accepted``, ``rejected`` (built, outside the constraints) or ``failed``.
        reason: Why it was rejected or failed.
        accuracy: Task metric on the evaluation data (``None``: fidelity only).
        drop_points: Drop vs the original, in points.
        drop_ci95: Paired-bootstrap 95% interval of the drop, in points.
        cosine: Mean output cosine to the original.
        agreement: Top-1 agreement with the original.
        latency_ms: Median latency per batch size.
        speedup: Per batch size ``{ratio, ci95}`` from the interleaved run.
        size_mb: MB of the files a deployment needs.
        runtime: The runtime it runs in.
        build_seconds: Time to build it (its own process).
        train_seconds: Of which training.
        artifact: Its artifact directory.
        key: Hash of its recipe.
        noisy: The measurement stayed noisy after re-measuring (never accepted).
        flops_per_item: FLOPs per item of the model it runs (the pruned one when pruned; the
            float-equivalent count for quantized models).
        percent_of_peak: Per batch size, achieved FLOP/s as a percentage of this machine's GEMM
            peak for its precision (roofline-style efficiency).
        peak_memory_mb: Per batch size, peak memory growth while it ran (MiB, as
            :mod:`torchslim.measure` reports it).
        details: What its steps did: ``pruned_channels`` (layer → [before, after]),
            ``kept_float`` (layer → why, from accuracy-aware quantization), ``sensitivity``.
    """

    recipe: dict[str, Any]
    steps: list[str]
    status: str = "failed"
    reason: str | None = None
    accuracy: float | None = None
    drop_points: float | None = None
    drop_ci95: list[float] | None = None
    cosine: float | None = None
    agreement: float | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)
    speedup: dict[str, dict[str, Any]] = field(default_factory=dict)
    size_mb: float | None = None
    runtime: str | None = None
    build_seconds: float | None = None
    train_seconds: float | None = None
    artifact: str | None = None
    key: str = ""
    noisy: bool = False
    flops_per_item: float | None = None
    percent_of_peak: dict[str, float] = field(default_factory=dict)
    peak_memory_mb: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return dict(self.__dict__)


@dataclass
class OptimizeResult:
    """What ``optimize`` found.

    Attributes:
        chosen: The accepted candidate chosen (highest geometric-mean speed-up over the batch
            sizes), or ``None``.
        baseline: The original model's numbers (accuracy, latency per batch, size).
        candidates: Every candidate, in the order tried.
        pareto: Keys of the candidates on the accuracy × latency × size front.
        artifact: The chosen artifact's directory (``OUT/best``), or ``None``.
        out: The output directory (search.json, report.html, study, candidates).
        seconds: Wall-clock time of the search.
        stopped: Why the search stopped (``space exhausted``, ``time budget``, ``trials``).
        constraints: The acceptance rules applied.
        machine: The machine and library versions everything was measured on.
        checklist: The original model's ``inspect`` checklist items.
    """

    chosen: SearchRecord | None
    baseline: dict[str, Any]
    candidates: list[SearchRecord]
    pareto: list[str]
    artifact: str | None
    out: str
    seconds: float
    stopped: str
    constraints: dict[str, Any] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)
    checklist: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` / ``search.json`` form."""
        chosen = None
        if self.chosen is not None:
            c = self.chosen
            b = next(iter(c.speedup), None)
            batches = [int(k) for k in c.speedup]
            chosen = {
                **c.to_dict(),
                "accuracy_drop": c.drop_points,
                "speedup_geomean": speedup_score(c, batches),
                "speedup_first_batch": None if b is None else c.speedup[b]["ratio"],
                "latency_ms_first_batch": None if b is None else c.latency_ms.get(b),
            }
        return {
            "chosen": chosen,
            "baseline": self.baseline,
            "candidates": [c.to_dict() for c in self.candidates],
            "pareto": self.pareto,
            "artifact": self.artifact,
            "out": self.out,
            "seconds": round(self.seconds, 1),
            "stopped": self.stopped,
            "constraints": self.constraints,
            "machine": self.machine,
            "checklist": self.checklist,
        }


def speedup_score(rec: SearchRecord, batches: int | Sequence[int]) -> float | None:
    """Geometric mean of ``rec``'s interleaved speed-ups over ``batches`` (``None``: not
    measured at all of them). One number to rank candidates optimised for several batch sizes;
    with one batch size it is that batch's speed-up."""
    bs = [batches] if isinstance(batches, int) else list(batches)
    ratios: list[float] = []
    for b in bs:
        r = rec.speedup.get(str(b), {}).get("ratio")
        if r is None or r <= 0:
            return None
        ratios.append(float(r))
    if not ratios:
        return None
    return math.exp(sum(math.log(r) for r in ratios) / len(ratios))
