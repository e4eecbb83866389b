"""Quantization side by side: torchslim's methods × backends against the peers run by hand.

For each model, every row is built, checked on the same evaluation inputs against the FP32
module, then all rows are timed INTERLEAVED (``torchslim.measure.measure_models``, batch 1 and
32, same threads) so machine drift hits them alike; speed-ups are ratios to eager FP32 measured
in the same rounds.

Rows:

* ``eager fp32``: the PyTorch module (baseline).
* ``torchslim <method>/<backend>``: ``torchslim.quantize(model, QuantizeConfig(...))`` with
  default settings apart from the method and backend.
* ``peer ORT INT8 static``: ``onnxruntime.quantization.quantize_static`` called directly on the
  ``torch.onnx.export`` graph after ``quant_pre_process`` (QDQ, MinMax, ORT's defaults).
* ``peer OpenVINO INT8 (NNCF)``: ``nncf.quantize`` on ``openvino.convert_model`` with NNCF's
  defaults (``model_type=TRANSFORMER`` for MiniLM, as NNCF's documentation says to).

Evaluation: Fashion-MNIST references: top-1 on the packaged test subset (2,000 images),
calibrated on ``torchslim:fashion_mnist?split=train&limit=512``. MiniLM: polarity accuracy
(5-fold × 5 logistic regression) and Lee-50 Pearson, calibrated on ``torchslim:text_polarity``.
torchvision ResNet-18 / MobileNetV2 at 224²: random weights offline, so fidelity only (cosine,
SQNR, top-1 agreement) on synthetic inputs, calibrated on synthetic Gaussian images.

A row that fails is recorded with its error; the run goes on.

Run: ``.venv/bin/python benchmarks/bench_quantize.py [--models fashion_cnn,minilm] [--quick]``
(``--models`` merges into the existing results, so a partial run keeps the other models).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

try:  # run as a script from the repo root or from benchmarks/
    from _report import RESULTS, fmt, replace_section, save_json
except ImportError:  # pragma: no cover
    from benchmarks._report import RESULTS, fmt, replace_section, save_json

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

INT8_METHODS = ("dynamic", "static", "weight_only", "qat")

# method/backend rows per model kind; (full, quick)
VISION_ROWS = (
    "dynamic/torch",
    "dynamic/onnxruntime",
    "static/torch",
    "static/onnxruntime",
    "static/openvino",
    "weight_only/torch",
    "weight_only/openvino",
    "bf16/torch",
    "bf16/openvino",
)
# fp16 has no native kernels on most CPUs (emulated, very slow) and QAT trains: both only on the
# smallest model, to keep the full run short.
SMALL_EXTRA = ("fp16/torch", "qat/torch")
TEXT_ROWS = (
    "dynamic/torch",
    "dynamic/onnxruntime",
    "static/onnxruntime",
    "static/openvino",
    "static/torch",
    "weight_only/torch",
    "weight_only/openvino",
    "bf16/torch",
    "bf16/openvino",
)
QUICK_ROWS = ("dynamic/onnxruntime", "static/onnxruntime", "static/openvino", "static/torch")


@dataclass
class Spec:
    """One benchmarked model and its data."""

    key: str
    source: str
    kind: str  # "real" (labelled vision), "text", "synthetic" (fidelity only)
    module: Any
    loaded: Any
    calib: Any
    eval: Any
    make_inputs: Callable[[int], tuple[Any, ...]]
    rows: tuple[str, ...]
    extra: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------
# models and data
# ------------------------------------------------------------------------------------------------


def _slicer(xs: tuple[torch.Tensor, ...]) -> Callable[[int], tuple[Any, ...]]:
    def make(batch: int) -> tuple[Any, ...]:
        n = xs[0].shape[0]
        reps = -(-batch // n)
        return tuple(
            (x.repeat(reps, *([1] * (x.dim() - 1))) if reps > 1 else x)[:batch].contiguous()
            for x in xs
        )

    return make


def build_spec(key: str, quick: bool) -> Spec:
    from torchslim.data import DataSet, load_data
    from torchslim.models import load_model

    if key in ("fashion_cnn", "fashion_resnet"):
        loaded = load_model(f"torchslim:{key}")
        calib = load_data("torchslim:fashion_mnist?split=train&limit=512")
        ev = load_data("torchslim:fashion_mnist")
        rows = QUICK_ROWS if quick else VISION_ROWS
        if key == "fashion_cnn" and not quick:
            rows = rows + SMALL_EXTRA
        return Spec(
            key,
            loaded.source,
            "real",
            loaded.require_module(),
            loaded,
            calib,
            ev,
            _slicer(ev.inputs),
            rows,
        )
    if key == "minilm":
        from torchslim.reference.text import load_lee50

        loaded = load_model("torchslim:minilm")
        pol = load_data("torchslim:text_polarity")
        rows = QUICK_ROWS[:3] if quick else TEXT_ROWS
        return Spec(
            key,
            loaded.source,
            "text",
            loaded.require_module(),
            loaded,
            pol,
            pol,
            _slicer(pol.inputs),
            rows,
            {"lee50": load_lee50()},
        )
    if key in ("resnet18", "mobilenet_v2"):
        loaded = load_model(f"torchvision:{key}")
        gen = torch.Generator().manual_seed(0)
        n_cal = 32 if quick else 64
        calib = DataSet(
            "synthetic N(0,1) 3x224x224",
            (torch.randn(n_cal, 3, 224, 224, generator=gen),),
            synthetic=True,
        )
        ev = DataSet(
            "synthetic N(0,1) 3x224x224 (held out)",
            (torch.randn(32, 3, 224, 224, generator=gen),),
            synthetic=True,
        )
        rows = QUICK_ROWS if quick else VISION_ROWS
        return Spec(
            key,
            loaded.source,
            "synthetic",
            loaded.require_module(),
            loaded,
            calib,
            ev,
            _slicer(ev.inputs),
            rows,
        )
    raise SystemExit(f"unknown model '{key}'")


# ------------------------------------------------------------------------------------------------
# evaluation (same data, same FP32 baseline for every row)
# ------------------------------------------------------------------------------------------------


class Scorer:
    """Scores any ``fn(*torch_inputs) -> tensor`` against the FP32 module on the model's data."""

    def __init__(self, spec: Spec) -> None:
        from torchslim.evaluate import Evaluator, embedding_polarity_metric

        self.spec = spec
        metric: Any = embedding_polarity_metric if spec.kind == "text" else "top1"
        self.evaluator = Evaluator(spec.eval, metric, batch_size=32)
        self.base = self.evaluator.set_baseline(spec.module)
        self.base_lee = self._lee(spec.module) if spec.kind == "text" else None

    def _lee(self, fn: Any) -> float | None:
        from torchslim.reference.text import lee50_pearson

        return lee50_pearson(fn, self.spec.extra["lee50"])

    def baseline(self) -> dict[str, Any]:
        return {"metric": self.base.value, "lee50": self.base_lee}

    def score(self, fn: Any) -> dict[str, Any]:
        with torch.inference_mode():
            res = self.evaluator.evaluate(fn)
            out: dict[str, Any] = {"metric": res.value}
            if res.fidelity is not None:
                fid = res.fidelity
                out.update(
                    cosine=fid.cosine,
                    sqnr_db=fid.sqnr_db,
                    agreement=fid.agreement,
                    max_abs_error=fid.max_abs_error,
                )
            if self.spec.kind == "text":
                out["lee50"] = self._lee(fn)
        return out


