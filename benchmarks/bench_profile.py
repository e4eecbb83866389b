"""Does the per-layer view add up? Per-layer times summed vs ``torchslim bench``'s end-to-end
latency, per model and runtime, and what profiling itself costs; writes the "profile" section.

For each model (``torchslim:fashion_resnet``, ``torchvision:mobilenet_v2`` with random weights,
``torchslim:minilm`` when its weights load offline) every runtime (eager, onnxruntime, openvino)
is built once; the built runtimes are timed **interleaved** at batch 1 with
:func:`torchslim.measure.measure_models` (what ``torchslim bench`` runs), then the same objects
are profiled with :func:`torchslim.profile.profile` (each runtime's own profiler).

    .venv/bin/python benchmarks/bench_profile.py
    .venv/bin/python benchmarks/bench_profile.py --models torchslim:fashion_resnet --threads 1

Results: ``benchmarks/results/profile.json`` and the ``profile`` section of ``BENCHMARKS.md``
(or ``--md``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import fmt, replace_section, save_json

MODELS = ("torchslim:fashion_resnet", "torchvision:mobilenet_v2", "torchslim:minilm")
RUNTIMES = ("eager", "onnxruntime", "openvino")
TARGET = 0.15


def _build(loaded: Any, runtime: str, threads: int) -> Any:
    from torchslim.runtimes import build
    from torchslim.runtimes.configs import OpenVINOConfig, OrtConfig

    inputs = loaded.input_spec.example_inputs(1)
    if runtime == "eager":
        return loaded.module
    if runtime == "onnxruntime":
        return build(loaded.module, OrtConfig(intra_op_threads=threads), inputs)
    return build(loaded.module, OpenVINOConfig(threads=threads), inputs)


def bench_model(
    source: str, threads: int, iterations: int, repeats: int, rounds: int = 3
) -> dict[str, Any]:
    """Interleaved end-to-end latency and a profile per runtime for one model."""
    from torchslim.measure import BenchTarget, measure_models
    from torchslim.models import load_model
    from torchslim.profile import profile
    from torchslim.profile._common import median
    from torchslim.timing import TimingConfig

    try:
        loaded = load_model(source)
    except Exception as exc:  # e.g. MiniLM without its weights package
        return {"source": source, "skipped": f"{type(exc).__name__}: {exc}"}
    spec = loaded.input_spec
    built: dict[str, Any] = {}
    build_s: dict[str, float] = {}
    for rt in RUNTIMES:
        start = time.perf_counter()
        try:
            built[rt] = _build(loaded, rt, threads)
        except Exception as exc:
            built[rt] = None
            build_s[rt] = float("nan")
            print(f"  {source} {rt}: build failed: {exc}", file=sys.stderr)
            continue
        build_s[rt] = time.perf_counter() - start
    runtimes = [rt for rt in RUNTIMES if built.get(rt) is not None]
    targets = [
        BenchTarget(rt, built[rt], spec.example_inputs, module=loaded.module, threads=threads)
        for rt in runtimes
    ]
    config = TimingConfig(min_samples=repeats, min_time_s=1.0, max_time_s=4.0)
    per_round: dict[str, list[dict[str, Any]]] = {rt: [] for rt in runtimes}
    for _ in range(rounds):
        # bench (all runtimes interleaved), then each runtime's profile: repeated, so that
        # machine drift hits both sides alike; medians over the rounds are reported.
        measured = measure_models(targets, [1], threads=threads, config=config)
        bench = {m.name: m.batches[1].latency.p50_ms for m in measured}
        fastest = {m.name: m.batches[1].latency.min_ms for m in measured}
        for rt in runtimes:
            target = loaded if rt == "eager" else dataclasses.replace(loaded, deployed=built[rt])
            start = time.perf_counter()
            res = profile(
                target, runtime=rt, iterations=iterations, threads=threads, peak=False, save=False
            )
            per_round[rt].append(
                {
                    "bench": bench[rt],
                    "bench_min": fastest[rt],
                    "res": res,
                    "wall": time.perf_counter() - start,
                }
            )
    rows = []
    for rt in runtimes:
        rounds_ = per_round[rt]
        lat = median([r["bench"] for r in rounds_])
        layer_sum = median([r["res"].layer_sum_ms for r in rounds_])
        profiled = median([r["res"].profiled_ms for r in rounds_])
        res = min(rounds_, key=lambda r: abs(r["res"].layer_sum_ms - layer_sum))["res"]
        top = res.slowest()
        rows.append(
            {
                "runtime": rt,
                "rounds": len(rounds_),
                "bench_p50_ms": lat,
                "bench_p50_ms_rounds": [r["bench"] for r in rounds_],
                "bench_min_ms": min(r["bench_min"] for r in rounds_),
                "profile_latency_ms": median([r["res"].latency_ms for r in rounds_]),
                "layer_sum_ms": layer_sum,
                "layer_sum_ms_rounds": [r["res"].layer_sum_ms for r in rounds_],
                "sum_over_bench": layer_sum / lat,
                "outside_layers_ms": lat - layer_sum,
                "profiled_ms": profiled,
                "profiler_overhead": profiled / lat - 1.0,
                "layers": len(res.layers),
                "top_layer": f"{top.module or top.name} ({top.type})",
                "top_share": top.share,
                "findings": [f.id for f in res.findings],
                "build_s": build_s[rt],
                "profile_s": median([r["wall"] for r in rounds_]),
            }
        )
        print(
            f"  {source} t{threads} {rt}: bench {lat:.3f} ms, layers {layer_sum:.3f} ms "
            f"({layer_sum / lat:.0%}), profiled call {profiled:.3f} ms",
            file=sys.stderr,
        )
    return {"source": source, "input_spec": str(spec), "rows": rows}


def _markdown(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        "## profile",
        "",
        "`torchslim profile` per-layer times summed (Σ layers) against the end-to-end batch-1 "
        "median that `torchslim bench` measures (interleaved, no profiler; the profile's own "
        "unprofiled median, taken just before profiling, beside it), and the median wall "
        "time of one call while the profiler runs (profiler overhead = profiled call / bench − 1). "
        f"Batch 1, {meta['threads']} threads, {meta['iterations']} profiled calls per runtime, "
        f"{meta.get('rounds', 1)} rounds of (bench, profile) with the medians shown; "
        f"{meta['machine']}. Ran on a shared 2-core machine with other test runs going on "
        "(load average "
        f"{meta['load_before']:.1f} before, {meta['load_after']:.1f} after): absolute numbers are "
        "noisy; bench and profile alternate round by round on the same built objects.",
        "",
        "| model | threads | runtime | bench p50 ms | bench min ms | profile's own p50 ms | "
        "Σ layers ms | Σ / bench p50 | Σ / bench min | outside layers ms | profiled call ms | "
        "profiler overhead | slowest layer (share) | within 15% (of p50 / of min) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for res in results:
        if "skipped" in res:
            lines.append(
                f"| {res['source']} | {res['threads']} | — | skipped: {res['skipped'][:120]} "
                "|||||||||||"
            )
            continue
        for r in res["rows"]:
            ok = abs(r["sum_over_bench"] - 1.0) <= TARGET
            best = r.get("bench_min_ms")
            ratio_min = r["layer_sum_ms"] / best if best else None
            ok_min = ratio_min is not None and abs(ratio_min - 1.0) <= TARGET
            lines.append(
                f"| {res['source']} | {res['threads']} | {r['runtime']} | "
                f"{fmt(r['bench_p50_ms'], 3)} | {fmt(best, 3)} | "
                f"{fmt(r['profile_latency_ms'], 3)} | "
                f"{fmt(r['layer_sum_ms'], 3)} | {r['sum_over_bench']:.2f} | {fmt(ratio_min, 2)} | "
                f"{fmt(r['outside_layers_ms'], 3)} | {fmt(r['profiled_ms'], 3)} | "
                f"{r['profiler_overhead']:+.0%} | {r['top_layer']} ({r['top_share']:.0%}) | "
                f"{'yes' if ok else '**no**'} / {'yes' if ok_min else '**no**'} |"
            )
    rows = [r for res in results if "rows" in res for r in res["rows"]]
    bracketed = sum(
        1 for r in rows if r.get("bench_min_ms", 0) <= r["layer_sum_ms"] <= r["bench_p50_ms"]
    )
    within = sum(1 for r in rows if abs(r["sum_over_bench"] - 1.0) <= TARGET)
    lines += [
        "",
        f"Verdict: within 15% of bench p50 in {within} of {len(rows)} rows; Σ layers lies between "
        f"bench's fastest call and its median in {bracketed} of {len(rows)} rows. "
        + (
            "The 15% target is not verified on this run: the machine's load moved the "
            "end-to-end numbers more than the per-layer ones (see (2) below); rerun on a quiet "
            "machine."
            if meta.get("load_before", 0) > 2 and within < len(rows)
            else ""
        ),
    ]
    if str(meta["threads"]) == "1":
        lines += [
            "",
            "Only 1 thread is shown: with 2 threads on the same overloaded machine, eager calls "
            "ran several times slower under the profiler (an intra-op worker thread waiting for "
            "a descheduled peer at every parallel region); `torchslim profile` detects a "
            "profiled call over 2× the unprofiled one and suggests `--threads 1`.",
        ]
    lines += [
        "",
        "What the difference is. (1) Framework overhead: Σ layers counts only time inside the "
        "runtime's layers (ATen operators for eager, graph nodes for ONNX Runtime, executed "
        "layers for OpenVINO); Python and module dispatch between operators in eager, input "
        "binding and the run loop in ONNX Runtime, the infer request's own work in OpenVINO are "
        "outside every layer — at batch 1 this is real, and what the `call-overhead` advice "
        "reports. (2) Machine load: each layer's time is a trimmed mean over the profiled calls "
        "(slowest and fastest fifth dropped), so a call preempted in the middle of one layer "
        "does not inflate that layer, while bench's median includes every preempted call. At a "
        "load average around 10 on 2 cores most calls were preempted, which pulls Σ / bench "
        "p50 well below 1; Σ / bench min (the least disturbed call) is the fairer comparison "
        "on such a machine. (3) Profiler overhead (profiled call vs bench): the eager profiler "
        "records shapes, FLOPs and memory for every operator; ONNX Runtime's and OpenVINO's "
        "counters cost little. A negative overhead means the profiled calls happened to be "
        "less disturbed than the bench calls.",
        "",
        "Reproduce: `.venv/bin/python benchmarks/bench_profile.py` (raw numbers in "
        "`benchmarks/results/profile.json`).",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--threads", default="1,2", help="Thread counts, comma-separated.")
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3, help="bench + profile rounds (medians).")
    parser.add_argument("--md", action="store_true", help="Print the markdown, write nothing.")
    parser.add_argument(
        "--from-json",
        action="store_true",
        help="Rewrite the section from benchmarks/results/profile.json without measuring.",
    )
    args = parser.parse_args()
    if args.from_json:
        import json

        from _report import RESULTS

        data = json.loads((RESULTS / "profile.json").read_text())
        replace_section("profile", _markdown(data["results"], data["meta"]))
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from torchslim.machine import machine_info

    threads = [int(t) for t in args.threads.split(",")]
    load_before = os.getloadavg()[0]
    results = []
    for t in threads:
        torch.set_num_threads(t)
        results += [
            {**bench_model(src, t, args.iterations, args.repeats, args.rounds), "threads": t}
            for src in args.models.split(",")
        ]
    meta = {
        "threads": args.threads,
        "iterations": args.iterations,
        "rounds": args.rounds,
        "machine": machine_info(include_gpu=False).summary(),
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "torch": torch.__version__,
    }
    md = _markdown(results, meta)
    if args.md:
        print(md)
        return
    save_json("profile", {"meta": meta, "results": results})
    replace_section("profile", md)
    print(md)


if __name__ == "__main__":
    main()
