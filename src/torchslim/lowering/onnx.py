"""Lowering to ONNX: the one ONNX exporter and the :class:`OnnxModel` representation.

:func:`export_onnx` uses the ``torch.export``-based exporter with dynamic axes (batch, and
sequence for integer token inputs), checks the graph with ``onnx.checker`` and writes atomically.
:func:`export_for_runtime` is the policy every caller uses (a private eval-mode copy, traced at
batch ≥ 2 so the batch stays symbolic, inputs named after ``forward``'s parameters).

:class:`OnnxModel` is what a pass that lowers to ONNX (ONNX Runtime quantization) produces: the
``.onnx`` file, the temporary directory that owns it and the graph's input names. The
``onnxruntime`` runtime builds from it (``runtimes.build(onnx_model, OrtConfig(), ...)``); its
:meth:`OnnxModel.run` is a plain reference session, for evaluating a candidate inside a pass.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from torchslim.errors import ExportError
from torchslim.lowering.program import export_error, input_names_for, min_batch, prepare_module

if TYPE_CHECKING:
    from torch import nn

__all__ = ["DEFAULT_OPSET", "OnnxModel", "export_for_runtime", "export_onnx"]

DEFAULT_OPSET = 18

_OTHERS = "inductor, torchscript or eager"


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
        raise export_error("ONNX export", exc, _OTHERS) from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def export_for_runtime(
    module: nn.Module,
    example_inputs: Sequence[Any],
    path: Path,
    *,
    opset: int = DEFAULT_OPSET,
    dynamic: bool = True,
    input_names: Sequence[str] | None = None,
) -> Path:
    """Export ``module`` to ONNX for a runtime (batch kept symbolic by exporting at batch 2)."""
    args = min_batch(example_inputs) if dynamic else tuple(example_inputs)
    return export_onnx(
        prepare_module(module),
        args,
        path,
        input_names=input_names_for(args, input_names, module=module),
        opset=opset,
        dynamic=dynamic,
    )


def graph_input_names(path: str | Path) -> list[str]:
    """The input names of the ONNX graph at ``path`` (initializers excluded), in order."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    inits = {i.name for i in graph.initializer}
    return [i.name for i in graph.input if i.name not in inits]


@dataclass(eq=False)
class OnnxModel:
    """A model lowered to an ONNX graph, for the ``onnxruntime`` runtime.

    Attributes:
        path: The ``.onnx`` file (self-contained: no external data).
        input_names: Graph input names, in call order.
        workdir: A ``tempfile.TemporaryDirectory`` that owns ``path`` (kept alive with this
            object), or ``None`` when the file belongs to the caller.
        info: Facts about the lowering (e.g. ``{"format": "onnx (QDQ)"}``).
        runtime: ``"onnxruntime"``, the runtime that builds from it.
    """

    path: Path
    input_names: list[str]
    workdir: Any = field(default=None, repr=False)
    info: dict[str, Any] = field(default_factory=dict)
    runtime: ClassVar[str] = "onnxruntime"
    _session: Any = field(default=None, init=False, repr=False)

    @classmethod
    def from_file(cls, path: str | Path, input_names: Sequence[str] | None = None) -> OnnxModel:
        """A representation owning a private copy of the ``.onnx`` file at ``path``."""
        workdir = tempfile.TemporaryDirectory(prefix="torchslim-onnx-")
        local = Path(workdir.name) / "model.onnx"
        shutil.copyfile(path, local)
        names = list(input_names) if input_names else graph_input_names(local)
        return cls(local, names, workdir)

    def run(self, *inputs: Any) -> Any:
        """Reference run on torch tensors through a plain ``onnxruntime.InferenceSession``.

        CPU, ONNX Runtime's full graph optimisation, the torch intra-op thread count: the
        settings of the ``onnxruntime`` runtime's default ``OrtConfig()``, so a pass evaluates
        what that runtime will compute. For deployment, build the runtime instead.
        """
        import torch

        from torchslim.compare import pack_outputs

        if self._session is None:
            import onnxruntime as ort

            so = ort.SessionOptions()
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            so.intra_op_num_threads = int(torch.get_num_threads())
            so.inter_op_num_threads = 1
            so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            so.log_severity_level = 3
            self._session = ort.InferenceSession(
                str(self.path), so, providers=["CPUExecutionProvider"]
            )
        session = self._session
        names = [i.name for i in session.get_inputs()]
        feed = {
            n: x.detach().contiguous().cpu().numpy() for n, x in zip(names, inputs, strict=True)
        }
        outs = session.run(None, feed)
        return pack_outputs([torch.from_numpy(o) for o in outs])