# ------------------------------------------------------------------------------------------------
# rows
# ------------------------------------------------------------------------------------------------


@dataclass
class Row:
    name: str
    group: str  # baseline | torchslim | peer
    method: str = "fp32"
    predict: Any = None
    size_mb: float | None = None
    quantize_s: float | None = None
    build_s: float | None = None
    calibration_s: float | None = None
    scores: dict[str, Any] = field(default_factory=dict)
    notes: str = ""
    error: str | None = None
    keep: Any = None  # objects that must stay alive (temp dirs, sessions)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "group": self.group,
            "method": self.method,
            "size_mb": self.size_mb,
            "quantize_s": self.quantize_s,
            "build_s": self.build_s,
            "calibration_s": self.calibration_s,
            "scores": self.scores,
            "notes": self.notes,
            "error": self.error,
        }


def _short_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {(text[0] if text else '')[:300]}"


def _dir_mb(path: Path, suffixes: tuple[str, ...]) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.suffix in suffixes) / 1e6


def _param_mb(module: Any) -> float:
    """MB (10^6 bytes) of the module's parameters and buffers in memory."""
    total = sum(p.numel() * p.element_size() for p in module.parameters())
    total += sum(b.numel() * b.element_size() for b in module.buffers())
    return total / 1e6


def eager_row(spec: Spec) -> Row:
    module = spec.module.eval()

    def predict(*xs: Any) -> Any:
        return module(*xs)

    return Row("eager fp32", "baseline", "fp32", predict, round(_param_mb(module), 3))


