"""``torchslim.optimize()``: an accuracy-constrained search over recipes, measured in the runtime
each candidate ships in.

How it works:

* **Proposals** come from an Optuna study (its sampler proposes, is told the result, proposes
  again): cheap candidates first — every no-retraining recipe is enqueued before anything that
  prunes — then the sampler (TPE by default; ``random`` or ``grid``) explores the rest.
* **Each candidate is built in its own process** (``torchslim run RECIPE MODEL`` with a timeout and
  a memory limit), so an export error, an out-of-memory or a crash is recorded with its reason
  and the search goes on. A pruned + recovered prefix is built once and cached by the hash of its
  recipe; every quantization/runtime variant on top of it continues from that cached artifact.
* **Every built candidate is then re-loaded from its files** (``load_artifact``: hash-verified,
  the runtime's own loader), evaluated on the evaluation data against the original (task metric,
  fidelity, and a paired-bootstrap 95% interval of the drop) and measured **interleaved with the
  original** at the batch sizes asked for — one measurement at a time, in this process.
* **Acceptance**: drop within ``max_drop`` points, speed-up interval above 1 at every batch size
  asked for, and the optional latency/size limits. The chosen candidate is the fastest accepted
  one (geometric mean of its speed-ups over the batch sizes);
  a variant slower than the original or outside the budget is never chosen. The best so far is
  always on disk in ``OUT/best`` (an artifact, replaced atomically), so Ctrl-C or a kill keeps it,
  and ``resume=True`` continues the study (SQLite in ``OUT/study.db`` by default, or any Optuna
  storage URL) without redoing finished candidates.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torchslim.errors import TorchslimError
from torchslim.search.executors import Executor, make_executor
from torchslim.search.space import Choice, SearchSpace, load_space

if TYPE_CHECKING:
    from torchslim.models import LoadedModel
    from torchslim.recipe import Recipe

__all__ = ["OptimizeResult", "SearchRecord", "optimize", "speedup_score"]

Progress = Callable[[str], None]


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


def _key(recipe: Recipe) -> str:
    text = json.dumps(recipe.to_dict(), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class _Judge:
    """Evaluates and measures candidates against the original, in this process."""

    def __init__(
        self,
        loaded: LoadedModel,
        eval_data: Any,
        batch_sizes: tuple[int, ...],
        threads: int | None,
        min_time_s: float,
    ) -> None:
        import torch

        from torchslim.evaluate import predict
        from torchslim.measure import BenchTarget, TimingConfig

        self.loaded = loaded
        self.data = eval_data
        self.batch_sizes = batch_sizes
        self.threads = threads
        self.timing = TimingConfig(
            min_time_s=min_time_s, max_time_s=max(3.0, 4 * min_time_s), max_warmup_s=2.0
        )
        module = loaded.require_module()
        spec = loaded.input_spec or eval_data.input_spec()
        self.spec = spec
        self.base_target = BenchTarget.from_module(module, self._inputs, name="baseline")
        from torchslim.machine import machine_peak
        from torchslim.measure import count_flops

        self.base_flops = count_flops(module, self._inputs(1))
        self._flops: dict[str, float | None] = {}
        try:
            self.peak: Any = machine_peak(threads=threads)
        except Exception:  # the efficiency column is a nicety: never fail a search on it
            self.peak = None
        with torch.no_grad():
            self.base_out = predict(module, eval_data, 32)
        from torchslim.evaluate import metric_for

        # The task metric, not arg-max for everything: an encoder's embeddings are scored by a
        # polarity probe (arg-max of 384 embedding values against a 0/1 label means nothing).
        self.metric = metric_for(eval_data, loaded.task)
        self.base_value, self.base_items = self._score(self.base_out)

    def _inputs(self, b: int) -> tuple[Any, ...]:
        return self.spec.example_inputs(batch_size=b)

    def _score(self, out: Any) -> tuple[float | None, Any]:
        """The task metric of outputs ``out`` and its per-item scores (``None``: no labels)."""
        from torchslim.evaluate import item_scores

        if self.metric is None:
            return None, None
        items = item_scores(self.metric, out, self.data)
        value = float(items.mean()) if items is not None else self.metric(out, self.data)
        return value, items

    def _drop(self, out: Any) -> tuple[float | None, float | None, list[float] | None]:
        """Metric, drop in points and the drop's paired-bootstrap 95% interval of ``out``."""
        from torchslim.evaluate import paired_bootstrap_drop

        value, items = self._score(out)
        if value is None or self.base_value is None:
            return None, None, None
        ci = None
        if items is not None and self.base_items is not None:
            ci = list(paired_bootstrap_drop(self.base_items, items))
        return value, 100.0 * (self.base_value - value), ci

    def baseline(self) -> dict[str, Any]:
        from torchslim.measure import measure_models
        from torchslim.pipeline import baseline_size_mb

        [m] = measure_models(
            [self.base_target],
            self.batch_sizes,
            threads=self.threads,
            config=self.timing,
            memory=False,
        )
        self.reference_ms = {b: bm.latency.p50_ms for b, bm in m.batches.items()}
        return {
            "source": self.loaded.source,
            "flops_per_item": self.base_flops,
            "percent_of_peak": {
                str(b): self.efficiency(self.base_flops, "fp32", b, ms)
                for b, ms in self.reference_ms.items()
            },
            "peak_gflops": None if self.peak is None else dict(self.peak.gflops),
            "accuracy": self.base_value,
            "metric": None if self.metric is None else getattr(self.metric, "__name__", "metric"),
            "eval_data": self.data.name,
            "eval_samples": len(self.data),
            "latency_ms": {str(b): bm.latency.p50_ms for b, bm in m.batches.items()},
            "size_mb": baseline_size_mb(self.loaded, self.loaded.require_module(), self._inputs(2)),
        }

    def efficiency(
        self, flops: float | None, precision: str, batch: int, ms: float
    ) -> float | None:
        """Achieved FLOP/s over this machine's GEMM peak for ``precision``, in percent."""
        got = None if self.peak is None else self.peak.for_dtype(precision)
        if not flops or got is None or ms <= 0:
            return None
        return 100.0 * (flops * batch / (ms / 1000.0)) / (got[1] * 1e9)

    def flops_of(self, artifact_dir: str | None) -> float | None:
        """FLOPs per item of an artifact's module (the pruned prefix), else the original's."""
        if artifact_dir is None:
            return self.base_flops
        if artifact_dir not in self._flops:  # one count per cached prefix
            from torchslim.artifact import load_artifact
            from torchslim.measure import count_flops

            try:
                module = load_artifact(artifact_dir).module()
                self._flops[artifact_dir] = count_flops(module, self._inputs(1))
            except Exception:
                self._flops[artifact_dir] = None
        return self._flops[artifact_dir]

    def quality(self, artifact_dir: str) -> dict[str, Any]:
        """Accuracy and drop (labelled data), cosine and a fidelity loss of an artifact, with no
        latency measurement (the short-recovery rung of multi-fidelity)."""
        import torch

        from torchslim.artifact import load_artifact
        from torchslim.evaluate import fidelity, predict

        runner = load_artifact(artifact_dir).runner()
        with torch.no_grad():
            out = predict(runner, self.data, 32)
        fid = fidelity(self.base_out, out)
        acc, drop, _ci = self._drop(out)
        return {
            "accuracy": acc,
            "drop_points": drop,
            "cosine": fid.cosine,
            "loss_points": 100.0 * (1.0 - float(fid.cosine)),
        }

    def judge(self, rec: SearchRecord) -> None:
        """Fill ``rec``'s accuracy, fidelity, drop CI, latency and speed-up from its files."""
        import torch

        from torchslim.artifact import load_artifact
        from torchslim.evaluate import fidelity, predict
        from torchslim.measure import BenchTarget, measure_models

        assert rec.artifact is not None
        art = load_artifact(rec.artifact)
        runner = art.runner()
        with torch.no_grad():
            out = predict(runner, self.data, 32)
        fid = fidelity(self.base_out, out)
        rec.cosine, rec.agreement = fid.cosine, fid.agreement
        rec.accuracy, rec.drop_points, rec.drop_ci95 = self._drop(out)
        rec.size_mb = art.size_mb
        target = BenchTarget("candidate", runner, self._inputs)
        best: tuple[float, Any, Any] | None = None
        for _attempt in range(3):  # a burst of load on a shared machine: measure again
            base, mine = measure_models(
                [self.base_target, target],
                self.batch_sizes,
                threads=self.threads,
                config=self.timing,
                memory=True,
            )
            width = max(
                _ci_width(base.batches[b].latency, mine.batches[b].latency)
                for b in self.batch_sizes
            )
            drift = max(
                base.batches[b].latency.p50_ms / self.reference_ms[b] for b in self.batch_sizes
            )
            score = width * max(drift, 1 / drift)
            if best is None or score < best[0]:
                best = (score, base, mine)
            if width <= _MAX_CI_WIDTH and 1 / _MAX_DRIFT <= drift <= _MAX_DRIFT:
                break
        assert best is not None
        _, base, mine = best
        rec.noisy = best[0] > _MAX_CI_WIDTH * _MAX_DRIFT
        precision = str(getattr(art.capabilities, "precision", "fp32") or "fp32")
        self._fill_speed(rec, base, mine, precision)

    def _fill_speed(self, rec: SearchRecord, base: Any, mine: Any, precision: str) -> None:
        """``rec``'s latency, speed-up (with its interval), memory and efficiency from one
        interleaved measurement of the original (``base``) and it (``mine``)."""
        for b in self.batch_sizes:
            lb, lm = base.batches[b].latency, mine.batches[b].latency
            rec.latency_ms[str(b)] = lm.p50_ms
            if mine.batches[b].peak_memory_mb is not None:
                rec.peak_memory_mb[str(b)] = mine.batches[b].peak_memory_mb
            rec.speedup[str(b)] = {
                "ratio": lb.p50_ms / lm.p50_ms,
                "ci95": [lb.ci95_low_ms / lm.ci95_high_ms, lb.ci95_high_ms / lm.ci95_low_ms],
                "baseline_ms": lb.p50_ms,
            }
            pct = self.efficiency(rec.flops_per_item, precision, b, lm.p50_ms)
            if pct is not None:
                rec.percent_of_peak[str(b)] = pct

    def remeasure(self, recs: Sequence[SearchRecord]) -> None:
        """Measure the finalists ``recs`` and the original together, in one interleaved run.

        Each candidate was first measured in a pair with the original; on a shared machine the
        original's own median moved by 3× between pairs, so ratios from different pairs do not
        rank candidates reliably. One run of all of them (A B C … A B C …) exposes every one to
        the same load. Each record's speed-ups are replaced by this run's (the pair's are kept
        in ``details["first_pass"]``).
        """
        from torchslim.artifact import load_artifact
        from torchslim.measure import BenchTarget, measure_models

        arts = [load_artifact(str(r.artifact)) for r in recs]
        targets = [self.base_target] + [
            BenchTarget(r.key, a.runner(), self._inputs) for r, a in zip(recs, arts, strict=True)
        ]
        base, *mine = measure_models(
            targets, self.batch_sizes, threads=self.threads, config=self.timing, memory=True
        )
        for rec, art, m in zip(recs, arts, mine, strict=True):
            rec.details["first_pass"] = {
                "latency_ms": dict(rec.latency_ms),
                "speedup": {k: dict(v) for k, v in rec.speedup.items()},
            }
            precision = str(getattr(art.capabilities, "precision", "fp32") or "fp32")
            self._fill_speed(rec, base, m, precision)


