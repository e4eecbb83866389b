"""Runtimes × models × batch sizes, measured interleaved; writes the "Runtimes" section.

For each model every runtime is built (export/compile time recorded), checked for parity against
eager FP32 (a runtime that fails parity is reported and not timed), saved to measure its on-disk
size, then all runtimes of that model are timed **interleaved** at each batch size with
:func:`torchslim.measure.measure_models` (first call reported apart from the median).

    .venv/bin/python benchmarks/bench_runtimes.py                  # all models, batch 1 and 32
    .venv/bin/python benchmarks/bench_runtimes.py --models torchvision:resnet18 --batch 1

Results: ``benchmarks/results/runtimes.json`` and the ``runtimes`` section of
``BENCHMARKS.md`` (or ``--md``).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import ROOT, fmt, replace_section, save_json

from torchslim.machine import machine_info
from torchslim.measure import BenchTarget, TimingConfig, measure_models
from torchslim.models import load_model
from torchslim.parity import check_parity
from torchslim.runtimes import build, list_runtimes
from torchslim.runtimes import configs as c

DEFAULT_MODELS = (
    "torchslim:fashion_cnn",
    "torchslim:fashion_resnet",
    "torchvision:resnet18",
    "torchvision:mobilenet_v2",
    "torchslim:minilm",
)

VARIANTS: dict[str, Any] = {
    "eager": c.EagerConfig(),
    "inductor (freezing)": c.InductorConfig(),
    "torchscript": c.TorchScriptConfig(),
    "onnxruntime": c.OrtConfig(),
    "openvino f32": c.OpenVINOConfig(),
    "openvino default (bf16)": c.OpenVINOConfig(precision=c.Precision.DEFAULT),
}


def _dir_bytes(path: Path) -> int:
    return sum(
        p.stat().st_size for p in path.rglob("*") if p.is_file() and p.name != "runtime.json"
    )


def bench_model(
    source: str, batches: list[int], variants: dict[str, Any], timing: TimingConfig, log: Any
) -> dict[str, Any]:
    """Build, check, size and time every variant for one model."""
    loaded = load_model(source)
    module, spec = loaded.require_module(), loaded.input_spec
    assert spec is not None
    example = spec.example_inputs(batch_size=2)
    available = {e.name for e in list_runtimes() if e.available()}
    built: dict[str, Any] = {}
    facts: dict[str, dict[str, Any]] = {}
    for name, cfg in variants.items():
        runtime = next(e.name for e in list_runtimes() if e.key == type(cfg).__name__)
        if runtime not in available:
            facts[name] = {"error": "unavailable"}
            continue
        t0 = time.perf_counter()
        try:
            dep = build(module, cfg, example)
            report = check_parity(dep, module, spec, batch_sizes=(1, 4))
        except Exception as exc:
            facts[name] = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
            log(f"  {name}: FAILED {facts[name]['error']}")
            continue
        size = None
        if runtime != "inductor":  # saving inductor = a full AOTInductor compile; skipped here
            tmp = Path(tempfile.mkdtemp(prefix="bench-rt-"))
            try:
                dep.save(tmp / "m")
                size = _dir_bytes(tmp / "m")
            except Exception as exc:
                log(f"  {name}: save failed: {exc}")
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        facts[name] = {
            "build_s": dep.build_seconds,
            "precision": report.precision,
            "parity_max_rel_error": report.max_rel_error,
            "parity_min_cosine": report.min_cosine,
            "size_mb": None if size is None else size / 2**20,
        }
        built[name] = dep
        log(
            f"  {name}: built in {dep.build_seconds:.1f} s ({time.perf_counter() - t0:.1f} s "
            f"with parity), {report.summary()}"
        )
    targets = [BenchTarget(n, d, spec.example_inputs) for n, d in built.items()]
    measured = measure_models(targets, batches, config=timing, memory=False, progress=None)
    rows = []
    for m in measured:
        for b, bm in m.batches.items():
            rows.append(
                {
                    "model": source,
                    "runtime": m.name,
                    "batch": b,
                    "p50_ms": bm.latency.p50_ms,
                    "ci95_ms": [bm.latency.ci95_low_ms, bm.latency.ci95_high_ms],
                    "first_call_ms": bm.first_call_ms,
                    **facts[m.name],
                }
            )
    for b in batches:
        base = next(
            (r["p50_ms"] for r in rows if r["batch"] == b and r["runtime"] == "eager"), None
        )
        for r in rows:
            if r["batch"] == b and base:
                r["ratio_to_eager"] = r["p50_ms"] / base
    failures = [
        {"model": source, "runtime": n, "error": f["error"]}
        for n, f in facts.items()
        if "error" in f
    ]
    return {
        "rows": rows,
        "failures": failures,
        "load_avg": measured[0].load_avg if measured else None,
    }


def to_markdown(
    results: list[dict[str, Any]], info: Any, threads: int, batches: list[int], seconds: float
) -> str:
    """The "Runtimes" section."""
    lines = [
        "## Runtimes",
        "",
        f"Machine: {info.summary()}. torch {torch.__version__}, {threads} threads. "
        f"Measured with `benchmarks/bench_runtimes.py` in {seconds / 60:.1f} min; runtimes of one "
        "model are timed interleaved at each batch size (p50 of steady state; the first call is "
        "reported apart). Every runtime passed parity against eager FP32 at batch 1 and 4 "
        "(and sequence 128 and 17 for MiniLM, with padded masks) before it was timed; "
        "the precision column says which tolerance applied. Load averages are given per model; "
        "batch-1 numbers swing about ±30% between runs on this 2-core machine: compare ratios.",
        "",
        "Build = export/conversion/compile time (for inductor, the compiling first call at "
        "batch 2). Size = files written by `save()` (inductor would need a full AOTInductor "
        "compile to save; not measured here).",
        "",
    ]
    for res in results:
        rows = res["rows"]
        if not rows:
            continue
        model = rows[0]["model"]
        lines += [
            f"### {model}",
            "",
            "| runtime | precision | "
            + " | ".join(f"p50 b{b} (ms) | × eager b{b} | first call b{b} (ms)" for b in batches)
            + " | build (s) | size (MB) | parity rel. err |",
            "|---|---|" + "---:|" * (3 * len(batches) + 3),
        ]
        for name in dict.fromkeys(r["runtime"] for r in rows):
            by_b = {r["batch"]: r for r in rows if r["runtime"] == name}
            first = next(iter(by_b.values()))
            cells = []
            for b in batches:
                r = by_b.get(b)
                cells += (
                    [
                        fmt(r["p50_ms"], 2),
                        fmt(r.get("ratio_to_eager"), 2),
                        fmt(r["first_call_ms"], 1),
                    ]
                    if r
                    else ["—"] * 3
                )
            lines.append(
                f"| {name} | {first.get('precision', '—')} | "
                + " | ".join(cells)
                + f" | {fmt(first.get('build_s'), 1)} | {fmt(first.get('size_mb'), 1)} | "
                f"{first.get('parity_max_rel_error', 0):.1e} |"
            )
        for f in res["failures"]:
            lines.append(f"\nNot timed: {f['runtime']} — {f['error']}")
        if res.get("load_avg"):
            lines.append(f"\nLoad average before/after: {res['load_avg']}.")
        lines.append("")
    return "\n".join(lines)


def auto_section(models: list[str], batches: list[int], log: Any) -> tuple[str, list[Any]]:
    """Run :func:`torchslim.runtimes.auto.autotune` and tabulate its choice per batch size."""
    from torchslim.runtimes.auto import autotune

    lines = [
        "### `--runtime auto`: what autotune picks here",
        "",
        "autotune builds eager, TorchScript, ONNX Runtime and OpenVINO (F32, latency and "
        "throughput hints) at 1 and 2 threads, checks parity, times them all interleaved and "
        "picks the fastest p50 per batch size (Inductor left out here for time).",
        "",
        "| model | batch | pick | p50 (ms) | × eager (2 threads) | runner-up | runner-up p50 (ms) |",
        "|---|---:|---|---:|---:|---|---:|",
    ]
    raw = []
    for source in models:
        loaded = load_model(source)
        log(f"autotune {source}")
        res = autotune(
            loaded.require_module(),
            loaded.input_spec,  # type: ignore[arg-type]
            runtimes=("eager", "torchscript", "onnxruntime", "openvino"),
            batch_sizes=batches,
            threads=(1, 2),
        )
        raw.append({"model": source, **res.to_dict()})
        for b in batches:
            rows = sorted((r for r in res.rows if r.batch_size == b), key=lambda r: r.p50_ms)
            best, second = rows[0], rows[1] if len(rows) > 1 else None
            lines.append(
                f"| {source} | {b} | {best.variant} | {fmt(best.p50_ms, 3)} | "
                f"{fmt(best.ratio_to_eager, 2)} | {second.variant if second else '—'} | "
                f"{fmt(second.p50_ms if second else None, 3)} |"
            )
    return "\n".join(lines) + "\n", raw


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS))
    ap.add_argument("--batch", default="1,32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--runtimes",
        default=",".join(VARIANTS),
        help="Comma-separated variant names (see VARIANTS).",
    )
    ap.add_argument("--max-time", type=float, default=2.0, help="Seconds per runtime and batch.")
    ap.add_argument("--md", default=str(ROOT / "BENCHMARKS.md"))
    ap.add_argument("--tag", default="", help="Suffix for the JSON results file name.")
    ap.add_argument(
        "--auto-models",
        default="",
        help="Also run autotune on these models (comma-separated) and tabulate its picks.",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batch.split(",")]
    variants = {k: VARIANTS[k] for k in args.runtimes.split(",")}
    timing = TimingConfig(
        min_samples=10, min_time_s=0.5, max_time_s=args.max_time, max_warmup_s=2.0, round_time_s=0.1
    )
    start = time.perf_counter()
    results = []

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    for source in args.models.split(","):
        log(f"{source}")
        try:
            results.append(bench_model(source, batches, variants, timing, log))
        except Exception as exc:
            log(f"  skipped: {exc}")
    auto_md, auto_raw = "", []
    if args.auto_models:
        auto_md, auto_raw = auto_section(args.auto_models.split(","), batches, log)
    seconds = time.perf_counter() - start
    info = machine_info(include_gpu=False)
    save_json(
        f"runtimes{args.tag}",
        {
            "machine": info.to_dict(),
            "threads": args.threads,
            "batches": batches,
            "results": results,
            "auto": auto_raw,
            "seconds": seconds,
        },
    )
    md = to_markdown(results, info, args.threads, batches, seconds) + "\n" + auto_md
    replace_section("runtimes", md, Path(args.md))
    print(md)


if __name__ == "__main__":
    main()