def torchslim_row(spec: Spec, combo: str, args: argparse.Namespace) -> Row:
    import torchslim
    from torchslim.passes.quantize import QuantizeConfig

    method, backend = combo.split("/")
    row = Row(f"torchslim {combo}", "torchslim", method)
    kwargs: dict[str, Any] = {"method": method, "backend": backend}
    if method == "qat":
        kwargs["qat_steps"] = 100 if args.quick else 200
    start = time.perf_counter()
    q = torchslim.quantize(
        spec.loaded,
        QuantizeConfig(**kwargs),
        calib=spec.calib,
        eval=spec.eval,
        train=spec.calib if method == "qat" else None,
    )
    rep = q.reports[0] if q.reports else {}  # the quantization pass's own report
    # quantize_s: the pass itself (as before); build_s adds writing the deployment files
    row.quantize_s = round(rep.get("seconds", time.perf_counter() - start), 2)
    row.build_s = round(q.build_seconds, 2)
    row.calibration_s = rep.get("calibration_seconds") or rep.get("qat_seconds")
    row.size_mb = None if q.size_mb is None else round(q.size_mb, 4)  # MB of deployment files
    fid = q.evaluation.fidelity if q.evaluation is not None else None
    row.scores = {
        "metric": q.accuracy,
        "cosine": None if fid is None else fid.cosine,
        "sqnr_db": None if fid is None else fid.sqnr_db,
        "agreement": None if fid is None else fid.agreement,
        "max_abs_error": None if fid is None else fid.max_abs_error,
    }
    if spec.kind == "text":
        from torchslim.reference.text import lee50_pearson

        row.scores["lee50"] = lee50_pearson(q, spec.extra["lee50"])
    floats = rep.get("float_layers") or {}
    notes = [f"runtime {q.runtime}"]
    if rep.get("native_support") is False:
        notes.append("no native kernels on this CPU")
    if floats and method in INT8_METHODS:
        notes.append(f"{len(floats)} layer(s) float")
    row.notes = "; ".join(notes)
    row.predict = q
    row.keep = q
    return row


def _onnx_export(spec: Spec, path: Path) -> list[str]:
    """What a user writes: ``torch.onnx.export`` with a dynamic batch axis."""
    xs = spec.make_inputs(2)
    names = ["input_ids", "attention_mask"] if spec.kind == "text" else ["input"]
    batch = torch.export.Dim("batch", min=1, max=1024)
    dyn = tuple({0: batch} for _ in xs)
    torch.onnx.export(
        spec.module,
        xs,
        str(path),
        input_names=names,
        output_names=["output"],
        dynamic_shapes=dyn,
        dynamo=True,
        external_data=False,
    )
    return names


