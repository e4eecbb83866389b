"""The ``export`` runtime: a ``torch.export`` program (``.pt2``), optionally AOTInductor-compiled.

Also home of :func:`export_program`, the one place that calls ``torch.export`` with dynamic batch
(and sequence) axes and turns its failures into a short :class:`~torchslim.errors.ExportError`.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from torchslim.errors import SourceError
from torchslim.lowering import export_program, min_batch
from torchslim.runtimes._common import (
    BaseDeployed,
    export_error,
    flatten_outputs,
    input_names_for,
    pack_outputs,
    quiet,
    torch_threads,
)
from torchslim.runtimes.configs import ExportConfig

__all__ = ["ExportedDeployed", "aoti_package", "build", "export_program", "load", "min_batch"]


def aoti_package(ep: torch.export.ExportedProgram, path: Path, *, freezing: bool = True) -> Path:
    """Compile ``ep`` with AOTInductor into a ``.pt2`` package at ``path``.

    Raises:
        ExportError: AOTInductor failed (e.g. no C++ compiler).
    """
    import torch._inductor

    try:
        with quiet():
            out = torch._inductor.aoti_compile_and_package(
                ep, package_path=str(path), inductor_configs={"freezing": freezing}
            )
    except Exception as exc:
        raise export_error(
            "AOTInductor compilation", exc, "export without aot_inductor, onnxruntime or openvino"
        ) from exc
    return Path(out)


def _load_program(path: Path) -> torch.export.ExportedProgram:
    """Load an output directory's ``model.pt2`` without running code from the file.

    Raises:
        UntrustedPickleError: The program needs full unpickling (or holds code).
        SourceError: Not a loadable exported program.
    """
    from torchslim._safe_load import load_exported_program

    return load_exported_program(path)


def _load_aoti(path: Path) -> Any:
    import torch._inductor

    try:
        return torch._inductor.aoti_load_package(str(path))
    except Exception as exc:
        raise SourceError(
            f"Cannot load the AOTInductor package '{path}': {exc}.",
            "AOTInductor packages only load on the machine type and torch version "
            "that built them; re-export here.",
        ) from exc


class ExportedDeployed(BaseDeployed):
    """An exported program run through ``ExportedProgram.module()`` or an AOTInductor runner.

    Args:
        fn: The callable (graph module or AOTInductor runner).
        config: Its :class:`ExportConfig`.
        input_names: Input names in call order.
        build_seconds: Export (+ AOTInductor compile) time.
        program: The exported program (``None`` for AOTInductor builds).
        package: Path of the AOTInductor package (kept in a private temp dir).
    """

    runtime = "export"

    def __init__(
        self,
        fn: Any,
        config: ExportConfig,
        input_names: Sequence[str],
        build_seconds: float = 0.0,
        program: torch.export.ExportedProgram | None = None,
        package: Path | None = None,
        workdir: Any = None,
    ) -> None:
        super().__init__(config, input_names, build_seconds)
        self.fn = fn
        self.program = program
        self.package = package
        self._workdir = workdir  # keeps the temp dir alive
        self.info = {"aot_inductor": config.aot_inductor, "dynamic_batch": config.dynamic_batch}

    def __call__(self, *inputs: Any) -> Any:
        with torch_threads(self.config.threads), torch.inference_mode():
            return pack_outputs(flatten_outputs(self.fn(*inputs)))

    def _write(self, directory: Path) -> str:
        if self.package is not None:
            shutil.copyfile(self.package, directory / "model.pt2")
        else:
            assert self.program is not None
            torch.export.save(self.program, str(directory / "model.pt2"))
        return "model.pt2"

    @classmethod
    def _read(cls, directory: Path, config: Any, meta: dict[str, Any]) -> ExportedDeployed:
        path = directory / meta.get("main_file", "model.pt2")
        names = meta.get("input_names", ["input"])
        if config.aot_inductor:
            workdir = tempfile.TemporaryDirectory(prefix="torchslim-aoti-")
            local = Path(workdir.name) / "model.pt2"
            shutil.copyfile(path, local)
            return cls(_load_aoti(local), config, names, 0.0, None, local, workdir)
        ep = _load_program(path)
        return cls(ep.module(), config, names, 0.0, ep)


def build(
    module: nn.Module, config: ExportConfig, example_inputs: tuple[Any, ...]
) -> ExportedDeployed:
    """Export ``module`` (and compile it with AOTInductor when asked)."""
    from torchslim.lowering import prepare_module

    start = time.perf_counter()
    work = prepare_module(module)
    names = input_names_for(example_inputs, module=module)
    with torch_threads(config.threads):
        ep = export_program(work, example_inputs, dynamic=config.dynamic_batch)
        if not config.aot_inductor:
            return ExportedDeployed(ep.module(), config, names, time.perf_counter() - start, ep)
        workdir = tempfile.TemporaryDirectory(prefix="torchslim-aoti-")
        pkg = aoti_package(ep, Path(workdir.name) / "model.pt2")
        runner = _load_aoti(pkg)
    return ExportedDeployed(runner, config, names, time.perf_counter() - start, None, pkg, workdir)


def load(directory: str | Path) -> ExportedDeployed:
    """Load an ``export`` runtime saved with :meth:`ExportedDeployed.save`."""
    return ExportedDeployed.load(directory)  # type: ignore[return-value]
