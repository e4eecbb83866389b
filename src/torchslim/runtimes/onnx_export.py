"""Export a PyTorch module to an ONNX file (shared by the ONNX Runtime/OpenVINO runtimes and passes).

The export uses the ``torch.export``-based exporter with dynamic axes (batch, and sequence for
integer token inputs), checks the graph with ``onnx.checker`` and writes atomically.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torchslim.errors import ExportError

if TYPE_CHECKING:
    from torch import nn

__all__ = ["DEFAULT_OPSET", "export_onnx"]

DEFAULT_OPSET = 18


def _dynamic_shapes(
    example_inputs: Sequence[Any], dynamic_axes: Sequence[Sequence[int]] | None
) -> tuple[dict[int, Any], ...]:
    import torch

    batch = torch.export.Dim("batch", min=1, max=4096)
    seq = torch.export.Dim("seq", min=2, max=4096)
    shapes = []
    for i, x in enumerate(example_inputs):
        axes = list(dynamic_axes[i]) if dynamic_axes is not None else None
        if axes is None:
            axes = [0]
            if not x.is_floating_point() and x.dim() == 2:
                axes.append(1)
        dims: dict[int, Any] = {}
        for a in axes:
            dims[a] = batch if a == 0 else seq
        shapes.append(dims)
    return tuple(shapes)


def export_onnx(
    module: nn.Module,
    example_inputs: Sequence[Any],
    path: str | Path,
    *,
    input_names: Sequence[str] | None = None,
    dynamic_axes: Sequence[Sequence[int]] | None = None,
    opset: int = DEFAULT_OPSET,
    dynamic: bool = True,
) -> Path:
    """Export ``module`` to ONNX at ``path`` (atomically) and validate it.

    Args:
        module: The model in eval mode (it is not modified).
        example_inputs: One tensor per input. Batch size 2+ is recommended so the exporter does
            not specialise the batch dimension to 1.
        path: Where to write the ``.onnx`` file.
        input_names: Names of the graph inputs (default ``input``/``input0..``).
        dynamic_axes: Per input, the axes that may vary (default: batch; plus sequence for
            2-D integer inputs).
        opset: ONNX opset version.
        dynamic: Export with dynamic axes (False fixes every shape).

    Returns:
        The written path.

    Raises:
        ExportError: The exporter failed; the message names the failing op or module.
    """
    import onnx
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = (
        list(input_names)
        if input_names
        else (
            ["input"]
            if len(example_inputs) == 1
            else [f"input{i}" for i in range(len(example_inputs))]
        )
    )
    shapes = _dynamic_shapes(example_inputs, dynamic_axes) if dynamic else None
    fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=path.parent)
    os.close(fd)
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
        ):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                tuple(example_inputs),
                tmp,
                input_names=names,
                output_names=["output"],
                dynamic_shapes=shapes,
                dynamo=True,
                opset_version=opset,
                external_data=False,
                verbose=False,
            )
        onnx.checker.check_model(tmp)
        os.replace(tmp, path)
    except ExportError:
        raise
    except Exception as exc:
        from torchslim.runtimes._common import export_error

        raise export_error("ONNX export", exc, "inductor, torchscript or eager") from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