_MAX_CI_WIDTH = 1.6
"""Largest acceptable ratio of the speed-up interval's ends (hi/lo) before re-measuring."""
_MAX_DRIFT = 1.5
"""Largest acceptable change of the original's median against its first measurement."""


def _ci_width(base: Any, mine: Any) -> float:
    lo = base.ci95_low_ms / mine.ci95_high_ms
    hi = base.ci95_high_ms / mine.ci95_low_ms
    return hi / lo if lo > 0 else float("inf")


def _reasons(rec: SearchRecord, c: dict[str, Any], batch: int) -> list[str]:
    """Why ``rec`` fails the constraints (empty: accepted). Same rules as
    :class:`~torchslim.candidate.Constraints`, on a record: the speed-up interval must be above 1
    at every batch size measured (``c["batch_sizes"]``, default ``[batch]``); the latency target
    applies to the first."""
    out = []
    if rec.drop_points is not None and rec.drop_points > c["max_drop_points"]:
        out.append(f"accuracy drop {rec.drop_points:.2f} points is over {c['max_drop_points']:g}")
    if rec.drop_points is None and (rec.cosine or 0) < c["min_cosine"]:
        out.append(f"fidelity-only: cosine {rec.cosine:.4f} below {c['min_cosine']:g}")
    for b in c.get("batch_sizes") or [batch]:
        sp = rec.speedup.get(str(b))
        if sp is None or sp["ci95"][0] <= 1.0:
            ratio = (
                "n/a"
                if sp is None
                else f"{sp['ratio']:.2f}×, CI {sp['ci95'][0]:.2f}–{sp['ci95'][1]:.2f}"
            )
            out.append(f"not measurably faster than the original at batch {b} ({ratio})")
    if c.get("max_size_mb") is not None and (rec.size_mb or 0) > c["max_size_mb"]:
        out.append(f"size {rec.size_mb:.2f} MB over {c['max_size_mb']:g} MB")
    if rec.noisy:
        out.append("the measurement stayed too noisy to trust (machine busy?): re-run later")
    mem = rec.peak_memory_mb.get(str(batch))
    if c.get("max_memory_mb") is not None and (mem is None or mem > c["max_memory_mb"]):
        shown = "not measured" if mem is None else f"{mem:.1f}"
        out.append(f"peak memory {shown} MiB over {c['max_memory_mb']:g} MiB")
    lat = rec.latency_ms.get(str(batch))
    if c.get("target_latency_ms") is not None and (lat is None or lat > c["target_latency_ms"]):
        out.append(f"latency {lat} ms over the target {c['target_latency_ms']:g} ms")
    return out


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


