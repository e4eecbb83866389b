"""The output-handling primitives shared by parity checks, evaluation and every runtime.

A model's output may be a tensor, a tuple, a dict or a Hugging Face output object; these two
functions are the one definition of how torchslim flattens it for comparison and packs a
runtime's tensors back (one tensor, else a tuple).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["flatten_outputs", "pack_outputs"]


def flatten_outputs(out: Any) -> list[torch.Tensor]:
    """All tensors in a (possibly nested) model output, in order (dicts by insertion order)."""
    import torch

    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict) or hasattr(out, "to_tuple"):
        values = list(out.values()) if isinstance(out, dict) else list(out.to_tuple())
        return [t for v in values for t in flatten_outputs(v)]
    if isinstance(out, (list, tuple)):
        return [t for v in out for t in flatten_outputs(v)]
    return []


def pack_outputs(tensors: Sequence[torch.Tensor]) -> Any:
    """One tensor when there is one output, else a tuple (the contract of every runtime)."""
    return tensors[0] if len(tensors) == 1 else tuple(tensors)
