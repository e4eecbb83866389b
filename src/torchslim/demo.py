"""The main job on a bundled default: measure, try optimisations, check them, recommend one.

:func:`run_demo` takes the reference Fashion-MNIST CNN and its packaged test set through the
whole loop: the optimisation checklist, the baseline (accuracy, latency, size), a handful of
candidate variants (graph fusion on ONNX Runtime / OpenVINO, INT8 dynamic and static in PyTorch,
ONNX Runtime and OpenVINO), each checked for accuracy and fidelity against the baseline and then
measured side by side (interleaved). The recommendation is the fastest variant at batch 1 that
stays within the accuracy budget and is measurably faster than the baseline; nothing else is ever
recommended.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["DemoConfig", "DemoResult", "VariantResult", "run_demo"]

Progress = Callable[[str], None]


@dataclass(frozen=True)
class DemoConfig:
    """What the demo runs on.

    Attributes:
        model: Model source.
        data: Labelled evaluation data source.
        calib: Calibration data source (static INT8).
        max_drop: Accuracy budget in points (top-1 percentage points).
        threads: Intra-op threads for every variant.
        batch_sizes: Batch sizes to measure.
        min_time_s: Minimum measuring time per model and batch size.
        out: Output directory (written atomically).
    """

    model: str = "torchslim:fashion_cnn"
    data: str = "torchslim:fashion_mnist"
    calib: str = "torchslim:fashion_mnist?split=train&limit=512"
    max_drop: float = 1.0
    threads: int = 2
    batch_sizes: tuple[int, ...] = (1, 32)
    min_time_s: float = 1.0
    out: str = "demo-out"


@dataclass
class VariantResult:
    """One candidate and what happened to it.

    Attributes:
        name: Short name.
        recipe: The steps that produced it.
        status: ``"ok"``, ``"over budget"`` or ``"error"``.
        accuracy: Top-1 on the evaluation data (fraction).
        drop_points: Accuracy drop vs the baseline in points.
        cosine: Mean output cosine similarity vs the baseline.
        agreement: Top-1 agreement with the baseline.
        size_mb: On-disk size.
        p50_ms: Median latency per batch size.
        speedup: Baseline p50 / this p50 per batch size.
        speedup_ci95: 95% interval of the batch-1 speed-up.
        build_s: Time to build (export, calibrate, compile).
        error: What went wrong, for failed variants.
    """

    name: str
    recipe: list[str]
    status: str = "ok"
    accuracy: float | None = None
    drop_points: float | None = None
    cosine: float | None = None
    agreement: float | None = None
    size_mb: float | None = None
    p50_ms: dict[int, float] = field(default_factory=dict)
    speedup: dict[int, float] = field(default_factory=dict)
    speedup_ci95: list[float | None] = field(default_factory=list)
    build_s: float | None = None
    error: str | None = None


@dataclass
class DemoResult:
    """Everything the demo found.

    Attributes:
        config: The configuration it ran with.
        checklist_score: Score of ``torchslim inspect`` (0-100) and its grade.
        findings: Titles of the checklist's warnings and opportunities.
        variants: Every candidate, the baseline first.
        recommended: Name of the recommended variant, or ``None`` when none beat the baseline.
        out: Where the report and the recommended model were written.
        machine: The machine fingerprint summary.
    """

    config: DemoConfig
    checklist_score: str
    findings: list[str]
    variants: list[VariantResult]
    recommended: str | None
    out: str
    machine: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        d = asdict(self)
        d["config"]["batch_sizes"] = list(self.config.batch_sizes)
        return d


def _noop(_: str) -> None:
    return None


def _candidates(module: Any, example: tuple[Any, ...], cfg: DemoConfig, calib: Any) -> list[Any]:
    """(name, recipe, builder) triples; each builder returns (predict, saver, size_mb)."""
    import importlib.util

    from torchslim.passes import PassContext, apply_pass
    from torchslim.passes.graph import FuseConfig
    from torchslim.passes.quantize import QuantizeConfig
    from torchslim.quantization import quantize
    from torchslim.runtimes import build
    from torchslim.runtimes.configs import OpenVINOConfig, OrtConfig

    def fused() -> Any:
        return apply_pass(module, FuseConfig(), PassContext(example_inputs=example)).module

    def runtime(config: Any) -> Callable[[], Any]:
        def make() -> Any:
            deployed = build(fused(), config, example)
            return deployed, deployed.save, None

        return make

    def quant(**kw: Any) -> Callable[[], Any]:
        def make() -> Any:
            q = quantize(module, QuantizeConfig(**kw), calib=calib, example_inputs=example)
            return q, q.save, q.size_mb()

        return make

    cands: list[Any] = [
        (
            "fuse + onnxruntime",
            ["graph.fuse", "runtime onnxruntime"],
            runtime(OrtConfig(intra_op_threads=cfg.threads)),
        ),
        (
            "int8 dynamic (torch)",
            ["quantize dynamic/torch"],
            quant(method="dynamic", backend="torch"),
        ),
        (
            "int8 static (onnxruntime)",
            ["quantize static/onnxruntime"],
            quant(method="static", backend="onnxruntime"),
        ),
    ]
    if importlib.util.find_spec("openvino") is not None:
        cands.insert(
            1,
            (
                "fuse + openvino fp32",
                ["graph.fuse", "runtime openvino f32"],
                runtime(OpenVINOConfig(threads=cfg.threads)),
            ),
        )
        if importlib.util.find_spec("nncf") is not None:
            cands.append(
                (
                    "int8 static (openvino)",
                    ["quantize static/openvino"],
                    quant(method="static", backend="openvino"),
                )
            )
    return cands


def run_demo(config: DemoConfig | None = None, progress: Progress = _noop) -> DemoResult:
    """Run the demo and write ``report.json`` and the recommended model to ``config.out``.

    Args:
        config: What to run on (defaults: the bundled CNN and Fashion-MNIST subset).
        progress: Called with a short message before each step.

    Returns:
        The :class:`DemoResult`.
    """
    import torch

    from torchslim.data import load_data
    from torchslim.doctor import diagnose
    from torchslim.evaluate import Evaluator
    from torchslim.machine import machine_info
    from torchslim.measure import BenchTarget, TimingConfig, measure_models
    from torchslim.models import load_model, state_dict_bytes
    from torchslim.runtimes._common import atomic_directory

    cfg = config or DemoConfig()
    torch.set_num_threads(cfg.threads)
    progress(f"Loading {cfg.model} and {cfg.data}")
    loaded = load_model(cfg.model)
    module = loaded.require_module()
    data = load_data(cfg.data, input_spec=loaded.input_spec)
    calib = load_data(cfg.calib, input_spec=loaded.input_spec)
    spec = loaded.input_spec or data.input_spec()
    example = spec.example_inputs(batch_size=1)

    progress("Running the optimisation checklist")
    report = diagnose(loaded, data)
    findings = [
        f"[{f.severity}] {f.title}"
        for f in (*report.findings, *report.environment)
        if f.recommendation
    ][:8]

    progress("Evaluating the baseline")
    evaluator = Evaluator(data, batch_size=64)
    base_eval = evaluator.set_baseline(module)
    base = VariantResult(
        "eager fp32 (baseline)",
        ["none"],
        accuracy=base_eval.value,
        drop_points=0.0,
        cosine=1.0,
        agreement=1.0,
        size_mb=round(state_dict_bytes(module) / 1e6, 3),
    )
    variants = [base]
    predictors: dict[str, Any] = {base.name: module}
    savers: dict[str, Any] = {}
    for name, recipe, make in _candidates(module, example, cfg, calib):
        progress(f"Building and checking: {name}")
        v = VariantResult(name, recipe)
        variants.append(v)
        start = time.perf_counter()
        try:
            predict, saver, size = make()
        except Exception as exc:
            v.status, v.error = "error", f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
            continue
        v.build_s = round(time.perf_counter() - start, 2)
        res = evaluator.evaluate(predict)
        v.accuracy = res.value
        drop = evaluator.drop(res)
        v.drop_points = None if drop is None else round(100 * drop, 3)
        if res.fidelity is not None:
            v.cosine, v.agreement = res.fidelity.cosine, res.fidelity.agreement
        v.size_mb = size if size is not None else _saved_size_mb(saver)
        if v.drop_points is not None and v.drop_points > cfg.max_drop:
            v.status = "over budget"
            continue
        predictors[name], savers[name] = predict, saver

    progress("Measuring every variant side by side (interleaved)")
    targets = [
        BenchTarget(n, p, lambda b: spec.example_inputs(batch_size=b), dtype="fp32")
        for n, p in predictors.items()
    ]
    timing = TimingConfig(min_time_s=cfg.min_time_s, max_time_s=max(5.0, 4 * cfg.min_time_s))
    measured = measure_models(
        targets, cfg.batch_sizes, threads=cfg.threads, config=timing, memory=False
    )
    by_name = {m.name: m for m in measured}
    ref = by_name[base.name]
    for v in variants:
        m = by_name.get(v.name)
        if m is None:
            continue
        for b, bm in m.batches.items():
            v.p50_ms[b] = round(bm.latency.p50_ms, 4)
            v.speedup[b] = round(ref.batches[b].latency.p50_ms / bm.latency.p50_ms, 3)
        b0 = cfg.batch_sizes[0]
        lo = ref.batches[b0].latency.ci95_low_ms / m.batches[b0].latency.ci95_high_ms
        hi = ref.batches[b0].latency.ci95_high_ms / m.batches[b0].latency.ci95_low_ms
        v.speedup_ci95 = [round(lo, 3), round(hi, 3)]

    # Recommend only what is within budget and measurably faster (CI above 1) than the baseline.
    eligible = [
        v
        for v in variants[1:]
        if v.status == "ok" and v.speedup_ci95 and (v.speedup_ci95[0] or 0) > 1.0
    ]
    best = max(eligible, key=lambda v: v.speedup.get(cfg.batch_sizes[0], 0), default=None)

    out = Path(cfg.out)
    result = DemoResult(
        cfg,
        f"{report.score}/100 ({report.grade})",
        findings,
        variants,
        best.name if best else None,
        str(out),
        machine_info().summary(),
    )
    progress(f"Writing {out}/")
    with atomic_directory(out) as tmp:
        if best is not None:
            savers[best.name](tmp / "model")
        (tmp / "report.json").write_text(json.dumps(result.to_dict(), indent=2, default=str))
    return result


def _saved_size_mb(saver: Callable[[Path], Any]) -> float | None:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="torchslim-demo-") as tmp:
        target = Path(tmp) / "m"
        try:
            saver(target)
        except Exception:
            return None
        total = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    return round(total / 1e6, 3)
