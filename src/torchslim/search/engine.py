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
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torchslim.errors import TorchslimError
from torchslim.search.executors import Executor, make_executor
from torchslim.search.judge import Judge
from torchslim.search.records import OptimizeResult, SearchRecord, speedup_score
from torchslim.search.space import Choice, SearchSpace, load_space

if TYPE_CHECKING:
    from torchslim.models import LoadedModel
    from torchslim.recipe import Recipe

__all__ = ["OptimizeResult", "SearchRecord", "optimize", "speedup_score"]

Progress = Callable[[str], None]


def _key(recipe: Recipe) -> str:
    text = json.dumps(recipe.to_dict(), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


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
    max_drop_rel: float | None = None,
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
        max_drop_rel: Accuracy budget relative to the original's metric, in percent (``1``: keep
            at least 99% of it); replaces ``max_drop`` when given (needs labelled eval data).
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

    for flag, src in (("calib", calib), ("eval", eval), ("train", train)):
        if src is not None and not isinstance(src, str):
            raise TorchslimError(
                f"optimize takes --{flag} as a data source, not a {type(src).__name__}.",
                "Each candidate is built in its own process from the sources: give e.g. "
                "'torchslim:fashion_mnist', a file path or 'synthetic:1x3x224x224?n=64'.",
            )
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
    if max_drop_rel is not None and not 0 <= max_drop_rel < 100:
        raise TorchslimError(
            f"--max-drop-rel must be a percentage in [0, 100), got {max_drop_rel}.",
            "E.g. --max-drop-rel 1 (keep 99% of the original's accuracy).",
        )
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
    judge = Judge(loaded, eval_ds, tuple(batch_sizes), threads, min_time_s)
    baseline = judge.baseline()
    if max_drop_rel is not None:
        if baseline["accuracy"] is None:
            raise TorchslimError(
                "--max-drop-rel is relative to the original's accuracy, and the evaluation data "
                "has no labels to measure it.",
                "Give labelled --eval data, or use --max-drop (fidelity-only data is judged by "
                "cosine).",
            )
        # relative to the metric, in points: 1% of a 93.8% top-1 is 0.938 points
        max_drop = max_drop_rel * float(baseline["accuracy"])
    constraints = {
        "max_drop_points": max_drop,
        "max_drop_rel_percent": max_drop_rel,
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
        for c in _cheap_first(dims):
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


_BREADTH_ORDER = ("quantize", "shapes", "precision", "runtime", "hint", "threads")
"""Which single change from the defaults is tried first among the no-retraining candidates:
quantization is the largest lever on CPU, then what specialises the compiled model."""


def _cheap_first(dims: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every no-retraining combination, breadth first: the defaults, then each single change
    (in ``_BREADTH_ORDER``), then pairs, and so on.

    In product order a short time budget would be spent on every runtime variant of the float
    model before any quantized candidate is built (seen on ResNet-18: three OpenVINO FP32
    variants in 300 s, while OpenVINO INT8 was 7× faster than them).
    """
    cheap = [c for c in _all_choices(dims) if c["prune"] == 0.0 and c["factorize"] == "none"]
    keys = [k for k in _BREADTH_ORDER if k in dims] + [k for k in dims if k not in _BREADTH_ORDER]

    def order(c: dict[str, Any]) -> tuple[int, list[int], list[int]]:
        idx = [dims[k].index(c[k]) for k in keys]
        changed = [i for i, v in enumerate(idx) if v]
        return len(changed), changed, idx

    return sorted(cheap, key=order)


FINALISTS = 4
"""How many of the fastest accepted candidates are re-measured together before choosing."""


def _final_round(
    records: dict[str, SearchRecord],
    judge: Judge,
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
        self, model: str, out: Path, judge: Judge, executor: Executor, say: Progress
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
