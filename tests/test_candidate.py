"""Candidate units, constraints and the Pareto front, with known numbers (no timing)."""

from __future__ import annotations

import itertools
import random

import pytest

from torchslim.candidate import Candidate, Constraints, drop_points, pareto_front
from torchslim.evaluate import EvalResult, Fidelity
from torchslim.measure import BatchMeasurement, Measurement
from torchslim.recipe import Recipe
from torchslim.timing import LatencyStats


def _lat(ms: float, spread: float = 0.01) -> LatencyStats:
    lo, hi = ms * (1 - spread), ms * (1 + spread)
    return LatencyStats(50, ms, ms, ms, ms, 0.0, lo, hi, lo, hi, 0.95)


def _meas(name: str, ms: float, spread: float = 0.01) -> Measurement:
    bm = BatchMeasurement(1, _lat(ms, spread), 1000 / ms, None, ms, None, None, 10, True)
    return Measurement(name, None, None, None, {1: bm}, 2, "cpu", "fp32", {})


def _ev(acc: float | None, cosine: float = 1.0) -> EvalResult:
    fid = Fidelity(1.0, cosine, 0.0, 0.0, 40.0, 100)
    return EvalResult("top1" if acc is not None else None, acc, fid, 100, "d", acc is None)


def _cand(
    acc: float | None,
    ms: float,
    size: float,
    *,
    base_ms: float = 10.0,
    cosine: float = 1.0,
    spread: float = 0.01,
) -> Candidate:
    return Candidate(
        Recipe(),
        baseline=_ev(0.9 if acc is not None else None),
        evaluation=_ev(acc, cosine),
        measurement=_meas("c", ms, spread),
        baseline_measurement=_meas("b", base_ms, spread),
        size_mb=size,
    )


def test_drop_is_in_points() -> None:
    assert drop_points(0.9215, 0.9115) == pytest.approx(1.0)
    assert _cand(0.895, 5, 1).drop_points == pytest.approx(0.5)
    assert drop_points(None, 0.5) is None


def test_speedup_uses_the_interleaved_pair_and_its_interval() -> None:
    s = _cand(0.9, 5.0, 1.0).speedup(1)
    assert s is not None
    assert s.ratio == pytest.approx(2.0)
    assert s.ci95[0] == pytest.approx(9.9 / 5.05)
    assert s.significant


def test_constraints_accept_and_reject_with_reasons() -> None:
    c = Constraints(max_drop_points=1.0, min_speedup=1.0, max_size_mb=2.0)
    assert c.check(_cand(0.895, 5.0, 1.0)) == []
    reasons = c.check(_cand(0.88, 5.0, 1.0))
    assert len(reasons) == 1 and "2.00 points" in reasons[0]
    slow = c.check(_cand(0.9, 10.5, 1.0))
    assert any("not measurably faster" in r for r in slow)
    noisy = c.check(_cand(0.9, 9.5, 1.0, spread=0.2))  # 1.05x but CI straddles 1
    assert any("not measurably faster" in r for r in noisy)
    assert any("size" in r for r in c.check(_cand(0.9, 5.0, 3.0)))


def test_fidelity_only_candidates_are_judged_by_cosine() -> None:
    c = Constraints(min_cosine=0.99)
    assert c.check(_cand(None, 5.0, 1.0, cosine=0.995)) == []
    assert "cosine" in c.check(_cand(None, 5.0, 1.0, cosine=0.9))[0]


def test_failed_candidates_fail_with_their_reason() -> None:
    bad = Candidate(Recipe(), status="failed", reason="ExportError: boom")
    assert Constraints().check(bad) == ["ExportError: boom"]
    assert pareto_front([bad]) == []


def test_negative_budgets_are_refused() -> None:
    from torchslim.errors import TorchslimError

    with pytest.raises(TorchslimError, match="max drop points"):
        Constraints(max_drop_points=-3)


def _dominates(a: Candidate, b: Candidate) -> bool:
    ka = (-a.accuracy, a.latency_ms(), a.size_mb)
    kb = (-b.accuracy, b.latency_ms(), b.size_mb)
    return all(x <= y for x, y in zip(ka, kb, strict=True)) and ka != kb


@pytest.mark.parametrize("seed", range(25))
def test_pareto_front_is_exactly_the_non_dominated_set(seed: int) -> None:
    rng = random.Random(seed)
    cands = [
        _cand(rng.choice([0.85, 0.88, 0.9]), rng.choice([2.0, 4.0, 6.0]), rng.choice([1.0, 2.0]))
        for _ in range(rng.randint(1, 12))
    ]
    front = pareto_front(cands)
    for c in cands:
        dominated = any(_dominates(o, c) for o in cands)
        assert (c in front) == (not dominated)
    for a, b in itertools.combinations(front, 2):
        assert not _dominates(a, b) and not _dominates(b, a)
