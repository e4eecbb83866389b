"""``torchslim optimize`` side by side with single techniques run directly, as their users would.

For each model, in ONE interleaved timing run (``torchslim.measure.measure_models``, batch 1 and
64, same threads): the eager FP32 baseline; torch dynamic INT8 (``torch.ao.quantization.
quantize_dynamic``); ONNX Runtime ``quantize_static`` on the exported graph; OpenVINO INT8 via
``nncf.quantize`` on ``openvino.convert_model``; 50% structured pruning + recovery alone
(``torchslim.prune``, eager); and **optimize's pick**, re-loaded from its artifact with
``torchslim.load_artifact`` (a fresh load through the runtime's own API). Every row is scored on
the same evaluation data (top-1 for the Fashion-MNIST references; polarity accuracy of the
embeddings for MiniLM; cosine/agreement for random-weight torchvision models). Ratios are quoted
against OpenVINO INT8 run directly (the strongest single technique on this CPU).

MiniLM (``--models minilm``, batch 1 and 8 at sequence 128): pruning removes whole attention heads
and FFN neurons, and recovery distils the original's embeddings on unlabelled news sentences
(``torchslim:text_background``, apart from the evaluation texts); optimize searches a text space
(:data:`TEXT_SPACE`: head/FFN pruning levels + KD recovery + OpenVINO INT8).

Run: ``.venv/bin/python benchmarks/bench_optimize.py [--models fashion_resnet,fashion_cnn]
[--time-budget 20m] [--smoke]`` (``--smoke``: one model, a 90 s search, nothing written).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_quantize as bq
from _report import replace_section, save_json

MODELS = ("fashion_resnet", "fashion_cnn")
BATCHES: dict[str, tuple[int, int]] = {"minilm": (1, 8)}
"""Batch sizes per model (default 1 and 64): MiniLM at seq 128 is timed at 1 and 8."""
TARGETS: dict[str, tuple[float, float]] = {"minilm": (1.3, 1.3)}
"""(batch-1, large-batch) speed-up targets vs OV INT8 (default 1.5 and 2.5, the issue's)."""
TEXT_TRAIN = "torchslim:text_background?seq_len=64"
"""Unlabelled text for distillation (sentences average ~30 tokens: 64 truncates almost none)."""
TEXT_RECOVERY_LR = 1e-4
"""Recovery learning rate for the pretrained encoder (the vision default 1e-3 is for CNNs)."""


def _batches(key: str) -> tuple[int, int]:
    return BATCHES.get(key, (1, 64))


def text_space(prune_ratios: tuple[float, ...] = (0.0, 0.3, 0.4, 0.5), epochs: float = 1.0) -> Any:
    """The MiniLM search space: head/FFN pruning levels with KD recovery, OpenVINO INT8 on top."""
    from torchslim.search.space import SearchSpace

    return SearchSpace(
        prune_ratios=prune_ratios,
        recoveries=("kd",),
        recovery_epochs=epochs,
        quantize=("static/openvino",),
        runtimes=("openvino",),
        precisions=("f32",),
        shapes=("dynamic",),
    )


def fmt(value: Any, spec: str) -> str:
    """``value`` formatted with ``spec``, or an em dash when missing."""
    return "—" if value is None else format(value, spec)


def _direct_dynamic_row(spec: Any) -> Any:
    from torch.ao.quantization import quantize_dynamic

    row = bq.Row("torch dynamic INT8 (direct)", "peer", "dynamic")
    start = time.perf_counter()
    q = quantize_dynamic(spec.module, {torch.nn.Linear}, dtype=torch.qint8)
    row.quantize_s = round(time.perf_counter() - start, 2)
    row.predict, row.keep = q, q
    row.notes = "torch.ao quantize_dynamic on Linear layers"
    return row


def _prune_row(spec: Any, epochs: float) -> Any:
    import torchslim
    from torchslim.data import load_data
    from torchslim.passes.prune import PruneConfig, PruneTarget
    from torchslim.train import DistillConfig, DistillMethod

    row = bq.Row("50% structured pruning + recovery (alone)", "peer", "prune")
    text = spec.kind == "text"
    train = load_data(TEXT_TRAIN if text else "torchslim:fashion_mnist?split=train")
    start = time.perf_counter()
    # a sentence encoder has no labels to fine-tune on: it is distilled from the original
    recover = (
        DistillConfig(method=DistillMethod.KD, epochs=epochs, lr=TEXT_RECOVERY_LR, batch_size=32)
        if text
        else DistillConfig(method=DistillMethod.FINETUNE, epochs=epochs)
    )
    cfg = PruneConfig(ratio=0.5, target=PruneTarget.FLOPS, recover=recover)
    cand = torchslim.prune(spec.loaded, cfg, train=train, eval=spec.eval, measure=False)
    row.quantize_s = round(time.perf_counter() - start, 2)
    row.size_mb = cand.size_mb
    row.predict, row.keep = cand.model, cand
    how = "heads + FFN, KD on text" if text else "finetune"
    row.notes = f"torchslim.prune ratio 0.5 of FLOPs, {how} {epochs} epoch(s), eager"
    return row


def _optimize_row(spec: Any, args: argparse.Namespace, workdir: Path) -> tuple[Any, dict[str, Any]]:
    import torchslim
    from torchslim.search import optimize

    row = bq.Row("torchslim optimize (its pick)", "torchslim", "search")
    start = time.perf_counter()
    text = spec.kind == "text"
    synthetic = spec.kind == "synthetic"
    data: dict[str, Any]
    if synthetic:  # random weights: fidelity only, no retraining (the "fast" space)
        # sources, not DataSets: every candidate is built in its own process from them
        shape = "synthetic:1x3x224x224"
        data = {
            "calib": f"{shape}?n=64&seed=0",
            "eval": f"{shape}?n=32&seed=1",
            "train": None,
            "space": "fast",
        }
    elif text:
        data = {
            "calib": "torchslim:text_background?limit=300",
            "eval": "torchslim:text_polarity",
            "train": TEXT_TRAIN,
            "space": text_space(args.text_ratios, args.epochs),
        }
    else:
        data = {
            "calib": "torchslim:fashion_mnist?split=train&limit=512",
            "eval": "torchslim:fashion_mnist",
            "train": "torchslim:fashion_mnist?split=train",
            "space": args.preset,
        }
    res = optimize(
        spec.source,
        **data,
        max_drop=1.0,
        batch_sizes=_batches(spec.key),
        time_budget_s=args.fidelity_budget if synthetic else args.time_budget,
        out=workdir / f"opt-{spec.key}",
        threads=args.threads,
        progress=lambda m: print(f"  [{spec.key}] {m}", flush=True),
    )
    row.quantize_s = round(time.perf_counter() - start, 1)
    summary = res.to_dict()
    if res.chosen is None:
        row.error = "nothing met the constraints"
        return row, summary
    art = torchslim.load_artifact(res.artifact)
    row.predict, row.keep = art.runner(), art
    row.size_mb = art.size_mb
    row.notes = " → ".join(res.chosen.steps)
    return row, summary


def run_model(key: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from torchslim.measure import BenchTarget, TimingConfig, measure_models

    spec = bq.build_spec(key, quick=False)
    scorer = bq.Scorer(spec)
    builders = [
        lambda: bq.eager_row(spec),
        lambda: _direct_dynamic_row(spec),
        lambda: bq.peer_ort_row(spec),
        lambda: bq.peer_ov_row(spec),
    ]
    if spec.kind != "synthetic":  # random weights have nothing to recover on
        builders.append(lambda: _prune_row(spec, args.epochs))
    rows = []
    for build in builders:
        try:
            rows.append(build())
        except Exception as exc:  # a failing row is recorded, the run goes on
            r = bq.Row(getattr(build, "__name__", "row"), "peer")
            r.error = bq._short_error(exc)
            rows.append(r)
    opt_row, search = _optimize_row(spec, args, workdir)
    rows.append(opt_row)
    for r in rows:
        if r.predict is not None:
            r.scores = scorer.score(r.predict)
    live = [r for r in rows if r.predict is not None]
    timing = TimingConfig(min_time_s=args.min_time, max_time_s=4 * args.min_time + 2)
    targets = [BenchTarget(r.name, r.predict, spec.make_inputs) for r in live]
    batches = _batches(key)
    ms = measure_models(targets, batches, threads=args.threads, config=timing, memory=False)
    for r, m in zip(live, ms, strict=True):
        r.scores["p50_ms"] = {str(b): bm.latency.p50_ms for b, bm in m.batches.items()}
        r.scores["ci95_ms"] = {
            str(b): [bm.latency.ci95_low_ms, bm.latency.ci95_high_ms] for b, bm in m.batches.items()
        }
    return {
        "model": key,
        "kind": spec.kind,
        "batches": list(batches),
        "baseline": scorer.baseline(),
        "rows": [r.to_dict() for r in rows],
        "search": {k: search.get(k) for k in ("seconds", "stopped", "constraints")}
        | {"candidates": len(search.get("candidates", []))},
    }


def _ratio(rows: list[dict[str, Any]], name: str, ref: str, b: str) -> float | None:
    by = {r["name"]: r for r in rows}
    a, c = by.get(name, {}).get("scores", {}), by.get(ref, {}).get("scores", {})
    if "p50_ms" not in a or "p50_ms" not in c:
        return None
    return float(c["p50_ms"][b]) / float(a["p50_ms"][b])


def markdown(results: dict[str, Any], meta: dict[str, Any]) -> str:
    ov = "peer OpenVINO INT8 (NNCF direct)"
    pick = "torchslim optimize (its pick)"
    lines = [
        "## optimize vs single techniques run directly",
        "",
        f"`benchmarks/bench_optimize.py`, {meta['when']}, {meta['machine']}, {meta['threads']} "
        "threads. All rows of a model were timed in one interleaved run (batch 1 and 64; MiniLM "
        "1 and 8 at sequence 128); accuracy is top-1 on the packaged 2,000-image test set "
        "(MiniLM: polarity accuracy of the embeddings, 5-fold logistic regression on 200 movie "
        "reviews), drops in points. "
        '"× OV INT8" is OpenVINO INT8 (NNCF, run directly) latency ÷ the row\'s: above 1 is '
        "faster than it. Target (issue): optimize's pick ≥ 2.5× at batch 64 and ≥ 1.5× at batch 1 "
        "vs OV INT8 (MiniLM: ≥ 1.3×), at ≤ 1 point drop.",
        "",
    ]
    for key, res in results.items():
        fidelity_only = res.get("kind") == "synthetic"
        base = 1.0 if fidelity_only else res["baseline"]["metric"]
        s = res["search"]
        b1, bn = (str(b) for b in res.get("batches", (1, 64)))
        metric = "polarity" if key == "minilm" else "top-1"
        if fidelity_only:  # random weights: top-1 agreement with FP32 on held-out inputs
            metric = "top-1 agreement"
        lines += [
            f"### {key} (baseline {metric} {fmt(100 * base, '.2f')}%; search: {s['candidates']} "
            f"candidates, {fmt(s['seconds'], '.0f')} s, {s['stopped']})",
            "",
            f"| row | {metric} | drop (pts) | ms b={b1} | ms b={bn} | × OV INT8 b={b1} | "
            f"× OV INT8 b={bn} | MB | notes |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in res["rows"]:
            sc = r.get("scores", {})
            if r.get("error"):
                lines.append(f"| {r['name']} | — | — | — | — | — | — | — | error: {r['error']} |")
                continue
            acc = sc.get("agreement", 1.0) if fidelity_only else sc.get("metric")
            drop = None if acc is None else 100 * (base - acc)
            lines.append(
                f"| {r['name']} | {fmt(None if acc is None else 100 * acc, '.2f')} | "
                f"{fmt(drop, '+.2f')} | {fmt(sc['p50_ms'][b1], '.3f')} | "
                f"{fmt(sc['p50_ms'][bn], '.2f')} | "
                f"{fmt(_ratio(res['rows'], r['name'], ov, b1), '.2f')} | "
                f"{fmt(_ratio(res['rows'], r['name'], ov, bn), '.2f')} | "
                f"{fmt(r.get('size_mb'), '.3f')} | {r.get('notes', '')} |"
            )
        r1, r64 = _ratio(res["rows"], pick, ov, b1), _ratio(res["rows"], pick, ov, bn)
        t1, tn = TARGETS.get(key, (1.5, 2.5))
        if fidelity_only:  # the issue's bar there: never slower than the best single technique
            t1 = 1.0
            tn = 1.0
        by = {r["name"]: r for r in res["rows"]}
        pick_sc = by.get(pick, {}).get("scores", {})
        pick_acc = pick_sc.get("agreement", 1.0) if fidelity_only else pick_sc.get("metric")
        # re-scored here, on the artifact re-loaded from disk: the search's own figure is not taken
        pick_drop = None if pick_acc is None else 100 * (base - pick_acc)
        fast = bool(r1 and r64 and r1 >= t1 and r64 >= tn)
        within = pick_drop is not None and pick_drop <= 1.0
        verdict = (
            "target met"
            if fast and within
            else f"**gap**: {fmt(r1, '.2f')}× at batch {b1} (target {t1}), {fmt(r64, '.2f')}× at "
            f"batch {bn} (target {tn}), drop {fmt(pick_drop, '+.2f')} points re-scored on the "
            "artifact (budget 1)"
        )
        lines += ["", f"Verdict: {verdict}.", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--time-budget", type=float, default=1200.0, help="seconds per search")
    ap.add_argument(
        "--fidelity-budget",
        type=float,
        default=300.0,
        help="seconds per search for the random-weight torchvision models (fast space)",
    )
    ap.add_argument(
        "--merge",
        action="store_true",
        help="keep the other models' results from benchmarks/results/optimize.json",
    )
    ap.add_argument("--preset", default="balanced")
    ap.add_argument("--epochs", type=float, default=1.0, help="recovery epochs (pruning alone)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--min-time", type=float, default=1.0)
    ap.add_argument("--smoke", action="store_true", help="fashion_cnn, 90 s, writes nothing")
    ap.add_argument(
        "--text-ratios",
        type=lambda v: tuple(float(x) for x in v.split(",")),
        default=(0.0, 0.3, 0.4, 0.5),
        help="MiniLM: head/FFN pruning levels (FLOPs fractions) optimize may pick from",
    )
    ap.add_argument(
        "--no-write", action="store_true", help="print the table only (e.g. a one-model check)"
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    models = ["fashion_cnn"] if args.smoke else args.models.split(",")
    if args.smoke:
        args.time_budget, args.min_time, args.preset, args.epochs = 90.0, 0.2, "fast", 0.1
    results: dict[str, Any] = {}
    meta = bq._meta(args.threads) | {"when": time.strftime("%Y-%m-%d")}
    previous = Path(__file__).resolve().parent / "results" / "optimize.json"
    if args.merge and previous.exists():  # models measured in an earlier run keep their rows
        results = json.loads(previous.read_text())["results"]
    with tempfile.TemporaryDirectory(prefix="bench-opt-") as tmp:
        for key in models:
            print(f"== {key}", flush=True)
            results[key] = run_model(key, args, Path(tmp))
            if not (args.smoke or args.no_write):  # after each model: a crash keeps the rest
                save_json("optimize", {"meta": meta, "results": results})
    text = markdown(results, meta)
    print(text)
    if args.smoke or args.no_write:
        print(json.dumps(results, default=str))
        print("nothing written")
        return
    replace_section("optimize", text)
    print(json.dumps({k: len(v["rows"]) for k, v in results.items()}))


if __name__ == "__main__":
    main()