def _pareto(records: list[SearchRecord], batches: int | Sequence[int]) -> list[str]:
    """Keys of the records on the quality × relative latency × size front (relative latency:
    1 / :func:`speedup_score`, so several batch sizes weigh alike)."""
    from torchslim.candidate import non_dominated

    pts: list[tuple[float, ...] | None] = []
    for r in records:
        score = speedup_score(r, batches)
        quality = r.accuracy if r.accuracy is not None else r.cosine
        if r.status == "failed" or score is None or quality is None or not r.size_mb:
            pts.append(None)
        else:
            pts.append((-float(quality), 1.0 / score, float(r.size_mb)))
    return [records[i].key for i in non_dominated(pts)]


def _save_best(rec: SearchRecord, out: Path) -> str:
    """Copy the chosen candidate's artifact to ``OUT/best`` atomically (replacing the old)."""
    from torchslim._io import atomic_directory

    target = out / "best"
    assert rec.artifact is not None
    with atomic_directory(target, force=True) as tmp:
        for item in Path(rec.artifact).iterdir():
            (shutil.copytree if item.is_dir() else shutil.copy2)(item, tmp / item.name)
    return str(target)


def _write_outputs(result: OptimizeResult, out: Path) -> None:
    from torchslim._json import to_jsonable
    from torchslim.report import render_search_markdown, render_search_report

    data = to_jsonable(result.to_dict())
    (out / "search.json.tmp").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(out / "search.json.tmp", out / "search.json")
    (out / "report.html.tmp").write_text(render_search_report(data), encoding="utf-8")
    os.replace(out / "report.html.tmp", out / "report.html")
    (out / "report.md.tmp").write_text(render_search_markdown(data), encoding="utf-8")
    os.replace(out / "report.md.tmp", out / "report.md")


