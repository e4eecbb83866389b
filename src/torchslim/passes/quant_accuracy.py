"""Accuracy-aware quantization: keep the most sensitive layers in float until a budget is met.

1. Prepare the quantization once (:func:`~torchslim.passes.quantize.open_session`): export and
   calibrate (or train, for QAT) a single time; every attempt below is built from those
   statistics (PT2E observers bypassed, ONNX Runtime's calibration cache, NNCF's quantizer
   removal), never by calibrating again.
2. Build with every layer quantized and evaluate. Within budget: done.
3. Rank the layers by sensitivity from one float run and one quantized run on a few evaluation
   samples: each layer's *added* relative error (noise power over signal power at its output
   minus the same at its raw input: what quantizing that layer itself costs). No evaluation per
   layer. Only where a representation cannot be tapped does it fall back to trying each layer.
4. Search how many of the top-ranked layers to keep in float: 1, 2, 4, ... until one count
   meets the budget, then bisect between the last failing and the first passing count —
   ``O(log n)`` evaluations for ``n`` ranked layers (the old search evaluated every layer, then
   added them one at a time).
5. Everything runs under ``config.time_budget_s``. When it runs out the search stops: a result
   already within budget is returned (noted in the report); otherwise, like when no
   configuration meets the budget, :class:`~torchslim.errors.AccuracyBudgetError` is raised
   carrying the best result reached (never a model outside the budget as if it passed).

Each attempt is evaluated on what the pass returns: a torch module directly, a lowered
representation (:class:`~torchslim.lowering.OnnxModel`, :class:`~torchslim.lowering.OpenVINOModel`)
through its reference runner, which computes what the runtime built from it with its default
config computes (no runtime is imported here). Nothing is printed: third-party progress bars are
silenced inside the backends, and the caller's progress display is the only one.

The budget is in points of the task metric (``1.0`` = one percentage point of top-1), or in
percent of the baseline with ``relative=True``. On data without labels it applies to top-1
agreement with the FP32 model (fidelity-only).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from torchslim.errors import AccuracyBudgetError
from torchslim.lowering import reference_runner

if TYPE_CHECKING:
    from torch import nn

    from torchslim.data import DataSet
    from torchslim.evaluate import EvalResult, Evaluator
    from torchslim.passes.base import PassContext, PassResult
    from torchslim.passes.quantize import QuantizeConfig, QuantSession

__all__ = ["Budget", "quantize_within_budget"]

PROBE_SAMPLES = 64
"""Evaluation samples the sensitivity ranking runs (once in float, once quantized)."""


@dataclass(frozen=True)
class Budget:
    """How a drop is measured and what is allowed.

    Attributes:
        max_drop: Allowed drop (points, or percent of the baseline when ``relative``).
        relative: Drop measured relative to the baseline.
        baseline: Baseline metric in ``[0, 1]`` (1.0 for agreement-only budgets).
        metric: Name of what is compared (``top1``, ``polarity_accuracy``, ``agreement``).
    """

    max_drop: float
    relative: bool
    baseline: float
    metric: str

    def drop(self, result: EvalResult) -> float:
        """The drop of ``result`` in this budget's unit (points or percent)."""
        if result.value is not None and self.metric != "agreement":
            value = float(result.value)
        else:
            value = float(result.fidelity.agreement) if result.fidelity else 1.0
        points = (self.baseline - value) * 100.0
        if self.relative:
            return points / max(self.baseline, 1e-12)
        return points

    def unit(self) -> str:
        """``"points"`` or ``"% of baseline"``."""
        return "% of baseline" if self.relative else "points"

    def ok(self, drop: float) -> bool:
        """True when ``drop`` is within budget (tiny float noise tolerated)."""
        return drop <= self.max_drop + 1e-9


def _budget(config: QuantizeConfig, base: EvalResult) -> Budget:
    assert config.max_drop is not None
    if base.value is not None:
        return Budget(config.max_drop, config.relative, float(base.value), base.metric or "metric")
    return Budget(config.max_drop, config.relative, 1.0, "agreement")


def _row(result: EvalResult, drop: float) -> dict[str, Any]:
    fid = result.fidelity
    sqnr = fid.sqnr_db if fid else math.inf
    return {
        "metric": None if result.value is None else round(float(result.value), 5),
        "drop": round(drop, 4),
        "agreement": round(fid.agreement, 5) if fid else None,
        "cosine": round(fid.cosine, 6) if fid else None,
        "sqnr_db": None if not math.isfinite(sqnr) else round(sqnr, 2),
    }


