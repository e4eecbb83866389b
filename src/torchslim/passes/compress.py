"""Compression passes: low-rank factorisation, k-means weight sharing, depthwise-separable swap.

* :class:`LowRankConfig` — truncated SVD of Linear and Conv2d weights. A layer ``W`` (out × in·k²)
  becomes two layers ``A`` (rank × in·k², the original kernel) and ``B`` (out × rank, 1x1); the
  rank keeps ``energy`` of the squared singular values (or ``rank_ratio`` of the full rank). A
  layer is only replaced where the factorised form needs fewer FLOPs (by ``min_saving``).
* :class:`ClusterConfig` — per-layer 1-D k-means of the weights: each weight becomes one of
  ``clusters`` shared values (codebook + indices). The model keeps dense float weights (so it runs
  anywhere); the report gives the size when stored as codebook + bit-packed indices.
* :class:`DepthwiseConfig` — each KxK convolution becomes depthwise KxK + pointwise 1x1,
  initialised with the best per-channel separable approximation (rank-1 SVD per input channel)
  and recovered by distillation from the original model (``recover``).

Architecture changes are logged on the model (``torchslim_rebuild``) so
:func:`torchslim.slim.load_slim` can rebuild the saved model without unpickling.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torchslim.config import config_type
from torchslim.errors import DataError, TorchslimError
from torchslim.passes.prune import _excluded, _first_last, _weighted_layers, add_rebuild_op
from torchslim.train import DistillConfig, DistillMethod

if TYPE_CHECKING:
    import torch
    from torch import nn

    from torchslim.passes.base import PassContext, PassResult

__all__ = [
    "ClusterConfig",
    "DepthwiseConfig",
    "LowRankConfig",
    "apply_cluster",
    "apply_depthwise",
    "apply_lowrank",
    "factorize",
    "kmeans_1d",
    "replay_op",
    "separable",
]


@config_type("LowRankConfig")
@dataclass(frozen=True)
class LowRankConfig:
    """Low-rank (SVD) factorisation.

    Attributes:
        energy: Keep the smallest rank whose singular values hold this fraction of the squared
            total (0 < energy ≤ 1). Ignored when ``rank_ratio`` is set.
        rank_ratio: Rank as a fraction of the full rank ``min(out, in·k²)``.
        min_saving: Replace a layer only if its FLOPs drop by at least this fraction.
        linear: Factorise Linear layers.
        conv: Factorise (non-grouped) Conv2d layers.
        protect_first_last: Leave the first and last layers alone.
        exclude: Module names (glob patterns) left alone.
        recover: Recovery training after factorising (teacher: the original model).
    """

    energy: float = 0.9
    rank_ratio: float | None = None
    min_saving: float = 0.1
    linear: bool = True
    conv: bool = True
    protect_first_last: bool = True
    exclude: tuple[str, ...] = ()
    recover: DistillConfig | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.energy <= 1.0:
            raise TorchslimError(
                f"energy must be in (0, 1], got {self.energy}.", "Give e.g. --energy 0.9."
            )
        if self.rank_ratio is not None and not 0.0 < self.rank_ratio <= 1.0:
            raise TorchslimError(
                f"rank_ratio must be in (0, 1], got {self.rank_ratio}.",
                "Give e.g. --rank-ratio 0.25.",
            )
        if not 0.0 <= self.min_saving < 1.0:
            raise TorchslimError(f"min_saving must be in [0, 1), got {self.min_saving}.")


@config_type("ClusterConfig")
@dataclass(frozen=True)
class ClusterConfig:
    """k-means weight sharing.

    Attributes:
        clusters: Shared values per layer (2…65536); 16 means 4-bit indices.
        iterations: Lloyd iterations.
        min_params: Skip layers with fewer weights than this (their codebook would not pay).
        protect_first_last: Leave the first and last layers alone.
        exclude: Module names (glob patterns) left alone.
    """

    clusters: int = 16
    iterations: int = 25
    min_params: int = 256
    protect_first_last: bool = False
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 2 <= self.clusters <= 65536:
            raise TorchslimError(
                f"clusters must be between 2 and 65536, got {self.clusters}.",
                "Give e.g. --clusters 16 (4-bit indices).",
            )
        if self.iterations < 1:
            raise TorchslimError(f"iterations must be at least 1, got {self.iterations}.")


@config_type("DepthwiseConfig")
@dataclass(frozen=True)
class DepthwiseConfig:
    """Depthwise-separable swap of KxK convolutions.

    Attributes:
        min_in_channels: Only convolutions with at least this many input channels.
        protect_first_last: Leave the first and last layers alone.
        exclude: Module names (glob patterns) left alone.
        recover: Recovery training (teacher: the original model); strongly recommended.
    """

    min_in_channels: int = 8
    protect_first_last: bool = True
    exclude: tuple[str, ...] = ()
    recover: DistillConfig | None = None


# --------------------------------------------------------------------------------------------
# Module surgery
# --------------------------------------------------------------------------------------------


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, new)


def _lowrank_module(layer: Any, rank: int) -> Any:
    from torch import nn

    if isinstance(layer, nn.Linear):
        return nn.Sequential(
            nn.Linear(layer.in_features, rank, bias=False),
            nn.Linear(rank, layer.out_features, bias=layer.bias is not None),
        )
    assert isinstance(layer, nn.Conv2d)
    conv: Any = layer
    return nn.Sequential(
        nn.Conv2d(
            conv.in_channels,
            rank,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            conv.dilation,
            bias=False,
        ),
        nn.Conv2d(rank, layer.out_channels, 1, bias=layer.bias is not None),
    )


def _separable_module(layer: Any) -> Any:
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(
            layer.in_channels,
            layer.in_channels,
            layer.kernel_size,
            layer.stride,  # type: ignore[arg-type]
            layer.padding,
            layer.dilation,
            groups=layer.in_channels,
            bias=False,
        ),
        nn.Conv2d(layer.in_channels, layer.out_channels, 1, bias=layer.bias is not None),
    )


def factorize(layer: Any, rank: int) -> Any:
    """Replace a Linear/Conv2d by its rank-``rank`` SVD factorisation (two layers).

    At full rank the result computes the same function (up to float rounding).
    """
    import torch

    w = layer.weight.detach().float()
    out_ch = w.shape[0]
    u, s, vh = torch.linalg.svd(w.reshape(out_ch, -1), full_matrices=False)
    r = max(1, min(rank, len(s)))
    root = s[:r].sqrt()
    new = _lowrank_module(layer, r)
    with torch.no_grad():
        first, second = new[0], new[1]
        first.weight.copy_((root[:, None] * vh[:r]).reshape(first.weight.shape))
        second.weight.copy_((u[:, :r] * root[None, :]).reshape(second.weight.shape))
        if layer.bias is not None:
            second.bias.copy_(layer.bias.detach())
    return new.to(layer.weight.dtype)


def separable(layer: Any) -> Any:
    """Depthwise + pointwise block approximating ``layer`` (rank-1 SVD per input channel)."""
    import torch

    w = layer.weight.detach().float()  # (out, in, kh, kw)
    out_ch, in_ch = w.shape[:2]
    new = _separable_module(layer)
    dw = torch.zeros_like(new[0].weight)
    pw = torch.zeros_like(new[1].weight)
    for c in range(in_ch):
        u, s, vh = torch.linalg.svd(w[:, c].reshape(out_ch, -1), full_matrices=False)
        root = s[0].sqrt()
        dw[c, 0] = (root * vh[0]).reshape(w.shape[2:])
        pw[:, c, 0, 0] = root * u[:, 0]
    with torch.no_grad():
        new[0].weight.copy_(dw)
        new[1].weight.copy_(pw)
        if layer.bias is not None:
            new[1].bias.copy_(layer.bias.detach())
    return new


def replay_op(model: nn.Module, op: dict[str, Any]) -> None:
    """Rebuild one logged change (weights are loaded afterwards)."""
    layer: Any = model.get_submodule(op["module"])
    if op["op"] == "lowrank":
        _set_module(model, op["module"], _lowrank_module(layer, int(op["rank"])))
    elif op["op"] == "depthwise":
        _set_module(model, op["module"], _separable_module(layer))  # type: ignore[arg-type]
    else:
        raise TorchslimError(
            f"Unknown rebuild step '{op['op']}' in slim.json.", "Upgrade torchslim."
        )


def _candidates(
    model: nn.Module, ctx: PassContext, protect: bool, exclude: tuple[str, ...]
) -> list[tuple[str, Any]]:
    protected: set[str] = set()
    if protect:
        protected = {n for n in _first_last(model, ctx.inputs()) if n}
    return [
        (n, m)
        for n, m in _weighted_layers(model)
        if n not in protected and not _excluded(n, exclude)
    ]


def _recover(
    model: nn.Module, original: nn.Module, cfg: DistillConfig | None, ctx: PassContext
) -> dict[str, Any] | None:
    if cfg is None:
        return None
    if ctx.train is None:
        raise DataError(
            "Recovery training needs training data.", "Give --data DATA, or --recover none."
        )
    from torchslim.train import fit

    teacher = ctx.teacher if ctx.teacher is not None else original
    res = fit(
        model,
        ctx.train,
        cfg,
        teacher=teacher if cfg.method == DistillMethod.KD else None,
        eval_data=ctx.eval,
        progress=ctx.progress,
    )
    return res.to_dict()


# --------------------------------------------------------------------------------------------
# Pass handlers
# --------------------------------------------------------------------------------------------


def _rank_for(s: torch.Tensor, cfg: LowRankConfig) -> int:
    import torch

    if cfg.rank_ratio is not None:
        return max(1, math.ceil(cfg.rank_ratio * len(s)))
    e = torch.cumsum(s.double() ** 2, 0) / float((s.double() ** 2).sum())
    return int(torch.searchsorted(e, torch.tensor(cfg.energy, dtype=e.dtype) - 1e-12)) + 1


def apply_lowrank(module: nn.Module, config: LowRankConfig, ctx: PassContext) -> PassResult:
    """Pass handler for :class:`LowRankConfig`."""
    import torch
    from torch import nn

    from torchslim.passes.base import PassResult

    original = copy.deepcopy(module) if config.recover is not None else module
    layers: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for name, layer in _candidates(module, ctx, config.protect_first_last, config.exclude):
        if isinstance(layer, nn.Linear):
            if not config.linear:
                continue
            out_f, in_f, k2 = layer.out_features, layer.in_features, 1
        elif isinstance(layer, nn.Conv2d) and config.conv:
            if layer.groups != 1 or layer.padding_mode != "zeros":
                skipped[name] = "grouped or non-zero padding"
                continue
            out_f, in_f = layer.out_channels, layer.in_channels
            k2 = layer.kernel_size[0] * layer.kernel_size[1]
        else:
            continue
        s = torch.linalg.svdvals(layer.weight.detach().float().reshape(out_f, -1))
        rank = _rank_for(s, config)
        dense, factored = out_f * in_f * k2, rank * (in_f * k2 + out_f)
        if factored > (1 - config.min_saving) * dense:
            skipped[name] = f"rank {rank} saves too little ({factored / dense:.2f} of FLOPs)"
            continue
        kept = float((s[:rank] ** 2).sum() / (s**2).sum())
        _set_module(module, name, factorize(layer, rank))
        add_rebuild_op(module, {"op": "lowrank", "module": name, "rank": rank})
        layers[name] = {
            "rank": rank,
            "full_rank": len(s),
            "energy": round(kept, 4),
            "flops_fraction": round(factored / dense, 4),
        }
    report: dict[str, Any] = {"layers": layers, "skipped": skipped, "factorized": len(layers)}
    rec = _recover(module, original, config.recover, ctx)
    if rec is not None:
        report["recovery"] = rec
    return PassResult(module, report)


def kmeans_1d(
    values: torch.Tensor, k: int, iterations: int = 25
) -> tuple[torch.Tensor, torch.Tensor]:
    """1-D k-means (Lloyd, quantile init): returns ``(codebook, indices)``, ≤ ``k`` values used."""
    import torch

    x = values.detach().float().flatten()
    k = min(k, x.numel())
    qs = torch.linspace(0, 1, k, dtype=torch.float64)
    centers = torch.quantile(x.double()[: 2**24], qs).float().unique()
    for _ in range(iterations):
        mids = (centers[1:] + centers[:-1]) / 2
        idx = torch.bucketize(x, mids)
        sums = torch.zeros_like(centers).index_add_(0, idx, x)
        counts = torch.zeros_like(centers).index_add_(0, idx, torch.ones_like(x))
        new = torch.where(counts > 0, sums / counts.clamp(min=1), centers)
        if torch.allclose(new, centers):
            centers = new
            break
        centers = new.sort().values
    mids = (centers[1:] + centers[:-1]) / 2
    return centers, torch.bucketize(x, mids).reshape(values.shape)


def apply_cluster(module: nn.Module, config: ClusterConfig, ctx: PassContext) -> PassResult:
    """Pass handler for :class:`ClusterConfig`."""
    import torch

    from torchslim.passes.base import PassResult

    bits = max(1, math.ceil(math.log2(config.clusters)))
    layers: dict[str, Any] = {}
    clustered_ids: set[int] = set()
    for name, layer in _candidates(module, ctx, config.protect_first_last, config.exclude):
        w = layer.weight
        if w.numel() < config.min_params:
            continue
        codebook, idx = kmeans_1d(w, config.clusters, config.iterations)
        with torch.no_grad():
            w.copy_(codebook[idx].to(w.dtype))
        clustered_ids.add(id(w))
        layers[name] = {
            "clusters": len(codebook),
            "distinct": int(w.detach().unique().numel()),
            "bytes": len(codebook) * 4 + math.ceil(w.numel() * bits / 8),
        }
    dense = sum(t.numel() * t.element_size() for t in module.state_dict().values())
    compressed = sum(v["bytes"] for v in layers.values()) + sum(
        t.numel() * t.element_size()
        for t in list(module.parameters()) + list(module.buffers())
        if id(t) not in clustered_ids
    )
    report = {
        "layers": layers,
        "index_bits": bits,
        "size_bytes_dense": dense,
        "size_bytes_compressed": compressed,
        "compression": round(dense / compressed, 3) if compressed else None,
        "note": "Weights stay dense float32 in the model (same speed); the compressed size is "
        "codebook + bit-packed indices.",
    }
    return PassResult(module, report)


def apply_depthwise(module: nn.Module, config: DepthwiseConfig, ctx: PassContext) -> PassResult:
    """Pass handler for :class:`DepthwiseConfig`."""
    from torch import nn

    from torchslim.passes.base import PassResult

    original = copy.deepcopy(module)
    swapped: list[str] = []
    for name, layer in _candidates(module, ctx, config.protect_first_last, config.exclude):
        if (
            isinstance(layer, nn.Conv2d)
            and layer.groups == 1
            and layer.padding_mode == "zeros"
            and layer.kernel_size != (1, 1)
            and layer.in_channels >= config.min_in_channels
        ):
            _set_module(module, name, separable(layer))
            add_rebuild_op(module, {"op": "depthwise", "module": name})
            swapped.append(name)
    report: dict[str, Any] = {"swapped": swapped}
    if config.recover is None and swapped:
        report["warning"] = (
            "Depthwise-separable layers approximate the originals; recover with "
            "distillation (--recover kd) before trusting the accuracy."
        )
    rec = _recover(module, original, config.recover, ctx)
    if rec is not None:
        report["recovery"] = rec
    return PassResult(module, report)