def optimize(
    model: str,
    *,
    calib: str | None = None,
    eval: str | None = None,
    train: str | None = None,
    space: str | SearchSpace = "fast",
    max_drop: float = 1.0,
    min_cosine: float = 0.99,
    batch_sizes: tuple[int, ...] = (1,),
    target_latency_ms: float | None = None,
    max_size_mb: float | None = None,
    max_memory_mb: float | None = None,
    time_budget_s: float = 1200.0,
    max_trials: int | None = None,
    sampler: str = "tpe",
    out: str | Path = "optimize-out",
    storage: str | None = None,
    resume: bool = False,
    force: bool = False,
    threads: int | None = None,
    trust_code: bool = False,
    min_time_s: float = 0.5,
    seed: int = 0,
    executor: str = "local",
    address: str | None = None,
    progress: Progress | None = None,
) -> OptimizeResult:
    """Search recipes for the fastest variant of ``model`` that keeps its promises.

    Args:
        model: The model source (as for every command).
        calib: Calibration data source (static quantization).
        eval: Evaluation data source (labelled: accuracy; else fidelity only).
        train: Training data source (recovery after pruning).
        space: A preset (``fast``, ``balanced``, ``thorough``), a YAML file or a SearchSpace.
        max_drop: Accuracy budget, in points.
        min_cosine: Fidelity budget on unlabelled data.
        batch_sizes: Batch sizes to optimise for: a candidate must be measurably faster at each;
            candidates are ranked by the geometric mean of their speed-ups. The latency target
            applies to the first.
        target_latency_ms: Optional latency limit at the first batch size.
        max_size_mb: Optional size limit (MB of deployment files).
        max_memory_mb: Optional limit on peak memory growth while running, at the first batch
            size (MiB).
        time_budget_s: Stop proposing new candidates after this many seconds.
        max_trials: Stop after this many candidates.
        sampler: ``tpe``, ``random`` or ``grid``.
        out: Output directory: ``best/`` (the chosen artifact), ``search.json``,
            ``report.html``, ``study.db``, ``candidates/``.
        storage: Optuna storage URL (default: SQLite in ``out``).
        resume: Continue the study in ``out`` (finished candidates are not redone).
        force: Replace a non-empty ``out`` that is not this search's own.
        threads: Intra-op threads for building and measuring.
        trust_code: Pass ``--trust-code`` to the workers (for ``pkg.module:factory`` sources
            the user gave).
        min_time_s: Measuring time per model and batch size.
        seed: Seed for the sampler and every recipe.
        executor: Where candidates are built: ``local`` (worker processes here) or ``ray``
            (Ray tasks on a cluster; see :mod:`torchslim.search.executors`). Measuring always
            happens here, one candidate at a time.
        address: Ray cluster address (``auto``, ``host:port``, ``ray://…``, or ``local`` for a
            private cluster on this machine).
        progress: Called with a short status line.

    Returns:
        The :class:`OptimizeResult`.

    Raises:
        TorchslimError: Bad inputs (model, data, space, out). Finding nothing acceptable is not
            an error here: ``result.chosen`` is ``None`` and every candidate says why.
    """
    import optuna

    from torchslim._io import check_out_dir
    from torchslim.data import load_data
    from torchslim.models import load_model
    from torchslim.recipe import DataRefs, Recipe

    say = progress or (lambda _m: None)
    started = time.perf_counter()
    out = Path(out)
    own = (out / "search.json").is_file() or (out / "study.db").is_file()
    if not resume:
        check_out_dir(out, force=force or own, inputs=(model, calib, eval, train))
    elif not own:
        raise TorchslimError(f"Nothing to resume in '{out}'.", "Drop --resume to start a search.")
    sp = load_space(space) if isinstance(space, str) else space
    if not batch_sizes or any(b < 1 for b in batch_sizes):
        raise TorchslimError(f"Invalid batch sizes {list(batch_sizes)}.", "Give e.g. 1,64.")
    if max_drop < 0 or max_drop != max_drop:
        raise TorchslimError(f"--max-drop must be >= 0, got {max_drop}.", "E.g. --max-drop 1.")
    say(f"Loading {model}")
    loaded = load_model(model, trust_code=trust_code)
    spec = loaded.input_spec
    if eval is None:
        raise TorchslimError(
            "optimize needs evaluation data to check every candidate against the original.",
            "Give --eval DATA (labelled for accuracy, e.g. torchslim:fashion_mnist).",
        )
    eval_ds = load_data(eval, input_spec=spec)
    retrains = any(r > 0 for r in sp.prune_ratios) or any(f != "none" for f in sp.factorize)
    if retrains and train is None:
        raise TorchslimError(
            "This search space prunes or factorises layers, which needs training data for "
            "recovery.",
            "Give --train DATA, or use --preset fast (no retraining).",
        )
    if retrains and train is not None and "finetune" in sp.recoveries:
        from dataclasses import replace as _replace

        if not load_data(train, input_spec=spec).has_labels:  # label-only recovery cannot run
            say("Training data has no labels: recovery by distillation only")
            sp = _replace(
                sp, recoveries=tuple(r for r in sp.recoveries if r != "finetune") or ("kd",)
            )
    if calib is None and any(q.startswith("static") for q in sp.quantize):
        raise TorchslimError(
            "This search space has static quantization, which needs calibration data.",
            "Give --calib DATA (e.g. 512 training samples).",
        )
    if not resume:  # every input checked: only now replace an earlier search's output
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
    context = _context(loaded)
    say("Measuring the original")
    judge = _Judge(loaded, eval_ds, tuple(batch_sizes), threads, min_time_s)
    baseline = judge.baseline()
    constraints = {
        "max_drop_points": max_drop,
        "min_cosine": min_cosine,
        "batch_size": batch_sizes[0],
        "batch_sizes": list(batch_sizes),
        "max_size_mb": max_size_mb,
        "max_memory_mb": max_memory_mb,
        "target_latency_ms": target_latency_ms,
    }
    # The teacher ref is the original model; the space keeps it only where a KD step continues
    # from a short-recovered model (which must not become its own teacher).
    refs = DataRefs(calib=calib, eval=eval, train=train, teacher=model)
    base = Recipe((), None, tuple(batch_sizes), refs, seed)
    runner = make_executor(executor, address=address, threads=threads, trust_code=trust_code)
    builder = _Builder(model, out, judge, runner, say)
    rungs: dict[str, dict[str, Any]] = {}

    dims = sp.dimensions()
    samplers = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        "grid": lambda: optuna.samplers.GridSampler(dims, seed=seed),
    }
    if sampler not in samplers:
        raise TorchslimError(f"Unknown sampler '{sampler}'.", "Use tpe, random or grid.")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name="torchslim-optimize",
        storage=storage or f"sqlite:///{out / 'study.db'}",
        load_if_exists=resume,
        direction="minimize",
        sampler=samplers[sampler](),
        # Multi-fidelity: a pruning level reports its drop after short recovery (step 1); only
        # the better half of the levels at that rung go on to the full recovery.
        pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2),
    )
    records: dict[str, SearchRecord] = {}
    for t in study.trials:  # resume: finished candidates are kept, not redone
        rec_data = t.user_attrs.get("record")
        if rec_data:
            rec = SearchRecord(**rec_data)
            records[rec.key] = rec
    if not resume:  # cheap first: every no-retraining combination before anything that prunes
        cheap = [c for c in _all_choices(dims) if c["prune"] == 0.0 and c["factorize"] == "none"]
        for c in cheap:
            study.enqueue_trial(c, skip_if_exists=True)

    batch = batch_sizes[0]
    best: SearchRecord | None = None
    best_path: str | None = None
    for r in records.values():
        if r.status == "accepted" and (best is None or _faster(r, best, batch_sizes)):
            best = r
    if best is not None:
        best_path = str(out / "best")
    stopped = "space exhausted"
    combos = len(_all_choices(dims))
    seen_keys = set(records)
    misses = 0
    try:
        while True:
            elapsed = time.perf_counter() - started
            if elapsed > time_budget_s:
                stopped = "time budget"
                break
            if max_trials is not None and len(records) >= max_trials:
                stopped = "trials"
                break
            if misses > 3 * combos:
                break
            trial = study.ask()
            choice = Choice(**{k: trial.suggest_categorical(k, v) for k, v in dims.items()})
            recipe = sp.recipe(choice, base)
            if recipe is None:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                misses += 1
                continue
            key = _key(recipe)
            if key in seen_keys:
                prev = records.get(key)
                study.tell(
                    trial,
                    _objective(prev, batch_sizes) if prev else None,
                    state=optuna.trial.TrialState.COMPLETE
                    if prev
                    else optuna.trial.TrialState.PRUNED,
                )
                misses += 1
                continue
            seen_keys.add(key)
            misses = 0
            rung = None
            if _training_steps(recipe) == 2 and sp.short_recovery_epochs is not None:
                rung = builder.short_rung(
                    recipe, trial, rungs, constraints, sp, time_budget_s - elapsed
                )
            if rung is not None and not rung["promoted"]:
                rec = SearchRecord(recipe.to_dict(), recipe.describe(), key=key)
                rec.status = "pruned" if "error" not in rung else "failed"
                rec.reason = (
                    f"pruning/recovery failed: {rung['error']}"
                    if "error" in rung
                    else f"stopped after short recovery ({rung['epochs']:g} epoch): {rung['why']}"
                )
                rec.details["short_recovery"] = rung
                records[key] = rec
                trial.set_user_attr("record", rec.to_dict())
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                continue
            rec = _build(
                recipe, key, builder, constraints, batch, time_budget_s - elapsed, len(records) + 1
            )
            if rung is not None:
                rec.details["short_recovery"] = rung
            records[key] = rec
            trial.set_user_attr("record", rec.to_dict())
            study.tell(trial, _objective(rec, batch_sizes))
            if rec.status == "accepted" and (best is None or _faster(rec, best, batch_sizes)):
                best = rec
                best_path = _save_best(rec, out)
                say(
                    f"New best: {' → '.join(rec.steps)} ("
                    + ", ".join(
                        f"{rec.speedup[str(b)]['ratio']:.2f}× at batch {b}" for b in batch_sizes
                    )
                    + ")"
                )
            _write_outputs(
                OptimizeResult(
                    best,
                    baseline,
                    list(records.values()),
                    _pareto(list(records.values()), batch_sizes),
                    best_path,
                    str(out),
                    time.perf_counter() - started,
                    "running",
                    constraints,
                    context["machine"],
                    context["checklist"],
                ),
                out,
            )
        best, best_path = _final_round(records, judge, constraints, batch_sizes, out, say, best)
    except KeyboardInterrupt:
        stopped = "interrupted"
    finally:
        runner.close()
    result = OptimizeResult(
        best,
        baseline,
        list(records.values()),
        _pareto(list(records.values()), batch_sizes),
        best_path,
        str(out),
        time.perf_counter() - started,
        stopped,
        constraints,
        context["machine"],
        context["checklist"],
    )
    _write_outputs(result, out)
    if stopped == "interrupted":
        raise KeyboardInterrupt
    return result


