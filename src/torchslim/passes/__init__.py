"""Passes: one transformation ``nn.Module -> nn.Module`` each, configured by a frozen config.

Dispatch is by config type (one verb per technique, configured by an object)::

    from torchslim.passes import apply_pass
    result = apply_pass(model, FuseConfig(), PassContext(example_inputs=x))

Every pass works on a deep copy: the caller's model is never modified. A pass declares what it
needs (``calibration_data``, ``training_data``, ``teacher``, ``example_inputs``) and the registry
checks it before running.
"""

from __future__ import annotations

from torchslim.passes import catalog as _catalog  # noqa: F401  (registers the built-in passes)
from torchslim.passes.base import (
    PASSES,
    PassContext,
    PassResult,
    apply_pass,
    list_passes,
    register_pass,
)

__all__ = ["PASSES", "PassContext", "PassResult", "apply_pass", "list_passes", "register_pass"]
