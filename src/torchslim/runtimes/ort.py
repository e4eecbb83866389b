"""The ``onnxruntime`` runtime (CPU, CUDA and TensorRT execution providers).

The runtime builds from a PyTorch module, exported once with
:func:`~torchslim.lowering.onnx.export_for_runtime` (dynamic batch, and sequence for token inputs;
checked with ``onnx.checker``), or from an :class:`~torchslim.lowering.OnnxModel` a pass lowered
the model to (e.g. ONNX Runtime INT8 quantization). The session is created with
the configured graph optimisation level and thread counts, and ONNX Runtime writes the optimised
graph it runs (``model.optimized.onnx``) next to the portable ``model.onnx``.

Calls on CPU hand ONNX Runtime zero-copy NumPy views of the torch tensors and wrap the outputs
back without copying, through the session's low-level ``run`` (the public ``run`` re-validates
its arguments on every call, which costs as much as a tiny model's whole inference). On CUDA,
inputs and outputs are bound to device memory with IO binding.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from torchslim.errors import BackendUnavailableError
from torchslim.lowering import OnnxModel, export_for_runtime
from torchslim.runtimes._common import BaseDeployed, pack_outputs, resolve_threads
from torchslim.runtimes.base import lowered_for
from torchslim.runtimes.configs import GraphOptLevel, OrtConfig

__all__ = [
    "OrtDeployed",
    "build",
    "build_from_onnx",
    "default_config",
    "export_for_runtime",
    "load",
    "session_options",
]

_LEVELS = {
    GraphOptLevel.DISABLE: "ORT_DISABLE_ALL",
    GraphOptLevel.BASIC: "ORT_ENABLE_BASIC",
    GraphOptLevel.EXTENDED: "ORT_ENABLE_EXTENDED",
    GraphOptLevel.ALL: "ORT_ENABLE_ALL",
}


def session_options(config: OrtConfig, optimized_path: Path | None = None) -> Any:
    """``onnxruntime.SessionOptions`` for ``config``.

    ``intra_op_threads=None`` uses the torch thread count, so every runtime is compared at the
    same number of threads; ``0`` leaves ONNX Runtime's own default.
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = getattr(
        ort.GraphOptimizationLevel, _LEVELS[GraphOptLevel(config.graph_optimization)]
    )
    so.intra_op_num_threads = (
        0 if config.intra_op_threads == 0 else resolve_threads(config.intra_op_threads)
    )
    so.inter_op_num_threads = int(config.inter_op_threads)
    so.execution_mode = (
        ort.ExecutionMode.ORT_PARALLEL
        if config.parallel_execution
        else ort.ExecutionMode.ORT_SEQUENTIAL
    )
    so.log_severity_level = 3
    if optimized_path is not None:
        so.optimized_model_filepath = str(optimized_path)
    return so


def providers_for(config: OrtConfig) -> list[Any]:
    """Execution providers for ``config``, checked against what this ONNX Runtime offers.

    Raises:
        BackendUnavailableError: A requested provider is missing (e.g. CUDA without
            ``onnxruntime-gpu``).
    """
    import onnxruntime as ort

    if config.providers:
        wanted = list(config.providers)
    elif config.device == "cuda":
        wanted = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    else:
        wanted = ["CPUExecutionProvider"]
    have = set(ort.get_available_providers())
    for name in wanted:
        if name not in have:
            raise BackendUnavailableError(
                f"onnxruntime {name}",
                None,
                f"this ONNX Runtime offers {', '.join(sorted(have))}; install onnxruntime-gpu "
                "(with CUDA/TensorRT libraries) on a machine with an NVIDIA GPU",
            )
    out: list[Any] = []
    for name in wanted:
        if name == "TensorrtExecutionProvider":
            opts: dict[str, Any] = {"trt_fp16_enable": bool(config.trt_fp16)}
            if config.engine_cache_dir:
                Path(config.engine_cache_dir).mkdir(parents=True, exist_ok=True)
                opts.update(
                    trt_engine_cache_enable=True, trt_engine_cache_path=str(config.engine_cache_dir)
                )
            if len(config.trt_profile) == 3:
                opts.update(
                    trt_profile_min_shapes=config.trt_profile[0],
                    trt_profile_opt_shapes=config.trt_profile[1],
                    trt_profile_max_shapes=config.trt_profile[2],
                )
            out.append((name, opts))
        else:
            out.append(name)
    return out