def _context(loaded: LoadedModel) -> dict[str, Any]:
    """The machine/versions and the original's ``inspect`` checklist, for the report."""
    from torchslim.machine import machine_info

    ctx: dict[str, Any] = {"machine": machine_info().to_dict(), "checklist": []}
    try:
        from torchslim.doctor import diagnose

        ctx["checklist"] = [f.to_dict() for f in diagnose(loaded).findings]
    except Exception as exc:  # the checklist is advice: never fail a search on it
        ctx["checklist"] = [
            {"id": "checklist-error", "severity": "info", "title": f"checklist not run: {exc}"}
        ]
    return ctx


def _all_choices(dims: dict[str, list[Any]]) -> list[dict[str, Any]]:
    import itertools

    keys = list(dims)
    return [dict(zip(keys, vals, strict=True)) for vals in itertools.product(*dims.values())]


FINALISTS = 4
"""How many of the fastest accepted candidates are re-measured together before choosing."""


def _final_round(
    records: dict[str, SearchRecord],
    judge: _Judge,
    constraints: dict[str, Any],
    batch_sizes: Sequence[int],
    out: Path,
    say: Progress,
    best: SearchRecord | None,
) -> tuple[SearchRecord | None, str | None]:
    """Choose among the fastest accepted candidates by one joint, interleaved measurement.

    The constraints are applied again to the joint run's numbers: a finalist no longer
    measurably faster there is rejected (it says why). The choice is the fastest finalist still
    accepted; only when none is left do the other accepted candidates (pair measurements) count.
    """
    accepted = sorted(
        (r for r in records.values() if r.status == "accepted"),
        key=lambda r: -(speedup_score(r, batch_sizes) or 0.0),
    )
    finalists = accepted[:FINALISTS]
    if len(finalists) >= 2:
        say(f"Re-measuring the {len(finalists)} fastest candidates together")
        judge.remeasure(finalists)
        for rec in finalists:
            why = _reasons(rec, constraints, batch_sizes[0])
            rec.details["final_round"] = True
            if why:
                rec.status, rec.reason = (
                    "rejected",
                    "in the finalists' joint run: " + "; ".join(why),
                )
        pool = [r for r in finalists if r.status == "accepted"] or [
            r for r in accepted if r.status == "accepted"
        ]
        chosen = None
        for rec in pool:
            if chosen is None or _faster(rec, chosen, batch_sizes):
                chosen = rec
        if chosen is not best:
            best = chosen
            if best is None:
                shutil.rmtree(out / "best", ignore_errors=True)
                return None, None
            say(f"Chosen after the joint run: {' → '.join(best.steps)}")
            return best, _save_best(best, out)
    return best, None if best is None else str(out / "best")


