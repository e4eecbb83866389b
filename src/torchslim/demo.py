"""The main job on a bundled default: ``optimize`` on the reference Fashion-MNIST ResNet.

:func:`run_demo` runs :func:`torchslim.search.optimize` on ``torchslim:fashion_resnet`` with its
packaged data (10,000 training images for recovery and calibration, the 2,000-image test set for
evaluation), a 1-point accuracy budget and a search space sized to finish in about five minutes on
two cores: structured pruning (none or 50% of the FLOPs, channel counts rounded to 8) with
label-only recovery, INT8 static quantization on OpenVINO or ONNX Runtime or none, and the float
runtimes. Every candidate is built in its own process, re-loaded from its files, evaluated on the
test set in the runtime it ships in and measured interleaved with the original; the fastest one
within the budget is written to ``OUT/best`` with ``OUT/report.html``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

from torchslim.search import OptimizeResult, SearchSpace, optimize

__all__ = ["DemoConfig", "demo_space", "run_demo"]

Progress = Callable[[str], None]


@dataclass(frozen=True)
class DemoConfig:
    """What the demo runs on.

    Attributes:
        model: Model source.
        train: Training data (recovery after pruning).
        calib: Calibration data (static INT8).
        eval: Labelled evaluation data.
        max_drop: Accuracy budget in points.
        batch_sizes: Batch sizes to measure (the first is optimised for).
        time_budget_s: Stop proposing candidates after this long.
        threads: Intra-op threads.
        out: Output directory.
        force: Replace a non-empty ``out`` that is not an earlier demo/search output.
    """

    model: str = "torchslim:fashion_resnet"
    train: str = "torchslim:fashion_mnist?split=train"
    calib: str = "torchslim:fashion_mnist?split=train&limit=512"
    eval: str = "torchslim:fashion_mnist"
    max_drop: float = 1.0
    batch_sizes: tuple[int, ...] = (1, 64)
    time_budget_s: float = 300.0
    threads: int | None = None
    out: str = "demo-out"
    force: bool = False


def demo_space() -> SearchSpace:
    """The demo's search space (OpenVINO choices only when the openvino extra is installed)."""
    has_ov = importlib.util.find_spec("openvino") is not None
    has_nncf = has_ov and importlib.util.find_spec("nncf") is not None
    quant = ["none", "static/onnxruntime"] + (["static/openvino"] if has_nncf else [])
    runtimes = (["openvino"] if has_ov else []) + ["onnxruntime"]
    return SearchSpace(
        prune_ratios=(0.0, 0.5),
        recoveries=("finetune",),
        recovery_epochs=1.0,
        quantize=tuple(quant),
        runtimes=tuple(runtimes),
        precisions=("f32",),
        hints=("latency",),
    )


def run_demo(config: DemoConfig | None = None, progress: Progress | None = None) -> OptimizeResult:
    """Run the demo search and return its result (also in ``OUT/search.json``)."""
    cfg = config or DemoConfig()
    return optimize(
        cfg.model,
        calib=cfg.calib,
        eval=cfg.eval,
        train=cfg.train,
        space=demo_space(),
        max_drop=cfg.max_drop,
        batch_sizes=cfg.batch_sizes,
        time_budget_s=cfg.time_budget_s,
        out=cfg.out,
        force=cfg.force,
        threads=cfg.threads,
        progress=progress,
    )