def peer_ort_row(spec: Spec) -> Row:
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    row = Row("peer ORT INT8 static (direct)", "peer", "static")
    tmp = tempfile.TemporaryDirectory(prefix="bench-ort-")
    wd = Path(tmp.name)
    start = time.perf_counter()
    names = _onnx_export(spec, wd / "float.onnx")
    pre_note = "quant_pre_process"
    try:
        quant_pre_process(str(wd / "float.onnx"), str(wd / "pre.onnx"))
    except Exception:  # MiniLM: ORT's symbolic shape inference fails; skip it, as ORT suggests
        quant_pre_process(str(wd / "float.onnx"), str(wd / "pre.onnx"), skip_symbolic_shape=True)
        pre_note = "quant_pre_process(skip_symbolic_shape=True)"
    calib = spec.calib.take(min(len(spec.calib), 300), seed=0)

    class Reader(CalibrationDataReader):  # one sample per call, as in ORT's examples
        def __init__(self) -> None:
            self.items = iter(range(len(calib)))

        def get_next(self) -> dict[str, Any] | None:
            i = next(self.items, None)
            if i is None:
                return None
            return {n: x[i : i + 1].numpy() for n, x in zip(names, calib.inputs, strict=True)}

    c0 = time.perf_counter()
    quantize_static(str(wd / "pre.onnx"), str(wd / "int8.onnx"), Reader())
    row.calibration_s = round(time.perf_counter() - c0, 2)
    row.quantize_s = round(time.perf_counter() - start, 2)
    so = ort.SessionOptions()
    so.intra_op_num_threads = torch.get_num_threads()
    sess = ort.InferenceSession(str(wd / "int8.onnx"), so, providers=["CPUExecutionProvider"])
    row.size_mb = round((wd / "int8.onnx").stat().st_size / 1e6, 3)

    def predict(*xs: Any) -> Any:
        return torch.from_numpy(
            sess.run(None, {n: x.numpy() for n, x in zip(names, xs, strict=True)})[0]
        )

    row.predict, row.keep = predict, (tmp, sess)
    row.notes = f"QDQ, MinMax, per-tensor (ORT defaults), {pre_note}"
    return row


def peer_ov_row(spec: Spec) -> Row:
    import nncf
    import openvino as ov

    row = Row("peer OpenVINO INT8 (NNCF direct)", "peer", "static")
    start = time.perf_counter()
    with torch.no_grad():
        model = ov.convert_model(spec.module, example_input=spec.make_inputs(1))
    calib = spec.calib.take(min(len(spec.calib), 300), seed=0)
    items = [tuple(x[i : i + 1].numpy() for x in calib.inputs) for i in range(len(calib))]
    c0 = time.perf_counter()
    kwargs: dict[str, Any] = {}
    if spec.kind == "text":
        kwargs["model_type"] = nncf.ModelType.TRANSFORMER
    qmodel = nncf.quantize(model, nncf.Dataset(items, lambda it: list(it)), **kwargs)
    row.calibration_s = round(time.perf_counter() - c0, 2)
    core = ov.Core()
    compiled = core.compile_model(qmodel, "CPU", {"INFERENCE_NUM_THREADS": torch.get_num_threads()})
    row.quantize_s = round(time.perf_counter() - start, 2)
    with tempfile.TemporaryDirectory() as tmp:
        ov.save_model(qmodel, str(Path(tmp) / "m.xml"), compress_to_fp16=False)
        row.size_mb = round(_dir_mb(Path(tmp), (".xml", ".bin")), 3)
    req = compiled.create_infer_request()

    def predict(*xs: Any) -> Any:
        req.infer([x.numpy() for x in xs], share_inputs=True)
        return torch.from_numpy(req.get_output_tensor(0).data.copy())

    row.predict, row.keep = predict, (compiled, req)
    row.notes = "NNCF defaults" + (", model_type=TRANSFORMER" if kwargs else "")
    return row


# ------------------------------------------------------------------------------------------------
# one model
# ------------------------------------------------------------------------------------------------