def _db(error: float) -> float | None:
    """A relative error as SQNR in dB (``None`` for no error)."""
    return None if error <= 0 else round(-10.0 * math.log10(error), 2)


class _Clock:
    """The time budget: started when the search starts."""

    def __init__(self, budget_s: float | None) -> None:
        self.start = time.perf_counter()
        self.budget_s = budget_s

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def out(self) -> bool:
        return self.budget_s is not None and self.elapsed() >= self.budget_s


@dataclass
class _Attempt:
    float_layers: tuple[str, ...]
    result: PassResult
    eval: EvalResult
    drop: float


@dataclass
class _Search:
    """State of one accuracy-aware quantization (what the report and the error carry)."""

    session: QuantSession
    evaluator: Evaluator
    budget: Budget
    clock: _Clock
    attempts: list[dict[str, Any]] = field(default_factory=list)
    best: _Attempt | None = None  # lowest drop reached
    evaluations: int = 0

    def attempt(self, float_layers: tuple[str, ...]) -> _Attempt:
        res = self.session.build(float_layers)
        ev = self.evaluator.evaluate(reference_runner(res.module))
        self.evaluations += 1
        drop = self.budget.drop(ev)
        self.attempts.append({"float_layers": list(float_layers), **_row(ev, drop)})
        att = _Attempt(float_layers, res, ev, drop)
        if self.best is None or drop < self.best.drop:
            self.best = att
        return att


def quantize_within_budget(
    module: nn.Module,
    config: QuantizeConfig,
    ctx: PassContext,
    evaluator: Evaluator | None = None,
) -> PassResult:
    """Quantize ``module`` keeping as few layers in float as the accuracy budget allows.

    Calibrates once, ranks layers from one float and one quantized run, and bisects on how
    many of the top-ranked layers to keep in float, all within ``config.time_budget_s``.

    Args:
        module: A private copy (it is not modified; the session quantizes its own copy).
        config: The quantization; ``config.max_drop`` must be set.
        ctx: Context with ``eval`` data (and calibration/training data the method needs).
        evaluator: Evaluator with the FP32 baseline set; built from ``ctx.eval`` when ``None``.

    Returns:
        A result within budget keeping the fewest top-ranked layers in float the search found,
        with ``report["accuracy_aware"]`` holding the sensitivity table, the layers kept in
        float and why, every attempt, and the search's counts (``search``).

    Raises:
        AccuracyBudgetError: No configuration met the budget, or the time budget ran out before
            one did (``.best`` holds the best attempt and the report).
    """
    from torchslim.evaluate import Evaluator
    from torchslim.passes.quantize import open_session

    clock = _Clock(config.time_budget_s)
    if evaluator is None:
        assert ctx.eval is not None
        evaluator = Evaluator(ctx.eval)
    original = copy.deepcopy(module).eval()
    base = evaluator.baseline or evaluator.set_baseline(original)
    budget = _budget(config, base)
    session = open_session(copy.deepcopy(original), config, ctx)
    search = _Search(session, evaluator, budget, clock)
    try:
        return _run(search, config, ctx)
    finally:
        session.close()