class OrtDeployed(BaseDeployed):
    """An ONNX Runtime inference session.

    Args:
        session: The ``InferenceSession``.
        config: Its :class:`OrtConfig`.
        input_names: Graph input names in call order.
        build_seconds: Export + session creation time.
        workdir: Temporary directory holding ``model.onnx`` (and the optimised graph).
    """

    runtime = "onnxruntime"

    def __init__(
        self,
        session: Any,
        config: OrtConfig,
        input_names: Sequence[str],
        build_seconds: float,
        workdir: Any,
        onnx_path: Path,
        export_seconds: float = 0.0,
    ) -> None:
        import onnxruntime as ort

        super().__init__(config, input_names, build_seconds)
        self.session = session
        self._workdir = workdir
        self.onnx_path = onnx_path
        self.input_names = [i.name for i in session.get_inputs()]
        self.output_names = [o.name for o in session.get_outputs()]
        self.device = "cuda" if config.device == "cuda" else "cpu"
        self._run_options = ort.RunOptions()
        # The low-level run skips per-call argument validation; fall back to the public API.
        self._run = getattr(getattr(session, "_sess", None), "run", None)
        self._binding = session.io_binding() if self.device == "cuda" else None
        self._out_shapes: dict[tuple[tuple[int, ...], ...], list[tuple[int, ...]]] = {}
        so = session.get_session_options()
        self.info = {
            "providers": session.get_providers(),
            "opset": config.opset,
            "graph_optimization": GraphOptLevel(config.graph_optimization).value,
            "intra_op_threads": so.intra_op_num_threads,
            "inter_op_threads": so.inter_op_num_threads,
            "export_seconds": round(export_seconds, 3),
            "precision": "fp32",
        }

    def __call__(self, *inputs: Any) -> Any:
        if self._binding is not None:
            return self._call_cuda(inputs)
        feed = {
            n: x.detach().contiguous().numpy()
            for n, x in zip(self.input_names, inputs, strict=True)
        }
        if self._run is not None:
            outs = self._run(self.output_names, feed, self._run_options)
        else:  # pragma: no cover - older ONNX Runtime layouts
            outs = self.session.run(self.output_names, feed)
        return pack_outputs([torch.from_numpy(o) for o in outs])

    def _call_cuda(self, inputs: Sequence[Any]) -> Any:  # pragma: no cover - needs a GPU
        import numpy as np

        b = self._binding
        assert b is not None
        b.clear_binding_inputs()
        b.clear_binding_outputs()
        xs = [x.detach().to("cuda").contiguous() for x in inputs]
        for n, x in zip(self.input_names, xs, strict=True):
            b.bind_input(n, "cuda", 0, _np_dtype(x.dtype), list(x.shape), x.data_ptr())
        key = tuple(tuple(x.shape) for x in xs)
        shapes = self._out_shapes.get(key)
        if shapes is None:
            for n in self.output_names:
                b.bind_output(n, "cuda")
            self.session.run_with_iobinding(b)
            outs = [torch.from_numpy(np.asarray(o)).to("cuda") for o in b.copy_outputs_to_cpu()]
            self._out_shapes[key] = [tuple(o.shape) for o in outs]
            return pack_outputs(outs)
        outs = [torch.empty(s, dtype=torch.float32, device="cuda") for s in shapes]
        for n, o in zip(self.output_names, outs, strict=True):
            b.bind_output(n, "cuda", 0, np.float32, list(o.shape), o.data_ptr())
        self.session.run_with_iobinding(b)
        return pack_outputs(outs)

    def representation(self) -> OnnxModel:
        """The ONNX graph this session runs, as a representation (to build it again)."""
        return OnnxModel(self.onnx_path, list(self.input_names), self._workdir)

    def _write(self, directory: Path) -> str:
        # Only the portable graph: the session rebuilds its optimised graph when it loads, so a
        # saved optimised copy would double the files a deployment carries.
        shutil.copyfile(self.onnx_path, directory / "model.onnx")
        return "model.onnx"

    @classmethod
    def _read(cls, directory: Path, config: Any, meta: dict[str, Any]) -> OrtDeployed:
        workdir = tempfile.TemporaryDirectory(prefix="torchslim-ort-")
        local = Path(workdir.name) / "model.onnx"
        shutil.copyfile(directory / meta.get("main_file", "model.onnx"), local)
        return build_from_onnx(local, config, workdir=workdir)


