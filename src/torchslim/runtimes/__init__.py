"""Runtimes: turn a module into something callable and savable, with one signature for all.

``build(module, config, example_inputs)`` returns a :class:`~torchslim.runtimes.base.Deployed`
that is called like the module (``deployed(*inputs)``), reports its build time and saves itself.
Optional backends that are not installed are listed as unavailable, never a crash.
"""

from __future__ import annotations

from torchslim.runtimes import catalog as _catalog  # noqa: F401  (registers the runtimes)
from torchslim.runtimes.base import (
    RUNTIMES,
    Deployed,
    build,
    list_runtimes,
    load_deployed,
    rebuild,
    register_runtime,
)

__all__ = [
    "RUNTIMES",
    "Deployed",
    "build",
    "list_runtimes",
    "load_deployed",
    "rebuild",
    "register_runtime",
]
