"""The main job on a bundled default: measure, try optimisations, check them, recommend one.

:func:`run_demo` takes the reference Fashion-MNIST CNN and its packaged test set through the
whole loop on the composition layer: the optimisation checklist, then a handful of recipes (graph
fusion on ONNX Runtime / OpenVINO, INT8 dynamic in PyTorch, INT8 static on ONNX Runtime and
OpenVINO), each run by :func:`torchslim.pipeline.run_recipe` — parity-checked, evaluated against
the baseline on the same data — and then all measured side by side in one interleaved run. The
recommendation is the fastest candidate at batch 1 that passes the
:class:`~torchslim.candidate.Constraints` (within the accuracy budget, speed-up interval above 1);
nothing else is ever recommended. The recommended candidate is written as an artifact.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torchslim.candidate import Candidate
    from torchslim.recipe import Recipe

__all__ = ["DEMO_REPORT", "DemoConfig", "DemoResult", "demo_recipes", "run_demo"]

Progress = Callable[[str], None]
DEMO_REPORT = "demo.json"
"""The file that marks a directory as the demo's own output (a re-run may replace it)."""


@dataclass(frozen=True)
class DemoConfig:
    """What the demo runs on.

    Attributes:
        model: Model source.
        data: Labelled evaluation data source.
        calib: Calibration data source (static INT8).
        max_drop: Accuracy budget in points (top-1 percentage points).
        threads: Intra-op threads for every variant (restored afterwards).
        batch_sizes: Batch sizes to measure.
        min_time_s: Minimum measuring time per model and batch size.
        out: Output directory (written atomically).
        force: Replace ``out`` even when it is not an earlier demo output.
    """

    model: str = "torchslim:fashion_cnn"
    data: str = "torchslim:fashion_mnist"
    calib: str = "torchslim:fashion_mnist?split=train&limit=512"
    max_drop: float = 1.0
    threads: int = 2
    batch_sizes: tuple[int, ...] = (1, 32)
    min_time_s: float = 1.0
    out: str = "demo-out"
    force: bool = False


