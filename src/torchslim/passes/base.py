"""Pass registry, context and result types."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from torchslim._registry import Entry, Registry
from torchslim.errors import TorchslimError

if TYPE_CHECKING:
    from torch import nn

    from torchslim.data import DataSet
    from torchslim.specs import InputSpec

__all__ = ["PASSES", "PassContext", "PassResult", "apply_pass", "list_passes", "register_pass"]

PASSES: Registry[Any] = Registry("pass")

_NEED_HINTS = {
    "calibration_data": "Give calibration data (--calib DATA), e.g. torchslim:fashion_mnist?split="
    "train, or synthetic:SHAPE for a fidelity-only result.",
    "training_data": "Give training data (--data DATA), e.g. torchslim:fashion_mnist?split=train.",
    "teacher": "Give a teacher model (--teacher MODEL).",
    "example_inputs": "Give example inputs or an input spec (--input-shape).",
}


@dataclass
class PassContext:
    """What a pass may use besides the model and its config.

    Attributes:
        calib: Calibration samples (static quantization).
        train: Training samples (QAT, fine-tuning, distillation).
        eval: Evaluation samples (accuracy-aware decisions).
        teacher: A teacher model for distillation.
        example_inputs: Inputs for tracing/export, batch first.
        input_spec: The model's inputs.
        seed: Random seed for anything stochastic.
        progress: Show progress bars on long work.
    """

    calib: DataSet | None = None
    train: DataSet | None = None
    eval: DataSet | None = None
    teacher: nn.Module | None = None
    example_inputs: tuple[Any, ...] | None = None
    input_spec: InputSpec | None = None
    seed: int = 0
    progress: bool = False

    def provides(self, need: str) -> bool:
        """True when the context holds what ``need`` names."""
        return {
            "calibration_data": self.calib is not None,
            "training_data": self.train is not None,
            "evaluation_data": self.eval is not None,
            "teacher": self.teacher is not None,
            "example_inputs": self.example_inputs is not None or self.input_spec is not None,
        }.get(need, True)

    def inputs(self) -> tuple[Any, ...]:
        """Example inputs (from ``example_inputs``, else synthesised from ``input_spec``)."""
        if self.example_inputs is not None:
            return self.example_inputs
        if self.input_spec is not None:
            return self.input_spec.example_inputs(seed=self.seed)
        raise TorchslimError("This pass needs example inputs.", _NEED_HINTS["example_inputs"])


@dataclass
class PassResult:
    """What a pass produced.

    Attributes:
        module: The transformed model, as a representation (never a runtime): a PyTorch module
            (a new object; the input is untouched), or a lowered model from
            :mod:`torchslim.lowering` (:class:`~torchslim.lowering.OnnxModel`,
            :class:`~torchslim.lowering.OpenVINOModel`) for passes that lower to one runtime
            (e.g. ONNX Runtime INT8). Runtimes build from it (``torchslim.runtimes.build``).
        report: Facts about the transformation (layers changed, kept in float, sparsity, ...).
        seconds: Wall-clock time the pass took.
    """

    module: Any
    report: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def register_pass(
    name: str,
    config: type,
    target: str,
    *,
    needs: tuple[str, ...] = (),
    requires: tuple[str, ...] = (),
    extra: str | None = None,
    tags: tuple[str, ...] = (),
    description: str = "",
) -> Entry:
    """Register a pass implementation for a config type (done once, at import of passes.catalog).

    The handler at ``target`` has the signature ``(module, config, context) -> PassResult`` and may
    modify ``module`` in place (it receives a private copy).
    """
    return PASSES.register(
        Entry(name, target, config.__name__, requires, extra, needs, tags, description)
    )


def list_passes() -> list[Entry]:
    """All registered passes (importing no backend; ``torchslim.passes`` registers the catalog)."""
    return PASSES.list()


def apply_pass(module: nn.Module, config: Any, context: PassContext | None = None) -> PassResult:
    """Run the pass registered for ``type(config)`` on a copy of ``module``.

    Args:
        module: The model; never modified.
        config: A registered pass config instance.
        context: Data, teacher and example inputs the pass may need.

    Returns:
        The :class:`PassResult` with the new module and the pass's report.

    Raises:
        TorchslimError: No pass for this config, a need not met, or a backend not installed.
    """
    from torchslim.errors import BackendUnavailableError

    ctx = context or PassContext()
    entry = PASSES.by_key(type(config).__name__)
    for need in entry.needs:
        if not ctx.provides(need):
            raise TorchslimError(
                f"Pass '{entry.name}' needs {need.replace('_', ' ')}.", _NEED_HINTS.get(need)
            )
    if not entry.available():
        missing = ", ".join(entry.requires)
        raise BackendUnavailableError(entry.name, entry.extra, f"needs {missing}")
    handler = entry.load()
    work = copy.deepcopy(module)
    start = time.perf_counter()
    result: PassResult = handler(work, config, ctx)
    result.seconds = time.perf_counter() - start
    result.report.setdefault("pass", entry.name)
    return result
