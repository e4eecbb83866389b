"""The ``eager`` runtime: plain PyTorch under ``torch.inference_mode`` (optionally channels-last).

Saving writes a ``torch.export`` program (``model.pt2``): it needs no Python source of the model
and never unpickles code on load.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from torchslim.lowering import prepare_module
from torchslim.runtimes._common import BaseDeployed, flatten_outputs, pack_outputs, torch_threads
from torchslim.runtimes.configs import EagerConfig

__all__ = ["EagerDeployed", "build", "load", "to_channels_last"]


def to_channels_last(x: Any) -> Any:
    """4-D float tensors in channels-last memory format; anything else unchanged."""
    if isinstance(x, torch.Tensor) and x.dim() == 4 and x.is_floating_point():
        return x.contiguous(memory_format=torch.channels_last)
    return x


class EagerDeployed(BaseDeployed):
    """A module run eagerly.

    Args:
        module: The eval-mode module (owned by this object).
        config: Its :class:`EagerConfig`.
        input_names: Input names in call order.
        build_seconds: Preparation time.
        example_inputs: Kept so :meth:`save` can export the program.
    """

    runtime = "eager"

    def __init__(
        self,
        module: nn.Module,
        config: EagerConfig,
        input_names: Sequence[str],
        build_seconds: float = 0.0,
        example_inputs: tuple[Any, ...] | None = None,
    ) -> None:
        super().__init__(config, input_names, build_seconds)
        self.module = module
        self.example_inputs = example_inputs
        self.info = {"channels_last": config.channels_last, "threads": config.threads}

    def __call__(self, *inputs: Any) -> Any:
        with torch_threads(self.config.threads), torch.inference_mode():
            if self.config.channels_last:
                inputs = tuple(to_channels_last(x) for x in inputs)
            return pack_outputs(flatten_outputs(self.module(*inputs)))

    def _write(self, directory: Path) -> str:
        from torchslim.runtimes.exported import export_program

        if self.example_inputs is None:
            raise RuntimeError("this eager runtime was loaded from disk; save the original build")
        ep = export_program(self.module, self.example_inputs, dynamic=True)
        torch.export.save(ep, str(directory / "model.pt2"))
        return "model.pt2"

    @classmethod
    def _read(cls, directory: Path, config: Any, meta: dict[str, Any]) -> EagerDeployed:
        from torchslim.runtimes.exported import _load_program

        ep = _load_program(directory / meta.get("main_file", "model.pt2"))
        module = ep.module()
        if config.channels_last:
            module = module.to(memory_format=torch.channels_last)
        example = tuple(ep.example_inputs[0]) if ep.example_inputs else None
        return cls(module, config, meta.get("input_names", ["input"]), 0.0, example)


def build(module: nn.Module, config: EagerConfig, example_inputs: tuple[Any, ...]) -> EagerDeployed:
    """Build the eager runtime (a private eval-mode copy of ``module``)."""
    from torchslim.runtimes._common import input_names_for

    start = time.perf_counter()
    work = prepare_module(module)
    if config.channels_last:
        work = work.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return EagerDeployed(
        work,
        config,
        input_names_for(example_inputs, module=module),
        time.perf_counter() - start,
        tuple(example_inputs),
    )


def load(directory: str | Path) -> EagerDeployed:
    """Load an eager runtime saved with :meth:`EagerDeployed.save`."""
    return EagerDeployed.load(directory)  # type: ignore[return-value]