def _faster(a: SearchRecord, b: SearchRecord, batches: Sequence[int]) -> bool:
    return (speedup_score(a, batches) or 0.0) > (speedup_score(b, batches) or 0.0)


def _objective(rec: SearchRecord | None, batches: Sequence[int]) -> float:
    """What the sampler minimises: latency relative to the original (geometric mean over the
    batch sizes), +10 when the candidate failed or broke a constraint (so the sampler learns to
    avoid it, and still prefers the faster of two rejected ones)."""
    score = None if rec is None or rec.status == "failed" else speedup_score(rec, batches)
    if rec is None or score is None:
        return 20.0
    return 1.0 / score if rec.status == "accepted" else 10.0 + 1.0 / score


def _budget_note(error: str, time_left: float) -> str:
    """Say so when a build timed out because the search's time budget ran out (its timeout is
    what was left of the budget), not because the candidate hangs."""
    if error.startswith("timed out") and time_left < 600:
        return f"{error}: the time budget ran out while building it (raise --time-budget)"
    return error


_TRAINING_STEPS = ("PruneConfig", "DistillConfig", "LowRankConfig", "DepthwiseConfig")


def _training_steps(recipe: Recipe) -> int:
    """How many leading steps train (pruning with recovery, further recovery): the prefix that
    is built once and shared by every quantization/runtime variant on top of it."""
    n = 0
    for step in recipe.steps:
        if type(step).__name__ not in _TRAINING_STEPS:
            break
        n += 1
    return n


