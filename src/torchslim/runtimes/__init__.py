"""Runtimes: turn a model into something callable and savable, with one signature for all.

``build(model, config, example_inputs)`` returns a :class:`~torchslim.runtimes.base.Deployed`
that is called like the module (``deployed(*inputs)``), reports its build time and saves itself.
``model`` is a PyTorch module or a representation a pass lowered it to
(:class:`~torchslim.lowering.OnnxModel`, :class:`~torchslim.lowering.OpenVINOModel`);
``default_config(representation)`` is the config its runtime uses when none is given.
Optional backends that are not installed are listed as unavailable, never a crash.
"""

from __future__ import annotations

from torchslim.runtimes import catalog as _catalog  # noqa: F401  (registers the runtimes)
from torchslim.runtimes.base import (
    RUNTIMES,
    Deployed,
    build,
    default_config,
    list_runtimes,
    load_deployed,
    register_runtime,
)

__all__ = [
    "RUNTIMES",
    "Deployed",
    "build",
    "default_config",
    "list_runtimes",
    "load_deployed",
    "register_runtime",
]