def _run(search: _Search, config: QuantizeConfig, ctx: PassContext) -> PassResult:
    budget, clock = search.budget, search.clock
    first = search.attempt(())
    info: dict[str, Any] = {
        "budget": {
            "max_drop": budget.max_drop,
            "unit": budget.unit(),
            "metric": budget.metric,
            "baseline": round(budget.baseline, 5),
        },
        "all_quantized": _row(first.eval, first.drop),
        "sensitivity": [],
        "kept_float": {},
        "attempts": search.attempts,
        "search": {
            "strategy": "bisection over the sensitivity ranking",
            "time_budget_s": config.time_budget_s,
        },
    }
    if budget.ok(first.drop):
        info["met"] = True
        return _finish(search, first, info, "met")
    if clock.out():
        _fail(search, config, info, timed_out=True)

    candidates = [
        n for n in first.result.report.get("quantized_layers", []) if n not in config.ignored_layers
    ]
    limit = len(candidates)
    if config.max_float_layers is not None:
        limit = min(limit, config.max_float_layers)
    if limit == 0:
        _fail(search, config, info, timed_out=False)

    table, tapped = _rank(search, candidates, ctx, None)
    info["sensitivity"] = table
    info["search"]["ranking"] = (
        f"per-layer error: one float and one quantized run on {_probe_size(ctx, search)} samples"
        if tapped
        else "per-layer attempts (no layer taps for this representation)"
    )
    info["search"]["re_rankings"] = 0
    if clock.out():
        _fail(search, config, info, timed_out=True)
    ranked = [row["layer"] for row in table]
    limit = min(limit, len(ranked))

    # Exponential search for a passing count, then bisection between the last failing count
    # and the first passing one (assumes keeping more top-ranked layers never hurts).
    passing: _Attempt | None = None
    lo, hi = 0, None  # lo: known to fail; hi: smallest count known to pass
    k = 1
    while k <= limit and not clock.out():
        att = search.attempt(tuple(ranked[:k]))
        if budget.ok(att.drop):
            passing, hi = att, k
            break
        lo = k
        if k == limit:
            break
        rest = ranked[k:]
        if tapped and _unreliable(table, rest) and not clock.out():
            # Errors downstream of a destroyed layer are noise: measure them again with the
            # layers tried so far in float (one more probe, no evaluation).
            again, ok = _rank(search, rest, ctx, att)
            if ok:
                table = [r for r in table if r["layer"] in ranked[:k]] + again
                for rank, row in enumerate(table, 1):
                    row["rank"] = rank
                ranked = [row["layer"] for row in table]
                info["sensitivity"] = table
                info["search"]["re_rankings"] += 1
        k = min(2 * k, limit)
    stopped = "met"
    while hi is not None and hi - lo > 1:
        if clock.out():
            stopped = "time budget (search stopped early: fewer layers in float may pass)"
            break
        mid = (lo + hi) // 2
        att = search.attempt(tuple(ranked[:mid]))
        if budget.ok(att.drop):
            passing, hi = att, mid
        else:
            lo = mid
    if passing is None:
        _fail(search, config, info, timed_out=clock.out() and lo < limit)
    assert passing is not None
    info["met"] = True
    rows = {r["layer"]: r for r in table}
    info["kept_float"] = {
        layer: _why(rows[layer], len(table), budget) for layer in passing.float_layers
    }
    return _finish(search, passing, info, stopped)


UNRELIABLE_DB = 6.0
"""A layer whose raw input is this noisy (SQNR in dB, per channel) already gets garbage: its own
error cannot be told apart, so the ranking is measured again once layers before it are float."""


def _unreliable(table: list[dict[str, Any]], layers: list[str]) -> bool:
    wanted = set(layers)
    return any(
        r["layer"] in wanted
        and r.get("input_sqnr_db") is not None
        and r["input_sqnr_db"] < UNRELIABLE_DB
        for r in table
    )


def _why(row: dict[str, Any], n: int, budget: Budget) -> str:
    if "recovered" in row:  # ranked by trying each layer
        if row["recovered"] is None:
            return f"sensitivity rank {row['rank']} of {n}: not tried before the time ran out"
        return (
            f"sensitivity rank {row['rank']} of {n}: keeping it in float alone recovered "
            f"{row['recovered']:+.2f} {budget.unit()}"
        )
    sqnr = row.get("local_sqnr_db")
    local = "no measurable error" if sqnr is None else f"{sqnr:.1f} dB SQNR"
    return (
        f"sensitivity rank {row['rank']} of {n}: quantizing it adds the most error "
        f"({local} from its own quantization)"
    )


def _probe_data(ctx: PassContext, evaluator: Evaluator) -> DataSet | None:
    data: DataSet | None = getattr(evaluator, "data", None) or ctx.eval
    if data is None or len(data) <= PROBE_SAMPLES:
        return data
    return data.take(PROBE_SAMPLES, seed=0)


def _probe_size(ctx: PassContext, search: _Search) -> int:
    data = _probe_data(ctx, search.evaluator)
    return 0 if data is None else len(data)


def _rank(
    search: _Search, candidates: list[str], ctx: PassContext, base: _Attempt | None
) -> tuple[list[dict[str, Any]], bool]:
    """The sensitivity table of ``candidates``, most sensitive first, measured on ``base``'s
    build (``None``: every layer quantized); ``True`` when it came from layer taps.

    Without taps (and only for a first ranking) each layer is tried in float alone.
    """
    data = _probe_data(ctx, search.evaluator)
    result = None if base is None else base.result
    errors = None
    if data is not None:
        errors = search.session.layer_errors(data, candidates, result)
    if errors:
        on = "all quantized" if base is None else f"{len(base.float_layers)} layer(s) in float"
        order = {name: i for i, name in enumerate(candidates)}
        table: list[dict[str, Any]] = []
        for name in candidates:
            e = errors.get(name)
            table.append(
                {
                    "layer": name,
                    "added_error": None if e is None else float(f"{e['added_error']:.6g}"),
                    "local_sqnr_db": None if e is None else _db(e["added_error"]),
                    "output_sqnr_db": None if e is None else _db(e["output_error"]),
                    "input_sqnr_db": None if e is None else _db(e["input_error"]),
                    "measured_with": on,
                    "_key": (-1.0, -1.0) if e is None else (e["added_error"], e["output_error"]),
                }
            )
        table.sort(key=lambda r: (r["_key"], -order[r["layer"]]), reverse=True)
        for rank, row in enumerate(table, 1):
            row.pop("_key")
            row["rank"] = rank
        return table, True
    if base is not None:
        return [], False
    return _rank_by_attempts(search, candidates), False