class _Builder:
    """Builds candidates through an executor, with the cache of trained prefixes."""

    def __init__(
        self, model: str, out: Path, judge: _Judge, executor: Executor, say: Progress
    ) -> None:
        self.model = model
        self.out = out
        self.judge = judge
        self.executor = executor
        self.say = say

    def prefix(self, recipe: Recipe, n_steps: int, time_left: float) -> tuple[Path | None, str]:
        """Build ``recipe.steps[:n_steps]`` once (cached by its hash); each longer prefix
        continues from the shorter one's artifact. Returns ``(dir, "")`` or ``(None, error)``."""
        from dataclasses import replace

        prefix = replace(recipe, steps=recipe.steps[:n_steps], runtime=None)
        pdir = self.out / "cache" / _key(prefix)
        if (pdir / "manifest.json").is_file():
            return pdir, ""
        source = self.model
        if n_steps > 1:
            parent, err = self.prefix(recipe, n_steps - 1, time_left)
            if parent is None:
                return None, err
            source = str(parent)
        got = self.executor.build(prefix, source, pdir, timeout=time_left)
        if "error" in got:
            return None, _budget_note(str(got["error"]), time_left)
        (pdir.parent / f"{pdir.name}.summary.json").write_text(
            json.dumps(got, default=str), encoding="utf-8"
        )
        return pdir, ""

    def prefix_details(self, rec: SearchRecord, recipe: Recipe, n_steps: int) -> None:
        from dataclasses import replace

        for k in range(1, n_steps + 1):
            pkey = _key(replace(recipe, steps=recipe.steps[:k], runtime=None))
            summary = self.out / "cache" / f"{pkey}.summary.json"
            if summary.is_file():
                _collect_details(rec, json.loads(summary.read_text(encoding="utf-8")))

    def short_rung(
        self,
        recipe: Recipe,
        trial: Any,
        rungs: dict[str, dict[str, Any]],
        constraints: dict[str, Any],
        sp: SearchSpace,
        time_left: float,
    ) -> dict[str, Any]:
        """Multi-fidelity: the drop of the pruning level after its short recovery, and whether
        it is promoted to the full recovery (successive halving via Optuna's pruner, plus the
        space's ``promote_within_points`` limit). Decided once per pruning level."""
        from dataclasses import replace

        rkey = _key(replace(recipe, steps=recipe.steps[:1], runtime=None))
        file = self.out / "cache" / f"{rkey}.rung.json"
        if rkey not in rungs and file.is_file():
            rungs[rkey] = json.loads(file.read_text(encoding="utf-8"))
        info = rungs.get(rkey)
        if info is None:
            self.say(f"Pruning level {recipe.describe()[0]}: short recovery first")
            pdir, err = self.prefix(recipe, 1, time_left)
            if pdir is None:
                info = {"error": err, "promoted": False}
            else:
                q = self.judge.quality(str(pdir))
                value = q["drop_points"] if q["drop_points"] is not None else q["loss_points"]
                trial.report(value, step=1)
                by_sha = not trial.should_prune()
                limit = constraints["max_drop_points"] + sp.promote_within_points
                within = q["drop_points"] is None or q["drop_points"] <= limit
                info = {
                    **q,
                    "epochs": sp.short_recovery_epochs,
                    "promoted": by_sha and within,
                    "why": (
                        "promoted to the full recovery"
                        if by_sha and within
                        else (
                            f"drop {value:.2f} points after short recovery is more than "
                            f"{sp.promote_within_points:g} points over the budget"
                            if not within
                            else "not in the better half of the pruning levels tried at this "
                            "fidelity (successive halving)"
                        )
                    ),
                }
            rungs[rkey] = info
            if "error" not in info:  # a failed level is retried by --resume
                file.parent.mkdir(parents=True, exist_ok=True)
                file.write_text(json.dumps(info), encoding="utf-8")
        elif "error" not in info:
            value = info["drop_points"] if info["drop_points"] is not None else info["loss_points"]
            trial.report(value, step=1)
        return info


