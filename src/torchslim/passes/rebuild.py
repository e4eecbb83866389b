"""Replayable surgery: rebuild a changed architecture from its log, then load its weights.

Passes that change an architecture (pruning, low-rank, depthwise swaps) append each change to the
model's rebuild log (:data:`torchslim.passes.prune.REBUILD_ATTR`). :func:`replay` applies such a
log to a freshly built original architecture, and :func:`assign_state` loads weights whose
shapes differ from the fresh model's. Together they reload a pruned model with no pickle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torchslim.errors import SourceError

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["assign_state", "rebuild_log", "replay"]


def rebuild_log(model: nn.Module) -> list[dict[str, Any]]:
    """The architecture changes recorded on ``model`` (empty for an unchanged model)."""
    from torchslim.passes.prune import REBUILD_ATTR

    return list(getattr(model, REBUILD_ATTR, []))


def assign_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load ``state`` by replacing tensors (shapes may differ from the freshly built model)."""
    from torch import nn

    expected = set(model.state_dict())
    missing, unexpected = expected - set(state), set(state) - expected
    if missing or unexpected:
        raise SourceError(
            "The saved weights do not fit the rebuilt architecture "
            f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]}).",
            "Re-save the model with this torchslim version.",
        )
    mods = dict(model.named_modules())
    for key, tensor in state.items():
        owner, _, leaf = key.rpartition(".")
        mod = mods[owner]
        if leaf in mod._parameters and mod._parameters[leaf] is not None:
            old = mod._parameters[leaf]
            mod._parameters[leaf] = nn.Parameter(
                tensor.clone(), requires_grad=bool(old is not None and old.requires_grad)
            )
        else:
            mod._buffers[leaf] = tensor.clone()


def replay(model: nn.Module, ops: list[dict[str, Any]]) -> nn.Module:
    """Apply a rebuild log (see :data:`torchslim.passes.prune.REBUILD_ATTR`) to a fresh model."""
    from torchslim.passes.prune import add_rebuild_op

    for op in ops:
        kind = op.get("op")
        if kind == "attrs":
            mods = dict(model.named_modules())
            for name, attrs in op["changes"].items():
                if name not in mods:
                    raise SourceError(f"Module '{name}' in slim.json is not in the architecture.")
                for k, v in attrs.items():
                    old = getattr(mods[name], k, None)
                    setattr(mods[name], k, tuple(v) if isinstance(old, tuple) else v)
        else:
            from torchslim.passes.compress import replay_op

            replay_op(model, op)
        add_rebuild_op(model, op)
    return model