def run_model(key: str, args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    from torchslim.measure import BenchTarget, TimingConfig, measure_models, measurements_to_dict

    t0 = time.time()
    spec = build_spec(key, args.quick)
    scorer = Scorer(spec)
    rows: list[Row] = [eager_row(spec)]
    rows[0].scores = {**scorer.baseline(), "cosine": 1.0, "agreement": 1.0}
    builders: list[tuple[str, Callable[[], Row]]] = [
        (f"torchslim {c}", lambda c=c: torchslim_row(spec, c, args)) for c in spec.rows
    ]
    if not args.no_peers:
        builders += [
            ("peer ORT INT8 static (direct)", lambda: peer_ort_row(spec)),
            ("peer OpenVINO INT8 (NNCF direct)", lambda: peer_ov_row(spec)),
        ]
    for name, build in builders:
        log(f"[{key}] {name} …")
        try:
            row = build()
            if row.group == "peer":
                row.scores = scorer.score(row.predict)
            for b in args.batches:  # a row that cannot run both batch sizes is not timed
                row.predict(*spec.make_inputs(b))
        except Exception as exc:  # a failing row is recorded, never fatal
            row = Row(name, "torchslim" if name.startswith("torchslim") else "peer")
            row.error = _short_error(exc)
            if args.verbose:
                traceback.print_exc()
            log(f"[{key}] {name}: ERROR {row.error}")
        rows.append(row)
        log(f"[{key}] {name}: {row.scores.get('metric')} cos {row.scores.get('cosine')}")

    ok = [r for r in rows if r.error is None]
    config = TimingConfig(
        min_samples=10,
        min_time_s=args.min_time,
        max_time_s=3 * args.min_time,
        max_warmup_s=1.5,
        max_warmup_calls=50,
        round_time_s=0.1,
    )
    timing: dict[str, Any] = {}
    try:
        targets = [BenchTarget(r.name, r.predict, spec.make_inputs) for r in ok]
        log(f"[{key}] measuring {len(targets)} rows interleaved …")
        ms = measure_models(
            targets, args.batches, threads=args.threads, config=config, memory=False
        )
        timing = measurements_to_dict(ms, config=config)
    except Exception as exc:  # timing failure: rows keep their scores
        log(f"[{key}] measurement failed: {_short_error(exc)}")
        timing = {"error": _short_error(exc), "models": {}}
    out_rows = []
    for r in rows:
        d = r.to_dict()
        m = timing.get("models", {}).get(r.name)
        if m:
            d["latency"] = {
                b: {
                    "p50_ms": v["latency_ms"]["p50"],
                    "ci95_ms": v["latency_ms"]["ci95"],
                    "n": v["latency_ms"]["n"],
                    "speedup_vs_eager": (v.get("ratio_vs_first") or {}).get("speedup"),
                    "speedup_ci95": (v.get("ratio_vs_first") or {}).get("speedup_ci95"),
                }
                for b, v in m["batches"].items()
            }
        out_rows.append(d)
    return {
        "model": key,
        "source": spec.source,
        "kind": spec.kind,
        "calibration_data": spec.calib.name + f" ({len(spec.calib)} samples)",
        "eval_data": spec.eval.name + f" ({len(spec.eval)} samples)",
        "rows": out_rows,
        "load_avg": timing.get("load_avg"),
        "timing_error": timing.get("error"),
        "target": judge(spec.kind, out_rows),
        "wall_s": round(time.time() - t0, 1),
    }


# ------------------------------------------------------------------------------------------------
# target
# ------------------------------------------------------------------------------------------------


def _quality_ok(kind: str, row: dict[str, Any], base: dict[str, Any]) -> bool:
    s = row["scores"]
    if kind == "synthetic":
        return (s.get("cosine") or 0.0) >= 0.99
    if s.get("metric") is None or base["scores"].get("metric") is None:
        return False
    return (base["scores"]["metric"] - s["metric"]) * 100 <= 1.0 + 1e-9


def _p50(row: dict[str, Any], b: str = "1") -> float | None:
    return ((row.get("latency") or {}).get(b) or {}).get("p50_ms")


def judge(kind: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Fastest torchslim INT8 row within the quality bar vs the fastest peer (batch 1)."""
    base = rows[0]
    ours = [
        r
        for r in rows
        if r["group"] == "torchslim"
        and r["method"] in INT8_METHODS
        and r["error"] is None
        and _p50(r) is not None
    ]
    good = [r for r in ours if _quality_ok(kind, r, base)]
    peers = [r for r in rows if r["group"] == "peer" and _p50(r) is not None]
    best_peer = min(peers, key=lambda r: _p50(r) or math.inf) if peers else None
    best = min(good, key=lambda r: _p50(r) or math.inf) if good else None
    out: dict[str, Any] = {
        "quality_bar": "cosine ≥ 0.99" if kind == "synthetic" else "≤ 1 point drop",
        "best_torchslim": best["name"] if best else None,
        "best_peer": best_peer["name"] if best_peer else None,
    }
    if best is None or best_peer is None:
        out["met"] = False
        out["line"] = (
            "gap: no torchslim INT8 row met the quality bar"
            if best is None
            else "no peer could be timed"
        )
        return out
    ratio = (_p50(best) or 0) / (_p50(best_peer) or 1)
    out["ratio_vs_peer_b1"] = ratio
    r32 = (_p50(best, "32") or 0) / (_p50(best_peer, "32") or math.inf)
    out["ratio_vs_peer_b32"] = r32 if _p50(best_peer, "32") else None
    out["met"] = ratio <= 1.0
    verdict = "target met" if ratio <= 1.0 else f"gap: {100 * (ratio - 1):.0f}% slower"
    out["line"] = (
        f"{verdict} — fastest torchslim INT8 within the bar: {best['name']} "
        f"{_p50(best):.3f} ms vs best peer {best_peer['name']} {_p50(best_peer):.3f} ms at "
        f"batch 1 (ratio {ratio:.2f}; batch 32 ratio {fmt(out['ratio_vs_peer_b32'])})"
    )
    return out


# ------------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------------


def _quality_cell(kind: str, row: dict[str, Any], base: dict[str, Any]) -> str:
    s = row["scores"]
    if kind == "synthetic":
        sq = s.get("sqnr_db")
        return (
            f"cos {fmt(s.get('cosine'), 4)} · SQNR {fmt(sq, 1) if sq is not None else '∞'} dB · "
            f"agree {fmt(100 * s['agreement'], 1) if s.get('agreement') is not None else '—'}%"
        )
    m, b = s.get("metric"), base["scores"].get("metric")
    if m is None:
        return "—"
    cell = f"{100 * m:.2f}%"
    if row is not base and b is not None:
        cell += f" ({100 * (m - b):+.2f})"
    if kind == "text":
        lee = s.get("lee50")
        cell += f" · Lee-50 {fmt(lee, 3)}"
    if row is not base and s.get("cosine") is not None:
        cell += f" · cos {s['cosine']:.4f}"
    return cell


def markdown(results: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = [
        "## Quantization: torchslim vs peers run by hand",
        "",
        f"Machine: {meta['machine']} (fingerprint `{meta['fingerprint']}`); "
        f"{meta['threads']} threads; torch {meta['torch']}, onnxruntime {meta['onnxruntime']}, "
        f"openvino {meta['openvino']}, nncf {meta['nncf']}. Load average at start "
        f"{meta['load_start']}, at end {meta['load_end']} (2 cores: above 2 means a busy machine "
        "— trust the ratios, which come from interleaved rounds, more than absolute ms).",
        "",
        "Each model's rows are timed interleaved (A B C … A B C …) with "
        "`torchslim.measure.measure_models`; × = speed-up vs eager FP32 in the same rounds. "
        "Peers: `onnxruntime.quantization.quantize_static` (QDQ, MinMax, defaults, after "
        "`quant_pre_process`) and `nncf.quantize` on `openvino.convert_model` (defaults; "
        "`model_type=TRANSFORMER` for MiniLM), called directly. Quality bar for the target: ≤ 1 "
        "point drop (Fashion-MNIST top-1, MiniLM polarity accuracy), cosine ≥ 0.99 vs FP32 on the "
        "random-weight torchvision models (SQNR and top-1 agreement shown too: random weights give "
        "tiny logit margins, so agreement alone misleads).",
        "",
    ]
    for key, res in results.items():
        lines += [f"### {key} (`{res['source']}`)", ""]
        if "error" in res:
            lines += [f"Model failed: {res['error']}", ""]
            continue
        rows = res["rows"]
        base = rows[0]
        what = {
            "real": "top-1 on the Fashion-MNIST test subset (drop in points)",
            "text": "polarity accuracy (drop in points) · Lee-50 Pearson · embedding cosine",
            "synthetic": "fidelity only (random weights, synthetic inputs)",
        }[res["kind"]]
        lines += [
            f"Calibration: {res['calibration_data']}"
            + (" — synthetic, so fidelity only." if res["kind"] == "synthetic" else ".")
            + (
                " (calibration and evaluation share the 200 sentences: there is no other labelled"
                " text offline.)"
                if res["kind"] == "text"
                else ""
            )
            + f" Evaluation: {res['eval_data']}. Load average {res.get('load_avg')}.",
            "",
            f"| variant | p50 b1 ms | × b1 | p50 b32 ms | × b32 | size MB | {what} "
            "| quantize s (calib s) | notes |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            if r["error"]:
                lines.append(
                    f"| {r['name']} | — | — | — | — | — | error | — | {r['error'][:160]} |"
                )
                continue
            lat = r.get("latency") or {}
            b1, b32 = lat.get("1") or {}, lat.get("32") or {}
            q = "—" if r["quantize_s"] is None else f"{r['quantize_s']:.1f}"
            if r["calibration_s"] is not None:
                q += f" ({r['calibration_s']:.1f})"
            lines.append(
                f"| {r['name']} | {fmt(b1.get('p50_ms'), 3)} | {fmt(b1.get('speedup_vs_eager'))}"
                f" | {fmt(b32.get('p50_ms'), 2)} | {fmt(b32.get('speedup_vs_eager'))} "
                f"| {fmt(r['size_mb'], 2)} | {_quality_cell(res['kind'], r, base)} | {q} "
                f"| {r['notes']} |"
            )
        lines += ["", f"**{res['target']['line']}**", ""]
    lines.append(
        "Reproduce: `.venv/bin/python benchmarks/bench_quantize.py` (full, ~15 min on 2 cores); "
        "`--models minilm --min-time 0.5` for one model, `--quick` for a short check."
    )
    return "\n".join(lines)


def _meta(threads: int) -> dict[str, Any]:
    import importlib.metadata as md

    from torchslim.machine import machine_info

    info = machine_info()

    def ver(name: str) -> str:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return "—"

    return {
        "machine": info.summary(),
        "fingerprint": info.fingerprint,
        "threads": threads,
        "torch": torch.__version__,
        "onnxruntime": ver("onnxruntime"),
        "openvino": ver("openvino"),
        "nncf": ver("nncf"),
        "load_start": round(os.getloadavg()[0], 2),
    }


ALL = ("fashion_cnn", "fashion_resnet", "minilm", "resnet18", "mobilenet_v2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default=",".join(ALL), help=f"comma list of {ALL}")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--min-time", type=float, default=1.0, help="seconds per row and batch")
    parser.add_argument("--batch", default="1,32")
    parser.add_argument("--quick", action="store_true", help="fewer rows and calibration samples")
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--no-write", action="store_true", help="print only, write nothing")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    args.batches = [int(b) for b in args.batch.split(",")]
    torch.set_num_threads(args.threads)
    if args.quick:
        args.min_time = min(args.min_time, 0.5)
    start = time.time()

    def log(msg: str) -> None:
        print(f"{time.time() - start:7.1f}s {msg}", file=sys.stderr, flush=True)

    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("nncf").setLevel(logging.ERROR)
    meta = _meta(args.threads)
    path = RESULTS / "quantize.json"
    previous: dict[str, Any] = {}
    if path.exists():
        try:
            previous = json.loads(path.read_text()).get("models", {})
        except (OSError, ValueError):
            previous = {}
    results: dict[str, Any] = {}
    meta["args"] = {k: v for k, v in vars(args).items() if k != "batches"}
    text = ""
    for key in [k.strip() for k in args.models.split(",") if k.strip()]:
        try:
            results[key] = run_model(key, args, log)
        except Exception as exc:  # a failing model is recorded, never fatal
            traceback.print_exc()
            results[key] = {"model": key, "source": key, "error": _short_error(exc)}
        log(f"[{key}] {results[key].get('target', {}).get('line', results[key].get('error'))}")
        # written after every model, so an interrupted run keeps what it measured
        meta["load_end"] = round(os.getloadavg()[0], 2)
        meta["wall_s"] = round(time.time() - start, 1)
        merged = {k: previous[k] for k in ALL if k in previous and k not in results}
        merged.update(results)
        ordered = {k: merged[k] for k in (*ALL, *merged) if k in merged}
        text = markdown(ordered, meta)
        if not args.no_write:
            save_json("quantize", {"meta": meta, "models": ordered})
            replace_section("quantize", text)
    print(text)
    log(f"done in {meta['wall_s']} s")


if __name__ == "__main__":
    main()