def _build(
    recipe: Recipe,
    key: str,
    builder: _Builder,
    constraints: dict[str, Any],
    batch: int,
    time_left: float,
    n: int,
) -> SearchRecord:
    """Build (through the executor), re-load, evaluate and measure one candidate."""
    say = builder.say
    judge = builder.judge
    rec = SearchRecord(recipe.to_dict(), recipe.describe(), key=key)
    say(f"Candidate {n}: {' → '.join(rec.steps)}")
    source = builder.model
    n_train = _training_steps(recipe)
    if n_train:  # build the trained prefix once; every variant continues from it
        say(f"Candidate {n}: pruning and recovering (cached for every variant on top)")
        pdir, err = builder.prefix(recipe, n_train, time_left)
        if pdir is None:
            rec.reason = f"pruning/recovery failed: {err}"
            return rec
        source = str(pdir)
        builder.prefix_details(rec, recipe, n_train)
        rec.flops_per_item = judge.flops_of(str(pdir))
    else:
        rec.flops_per_item = judge.base_flops
    cdir = builder.out / "candidates" / key
    got = builder.executor.build(recipe, source, cdir, timeout=time_left)
    if "error" in got:
        rec.reason = _budget_note(str(got["error"]), time_left)
        return rec
    rec.artifact = str(cdir)
    _collect_details(rec, got)
    rec.runtime = got.get("runtime")
    rec.build_seconds = got.get("build_seconds")
    rec.train_seconds = got.get("train_seconds")
    try:
        say(f"Candidate {n}: evaluating and measuring against the original (interleaved)")
        judge.judge(rec)
    except TorchslimError as exc:
        rec.reason = f"re-loading/measuring failed: {exc.message}"
        return rec
    except Exception as exc:
        rec.reason = f"re-loading/measuring failed: {type(exc).__name__}: {str(exc)[:200]}"
        return rec
    why = _reasons(rec, constraints, batch)
    rec.status = "rejected" if why else "accepted"
    rec.reason = "; ".join(why) or None
    return rec


def _collect_details(rec: SearchRecord, summary: dict[str, Any]) -> None:
    """Per-layer facts from a worker's step reports: pruned channel counts, layers kept in float
    by accuracy-aware quantization and its sensitivity table."""
    for rep in summary.get("reports") or []:
        if not isinstance(rep, dict):
            continue
        if rep.get("channels"):
            rec.details["pruned_channels"] = rep["channels"]
            rec.details["channel_ratio"] = rep.get("channel_ratio")
        aware = rep.get("accuracy_aware")
        if isinstance(aware, dict):
            rec.details["kept_float"] = aware.get("kept_float") or {}
            rec.details["sensitivity"] = (aware.get("sensitivity") or [])[:20]
        if rep.get("quantized_layers") is not None:
            rec.details["quantized_layers"] = len(rep["quantized_layers"])