def _rank_by_attempts(search: _Search, candidates: list[str]) -> list[dict[str, Any]]:
    """Fallback: evaluate each layer kept in float alone (stops when time runs out)."""
    base_drop = search.attempts[0]["drop"]
    table: list[dict[str, Any]] = []
    for i, layer in enumerate(candidates):
        if search.clock.out():
            table.extend(
                {"layer": n, "recovered": None, "_sqnr": -math.inf} for n in candidates[i:]
            )
            break
        att = search.attempt((layer,))
        fid = att.eval.fidelity
        table.append(
            {
                "layer": layer,
                "recovered": round(base_drop - att.drop, 4),
                **_row(att.eval, att.drop),
                "_sqnr": fid.sqnr_db if fid else 0.0,
            }
        )
    table.sort(
        key=lambda r: (-math.inf if r["recovered"] is None else r["recovered"], r["_sqnr"]),
        reverse=True,
    )
    for rank, row in enumerate(table, 1):
        row.pop("_sqnr")
        row["rank"] = rank
    return table


def _counts(search: _Search, stopped: str) -> dict[str, Any]:
    return {
        "calibrations": search.session.calibrations,
        "evaluations": search.evaluations,
        "seconds": round(search.clock.elapsed(), 3),
        "stopped": stopped,
    }


def _fail(
    search: _Search, config: QuantizeConfig, info: dict[str, Any], *, timed_out: bool
) -> None:
    budget = search.budget
    best = search.best
    assert best is not None
    info["met"] = False
    info["search"].update(_counts(search, "time budget" if timed_out else "budget not met"))
    value = "n/a" if best.eval.value is None else f"{best.eval.value:.4f}"
    reached = (
        f"best drop {best.drop:.2f} {budget.unit()} ({budget.metric} {value} vs baseline "
        f"{budget.baseline:.4f}) with {len(best.float_layers)} layer(s) kept in float "
        f"{list(best.float_layers)[:8]}"
    )
    if timed_out:
        assert config.time_budget_s is not None
        message = (
            f"The time budget of {config.time_budget_s:g} s for accuracy-aware {config.name} "
            f"quantization ran out after {search.evaluations} evaluation(s) before the budget of "
            f"{budget.max_drop:g} {budget.unit()} ({budget.metric}) was met: {reached}."
        )
        hint = (
            "Give it more time (--time-budget 10m, or time_budget_s=None for no limit), raise "
            "--max-drop, or use fewer evaluation samples."
        )
    else:
        message = (
            f"No {config.name} quantization met the budget of {budget.max_drop:g} "
            f"{budget.unit()} ({budget.metric}): {reached}."
        )
        hint = (
            "Raise --max-drop, try another method (static with --calibration percentile, qat) "
            "or backend, or give more calibration data."
        )
    raise AccuracyBudgetError(
        message,
        hint,
        best={
            "drop": best.drop,
            "float_layers": list(best.float_layers),
            **_row(best.eval, best.drop),
            "reason": "time budget" if timed_out else "budget not met",
            "report": info,
        },
    )


def _finish(search: _Search, att: _Attempt, info: dict[str, Any], stopped: str) -> PassResult:
    res = att.result
    float_layers = dict(res.report.get("float_layers", {}))
    for layer, why in info.get("kept_float", {}).items():
        float_layers[layer] = f"kept in float by accuracy-aware mode ({why})"
    res.report["float_layers"] = float_layers
    res.report["quantized_layers"] = [
        n for n in res.report.get("quantized_layers", []) if n not in info.get("kept_float", {})
    ]
    info["final"] = _row(att.eval, att.drop)
    info["search"].update(_counts(search, stopped))
    res.report["accuracy_aware"] = info
    return res