def _np_dtype(dtype: torch.dtype) -> Any:  # pragma: no cover - GPU path
    import numpy as np

    return {
        torch.float32: np.float32,
        torch.float16: np.float16,
        torch.int64: np.int64,
        torch.int32: np.int32,
        torch.bool: np.bool_,
    }[dtype]


def build_from_onnx(
    onnx_path: Path, config: OrtConfig, *, workdir: Any = None, export_seconds: float = 0.0
) -> OrtDeployed:
    """Create the session for an ONNX file already on disk.

    Args:
        onnx_path: The ``.onnx`` file (the session keeps reading nothing else after creation).
        config: Session settings.
        workdir: A ``TemporaryDirectory`` owning ``onnx_path`` (kept alive by the result).
        export_seconds: Export time, added to ``build_seconds``.
    """
    import onnxruntime as ort

    start = time.perf_counter()
    providers = providers_for(config)
    compiling = any(
        (p[0] if isinstance(p, tuple) else p) == "TensorrtExecutionProvider" for p in providers
    )
    opt_path = None if compiling else onnx_path.with_name("model.optimized.onnx")
    so = session_options(config, opt_path)
    session = ort.InferenceSession(str(onnx_path), so, providers=providers)
    seconds = time.perf_counter() - start + export_seconds
    return OrtDeployed(session, config, [], seconds, workdir, onnx_path, export_seconds)


def build(
    model: nn.Module | OnnxModel, config: OrtConfig, example_inputs: tuple[Any, ...]
) -> OrtDeployed:
    """Open an ONNX Runtime session on ``model``: a module (exported to ONNX first) or an
    :class:`~torchslim.lowering.OnnxModel` (its graph, copied into the session's own directory).

    Raises:
        ExportError: The ONNX export failed.
        BackendUnavailableError: A requested execution provider is not available.
        TorchslimError: ``model`` is a representation lowered for another runtime.
    """
    providers_for(config)  # fail fast, before a long export
    lowered = lowered_for(model, OrtDeployed.runtime)
    workdir = tempfile.TemporaryDirectory(prefix="torchslim-ort-")
    path = Path(workdir.name) / "model.onnx"
    if lowered is not None:
        shutil.copyfile(lowered.path, path)
        return build_from_onnx(path, config, workdir=workdir)
    start = time.perf_counter()
    module = cast("nn.Module", model)
    export_for_runtime(module, example_inputs, path, opset=config.opset, dynamic=config.dynamic)
    export_seconds = time.perf_counter() - start
    return build_from_onnx(path, config, workdir=workdir, export_seconds=export_seconds)


def default_config(representation: OnnxModel) -> OrtConfig:
    """The config an ONNX graph from a pass runs with when the recipe names no runtime."""
    return OrtConfig()


def load(directory: str | Path) -> OrtDeployed:
    """Load an ``onnxruntime`` runtime saved with :meth:`OrtDeployed.save`."""
    return OrtDeployed.load(directory)  # type: ignore[return-value]
