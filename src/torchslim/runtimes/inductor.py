"""The ``inductor`` runtime: ``torch.compile`` with the Inductor backend.

Inductor options (mode, ``freezing``) are passed to this one compile through
``torch.compile(options=...)``: no global ``torch._inductor.config`` value is changed, so other
compiled models in the process are unaffected. Compilation is lazy; :func:`build` runs the first
call and reports its time as ``build_seconds``.

PT2E INT8 graphs (``torch`` static/QAT quantization produces them) are compiled by
:class:`Int8Inductor`: Inductor's quantization lowering to oneDNN INT8 kernels reads the global
``freezing`` flag when it compiles (also on a recompile for a new input shape), so every call of an
INT8 graph runs inside a scoped, always restored ``freezing`` patch (:func:`inductor_patch`).

Saving uses ``torch.export`` + AOTInductor (a ``.pt2`` package with native code for this machine);
loading gives back a runtime that runs that package.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from torchslim.runtimes._common import (
    BaseDeployed,
    export_error,
    flatten_outputs,
    input_names_for,
    pack_outputs,
    quiet,
    torch_threads,
)
from torchslim.runtimes.configs import CompileMode, InductorConfig

__all__ = [
    "InductorDeployed",
    "Int8Inductor",
    "build",
    "compile_int8",
    "inductor_options",
    "inductor_patch",
    "is_int8_graph",
    "load",
]


def inductor_options(config: InductorConfig) -> dict[str, Any]:
    """The Inductor options ``torch.compile(mode=...)`` would use, plus ``freezing``."""
    import torch._inductor

    mode = CompileMode(config.mode).value
    opts = dict(torch._inductor.list_mode_options(mode)) if mode != "default" else {}
    if not torch.cuda.is_available():
        opts = {k: v for k, v in opts.items() if not k.startswith("triton.")}
    opts["freezing"] = bool(config.freezing)
    return opts


@contextlib.contextmanager
def inductor_patch(**values: Any) -> Iterator[None]:
    """Set ``torch._inductor.config`` values for the block only (always restored).

    Example::

        with inductor_patch(freezing=True):
            compiled(x)
    """
    import torch._inductor.config as cfg

    with cfg.patch(values):
        yield


class InductorDeployed(BaseDeployed):
    """A ``torch.compile``-d module (or, once loaded from disk, an AOTInductor package).

    Args:
        fn: The compiled callable.
        config: Its :class:`InductorConfig`.
        input_names: Input names in call order.
        build_seconds: Compile time (the first call).
        module: The eager module it was compiled from (for saving).
        example_inputs: Inputs used to compile (for saving).
    """

    runtime = "inductor"

    def __init__(
        self,
        fn: Any,
        config: InductorConfig,
        input_names: Sequence[str],
        build_seconds: float = 0.0,
        module: nn.Module | None = None,
        example_inputs: tuple[Any, ...] | None = None,
        package: Path | None = None,
        workdir: Any = None,
    ) -> None:
        super().__init__(config, input_names, build_seconds)
        self.fn = fn
        self.module = module
        self.example_inputs = example_inputs
        self.package = package
        self._workdir = workdir
        self.info = {
            "mode": CompileMode(config.mode).value,
            "freezing": config.freezing,
            "dynamic": config.dynamic,
            "threads": config.threads or torch.get_num_threads(),
            "aot_inductor": package is not None,
        }

    def __call__(self, *inputs: Any) -> Any:
        with torch_threads(self.config.threads), torch.no_grad():
            return pack_outputs(flatten_outputs(self.fn(*inputs)))

    def _write(self, directory: Path) -> str:
        from torchslim.runtimes.exported import aoti_package, export_program

        if self.package is None:
            assert self.module is not None and self.example_inputs is not None
            with torch_threads(self.config.threads):
                ep = export_program(self.module, self.example_inputs, dynamic=True)
                aoti_package(ep, directory / "model.pt2", freezing=self.config.freezing)
        else:
            shutil.copyfile(self.package, directory / "model.pt2")
        return "model.pt2"

    @classmethod
    def _read(cls, directory: Path, config: Any, meta: dict[str, Any]) -> InductorDeployed:
        from torchslim.runtimes.exported import _load_aoti

        workdir = tempfile.TemporaryDirectory(prefix="torchslim-aoti-")
        local = Path(workdir.name) / "model.pt2"
        shutil.copyfile(directory / meta.get("main_file", "model.pt2"), local)
        return cls(
            _load_aoti(local),
            config,
            meta.get("input_names", ["input"]),
            0.0,
            package=local,
            workdir=workdir,
        )


def is_int8_graph(module: Any) -> bool:
    """True for a PT2E-converted INT8 graph (quantize/dequantize ops in its FX graph)."""
    graph = getattr(module, "graph", None)
    nodes = getattr(graph, "nodes", None)
    if nodes is None:
        return False
    return any(
        n.op == "call_function" and "quantize" in str(n.target) and "decomposed" in str(n.target)
        for n in nodes
    )


class Int8Inductor(InductorDeployed):
    """A PT2E INT8 graph compiled by Inductor with freezing (the INT8 oneDNN kernels need it).

    Inductor's quantization lowering reads the global ``freezing`` flag at compile time, and a
    new input shape recompiles, so every call runs inside a scoped (always restored) patch.

    Attributes:
        runtime: ``"inductor"``.
        build_seconds: Compile time (the first call).
        module: The uncompiled INT8 graph (what is saved).
    """

    def __init__(
        self, module: nn.Module, inputs: tuple[Any, ...], config: InductorConfig | None = None
    ) -> None:
        config = config or InductorConfig()
        with torch_threads(config.threads):
            fn = torch.compile(
                module,
                dynamic=config.dynamic,
                fullgraph=config.fullgraph,
                options=inductor_options(config),
            )
        super().__init__(
            fn, config, input_names_for(inputs, module=module), 0.0, module, tuple(inputs)
        )
        self.info["int8"] = "pt2e graph, oneDNN INT8 kernels (freezing)"
        start = time.perf_counter()
        with quiet():
            self(*inputs)
        self.build_seconds = time.perf_counter() - start

    def __call__(self, *inputs: Any) -> Any:
        with (
            torch_threads(self.config.threads),
            inductor_patch(freezing=bool(self.config.freezing)),
            torch.no_grad(),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore")
            return pack_outputs(flatten_outputs(self.fn(*inputs)))


def compile_int8(
    module: nn.Module, inputs: tuple[Any, ...], config: InductorConfig | None = None
) -> Int8Inductor:
    """Compile a PT2E-converted INT8 graph with Inductor (freezing on) and run it once.

    Raises:
        ExportError: Compilation failed (suggests the eager runtime or another backend).
    """
    try:
        return Int8Inductor(module, inputs, config)
    except Exception as exc:
        raise export_error(
            "Inductor compile of the INT8 graph",
            exc,
            "eager (QuantizeConfig(compile=False)), onnxruntime or openvino",
        ) from exc


def build(
    module: nn.Module, config: InductorConfig, example_inputs: tuple[Any, ...]
) -> InductorDeployed:
    """Compile ``module`` and run it once (the compile happens on that first call).

    A PT2E INT8 graph (:func:`is_int8_graph`) is compiled by :func:`compile_int8`.

    Raises:
        ExportError: Compilation failed (names the op or line, suggests another runtime).
    """
    from torchslim.lowering import prepare_module

    if is_int8_graph(module):
        return compile_int8(module, tuple(example_inputs), config)
    work = prepare_module(module)
    start = time.perf_counter()
    with torch_threads(config.threads):
        compiled = torch.compile(
            work,
            dynamic=config.dynamic,
            fullgraph=config.fullgraph,
            options=inductor_options(config),
        )
        try:
            with quiet(), torch.no_grad():
                compiled(*example_inputs)
        except Exception as exc:
            raise export_error("torch.compile", exc, "eager, torchscript or onnxruntime") from exc
    seconds = time.perf_counter() - start
    return InductorDeployed(
        compiled,
        config,
        input_names_for(example_inputs, module=module),
        seconds,
        work,
        tuple(example_inputs),
    )


def load(directory: str | Path) -> InductorDeployed:
    """Load an ``inductor`` runtime saved as an AOTInductor package."""
    return InductorDeployed.load(directory)  # type: ignore[return-value]
