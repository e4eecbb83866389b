"""The ``torchscript`` runtime: ``torch.jit`` trace or script, freeze, ``optimize_for_inference``.

Saved as ``model.ts`` (``torch.jit.save``); loading runs no pickled Python code.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from torchslim.errors import ExportError, SourceError
from torchslim.runtimes._common import (
    BaseDeployed,
    export_error,
    flatten_outputs,
    input_names_for,
    pack_outputs,
    quiet,
    torch_threads,
    trace_guard,
)
from torchslim.runtimes.configs import TorchScriptConfig, TraceMethod

__all__ = ["TorchScriptDeployed", "build", "load"]


class TorchScriptDeployed(BaseDeployed):
    """A TorchScript module.

    Args:
        module: The scripted/traced (and possibly frozen) module.
        config: Its :class:`TorchScriptConfig`.
        input_names: Input names in call order.
        build_seconds: Trace/script + freeze + optimise time.
        savable: The module to save: the scripted module before freezing
            (``optimize_for_inference`` pre-packs weights into objects TorchScript cannot
            serialise), frozen and optimised again on load.
    """

    runtime = "torchscript"

    def __init__(
        self,
        module: Any,
        config: TorchScriptConfig,
        input_names: Sequence[str],
        build_seconds: float = 0.0,
        savable: Any = None,
    ) -> None:
        super().__init__(config, input_names, build_seconds)
        self.module = module
        self.savable = savable if savable is not None else module
        self.info = {
            "method": TraceMethod(config.method).value,
            "frozen": config.freeze or config.optimize_for_inference,
            "optimize_for_inference": config.optimize_for_inference,
        }

    def __call__(self, *inputs: Any) -> Any:
        with torch_threads(self.config.threads), torch.no_grad():
            return pack_outputs(flatten_outputs(self.module(*inputs)))

    def _write(self, directory: Path) -> str:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.jit.save(self.savable, str(directory / "model.ts"))
        return "model.ts"

    @classmethod
    def _read(cls, directory: Path, config: Any, meta: dict[str, Any]) -> TorchScriptDeployed:
        from torchslim._safe_load import load_torchscript

        path = directory / meta.get("main_file", "model.ts")
        saved = load_torchscript(path).eval()  # raises a one-line SourceError itself
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                module = _finish(saved, config)
        except Exception as exc:
            raise SourceError(f"Cannot load TorchScript '{path}': {exc}.", "Re-export it.") from exc
        return cls(module, config, meta.get("input_names", ["input"]), savable=saved)


def _finish(ts: Any, config: TorchScriptConfig) -> Any:
    """Freeze and optimise a scripted module (on a copy; ``ts`` itself stays savable)."""
    if config.freeze or config.optimize_for_inference:
        ts = torch.jit.freeze(ts)
    if config.optimize_for_inference:
        ts = torch.jit.optimize_for_inference(ts)
    return ts


def build(
    module: nn.Module, config: TorchScriptConfig, example_inputs: tuple[Any, ...]
) -> TorchScriptDeployed:
    """Trace or script ``module``, then freeze and optimise it for inference.

    Raises:
        ExportError: Tracing/scripting failed (names the op or line, suggests another runtime).
    """
    from torchslim.lowering import prepare_module

    work = prepare_module(module)
    method = TraceMethod(config.method)
    start = time.perf_counter()
    trace_warnings: list[str] = []
    with torch_threads(config.threads), torch.no_grad():
        try:
            if method is TraceMethod.SCRIPT:
                with quiet():
                    ts = torch.jit.script(work)
            else:
                with trace_guard("TorchScript trace", "method=script, export or inductor") as tw:
                    ts = torch.jit.trace(
                        work, tuple(example_inputs), strict=False, check_trace=False
                    )
                trace_warnings = tw
            with quiet():
                ts = ts.eval()
                savable = ts
                ts = _finish(ts, config)
        except ExportError:
            raise
        except Exception as exc:
            other = "script" if method is TraceMethod.TRACE else "trace"
            raise export_error(
                f"TorchScript {method.value}", exc, f"method={other}, eager, export or inductor"
            ) from exc
    deployed = TorchScriptDeployed(
        ts,
        config,
        input_names_for(example_inputs, module=module),
        time.perf_counter() - start,
        savable,
    )
    if trace_warnings:
        deployed.info["trace_warnings"] = sorted(set(trace_warnings))
    return deployed


def load(directory: str | Path) -> TorchScriptDeployed:
    """Load a ``torchscript`` runtime saved with :meth:`TorchScriptDeployed.save`."""
    return TorchScriptDeployed.load(directory)  # type: ignore[return-value]
