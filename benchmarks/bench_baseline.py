"""Eager FP32 baseline of the reference models and torchvision ResNet-18 / MobileNetV2.

Measures every model interleaved (A B C D A B C D …) at batch 1 and 32 with 2 threads, evaluates
the reference models on the packaged Fashion-MNIST test subset, and writes the ``baseline``
section of BENCHMARKS.md plus ``benchmarks/results/baseline.json``.

Run: ``.venv/bin/python benchmarks/bench_baseline.py [--threads 2] [--min-time 2]``
"""

from __future__ import annotations

import argparse
import time

import torch

from torchslim.data import load_data
from torchslim.evaluate import Evaluator
from torchslim.machine import machine_info, measure_peak
from torchslim.measure import BenchTarget, TimingConfig, measure_models, measurements_to_dict
from torchslim.models import load_model

try:  # run as a script from the repo root or from benchmarks/
    from _report import fmt, replace_section, save_json
except ImportError:  # pragma: no cover
    from benchmarks._report import fmt, replace_section, save_json

MODELS = (
    "torchslim:fashion_cnn",
    "torchslim:fashion_resnet",
    "torchvision:resnet18",
    "torchvision:mobilenet_v2",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--min-time", type=float, default=2.0)
    parser.add_argument("--batch", default="1,32")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batch.split(",")]

    data = load_data("torchslim:fashion_mnist")
    accuracy: dict[str, float | None] = {}
    targets = []
    for src in MODELS:
        loaded = load_model(src)
        if src.startswith("torchslim:"):
            res = Evaluator(data).set_baseline(loaded.require_module())
            accuracy[src] = res.value
        targets.append(BenchTarget.from_loaded(loaded, name=src))

    peak = measure_peak(threads=args.threads)
    config = TimingConfig(min_time_s=args.min_time, max_time_s=max(10.0, 5 * args.min_time))
    start = time.time()
    results = measure_models(targets, batches, threads=args.threads, config=config, peak=peak)
    report = measurements_to_dict(results, peak=peak, config=config)
    report["accuracy"] = accuracy
    report["wall_s"] = time.time() - start
    save_json("baseline", report)

    info = machine_info()
    lines = [
        "## Eager FP32 baseline",
        "",
        f"Machine: {info.summary()}; {args.threads} threads; torch {torch.__version__}. "
        f"Measured GEMM peak: {peak.summary()}. Models interleaved; p50 with its 95% CI.",
        "Accuracy: top-1 on the packaged Fashion-MNIST test subset (2,000 images); torchvision "
        "models have random weights offline (speed only).",
        "",
        "| model | params | size MB | GFLOPs/item | top-1 | batch | p50 ms [95% CI] | p99 ms "
        "| items/s | % of peak |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in results:
        acc = accuracy.get(m.name)
        for b, bm in m.batches.items():
            lat = bm.latency
            lines.append(
                f"| {m.name} | {m.params:,} | {fmt(m.size_mb)} | "
                f"{fmt((m.flops_per_item or 0) / 1e9, 3)} | "
                f"{'—' if acc is None else f'{100 * acc:.2f}%'} | {b} | "
                f"{fmt(lat.p50_ms, 3)} [{fmt(lat.ci95_low_ms, 3)}–{fmt(lat.ci95_high_ms, 3)}] | "
                f"{fmt(lat.p99_ms, 3)} | {fmt(bm.throughput_per_s, 1)} | "
                f"{fmt(bm.percent_of_peak, 1)} |"
            )
    lines.append("")
    lines.append(
        f"Load average during the run: {report.get('load_avg')}. "
        "Reproduce: `.venv/bin/python benchmarks/bench_baseline.py`."
    )
    replace_section("baseline", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
