"""Accuracy-aware quantization: keep the most sensitive layers in float until a budget is met.

1. Quantize everything and evaluate. Within budget: done.
2. Otherwise measure per-layer sensitivity: quantize again with one layer at a time kept in float
   and record how many points that recovers (ties broken by SQNR gained).
3. Keep layers in float in order of sensitivity, re-quantizing and re-evaluating after each,
   until the drop is within budget.
4. If no configuration meets it, raise :class:`~torchslim.errors.AccuracyBudgetError` carrying
   the best result reached (never a model outside the budget as if it passed).

Each attempt is evaluated on what the pass returns: a torch module directly, a lowered
representation (:class:`~torchslim.lowering.OnnxModel`, :class:`~torchslim.lowering.OpenVINOModel`)
through its reference runner, which computes what the runtime built from it with its default
config computes (no runtime is imported here).

The budget is in points of the task metric (``1.0`` = one percentage point of top-1), or in
percent of the baseline with ``relative=True``. On data without labels it applies to top-1
agreement with the FP32 model (fidelity-only).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torchslim.errors import AccuracyBudgetError
from torchslim.lowering import reference_runner

if TYPE_CHECKING:
    from torch import nn

    from torchslim.evaluate import EvalResult, Evaluator
    from torchslim.passes.base import PassContext, PassResult
    from torchslim.passes.quantize import QuantizeConfig

__all__ = ["Budget", "quantize_within_budget"]


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


def quantize_within_budget(
    module: nn.Module,
    config: QuantizeConfig,
    ctx: PassContext,
    evaluator: Evaluator | None = None,
) -> PassResult:
    """Quantize ``module`` keeping as few layers in float as the accuracy budget allows.

    Args:
        module: A private copy (it is not modified; each attempt quantizes its own copy).
        config: The quantization; ``config.max_drop`` must be set.
        ctx: Context with ``eval`` data (and calibration/training data the method needs).
        evaluator: Evaluator with the FP32 baseline set; built from ``ctx.eval`` when ``None``.

    Returns:
        The first result within budget, with ``report["accuracy_aware"]`` holding the
        sensitivity table and the layers kept in float.

    Raises:
        AccuracyBudgetError: No configuration met the budget (``.best`` holds the best attempt).
    """
    from torchslim.evaluate import Evaluator
    from torchslim.passes.quantize import quantize_once

    if evaluator is None:
        assert ctx.eval is not None
        evaluator = Evaluator(ctx.eval)
    original = copy.deepcopy(module).eval()
    base = evaluator.baseline or evaluator.set_baseline(original)
    budget = _budget(config, base)
    attempts: list[dict[str, Any]] = []

    def attempt(extra: tuple[str, ...]) -> tuple[PassResult, EvalResult, float]:
        cfg = config.with_ignored(extra)
        res = quantize_once(copy.deepcopy(original), cfg, ctx)
        ev = evaluator.evaluate(reference_runner(res.module))
        drop = budget.drop(ev)
        attempts.append({"float_layers": list(extra), **_row(ev, drop)})
        return res, ev, drop

    first, first_ev, first_drop = attempt(())
    info: dict[str, Any] = {
        "budget": {
            "max_drop": budget.max_drop,
            "unit": budget.unit(),
            "metric": budget.metric,
            "baseline": round(budget.baseline, 5),
        },
        "all_quantized": _row(first_ev, first_drop),
        "sensitivity": [],
        "kept_float": {},
        "attempts": attempts,
    }
    if budget.ok(first_drop):
        info["met"] = True
        return _finish(first, first_ev, first_drop, info)

    candidates = [
        n for n in first.report.get("quantized_layers", []) if n not in config.ignored_layers
    ]
    table = []
    for layer in candidates:
        _, ev, drop = attempt((layer,))
        fid = ev.fidelity
        table.append(
            {
                "layer": layer,
                "recovered": round(first_drop - drop, 4),
                **_row(ev, drop),
                "_sqnr": fid.sqnr_db if fid else 0.0,
            }
        )
    table.sort(key=lambda r: (r["recovered"], r["_sqnr"]), reverse=True)
    for rank, row in enumerate(table, 1):
        row.pop("_sqnr")
        row["rank"] = rank
    info["sensitivity"] = table

    best: tuple[PassResult, EvalResult, float, tuple[str, ...]] = (first, first_ev, first_drop, ())
    kept: list[str] = []
    limit = config.max_float_layers if config.max_float_layers is not None else len(table)
    for row in table[:limit]:
        kept.append(row["layer"])
        res, ev, drop = attempt(tuple(kept))
        if drop < best[2]:
            best = (res, ev, drop, tuple(kept))
        if budget.ok(drop):
            info["met"] = True
            info["kept_float"] = {
                r["layer"]: f"sensitivity rank {r['rank']}: keeping it in float alone recovered "
                f"{r['recovered']:+.2f} {budget.unit()}"
                for r in table
                if r["layer"] in kept
            }
            return _finish(res, ev, drop, info)

    _, best_ev, best_drop, best_kept = best
    info["met"] = False
    value = "n/a" if best_ev.value is None else f"{best_ev.value:.4f}"
    raise AccuracyBudgetError(
        f"No {config.name} quantization met the budget of {budget.max_drop:g} {budget.unit()} "
        f"({budget.metric}): best drop {best_drop:.2f} {budget.unit()} ({budget.metric} "
        f"{value} vs baseline {budget.baseline:.4f}) with {len(best_kept)} layer(s) in float "
        f"{list(best_kept)[:8]}.",
        "Raise --max-drop, try another method (static with --calibration percentile, qat) or "
        "backend, or give more calibration data.",
        best={
            "drop": best_drop,
            "float_layers": list(best_kept),
            **_row(best_ev, best_drop),
            "report": info,
        },
    )


def _finish(res: PassResult, ev: EvalResult, drop: float, info: dict[str, Any]) -> PassResult:
    float_layers = dict(res.report.get("float_layers", {}))
    for layer, why in info.get("kept_float", {}).items():
        float_layers[layer] = f"kept in float by accuracy-aware mode ({why})"
    res.report["float_layers"] = float_layers
    res.report["quantized_layers"] = [
        n for n in res.report.get("quantized_layers", []) if n not in info.get("kept_float", {})
    ]
    info["final"] = _row(ev, drop)
    res.report["accuracy_aware"] = info
    return res