@dataclass
class DemoResult:
    """Everything the demo found.

    Attributes:
        config: The configuration it ran with.
        checklist_score: Score of ``torchslim inspect`` (0-100) and its grade.
        findings: Titles of the checklist's warnings and opportunities.
        candidates: Every candidate, in the order tried, with its verdict.
        verdicts: Per candidate: the reasons it was not recommended (empty when it passes).
        recommended: Index of the recommended candidate, or ``None`` when none passed.
        out: Where the report (and the recommended artifact) were written.
        machine: The machine fingerprint summary.
    """

    config: DemoConfig
    checklist_score: str
    findings: list[str]
    candidates: list[Candidate]
    verdicts: list[list[str]] = field(default_factory=list)
    recommended: int | None = None
    out: str = ""
    machine: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (one set of units: fractions, points, MB, ms)."""
        rows = []
        for i, (c, why) in enumerate(zip(self.candidates, self.verdicts, strict=True)):
            rows.append(
                {
                    "name": _name(c.recipe),
                    **c.to_dict(),
                    "rejected_because": why,
                    "recommended": i == self.recommended,
                }
            )
        best = None if self.recommended is None else rows[self.recommended]
        return {
            "config": {**self.config.__dict__, "batch_sizes": list(self.config.batch_sizes)},
            "checklist_score": self.checklist_score,
            "findings": self.findings,
            "machine": self.machine,
            "candidates": rows,
            "recommended": None if best is None else best["name"],
            "artifact": self.out if best is not None else None,
        }


def _name(recipe: Recipe) -> str:
    return " + ".join(recipe.describe())


def demo_recipes(cfg: DemoConfig) -> list[Recipe]:
    """The recipes the demo tries (OpenVINO ones only when OpenVINO/NNCF are installed)."""
    import importlib.util

    from torchslim.passes.graph import FuseConfig
    from torchslim.passes.quantize import QuantBackend, QuantizeConfig, QuantMethod
    from torchslim.recipe import DataRefs, Recipe
    from torchslim.runtimes.configs import OpenVINOConfig, OrtConfig

    refs = DataRefs(calib=cfg.calib, eval=cfg.data)
    b = tuple(cfg.batch_sizes)
    recipes = [
        Recipe((FuseConfig(),), OrtConfig(intra_op_threads=cfg.threads), b, refs),
        Recipe((QuantizeConfig(QuantMethod.DYNAMIC, QuantBackend.TORCH),), None, b, refs),
        Recipe((QuantizeConfig(QuantMethod.STATIC, QuantBackend.ONNXRUNTIME),), None, b, refs),
    ]
    if importlib.util.find_spec("openvino") is not None:
        recipes.insert(1, Recipe((FuseConfig(),), OpenVINOConfig(threads=cfg.threads), b, refs))
        if importlib.util.find_spec("nncf") is not None:
            recipes.append(
                Recipe((QuantizeConfig(QuantMethod.STATIC, QuantBackend.OPENVINO),), None, b, refs)
            )
    return recipes


def _noop(_: str) -> None:
    return None


def _check_out(cfg: DemoConfig) -> Path:
    """The demo may replace its own earlier output; anything else needs ``force``."""
    from torchslim._io import check_out_dir

    out = Path(cfg.out)
    own = out.is_dir() and (out / DEMO_REPORT).is_file()
    check_out_dir(out, force=cfg.force or own)
    return out


def run_demo(config: DemoConfig | None = None, progress: Progress = _noop) -> DemoResult:
    """Run the demo and write ``demo.json`` (and the recommended artifact) to ``config.out``.

    Args:
        config: What to run on (defaults: the bundled CNN and Fashion-MNIST subset).
        progress: Called with a short message before each step.

    Returns:
        The :class:`DemoResult`.
    """
    from torchslim._io import atomic_directory
    from torchslim._json import to_jsonable
    from torchslim.artifact import save_artifact
    from torchslim.candidate import Constraints
    from torchslim.data import load_data
    from torchslim.doctor import diagnose
    from torchslim.machine import machine_info
    from torchslim.measure import BenchTarget, TimingConfig, measure_models
    from torchslim.models import load_model
    from torchslim.pipeline import RunData, run_recipe
    from torchslim.runtimes._common import torch_threads

    cfg = config or DemoConfig()
    out = _check_out(cfg)
    progress(f"Loading {cfg.model} and {cfg.data}")
    loaded = load_model(cfg.model)
    data = RunData(
        calib=load_data(cfg.calib, input_spec=loaded.input_spec),
        eval=load_data(cfg.data, input_spec=loaded.input_spec),
    )
    spec = loaded.input_spec or data.eval.input_spec()  # type: ignore[union-attr]

    progress("Running the optimisation checklist")
    report = diagnose(loaded, data.eval)
    findings = [
        f"[{f.severity}] {f.title}"
        for f in (*report.findings, *report.environment)
        if f.recommendation
    ][:8]

    with torch_threads(cfg.threads):
        cands = []
        for recipe in demo_recipes(cfg):
            progress(f"Building and checking: {_name(recipe)}")
            cands.append(run_recipe(recipe, loaded, data=data, input_spec=spec, measure=False))
        built = [c for c in cands if c.ok]
        progress("Measuring the baseline and every candidate side by side (interleaved)")
        timing = TimingConfig(min_time_s=cfg.min_time_s, max_time_s=max(5.0, 4 * cfg.min_time_s))

        def make(b: int) -> tuple[Any, ...]:
            return spec.example_inputs(batch_size=b)

        targets = [BenchTarget.from_module(loaded.require_module(), make, name="baseline")]
        targets += [BenchTarget(f"c{i}", c.built, make) for i, c in enumerate(built)]
        measured = measure_models(
            targets, cfg.batch_sizes, threads=cfg.threads, config=timing, memory=False
        )
    base_m = measured[0]
    for c, m in zip(built, measured[1:], strict=True):
        c.measurement, c.baseline_measurement = m, base_m

    rules = Constraints(
        max_drop_points=cfg.max_drop, min_speedup=1.0, batch_size=cfg.batch_sizes[0]
    )
    verdicts = [rules.check(c) for c in cands]
    passing = [i for i, why in enumerate(verdicts) if not why]
    best = max(
        passing,
        key=lambda i: cands[i].speedup(cfg.batch_sizes[0]).ratio,  # type: ignore[union-attr]
        default=None,
    )
    result = DemoResult(
        cfg,
        f"{report.score}/100 ({report.grade})",
        findings,
        cands,
        verdicts,
        best,
        str(out),
        machine_info().summary(),
    )
    text = json.dumps(to_jsonable(result.to_dict()), indent=2, default=str) + "\n"
    progress(f"Writing {out}/")
    if best is not None:
        save_artifact(cands[best], out, force=True, extra_files={DEMO_REPORT: text})
    else:
        with atomic_directory(out, force=True) as tmp:
            (tmp / DEMO_REPORT).write_text(text, encoding="utf-8")
    return result
