"""Graph passes: Conv-BN(-ReLU) and Linear-BN fusion, dropout/identity removal, eval mode,
channels-last.

The passes keep the model's own class and module names (no ``GraphModule`` rewrite), so they work
on models ``torch.fx`` cannot trace. Which layers feed which is learnt by running the example
inputs once with forward hooks: a BatchNorm whose input tensor *is* the output tensor of the
Conv/Linear called just before it is folded into that layer. Every pass that changes numerics is
then checked for parity on the example inputs, and fails with
:class:`~torchslim.errors.ParityError` rather than returning a model that computes something
else. Constant folding happens downstream, in the runtimes (Inductor freezing, ONNX Runtime and
OpenVINO graph optimisation).

Configs are light (this module imports torch only inside the handlers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torchslim.config import config_type

if TYPE_CHECKING:
    from torch import nn

    from torchslim.passes.base import PassContext, PassResult

__all__ = [
    "ChannelsLastConfig",
    "EvalModeConfig",
    "FuseConfig",
    "RemoveDropoutConfig",
    "apply_channels_last",
    "apply_eval_mode",
    "apply_fuse",
    "apply_remove_dropout",
    "count_modules",
    "find_fusable",
]


@config_type("FuseConfig")
@dataclass(frozen=True)
class FuseConfig:
    """Fold BatchNorm into the preceding convolution or linear layer (inference only).

    Attributes:
        conv_bn: Fold ``Conv{1,2,3}d``/``ConvTranspose{1,2,3}d`` → ``BatchNorm`` pairs.
        linear_bn: Fold ``Linear`` → ``BatchNorm1d`` pairs.
        check_parity: Compare outputs before/after on the example inputs (when given).
    """

    conv_bn: bool = True
    linear_bn: bool = True
    check_parity: bool = True


@config_type("RemoveDropoutConfig")
@dataclass(frozen=True)
class RemoveDropoutConfig:
    """Replace dropout layers by nothing and drop no-op layers from ``nn.Sequential`` containers.

    Attributes:
        dropout: Remove ``Dropout*``/``AlphaDropout`` (no-ops in eval mode).
        identity: Remove ``nn.Identity`` entries inside ``nn.Sequential`` containers.
    """

    dropout: bool = True
    identity: bool = True


@config_type("EvalModeConfig")
@dataclass(frozen=True)
class EvalModeConfig:
    """Put every submodule in eval mode and stop tracking gradients.

    Attributes:
        freeze_parameters: Set ``requires_grad=False`` on every parameter.
    """

    freeze_parameters: bool = True


@config_type("ChannelsLastConfig")
@dataclass(frozen=True)
class ChannelsLastConfig:
    """Store 4-D weights in channels-last (NHWC) memory format (faster oneDNN/cuDNN kernels).

    Feed channels-last inputs too for the full benefit (the ``eager`` runtime's
    ``channels_last`` option converts inputs).

    Attributes:
        check_parity: Compare outputs before/after on the example inputs (when given).
    """

    check_parity: bool = True


_CONV_TYPES = (
    "Conv1d",
    "Conv2d",
    "Conv3d",
    "ConvTranspose1d",
    "ConvTranspose2d",
    "ConvTranspose3d",
)
_BN_TYPES = ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d")
_ACT_TYPES = ("ReLU", "ReLU6", "SiLU", "GELU", "Hardswish", "LeakyReLU")


def count_modules(module: nn.Module) -> int:
    """Number of submodules, the module itself included."""
    return sum(1 for _ in module.modules())


def _trace_calls(module: nn.Module, example_inputs: tuple[Any, ...]) -> list[tuple[str, Any, Any]]:
    """Run once and record ``(name, input_tensor, output_tensor)`` per leaf-module call."""
    import torch

    calls: list[tuple[str, Any, Any]] = []
    handles = []
    for name, sub in module.named_modules():
        if name and not list(sub.children()):

            def hook(mod: Any, args: Any, out: Any, _name: str = name) -> None:
                first = args[0] if args else None
                calls.append((_name, first, out))

            handles.append(sub.register_forward_hook(hook))
    try:
        with torch.no_grad():
            module(*example_inputs)
    finally:
        for h in handles:
            h.remove()
    return calls


def find_fusable(
    module: nn.Module,
    example_inputs: tuple[Any, ...],
    *,
    conv_bn: bool = True,
    linear_bn: bool = True,
) -> list[tuple[str, str, str | None]]:
    """``(layer, batchnorm, activation_or_None)`` name triples that can be folded.

    A pair qualifies when the BatchNorm's input is exactly the layer's output tensor, both are
    called once per forward, and the BatchNorm is in eval mode semantics (running statistics).
    """
    mods = dict(module.named_modules())
    calls = _trace_calls(module, example_inputs)
    counts: dict[str, int] = {}
    for name, _, _ in calls:
        counts[name] = counts.get(name, 0) + 1
    found = []
    for i in range(1, len(calls)):
        bn_name, bn_in, bn_out = calls[i]
        bn = mods[bn_name]
        if type(bn).__name__ not in _BN_TYPES or counts[bn_name] != 1:
            continue
        if not getattr(bn, "track_running_stats", True) or bn.running_mean is None:
            continue
        prev_name, _, prev_out = calls[i - 1]
        prev = mods[prev_name]
        kind = type(prev).__name__
        ok = (conv_bn and kind in _CONV_TYPES) or (linear_bn and kind == "Linear")
        if not ok or counts[prev_name] != 1 or bn_in is not prev_out:
            continue
        act = None
        if i + 1 < len(calls):
            nxt_name, nxt_in, _ = calls[i + 1]
            if type(mods[nxt_name]).__name__ in _ACT_TYPES and nxt_in is bn_out:
                act = nxt_name
        found.append((prev_name, bn_name, act))
    return found


def _set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def _reference(module: nn.Module, inputs: tuple[Any, ...]) -> Any:
    import torch

    with torch.inference_mode():
        return module(*inputs)


def _verify(module: nn.Module, inputs: tuple[Any, ...], ref: Any, what: str) -> dict[str, Any]:
    from torchslim.errors import ParityError
    from torchslim.parity import TOLERANCES, compare_outputs

    tol = TOLERANCES["fp32"]
    mabs, mrel, mcos = compare_outputs(ref, _reference(module, inputs))
    if mrel > tol.max_rel_error or mcos < tol.min_cosine:
        raise ParityError(
            f"{what} changed the model's outputs (max relative error {mrel:.2e}, min cosine "
            f"{mcos:.6f}).",
            "The model uses a layer's output in more than one place; skip this pass.",
        )
    return {"max_abs_error": mabs, "max_rel_error": mrel, "min_cosine": mcos}


def apply_fuse(module: nn.Module, config: FuseConfig, context: PassContext) -> PassResult:
    """Fold BatchNorm layers into the preceding Conv/Linear (in place on the private copy)."""
    import torch
    from torch import nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

    from torchslim.passes.base import PassResult

    module.eval()
    inputs = context.inputs()
    before = count_modules(module)
    ref = _reference(module, inputs) if config.check_parity else None
    pairs = find_fusable(module, inputs, conv_bn=config.conv_bn, linear_bn=config.linear_bn)
    mods = dict(module.named_modules())
    fused: list[dict[str, Any]] = []
    with torch.no_grad():
        for layer_name, bn_name, act in pairs:
            layer, bn = mods[layer_name], mods[bn_name]
            if isinstance(layer, nn.Linear):
                new = fuse_linear_bn_eval(layer, bn)  # type: ignore[arg-type]
            else:
                new = fuse_conv_bn_eval(
                    layer,
                    bn,
                    transpose=type(layer).__name__.startswith("ConvTranspose"),  # type: ignore[arg-type]
                )
            new.requires_grad_(False)
            _set_submodule(module, layer_name, new)
            _set_submodule(module, bn_name, nn.Identity())
            fused.append({"layer": layer_name, "batchnorm": bn_name, "activation": act})
    report: dict[str, Any] = {
        "fused": len(fused),
        "conv_bn": sum(1 for f in fused if type(mods[f["layer"]]).__name__ != "Linear"),
        "linear_bn": sum(1 for f in fused if type(mods[f["layer"]]).__name__ == "Linear"),
        "with_activation": sum(1 for f in fused if f["activation"]),
        "pairs": fused,
    }
    # the BatchNorms became Identity; drop them from Sequential containers too
    _drop_from_sequentials(module, lambda m: isinstance(m, nn.Identity))
    report["modules_before"] = before
    report["modules_after"] = count_modules(module)
    if ref is not None and fused:
        report["parity"] = _verify(module, inputs, ref, "BatchNorm folding")
    return PassResult(module, report)


def _drop_from_sequentials(module: nn.Module, drop: Any) -> int:
    from torch import nn

    removed = 0
    for sub in list(module.modules()):
        if isinstance(sub, nn.Sequential):
            for key in [k for k, m in sub._modules.items() if m is not None and drop(m)]:
                del sub._modules[key]
                removed += 1
    return removed


def apply_remove_dropout(
    module: nn.Module, config: RemoveDropoutConfig, context: PassContext
) -> PassResult:
    """Replace dropout layers with ``Identity`` and drop no-ops from ``Sequential`` containers."""
    from torch import nn

    from torchslim.passes.base import PassResult

    before = count_modules(module)
    replaced = 0
    if config.dropout:
        dropouts = (
            nn.Dropout,
            nn.Dropout1d,
            nn.Dropout2d,
            nn.Dropout3d,
            nn.AlphaDropout,
            nn.FeatureAlphaDropout,
        )
        for name, sub in list(module.named_modules()):
            if name and isinstance(sub, dropouts):
                _set_submodule(module, name, nn.Identity())
                replaced += 1
    dropped = 0
    if config.identity or config.dropout:
        dropped = _drop_from_sequentials(module, lambda m: isinstance(m, nn.Identity))
    return PassResult(
        module,
        {
            "dropout_replaced": replaced,
            "removed_from_sequential": dropped,
            "modules_before": before,
            "modules_after": count_modules(module),
        },
    )


def apply_eval_mode(module: nn.Module, config: EvalModeConfig, context: PassContext) -> PassResult:
    """Set eval mode everywhere (reporting which layers were training) and freeze parameters."""
    from torchslim.passes.base import PassResult

    training = [name or "<root>" for name, m in module.named_modules() if m.training]
    module.eval()
    frozen = 0
    if config.freeze_parameters:
        for p in module.parameters():
            if p.requires_grad:
                p.requires_grad_(False)
                frozen += 1
    return PassResult(
        module,
        {
            "were_training": len(training),
            "training_modules": [t for t in training if t][:50],
            "parameters_frozen": frozen,
        },
    )


def apply_channels_last(
    module: nn.Module, config: ChannelsLastConfig, context: PassContext
) -> PassResult:
    """Convert 4-D parameters and buffers to channels-last memory format."""
    import torch

    from torchslim.passes.base import PassResult

    has_inputs = context.provides("example_inputs")
    inputs = context.inputs() if has_inputs else None
    ref = _reference(module, inputs) if (config.check_parity and inputs is not None) else None
    converted = sum(1 for p in module.parameters() if p.dim() == 4)
    module = module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    report: dict[str, Any] = {"tensors_converted": converted}
    if ref is not None and inputs is not None:
        report["parity"] = _verify(module, inputs, ref, "Channels-last conversion")
    return PassResult(module, report)
