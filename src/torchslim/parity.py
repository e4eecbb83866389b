"""Parity: does a built runtime compute what the eager FP32 model computes?

:func:`check_parity` runs the deployed runtime and the original module (eager, FP32, inference
mode) on the same inputs — at batch 1 and batch N, and for token inputs at two sequence lengths —
and compares every output tensor. Tolerances depend on the precision the runtime actually
computes in (FP32, BF16, FP16, INT8): a BF16 OpenVINO build is held to the BF16 tolerance, and the
report says so. A failed check raises :class:`~torchslim.errors.ParityError`; it is never a
warning.

Each output is judged by two numbers that do not depend on its scale:

* relative error ``max|out - ref| / max|ref|`` (how far the worst element moved, against the
  output's range), and
* the smallest per-sample cosine similarity between ``out`` and ``ref``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from torchslim.errors import ParityError

if TYPE_CHECKING:
    import torch

    from torchslim.specs import InputSpec

__all__ = [
    "TOLERANCES",
    "ParityCase",
    "ParityReport",
    "Tolerance",
    "check_parity",
    "compare_outputs",
    "parity_inputs",
]


@dataclass(frozen=True)
class Tolerance:
    """How far outputs may move for one precision.

    Attributes:
        max_rel_error: Bound on ``max|out - ref| / max|ref|`` per output tensor.
        min_cosine: Bound on the smallest per-sample cosine similarity.
    """

    max_rel_error: float
    min_cosine: float


TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(max_rel_error=1e-3, min_cosine=0.99999),
    "tf32": Tolerance(max_rel_error=1e-2, min_cosine=0.9999),
    "fp16": Tolerance(max_rel_error=3e-2, min_cosine=0.999),
    "bf16": Tolerance(max_rel_error=8e-2, min_cosine=0.995),
    "int8": Tolerance(max_rel_error=2.5e-1, min_cosine=0.95),
}
"""Default tolerance per compute precision. FP32 runtimes differ from eager only by operation
order and fused kernels (relative errors ~1e-6 measured on ResNet-18 and MiniLM); BF16 keeps 8
mantissa bits (~0.4% per rounding, accumulating over layers; OpenVINO BF16 measured here: relative
error 4e-3 on ResNet-18, 1e-2 on MiniLM, cosine ≥ 0.99996)."""


@dataclass(frozen=True)
class ParityCase:
    """One comparison (one input shape).

    Attributes:
        batch: Batch size.
        seq_len: Sequence length for token inputs, else ``None``.
        max_abs_error: Largest absolute difference over all outputs.
        max_rel_error: Largest relative error over all outputs.
        min_cosine: Smallest per-sample cosine similarity over all outputs.
        passed: Within the tolerance.
        error: Why the runtime could not run these inputs, if it failed.
    """

    batch: int
    seq_len: int | None
    max_abs_error: float
    max_rel_error: float
    min_cosine: float
    passed: bool
    error: str | None = None


@dataclass
class ParityReport:
    """All comparisons for one runtime.

    Attributes:
        runtime: Runtime name.
        precision: Precision the tolerance was chosen for.
        tolerance: The tolerance applied.
        cases: One :class:`ParityCase` per input shape.
    """

    runtime: str
    precision: str
    tolerance: Tolerance
    cases: list[ParityCase] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when every case passed."""
        return bool(self.cases) and all(c.passed for c in self.cases)

    @property
    def max_rel_error(self) -> float:
        """Worst relative error over all cases."""
        return max((c.max_rel_error for c in self.cases), default=math.nan)

    @property
    def min_cosine(self) -> float:
        """Worst cosine similarity over all cases."""
        return min((c.min_cosine for c in self.cases), default=math.nan)

    def summary(self) -> str:
        """One line for people."""
        shapes = ", ".join(
            f"b{c.batch}" + (f"/s{c.seq_len}" if c.seq_len else "") for c in self.cases
        )
        state = "passed" if self.passed else "FAILED"
        return (
            f"parity {state} ({self.precision} tolerance: rel ≤ {self.tolerance.max_rel_error:g}, "
            f"cos ≥ {self.tolerance.min_cosine:g}) on {shapes}: max rel error "
            f"{self.max_rel_error:.2e}, min cosine {self.min_cosine:.6f}"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly values."""
        return {
            "runtime": self.runtime,
            "precision": self.precision,
            "tolerance": asdict(self.tolerance),
            "passed": self.passed,
            "max_rel_error": self.max_rel_error,
            "min_cosine": self.min_cosine,
            "cases": [asdict(c) for c in self.cases],
        }


def _flatten(out: Any) -> list[torch.Tensor]:
    from torchslim.compare import flatten_outputs

    return flatten_outputs(out)


def compare_outputs(reference: Any, outputs: Any) -> tuple[float, float, float]:
    """``(max_abs_error, max_rel_error, min_cosine)`` over all output tensors.

    Raises:
        ValueError: Different number of outputs or different shapes.
    """
    import torch

    refs, outs = _flatten(reference), _flatten(outputs)
    if len(refs) != len(outs):
        raise ValueError(f"{len(outs)} output(s), expected {len(refs)}")
    max_abs, max_rel, min_cos = 0.0, 0.0, 1.0
    for r, o in zip(refs, outs, strict=True):
        r = r.detach().float().cpu()
        o = o.detach().float().cpu()
        if r.shape != o.shape:
            raise ValueError(f"output shape {tuple(o.shape)}, expected {tuple(r.shape)}")
        if r.numel() == 0:
            continue
        if not torch.isfinite(o).all() and torch.isfinite(r).all():
            return math.inf, math.inf, -1.0
        diff = float((o - r).abs().max())
        scale = float(r.abs().max())
        max_abs = max(max_abs, diff)
        max_rel = max(max_rel, diff / scale if scale > 0 else (0.0 if diff == 0 else math.inf))
        rr = r.reshape(r.shape[0], -1) if r.dim() > 0 else r.reshape(1, 1)
        oo = o.reshape(o.shape[0], -1) if o.dim() > 0 else o.reshape(1, 1)
        if diff == 0:
            continue
        cos = torch.nn.functional.cosine_similarity(rr, oo, dim=1, eps=1e-12)
        min_cos = min(min_cos, float(cos.min()))
    return max_abs, max_rel, min_cos


def _token_like(x: Any) -> bool:
    return (
        getattr(x, "dim", lambda: 0)() == 2
        and not x.is_floating_point()
        and x.dtype != __import__("torch").bool
    )


def parity_inputs(
    inputs: InputSpec | Sequence[torch.Tensor],
    *,
    batch_sizes: Sequence[int] = (1, 4),
    seq_lens: Sequence[int] | None = None,
    seed: int = 1234,
) -> list[tuple[int, int | None, tuple[Any, ...]]]:
    """Input sets for a parity check: ``(batch, seq_len, tensors)`` per shape.

    From an :class:`InputSpec` inputs are synthesised (seeded); from example tensors they are
    repeated/sliced along the batch (and sequence) axes. Token inputs (2-D integer) get two
    sequence lengths by default: the example's and a short odd one.
    """
    import torch

    from torchslim.specs import InputSpec

    out: list[tuple[int, int | None, tuple[Any, ...]]] = []
    if isinstance(inputs, InputSpec):
        spec = inputs
        tokens = any(t.dtype in ("int64", "int32") and len(t.shape) == 2 for t in spec.inputs)
        if seq_lens is None:
            seq_lens = _default_seq_lens(spec.inputs[0].shape[-1]) if tokens else [None]  # type: ignore[list-item]
        for s in seq_lens:
            for b in batch_sizes:
                specs = []
                for t in spec.inputs:
                    shape = list(t.shape)
                    shape[0] = b
                    if s is not None and len(shape) == 2 and 1 in t.dynamic_axes:
                        shape[1] = s
                    specs.append(replace(t, shape=tuple(shape)))
                synth = InputSpec(tuple(specs)).example_inputs(seed=seed)
                masks = [("mask" in t.name) for t in spec.inputs]
                out.append((b, s, _pad_masks(synth, masks)))
        return out
    examples = tuple(inputs)
    tokens = any(_token_like(x) for x in examples)
    if seq_lens is None:
        seq_lens = _default_seq_lens(examples[0].shape[-1]) if tokens else [None]  # type: ignore[list-item]
    gen = torch.Generator().manual_seed(seed)
    out = []
    for s in seq_lens:
        for b in batch_sizes:
            tensors: list[Any] = []
            for x in examples:
                reps = (b + x.shape[0] - 1) // x.shape[0]
                y = x.repeat(reps, *([1] * (x.dim() - 1)))[:b].clone()
                if y.is_floating_point() and b > x.shape[0]:
                    # distinct rows, so a runtime that mixes up samples in a batch is caught
                    y[x.shape[0] :] = y[x.shape[0] :] + 0.01 * torch.randn(
                        y[x.shape[0] :].shape, generator=gen
                    )
                if s is not None and _token_like(x):
                    y = _resize_seq(y, s)
                tensors.append(y)
            masks = [_token_like(x) and bool(((x == 0) | (x == 1)).all()) for x in examples]
            out.append((b, s, _pad_masks(tuple(tensors), masks)))
    return out


def _pad_masks(tensors: tuple[Any, ...], is_mask: Sequence[bool]) -> tuple[Any, ...]:
    """Give rows 2.. of attention masks trailing padding (zeros), each row a different length.

    Models (and traces) that take a shortcut when the mask is all ones are caught this way.
    """
    out = list(tensors)
    for k, (x, mask) in enumerate(zip(tensors, is_mask, strict=True)):
        if not mask or x.dim() != 2 or x.shape[0] < 2 or x.shape[1] < 3:
            continue
        y = x.clone()
        y[:] = 1
        b, length = y.shape
        for i in range(1, b):
            keep = max(1, length - (i * length) // (b + 1))
            y[i, keep:] = 0
        out[k] = y
    return tuple(out)


def _default_seq_lens(seq: int) -> list[int]:
    short = max(5, seq // 8) | 1
    return [seq, short] if short != seq else [seq]


def _resize_seq(x: torch.Tensor, seq: int) -> torch.Tensor:
    import torch

    if x.shape[1] >= seq:
        return x[:, :seq].contiguous()
    reps = (seq + x.shape[1] - 1) // x.shape[1]
    return torch.cat([x] * reps, dim=1)[:, :seq].contiguous()


def check_parity(
    deployed: Callable[..., Any],
    reference: Callable[..., Any],
    inputs: InputSpec | Sequence[torch.Tensor],
    *,
    precision: str | None = None,
    tolerance: Tolerance | None = None,
    batch_sizes: Sequence[int] = (1, 4),
    seq_lens: Sequence[int] | None = None,
    raise_on_failure: bool = True,
) -> ParityReport:
    """Compare ``deployed`` with the eager ``reference`` module on the same inputs.

    Args:
        deployed: The built runtime (any callable taking torch tensors).
        reference: The original module (run eagerly in FP32 under inference mode).
        inputs: An :class:`InputSpec` or example tensors (batch first).
        precision: Compute precision of ``deployed`` (``fp32``, ``bf16``, ``fp16``, ``int8``);
            default: ``deployed.info["precision"]`` or ``fp32``.
        tolerance: Override the precision's default tolerance.
        batch_sizes: Batch sizes to check (dynamic batch); a runtime built for static shapes is
            checked at its example shape only.
        seq_lens: Sequence lengths for token inputs (default: the example's and a short one).
        raise_on_failure: Raise :class:`ParityError` when a case fails (default).

    Returns:
        The :class:`ParityReport`.

    Raises:
        ParityError: A case is outside tolerance or the runtime failed on a shape.
    """
    import torch

    info = getattr(deployed, "info", {}) or {}
    runtime = str(getattr(deployed, "runtime", type(deployed).__name__))
    prec = (precision or info.get("precision") or "fp32").lower()
    tol = tolerance or TOLERANCES.get(prec, TOLERANCES["fp32"])
    if getattr(deployed, "static_shapes", False):
        examples = inputs.example_inputs() if not isinstance(inputs, Sequence) else tuple(inputs)
        batch_sizes = (int(examples[0].shape[0]),)
        seq_lens = [int(examples[0].shape[1])] if _token_like(examples[0]) else [None]  # type: ignore[list-item]
        inputs = examples
    device = str(getattr(deployed, "device", "cpu"))
    report = ParityReport(runtime, prec, tol)
    from torchslim._safe_load import eval_mode

    flags = (
        [(m, m.training) for m in reference.modules()]
        if isinstance(reference, torch.nn.Module)
        else []
    )
    was_training = not flags and getattr(reference, "training", False)
    if isinstance(reference, torch.nn.Module):
        eval_mode(reference)  # also ExportedProgram.module()s, which refuse .eval()/.train()
    elif hasattr(reference, "eval"):
        reference.eval()
    try:
        for b, s, xs in parity_inputs(inputs, batch_sizes=batch_sizes, seq_lens=seq_lens):
            with torch.inference_mode():
                ref = reference(*xs)
            try:
                out = deployed(*(x.to(device) for x in xs))
                mabs, mrel, mcos = compare_outputs(ref, out)
            except Exception as exc:
                report.cases.append(
                    ParityCase(
                        b,
                        s,
                        math.inf,
                        math.inf,
                        -1.0,
                        False,
                        f"{type(exc).__name__}: {str(exc)[:200]}",
                    )
                )
                continue
            ok = mrel <= tol.max_rel_error and mcos >= tol.min_cosine
            report.cases.append(ParityCase(b, s, mabs, mrel, mcos, ok))
    finally:
        for m, flag in flags:  # each submodule's own flag back, as the caller had it
            m.training = flag
        if was_training and hasattr(reference, "train"):
            reference.train()
    if raise_on_failure and not report.passed:
        bad = next(c for c in report.cases if not c.passed)
        where = f"batch {bad.batch}" + (f", sequence {bad.seq_len}" if bad.seq_len else "")
        detail = bad.error or (
            f"max relative error {bad.max_rel_error:.2e} (allowed {tol.max_rel_error:g}), "
            f"min cosine {bad.min_cosine:.6f} (required {tol.min_cosine:g})"
        )
        raise ParityError(
            f"Runtime '{runtime}' does not match eager FP32 at {where} ({prec} tolerance): "
            f"{detail}.",
            "Use another runtime or a higher precision (e.g. OpenVINO precision f32); rerun with "
            "--debug for details.",
        )
    return report
