"""The one ``torch.export`` policy and its errors (re-exported by :mod:`torchslim.lowering`).

:func:`export_program` is the only place torchslim calls ``torch.export.export`` on a user model:
non-strict, with the batch axis dynamic (and the sequence axis for 2-D integer token inputs),
traced at batch ≥ 2 so exporters keep the batch symbolic. Failures become a short
:class:`~torchslim.errors.ExportError` naming the op or the user's line (:func:`export_error`).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torchslim._safe_load import eval_mode
from torchslim.errors import TorchslimError

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "dynamic_shapes_for",
    "export_error",
    "export_program",
    "input_names_for",
    "min_batch",
    "prepare_module",
    "quiet",
    "trace_guard",
]

_OTHERS_EXPORT = "eager, torchscript with method=script, or inductor"


def prepare_module(module: nn.Module) -> nn.Module:
    """A private eval-mode copy of ``module`` with gradients off (the caller's is untouched).

    Works for modules from ``ExportedProgram.module()`` too (PT2E INT8 graphs), which refuse
    ``.eval()`` (:func:`torchslim._safe_load.eval_mode`).
    """
    work = eval_mode(copy.deepcopy(module))
    for p in work.parameters():
        p.requires_grad_(False)
    return work


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence exporter chatter (warnings, graph dumps printed to stdout/stderr) in the block."""
    import io
    import warnings

    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        warnings.simplefilter("ignore")
        yield


@contextlib.contextmanager
def trace_guard(what: str, others: str) -> Iterator[list[str]]:
    """Catch TorchScript tracer warnings about Python control flow on tensor values.

    Such a branch in the user's own code (outside installed packages) means the trace bakes in
    one path: raise :class:`~torchslim.errors.ExportError` naming the line. The same warning from
    library code (e.g. ``transformers`` mask shortcuts) is recorded in the yielded list and left
    to the parity check, which feeds padded masks and varied inputs.
    """
    import warnings

    from torchslim.errors import ExportError

    found: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield found
    for w in caught:
        msg = str(w.message)
        if "Python boolean" not in msg and "Python number" not in msg and "Python index" not in msg:
            continue
        where = f"{Path(w.filename).name}:{w.lineno}"
        fn = w.filename.replace("\\", "/")
        if "site-packages" in fn or "dist-packages" in fn or "/torch/" in fn:
            found.append(where)
            continue
        raise ExportError(
            f"{what} found data-dependent control flow at {where}: a Python branch on a tensor "
            "value, which a trace records as one fixed path.",
            f"Try another runtime ({others}), or rewrite that code with torch.where/torch.cond.",
        )


def export_error(what: str, exc: BaseException, others: str) -> TorchslimError:
    """A short :class:`~torchslim.errors.ExportError` naming the failing op/module.

    Args:
        what: The export step (``"torch.export"``, ``"TorchScript trace"``).
        exc: The original exception (kept as ``__cause__`` for ``--debug``).
        others: Runtimes to suggest instead.
    """
    from torchslim.errors import ExportError

    text = str(exc)
    chain: BaseException | None = exc.__cause__ or exc.__context__
    depth = 0
    while chain is not None and depth < 5:
        text += "\n" + str(chain)
        chain = chain.__cause__ or chain.__context__
        depth += 1
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    keys = (
        "data-dependent",
        "Data-dependent",
        "Unsupported",
        "not supported",
        "Could not guard",
        "Dynamic control flow",
        "unsupported",
    )
    reason = next((ln for ln in lines if any(k in ln for k in keys)), lines[0] if lines else "")
    import re

    reason = re.sub(r"<class '[\w.]+'>:\s*", "", reason) or type(exc).__name__
    where = _user_frame(exc)
    kind = (
        "data-dependent control flow"
        if "data-dependent" in text.lower()
        or ("guard" in text.lower() and "symbol" in text.lower())
        else None
    )
    msg = f"{what} failed"
    if kind:
        msg += f" on {kind}"
    if where:
        msg += f" at {where}"
    msg += f": {reason[:240]}"
    return ExportError(
        msg,
        f"Try another runtime ({others}), rewrite that code to avoid it, or rerun with --debug "
        "for the full trace.",
    )


def _user_frame(exc: BaseException) -> str | None:
    """``file:line (function)`` of the deepest traceback frame outside torch/torchslim."""
    import traceback

    best = None
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        for fr in traceback.extract_tb(cur.__traceback__):
            fn = fr.filename.replace("\\", "/")
            if "/torch/" in fn or "/torchslim/" in fn or "/onnx" in fn or "/transformers/" in fn:
                continue
            if fn.startswith("<"):
                continue
            best = f"{Path(fn).name}:{fr.lineno} ({fr.name})"
        cur = cur.__cause__ or cur.__context__
    # dynamo reports user code in the message instead of the traceback
    if best is None:
        import re

        m = re.search(r'File "([^"]+)", line (\d+), in (\w+)', str(exc))
        if m and "/torch/" not in m.group(1):
            best = f"{Path(m.group(1)).name}:{m.group(2)} ({m.group(3)})"
    return best


def min_batch(example_inputs: Sequence[Any], batch: int = 2) -> tuple[Any, ...]:
    """Inputs with at least ``batch`` rows (repeating rows), so exporters keep batch symbolic.

    Exporters specialise a dimension of size 1; a batch of 2 keeps it dynamic.
    """
    import torch

    out = []
    for x in example_inputs:
        if isinstance(x, torch.Tensor) and x.dim() > 0 and x.shape[0] < batch:
            reps = (batch + x.shape[0] - 1) // x.shape[0]
            x = x.repeat(reps, *([1] * (x.dim() - 1)))[:batch]
        out.append(x)
    return tuple(out)


def dynamic_shapes_for(example_inputs: Sequence[Any]) -> tuple[dict[int, Any], ...]:
    """Batch axis dynamic for every input; sequence axis too for 2-D integer (token) inputs."""
    import torch

    # DYNAMIC lets export derive the valid range (e.g. seq <= 512 from position embeddings)
    batch = seq = torch.export.Dim.DYNAMIC
    shapes = []
    for x in example_inputs:
        dims: dict[int, Any] = {}
        if isinstance(x, torch.Tensor) and x.dim() > 0:
            dims[0] = batch
            if not x.is_floating_point() and x.dim() == 2:
                dims[1] = seq
        shapes.append(dims)
    return tuple(shapes)


def export_program(
    module: nn.Module, example_inputs: Sequence[Any], *, dynamic: bool = True
) -> torch.export.ExportedProgram:
    """``torch.export`` the module (strict=False) with dynamic batch/sequence axes.

    Raises:
        ExportError: The model cannot be exported (names the op or line, suggests a runtime).
    """
    import torch

    args = min_batch(example_inputs) if dynamic else tuple(example_inputs)
    shapes = dynamic_shapes_for(args) if dynamic else None
    try:
        with quiet():
            return torch.export.export(eval_mode(module), args, dynamic_shapes=shapes, strict=False)
    except Exception as exc:
        raise export_error("torch.export", exc, _OTHERS_EXPORT) from exc


def input_names_for(
    example_inputs: Sequence[Any], names: Sequence[str] | None = None, module: Any = None
) -> list[str]:
    """Graph input names: ``names`` if given, else the parameter names of ``module.forward``
    (for several inputs, e.g. ``input_ids``/``attention_mask``), else ``input`` / ``input0..``.
    """
    import inspect

    n = len(example_inputs)
    if names:
        return list(names)
    if module is not None and n > 1:
        try:
            params = [
                p.name
                for p in inspect.signature(module.forward).parameters.values()
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
            ]
        except (TypeError, ValueError):
            params = []
        if len(params) >= n:
            return params[:n]
    return ["input"] if n == 1 else [f"input{i}" for i in range(n)]
