"""``Candidate``: one recipe's result, in one set of units, and the rules for choosing among them.

Units, everywhere: accuracies are fractions (0.9215), accuracy **drops are in points**
(``drop_points = 100 × (baseline − candidate)``, so 0.10 means a tenth of a percentage point),
sizes are MB (10⁶ bytes) of the files a deployment needs, latencies are milliseconds, and a
speed-up is only ever the ratio of two *interleaved* measurements (baseline and candidate
measured round-robin in one run), with its 95% interval.

:class:`Constraints` says what a user will accept; :meth:`Constraints.check` gives the reasons a
candidate fails them; :func:`pareto_front` keeps the candidates no other candidate beats on
accuracy, latency and size at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torchslim.evaluate import EvalResult
    from torchslim.measure import Measurement
    from torchslim.parity import ParityReport
    from torchslim.recipe import Recipe

__all__ = [
    "Candidate",
    "Constraints",
    "Speedup",
    "drop_points",
    "non_dominated",
    "pareto_front",
]


def drop_points(baseline: float | None, value: float | None) -> float | None:
    """Accuracy drop in points: ``100 × (baseline − value)``; ``None`` without both accuracies.

    Args:
        baseline: The baseline's accuracy as a fraction.
        value: The candidate's accuracy as a fraction.
    """
    if baseline is None or value is None:
        return None
    return 100.0 * (float(baseline) - float(value))


@dataclass(frozen=True)
class Speedup:
    """Baseline latency ÷ candidate latency at one batch size, from one interleaved run.

    Attributes:
        batch_size: Items per call.
        baseline_ms: Baseline median latency.
        candidate_ms: Candidate median latency.
        ratio: ``baseline_ms / candidate_ms`` (``> 1`` means faster).
        ci95: Conservative 95% interval of the ratio (crossed ends of the medians' CIs).
    """

    batch_size: int
    baseline_ms: float
    candidate_ms: float
    ratio: float
    ci95: tuple[float, float]

    @property
    def significant(self) -> bool:
        """True when the whole interval is above 1 (measurably faster)."""
        return self.ci95[0] > 1.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly values."""
        return {
            "batch_size": self.batch_size,
            "baseline_ms": self.baseline_ms,
            "candidate_ms": self.candidate_ms,
            "ratio": self.ratio,
            "ci95": list(self.ci95),
        }


@dataclass
class Candidate:
    """A recipe and everything known about its result, or the error that stopped it.

    Attributes:
        recipe: What was done.
        status: ``"ok"`` (built, parity-checked, evaluated), ``"failed"`` (an error stopped it;
            see ``reason``) or ``"rejected"`` (built but outside the constraints).
        reason: Why it failed or was rejected (one line), else ``None``.
        baseline: The original model's evaluation on the same data.
        evaluation: The candidate's evaluation (task metric and fidelity to the baseline).
        parity: Lowering parity of the runtime against the module it was built from.
        measurement: The candidate's latency measurement (interleaved with the baseline's).
        baseline_measurement: The baseline's measurement from the same interleaved run.
        size_mb: MB of the files a deployment of this candidate needs.
        baseline_size_mb: The same for the original model.
        runtime: Runtime name the candidate runs in (``"eager"``, ``"onnxruntime"``, ...).
        build_seconds: Passes + runtime build time.
        train_seconds: Time spent training (recovery, distillation, QAT) within ``build_seconds``.
        reports: Each step's own report (layers kept in float, channels removed, ...), in order.
        seed: The seed it ran with.
        params: Parameter count of the result's module (``None`` once lowered to ONNX/OpenVINO).
        baseline_params: Parameter count of the original.
        flops: FLOPs per item of the result's module.
        baseline_flops: FLOPs per item of the original.
        teacher: The teacher's evaluation on the same data, when distillation used one.
        built: What the run built (module, runtime, model files), for saving; not serialised.
    """

    recipe: Recipe
    status: str = "ok"
    reason: str | None = None
    baseline: EvalResult | None = None
    evaluation: EvalResult | None = None
    parity: ParityReport | None = None
    measurement: Measurement | None = None
    baseline_measurement: Measurement | None = None
    size_mb: float | None = None
    baseline_size_mb: float | None = None
    runtime: str = "eager"
    build_seconds: float = 0.0
    train_seconds: float = 0.0
    reports: list[dict[str, Any]] = field(default_factory=list)
    seed: int = 0
    params: int | None = None
    baseline_params: int | None = None
    flops: int | None = None
    baseline_flops: int | None = None
    teacher: EvalResult | None = None
    built: Any = field(default=None, repr=False, compare=False)

    # ---- what was built ------------------------------------------------------------------------
    @property
    def model(self) -> Any:
        """The result: its runtime when it has one, else its PyTorch module (``None`` if failed)."""
        built = self.built
        if built is None:
            return None
        return built.deployed if built.deployed is not None else built.module

    def __call__(self, *inputs: Any) -> Any:
        """Run the result on torch tensors, like the original model."""
        from torchslim.errors import TorchslimError

        if self.built is None:
            raise TorchslimError(f"This candidate {self.status}: {self.reason}.")
        return self.built(*inputs)

    def save(self, out: Any, *, force: bool = False, source: str | None = None) -> Any:
        """Write the result as an artifact directory (see :func:`torchslim.artifact.save_artifact`).

        Args:
            out: The directory (refused when it exists and is not empty, unless ``force``).
            force: Replace an existing directory atomically.
            source: The original model's source string, when the run was given a module (lets
                :meth:`~torchslim.artifact.Artifact.module` rebuild the architecture).
        """
        from torchslim.artifact import save_artifact

        return save_artifact(self, out, force=force, source=source)

    # ---- derived values (one definition each) -------------------------------------------------
    @property
    def ok(self) -> bool:
        """True when the candidate was built and checked without error."""
        return self.status == "ok"

    @property
    def accuracy(self) -> float | None:
        """The candidate's task metric (a fraction), ``None`` on fidelity-only data."""
        return None if self.evaluation is None else self.evaluation.value

    @property
    def baseline_accuracy(self) -> float | None:
        """The baseline's task metric (a fraction)."""
        return None if self.baseline is None else self.baseline.value

    @property
    def drop_points(self) -> float | None:
        """Accuracy drop vs the baseline, in points (``None`` on fidelity-only data)."""
        return drop_points(self.baseline_accuracy, self.accuracy)

    @property
    def fidelity_only(self) -> bool:
        """True when no task metric could be computed (synthetic or unlabelled data)."""
        return self.accuracy is None

    def latency_ms(self, batch_size: int | None = None) -> float | None:
        """Median latency at ``batch_size`` (default: the recipe's first batch size)."""
        if self.measurement is None:
            return None
        b = batch_size or self.recipe.batch_sizes[0]
        bm = self.measurement.batches.get(b)
        return None if bm is None else bm.latency.p50_ms

    def speedup(self, batch_size: int | None = None) -> Speedup | None:
        """Speed-up over the baseline at ``batch_size`` from the interleaved run, or ``None``."""
        if self.measurement is None or self.baseline_measurement is None:
            return None
        b = batch_size or self.recipe.batch_sizes[0]
        base = self.baseline_measurement.batches.get(b)
        mine = self.measurement.batches.get(b)
        if base is None or mine is None or mine.latency.p50_ms <= 0:
            return None
        lo = base.latency.ci95_low_ms / max(mine.latency.ci95_high_ms, 1e-12)
        hi = base.latency.ci95_high_ms / max(mine.latency.ci95_low_ms, 1e-12)
        return Speedup(
            b,
            base.latency.p50_ms,
            mine.latency.p50_ms,
            base.latency.p50_ms / mine.latency.p50_ms,
            (lo, hi),
        )

    def metrics(self) -> dict[str, Any]:
        """The numbers a manifest records at creation (one set of units)."""
        fid = self.evaluation.fidelity if self.evaluation is not None else None
        return {
            "accuracy": self.accuracy,
            "baseline_accuracy": self.baseline_accuracy,
            "drop_points": self.drop_points,
            "metric": None if self.baseline is None else self.baseline.metric,
            "eval_data": None if self.evaluation is None else self.evaluation.data,
            "eval_samples": None if self.evaluation is None else self.evaluation.samples,
            "fidelity_only": self.fidelity_only,
            "fidelity": None if fid is None else fid.to_dict(),
            "parity": None if self.parity is None else self.parity.to_dict(),
            "size_mb": self.size_mb,
            "baseline_size_mb": self.baseline_size_mb,
            "latency_ms": {
                str(b): self.latency_ms(b) for b in self.recipe.batch_sizes if self.latency_ms(b)
            },
            "speedup": {
                str(b): s.to_dict()
                for b in self.recipe.batch_sizes
                if (s := self.speedup(b)) is not None
            },
            "params": self.params,
            "baseline_params": self.baseline_params,
            "flops": self.flops,
            "baseline_flops": self.baseline_flops,
            "teacher_accuracy": None if self.teacher is None else self.teacher.value,
            "runtime": self.runtime,
            "build_seconds": round(self.build_seconds, 3),
            "train_seconds": round(self.train_seconds, 3),
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form: status, reason, recipe and :meth:`metrics`."""
        return {
            "status": self.status,
            "reason": self.reason,
            "recipe": self.recipe.to_dict(),
            "steps": self.recipe.describe(),
            **self.metrics(),
            "reports": self.reports,
            "seed": self.seed,
        }


@dataclass(frozen=True)
class Constraints:
    """What a user accepts. Every limit is optional.

    Attributes:
        max_drop_points: Largest accuracy drop, in points (1.0 = one percentage point).
        min_cosine: Smallest mean output cosine to the baseline; the budget applied on
            fidelity-only data (no labels), where an accuracy drop cannot be measured.
        min_speedup: The speed-up's whole 95% interval must lie above this at ``batch_size``
            (1.0: measurably faster than the baseline).
        batch_size: Batch size the speed-up is judged at (default: the recipe's first).
        max_size_mb: Largest deployment size.
        max_latency_ms: Largest median latency at ``batch_size``.
    """

    max_drop_points: float | None = 1.0
    min_cosine: float | None = 0.99
    min_speedup: float | None = 1.0
    batch_size: int | None = None
    max_size_mb: float | None = None
    max_latency_ms: float | None = None

    def __post_init__(self) -> None:
        from torchslim.errors import TorchslimError

        for name in ("max_drop_points", "max_size_mb", "max_latency_ms", "min_speedup"):
            v = getattr(self, name)
            if v is not None and (v != v or v < 0):
                raise TorchslimError(
                    f"{name.replace('_', ' ')} must be >= 0, got {v}.", "Give a positive budget."
                )
        if self.min_cosine is not None and not -1.0 <= self.min_cosine <= 1.0:
            raise TorchslimError(f"min cosine must be in [-1, 1], got {self.min_cosine}.")

    def check(self, candidate: Candidate) -> list[str]:
        """Reasons ``candidate`` fails these constraints (empty when it passes)."""
        if not candidate.ok:
            return [candidate.reason or candidate.status]
        reasons: list[str] = []
        drop = candidate.drop_points
        if drop is not None and self.max_drop_points is not None and drop > self.max_drop_points:
            reasons.append(
                f"accuracy drop {drop:.2f} points is over the budget of {self.max_drop_points:g}"
            )
        fid = candidate.evaluation.fidelity if candidate.evaluation is not None else None
        if drop is None and self.min_cosine is not None:
            if fid is None:
                reasons.append("no accuracy and no fidelity measured")
            elif fid.cosine < self.min_cosine:
                reasons.append(
                    f"fidelity-only data: output cosine {fid.cosine:.4f} is below "
                    f"{self.min_cosine:g}"
                )
        if self.min_speedup is not None:
            s = candidate.speedup(self.batch_size)
            if s is None:
                reasons.append("speed-up not measured")
            elif s.ci95[0] <= self.min_speedup:
                reasons.append(
                    f"not measurably faster at batch {s.batch_size}: speed-up {s.ratio:.2f}× "
                    f"(95% CI {s.ci95[0]:.2f}–{s.ci95[1]:.2f})"
                )
        if self.max_size_mb is not None and (candidate.size_mb or 0) > self.max_size_mb:
            reasons.append(f"size {candidate.size_mb:.2f} MB is over {self.max_size_mb:g} MB")
        if self.max_latency_ms is not None:
            lat = candidate.latency_ms(self.batch_size)
            if lat is None or lat > self.max_latency_ms:
                reasons.append(f"latency {lat} ms is over {self.max_latency_ms:g} ms")
        return reasons


def _objectives(c: Candidate, batch_size: int | None) -> tuple[float, float, float] | None:
    """(−accuracy or −cosine, latency, size): lower is better in each."""
    lat = c.latency_ms(batch_size)
    if not c.ok or lat is None or c.size_mb is None:
        return None
    if c.accuracy is not None:
        quality = -c.accuracy
    elif c.evaluation is not None and c.evaluation.fidelity is not None:
        quality = -c.evaluation.fidelity.cosine
    else:
        return None
    return (quality, lat, c.size_mb)


def non_dominated(points: Sequence[tuple[float, ...] | None]) -> list[int]:
    """Indices of the points no other point dominates (lower is better in every coordinate).

    A point dominates another when it is at least as good everywhere and strictly better
    somewhere; ``None`` entries (failed candidates) are never on the front.
    """
    valid = [(i, p) for i, p in enumerate(points) if p is not None]
    return [
        i
        for i, p in valid
        if not any(all(a <= b for a, b in zip(q, p, strict=True)) and q != p for _, q in valid)
    ]


def pareto_front(candidates: Sequence[Candidate], batch_size: int | None = None) -> list[Candidate]:
    """The candidates no other candidate dominates on (accuracy, latency, size).

    A candidate dominates another when it is at least as good on all three and strictly better
    on one. Failed candidates and candidates without a measurement are never on the front.
    The result keeps the input order.
    """
    scored = [(c, _objectives(c, batch_size)) for c in candidates]
    valid = [(c, o) for c, o in scored if o is not None]
    front = []
    for c, o in valid:
        dominated = any(all(a <= b for a, b in zip(p, o, strict=True)) and p != o for _, p in valid)
        if not dominated:
            front.append(c)
    return front
