"""Pruning: unstructured magnitude, N:M semi-structured, and structured channel removal.

Methods (``PruneConfig.method``):

* ``unstructured`` — each Conv/Linear weight loses ``ratio`` of its smallest-magnitude (L1)
  entries (``torch.nn.utils.prune``, made permanent). Every layer ends with the same sparsity.
* ``global`` — the ``ratio`` smallest-magnitude weights **across all** Conv/Linear layers are
  zeroed: total sparsity is ``ratio``, per-layer sparsity varies (reported).
* ``nm`` — N:M semi-structured sparsity (2:4 by default): in every group of M consecutive input
  weights, the N largest are kept. Dense kernels do not get faster from zeros; the report says
  whether a runtime here can use the pattern.
* ``structured`` — whole output channels / neurons are removed physically with Torch-Pruning's
  dependency graph (residual adds, concatenations, grouped and depthwise convolutions and
  attention heads stay consistent). Importance ``l1``/``l2``/``bn_scale``/``taylor``; the same
  ratio per layer group, or ranked globally (``global_ranking``); channel counts rounded to
  ``round_to``; target given as a channel ratio, a FLOPs reduction or a latency reduction;
  optionally in ``steps`` with recovery training (``recover``) between steps.

  Transformer encoders (Hugging Face BERT-style self-attention: a module with an integer
  ``num_attention_heads``/``num_heads``/``n_heads`` and ``query``/``key``/``value``-style Linear
  children, e.g. ``torchslim:minilm``) are pruned by whole **attention heads** (``head_ratio``)
  and **FFN intermediate neurons** (``ratio``); the hidden (residual) width, and so the
  embedding size, is kept. Each attention module's ``num_attention_heads`` and
  ``all_head_size`` are updated to the heads left (the head size is unchanged), so the model
  runs, exports and reloads as an artifact. A FLOPs or latency target prunes heads and FFN
  width by the same searched fraction unless ``head_ratio`` fixes the heads' share.

Unstructured zeros keep the dense size and speed: the report gives the sparse (bitmask) size and
says so; only structured pruning makes the model itself smaller and faster.
"""

from __future__ import annotations

import copy
import fnmatch
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

from torchslim.config import config_type
from torchslim.errors import DataError, TorchslimError
from torchslim.train import DistillConfig, DistillMethod

if TYPE_CHECKING:
    from torch import nn

    from torchslim.data import DataSet
    from torchslim.passes.base import PassContext, PassResult

__all__ = [
    "Importance",
    "PruneConfig",
    "PruneMethod",
    "PruneTarget",
    "apply_prune",
    "layer_sparsity",
]

REBUILD_ATTR = "torchslim_rebuild"
"""Root-module attribute listing the architecture changes made (replayed by the loader)."""

RECOVERY_NOTE = (
    "Recovery training was skipped because it would re-densify the pruned weights; run "
    "torchslim distill before pruning instead, or prune again after training."
)
"""``report["recovery_note"]`` of unstructured, global and N:M pruning when ``recover`` is set."""


class PruneMethod(str, Enum):
    """What to remove."""

    STRUCTURED = "structured"
    UNSTRUCTURED = "unstructured"
    GLOBAL = "global"
    NM = "nm"


class Importance(str, Enum):
    """How channels are ranked for structured pruning."""

    L1 = "l1"
    L2 = "l2"
    BN_SCALE = "bn_scale"
    TAYLOR = "taylor"


class PruneTarget(str, Enum):
    """What ``ratio`` means for structured pruning."""

    CHANNELS = "channels"
    FLOPS = "flops"
    LATENCY = "latency"


@config_type("PruneConfig")
@dataclass(frozen=True)
class PruneConfig:
    """How to prune.

    Attributes:
        method: ``structured``, ``unstructured`` (per layer), ``global`` (unstructured across
            layers) or ``nm`` (N:M semi-structured).
        ratio: Fraction to remove, in (0, 1): weights for unstructured/global; for structured,
            what ``target`` says (channels per layer group, FLOPs, or batch-1 latency).
        target: ``channels`` (default), ``flops`` or ``latency`` (structured only).
        importance: ``l1``, ``l2``, ``bn_scale`` or ``taylor`` (structured only; taylor needs
            training data for gradients).
        global_ranking: Structured: rank channels across all layers (layers lose different
            fractions, ``ratio`` of all prunable channels overall) instead of the same ratio
            in every layer group.
        max_layer_ratio: Structured global ranking: no layer group loses more than this.
        round_to: Keep channel counts multiples of this (8 or 16 run best on SIMD/tensor cores);
            ``None``/0 for no rounding.
        protect_first_last: Leave the first layer (and the channel group it feeds, e.g. a
            ResNet's first stage residual width) and the last layer unpruned. In structured
            mode the last layer's outputs (the model's outputs) are never removed.
        exclude: Module names (glob patterns allowed) never pruned.
        n: N of N:M (kept weights per group).
        m: M of N:M (group size).
        steps: Prune in this many equal steps, with recovery training between steps.
        recover: Recovery training after each step (``None``: none). The teacher for ``kd`` is
            the unpruned model unless the context gives one.
        head_ratio: Transformer encoders only: fraction of each self-attention module's heads
            to remove (rounded up to whole heads; ``0`` keeps every head). ``None`` (default):
            the same fraction as the FFN width (``ratio``, or the searched one for a FLOPs or
            latency target). Ignored for models without attention modules.
    """

    method: PruneMethod = PruneMethod.STRUCTURED
    ratio: float = 0.5
    target: PruneTarget = PruneTarget.CHANNELS
    importance: Importance = Importance.L2
    global_ranking: bool = False
    max_layer_ratio: float = 0.9
    round_to: int | None = 8
    protect_first_last: bool = True
    exclude: tuple[str, ...] = ()
    n: int = 2
    m: int = 4
    steps: int = 1
    recover: DistillConfig | None = None
    head_ratio: float | None = None

    def __post_init__(self) -> None:
        for name, enum in (
            ("method", PruneMethod),
            ("target", PruneTarget),
            ("importance", Importance),
        ):
            try:
                object.__setattr__(self, name, enum(getattr(self, name)))
            except ValueError:
                raise TorchslimError(
                    f"Unknown prune {name} '{getattr(self, name)}'.",
                    f"Use one of: {', '.join(e.value for e in enum)}.",
                ) from None
        if self.method != PruneMethod.NM and not 0.0 < float(self.ratio) < 1.0:
            raise TorchslimError(
                f"Prune ratio must be between 0 and 1 (exclusive), got {self.ratio}.",
                "Give e.g. --ratio 0.5 to remove half (of the channels, weights or FLOPs).",
            )
        if not 0.0 < self.max_layer_ratio <= 1.0:
            raise TorchslimError(f"max_layer_ratio must be in (0, 1], got {self.max_layer_ratio}.")
        if self.round_to is not None and self.round_to < 0:
            raise TorchslimError(f"round_to must be positive, got {self.round_to}.")
        if not 0 < self.n < self.m:
            raise TorchslimError(f"N:M needs 0 < N < M, got {self.n}:{self.m}.", "Use 2:4.")
        if self.steps < 1:
            raise TorchslimError(f"steps must be at least 1, got {self.steps}.")
        if self.head_ratio is not None and not 0.0 <= float(self.head_ratio) < 1.0:
            raise TorchslimError(
                f"head_ratio must be in [0, 1), got {self.head_ratio}.",
                "Give e.g. --head-ratio 0.5 to remove half of the attention heads, 0 for none.",
            )
        if self.method != PruneMethod.STRUCTURED and self.target != PruneTarget.CHANNELS:
            raise TorchslimError(
                f"Target '{self.target.value}' applies to structured pruning only.",
                "Use --method structured, or drop --target.",
            )


# --------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------


def _weighted_layers(model: nn.Module) -> list[tuple[str, Any]]:
    from torch import nn

    return [
        (n, m)
        for n, m in model.named_modules()
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))
    ]


def _first_last(model: nn.Module, inputs: tuple[Any, ...]) -> tuple[str | None, str | None]:
    """Names of the first and last Conv/Linear layers in execution order."""
    import torch

    order: list[str] = []
    names = {id(m): n for n, m in _weighted_layers(model)}
    handles = [
        m.register_forward_pre_hook(lambda mod, _i: order.append(names[id(mod)]))
        for _, m in _weighted_layers(model)
    ]
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        for h in handles:
            h.remove()
    return (order[0], order[-1]) if order else (None, None)


def _excluded(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) or name.startswith(p + ".") for p in patterns)


def layer_sparsity(model: nn.Module) -> dict[str, float]:
    """Fraction of exactly-zero weights of every Conv/Linear layer."""
    return {n: float((m.weight == 0).float().mean()) for n, m in _weighted_layers(model)}


def _sparse_bytes(model: nn.Module) -> int:
    """Size with Conv/Linear weights stored as bitmask + non-zero values (other tensors dense)."""
    total = 0
    weights = {id(m.weight) for _, m in _weighted_layers(model)}
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) in weights:
            nnz = int((t != 0).sum())
            total += nnz * t.element_size() + (t.numel() + 7) // 8
        else:
            total += t.numel() * t.element_size()
    return total


def _locate_failure(model: nn.Module, inputs: tuple[Any, ...]) -> str | None:
    """Run the model and return the name of the innermost module whose forward raised."""
    import torch

    stack: list[str] = []
    failed: list[str] = []
    names = {id(m): n for n, m in model.named_modules() if n}

    def pre(mod: Any, _i: Any) -> None:
        stack.append(names.get(id(mod), "?"))

    def post(_mod: Any, _i: Any, _o: Any) -> None:
        stack.pop()

    handles = []
    for _, m in model.named_modules():
        handles.append(m.register_forward_pre_hook(pre))
        handles.append(m.register_forward_hook(post))
    try:
        with torch.no_grad():
            model(*inputs)
    except Exception:
        failed = list(stack)
    finally:
        for h in handles:
            h.remove()
    return failed[-1] if failed else None


# --------------------------------------------------------------------------------------------
# Unstructured and N:M
# --------------------------------------------------------------------------------------------


def _unstructured(model: nn.Module, cfg: PruneConfig, protected: set[str]) -> dict[str, Any]:
    from torch.nn.utils import prune as tprune

    layers = [
        (n, m)
        for n, m in _weighted_layers(model)
        if n not in protected and not _excluded(n, cfg.exclude)
    ]
    if not layers:
        raise TorchslimError("No Conv/Linear layer is left to prune.", "Exclude fewer layers.")
    if cfg.method == PruneMethod.GLOBAL:
        tprune.global_unstructured(
            [(m, "weight") for _, m in layers],
            pruning_method=tprune.L1Unstructured,
            amount=float(cfg.ratio),
        )
    else:
        for _, m in layers:
            tprune.l1_unstructured(m, "weight", amount=float(cfg.ratio))
    for _, m in layers:
        tprune.remove(m, "weight")
    pruned = {n for n, _ in layers}
    sparsity = layer_sparsity(model)
    total = sum(m.weight.numel() for n, m in layers)
    zeros = sum(float(sparsity[n]) * m.weight.numel() for n, m in layers)
    return {
        "layer_sparsity": {n: round(s, 4) for n, s in sparsity.items() if n in pruned},
        "sparsity": round(zeros / total, 4) if total else 0.0,
        "size_bytes_sparse": _sparse_bytes(model),
        "speedup_note": "Unstructured zeros do not make dense kernels faster; expect the same "
        "latency. The sparse (bitmask) size is what storage with compression saves.",
    }


def _nm_speed_note(n: int, m: int) -> tuple[bool, str]:
    import torch

    if (n, m) == (2, 4) and torch.cuda.is_available():
        major, _ = torch.cuda.get_device_capability()
        if major >= 8:
            return True, (
                "2:4 sparse tensor cores are present on this GPU; torch.sparse "
                "to_sparse_semi_structured can use them for large Linear layers."
            )
    return False, (
        f"no speed-up on this machine: no runtime here executes {n}:{m} sparse kernels "
        "(2:4 needs an NVIDIA Ampere-or-newer GPU); the weights are zero but run densely."
    )


def _nm(model: nn.Module, cfg: PruneConfig, protected: set[str]) -> dict[str, Any]:
    import torch

    pruned: dict[str, float] = {}
    skipped: list[str] = []
    for name, mod in _weighted_layers(model):
        if name in protected or _excluded(name, cfg.exclude):
            continue
        w = mod.weight.data
        # Groups of M along the input dimension (dim 1), per output row and kernel position.
        wt = w.transpose(0, 1).reshape(w.shape[1], -1) if w.dim() > 2 else w.t()
        if wt.shape[0] % cfg.m:
            skipped.append(name)
            continue
        groups = wt.t().reshape(-1, cfg.m)
        keep = torch.zeros_like(groups, dtype=torch.bool)
        keep.scatter_(1, groups.abs().topk(cfg.n, dim=1).indices, True)
        mask = keep.reshape(wt.t().shape).t()
        mask = mask.reshape(w.transpose(0, 1).shape).transpose(0, 1) if w.dim() > 2 else mask.t()
        w.mul_(mask.to(w.dtype))
        pruned[name] = round(float((w == 0).float().mean()), 4)
    accel, note = _nm_speed_note(cfg.n, cfg.m)
    return {
        "pattern": f"{cfg.n}:{cfg.m}",
        "layer_sparsity": pruned,
        "skipped_layers": skipped,
        "size_bytes_sparse": _sparse_bytes(model),
        "accelerated": accel,
        "speedup_note": note,
    }


# --------------------------------------------------------------------------------------------
# Structured (Torch-Pruning)
# --------------------------------------------------------------------------------------------


_HEAD_ATTRS = ("num_attention_heads", "num_heads", "n_heads")
_QKV_NAMES = (
    ("query", "key", "value"),
    ("q_proj", "k_proj", "v_proj"),
    ("q_lin", "k_lin", "v_lin"),
    ("q", "k", "v"),
)


@dataclass
class _Attention:
    """One self-attention module of a transformer encoder, as found by :func:`_attention`."""

    name: str
    module: Any
    qkv: list[Any]
    heads_attr: str
    head_size: int

    @property
    def heads(self) -> int:
        return int(getattr(self.module, self.heads_attr))


def _attention(model: nn.Module) -> list[_Attention]:
    """The Hugging Face-style self-attention modules of ``model`` (empty for CNNs, MLPs...).

    A module counts when it has an integer head count (``num_attention_heads``, ``num_heads`` or
    ``n_heads``) and three Linear children named like query/key/value projections of the same
    width, divisible by the head count.
    """
    from torch import nn

    found = []
    for name, mod in model.named_modules():
        attr = next((a for a in _HEAD_ATTRS if isinstance(getattr(mod, a, None), int)), None)
        if attr is None or isinstance(getattr(mod, attr), bool):
            continue
        children = dict(mod.named_children())
        for names in _QKV_NAMES:
            qkv = [x for x in (children.get(n) for n in names) if isinstance(x, nn.Linear)]
            if len(qkv) != 3:
                continue
            heads = int(getattr(mod, attr))
            width = qkv[0].out_features
            if heads > 0 and width % heads == 0 and all(x.out_features == width for x in qkv):
                size = int(getattr(mod, "attention_head_size", width // heads))
                found.append(_Attention(name, mod, qkv, attr, size))
            break
    return found


def _hidden_width_layers(model: nn.Module, attn: list[_Attention]) -> list[Any]:
    """Modules whose outputs are the residual (hidden) width of a transformer encoder.

    Leaving them unpruned keeps the hidden size, and so the embedding size, intact: every
    embedding table and every Linear that writes the hidden width other than the query/key/value
    projections (attention output projections, FFN output layers, a pooler).
    """
    from torch import nn

    qkv = {id(m) for a in attn for m in a.qkv}
    hidden = {a.qkv[0].in_features for a in attn}
    return [
        m
        for _, m in model.named_modules()
        if isinstance(m, nn.Embedding)
        or (isinstance(m, nn.Linear) and m.out_features in hidden and id(m) not in qkv)
    ]


def _sync_heads(attn: list[_Attention]) -> None:
    """After pruning whole heads: set each module's head count and all-head width to match."""
    for a in attn:
        width = a.qkv[0].out_features
        setattr(a.module, a.heads_attr, width // a.head_size)
        if isinstance(getattr(a.module, "all_head_size", None), int):
            a.module.all_head_size = width


def _importance(kind: Importance) -> Any:
    import torch_pruning as tp

    if kind == Importance.L1:
        return tp.importance.GroupMagnitudeImportance(p=1)
    if kind == Importance.L2:
        return tp.importance.GroupMagnitudeImportance(p=2)
    if kind == Importance.BN_SCALE:
        return tp.importance.BNScaleImportance()
    return tp.importance.GroupTaylorImportance()


def _module_attrs(mod: nn.Module) -> dict[str, Any]:
    out = {}
    for k, v in vars(mod).items():
        if k.startswith("_") or k == "training":
            continue
        if isinstance(v, bool):
            continue
        if isinstance(v, int) or (
            isinstance(v, (tuple, list)) and v and all(isinstance(x, int) for x in v)
        ):
            out[k] = list(v) if isinstance(v, (tuple, list)) else v
    return out


def record_attr_changes(before: nn.Module, after: nn.Module) -> dict[str, dict[str, Any]]:
    """Integer attributes (channel counts, heads, ...) that differ between two same-tree models."""
    old = dict(before.named_modules())
    changes: dict[str, dict[str, Any]] = {}
    for name, mod in after.named_modules():
        if name not in old:
            continue
        a, b = _module_attrs(old[name]), _module_attrs(mod)
        diff = {k: v for k, v in b.items() if a.get(k) != v}
        if diff:
            changes[name] = diff
    return changes


def add_rebuild_op(model: nn.Module, op: dict[str, Any]) -> None:
    """Append an architecture change to the model's rebuild log (see :data:`REBUILD_ATTR`)."""
    ops = list(getattr(model, REBUILD_ATTR, []))
    ops.append(op)
    object.__setattr__(model, REBUILD_ATTR, ops)


def _taylor_grads(model: nn.Module, data: DataSet | None, batches: int = 4) -> None:
    import torch.nn.functional as F

    from torchslim.evaluate import _as_tensor

    if data is None or not data.has_labels:
        raise DataError(
            "Taylor importance needs labelled training data for gradients.",
            "Give --data DATA, or use --importance l2.",
        )
    model.zero_grad()
    was = model.training
    model.eval()
    for i, (inputs, labels) in enumerate(data.take(min(len(data), 64 * batches)).batches(64)):
        if i >= batches:
            break
        assert labels is not None
        F.cross_entropy(_as_tensor(model(*inputs)), labels).backward()
    model.train(was)


def _structured_once(
    model: nn.Module,
    cfg: PruneConfig,
    ratio: float,
    inputs: tuple[Any, ...],
    ignored: list[nn.Module],
    train: DataSet | None,
    head_ratio: float | None = None,
) -> None:
    import torch
    import torch_pruning as tp

    was = model.training
    model.eval()
    attn = _attention(model)
    heads: dict[str, Any] = {}
    if attn:
        # Whole heads and FFN neurons go; the hidden width stays (see _hidden_width_layers).
        ignored = list(ignored) + _hidden_width_layers(model, attn)
        h = ratio if head_ratio is None else head_ratio
        heads = {
            "num_heads": {m: a.heads for a in attn for m in a.qkv},
            "prune_num_heads": h > 0,
            "prune_head_dims": False,
            "head_pruning_ratio": h,
        }

    def make(ignore: list[Any]) -> Any:
        return tp.pruner.MetaPruner(
            model,
            inputs if len(inputs) > 1 else inputs[0],
            importance=_importance(cfg.importance),
            global_pruning=cfg.global_ranking,
            pruning_ratio=ratio,
            max_pruning_ratio=cfg.max_layer_ratio if cfg.global_ranking else 1.0,
            ignored_layers=ignore,
            round_to=cfg.round_to or None,
            **heads,
        )

    try:
        pruner = make(ignored)
        excluded = [
            m for n, m in model.named_modules() if n and cfg.exclude and _excluded(n, cfg.exclude)
        ]
        if excluded:
            # An excluded module must keep its widths, so every channel group touching one of
            # its tensors (e.g. a bare nn.Parameter) is left alone too.
            touch = {id(m) for m in excluded} | {id(p) for m in excluded for p in m.parameters()}
            extra = []
            for group in pruner.DG.get_all_groups(
                ignored_layers=pruner.ignored_layers, root_module_types=pruner.root_module_types
            ):
                mods = [dep.target.module for dep, _ in group]
                if any(id(m) in touch for m in mods):
                    extra += [
                        m for m in mods if isinstance(m, (torch.nn.Module, torch.nn.Parameter))
                    ]
            if extra:
                pruner = make(list(ignored) + extra)
        if cfg.importance == Importance.TAYLOR:
            _taylor_grads(model, train)
        pruner.step()
        _sync_heads(attn)
        model.zero_grad(set_to_none=True)
    except (TorchslimError, DataError):
        raise
    except Exception as exc:
        where = _locate_failure(model, inputs)
        name = f"module '{where}'" if where else "the model"
        raise TorchslimError(
            f"The dependency graph could not prune {name}: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200] if str(exc) else ''}",
            f"Exclude it with --exclude {where or 'MODULE'} (PruneConfig.exclude), or use "
            "--method unstructured.",
        ) from exc
    finally:
        model.train(was)
    where = _locate_failure(model, inputs)
    if where is not None:
        raise TorchslimError(
            f"After structured pruning, module '{where}' no longer runs (shapes inconsistent).",
            f"Exclude it with --exclude {where} (PruneConfig.exclude) and retry.",
        )


def _flops(model: nn.Module, inputs: tuple[Any, ...]) -> int:
    from torchslim.measure import count_flops

    return int(count_flops(model, inputs) or 0)


def _latency_ms(model: nn.Module, inputs: tuple[Any, ...]) -> float:
    from torchslim.measure import TimingConfig, time_callable

    model.eval()
    one = tuple(x[:1] for x in inputs)
    cfg = TimingConfig(min_samples=20, min_time_s=0.3, max_time_s=2.0, max_warmup_s=1.0)
    return time_callable(lambda: model(*one), cfg).latency.p50_ms


def _search_ratio(
    model: nn.Module,
    cfg: PruneConfig,
    inputs: tuple[Any, ...],
    ignored_names: list[str],
    train: DataSet | None,
    goal: float,
) -> tuple[float, float]:
    """Smallest channel ratio whose pruned copy removes ``goal`` of FLOPs (or latency)."""
    measure = _flops if cfg.target == PruneTarget.FLOPS else _latency_ms
    base = measure(model, inputs)
    if not base:
        raise TorchslimError(
            "Cannot measure FLOPs of this model, so a FLOPs target cannot be met.",
            "Use --target channels.",
        )

    def reduction(r: float) -> float:
        trial = copy.deepcopy(model)
        mods = dict(trial.named_modules())
        _structured_once(
            trial, cfg, r, inputs, [mods[n] for n in ignored_names], train, cfg.head_ratio
        )
        return 1.0 - measure(trial, inputs) / base

    lo, hi = 0.0, min(0.8, cfg.max_layer_ratio)
    best_r, best_red = hi, reduction(hi)
    if best_red < goal:
        return best_r, best_red
    for _ in range(7 if cfg.target == PruneTarget.FLOPS else 5):
        mid = (lo + hi) / 2
        red = reduction(mid)
        if red >= goal:
            hi, best_r, best_red = mid, mid, red
        else:
            lo = mid
    return best_r, best_red


def _channel_counts(model: nn.Module) -> dict[str, int]:
    from torch import nn

    return {
        n: int(m.out_channels if isinstance(m, nn.modules.conv._ConvNd) else m.out_features)
        for n, m in _weighted_layers(model)
    }


def _structured(
    model: nn.Module, cfg: PruneConfig, ctx: PassContext, protected: set[str]
) -> dict[str, Any]:
    inputs = ctx.inputs()
    if len(inputs[0]) < 2:  # BatchNorm tracing and FLOP counting like a batch of 2+
        inputs = tuple(x.repeat(2, *([1] * (x.dim() - 1))) for x in inputs)
    mods = dict(model.named_modules())
    ignored_names = sorted(
        {n for n in protected if n in mods}
        | {n for n in mods if n and cfg.exclude and _excluded(n, cfg.exclude)}
    )
    channels_before = _channel_counts(model)
    original = copy.deepcopy(model)
    goal = float(cfg.ratio)
    ratio, achieved = goal, None
    if cfg.target != PruneTarget.CHANNELS:
        ratio, achieved = _search_ratio(model, cfg, inputs, ignored_names, ctx.train, goal)
    teacher = ctx.teacher if ctx.teacher is not None else original
    train_reports = []
    heads_before = {a.name: a.heads for a in _attention(model)}

    def step_share(r: float, step: int) -> float:
        # Torch-Pruning's ratio is relative to the original width: prune towards step/steps of
        # it. Each step removes its share of the *original* width from what is left.
        return 1 - (1 - r * step / cfg.steps) / (1 - r * (step - 1) / cfg.steps)

    for step in range(1, cfg.steps + 1):
        step_rel = step_share(ratio, step)
        head_rel = None if cfg.head_ratio is None else step_share(cfg.head_ratio, step)
        mods = dict(model.named_modules())
        _structured_once(
            model, cfg, step_rel, inputs, [mods[n] for n in ignored_names], ctx.train, head_rel
        )
        if cfg.recover is not None:
            if ctx.train is None:
                raise DataError(
                    "Recovery training after pruning needs training data.",
                    "Give --data DATA (e.g. torchslim:fashion_mnist?split=train) or --recover none.",
                )
            from torchslim.train import fit

            res = fit(
                model,
                ctx.train,
                cfg.recover,
                teacher=teacher if cfg.recover.method == DistillMethod.KD else None,
                eval_data=ctx.eval,
                progress=ctx.progress,
            )
            train_reports.append(res.to_dict())
    changes = record_attr_changes(original, model)
    add_rebuild_op(model, {"op": "attrs", "changes": changes})
    after = _channel_counts(model)
    if ratio > 0 and all(after[n] == channels_before.get(n) for n in after):
        raise TorchslimError(
            f"Structured pruning at ratio {ratio:.2f} removed no channels: every layer group is "
            f"protected ({', '.join(ignored_names) or 'none'}), coupled to one that is, or would "
            f"fall below round_to={cfg.round_to} channels.",
            "Give a lower --ratio, --round-to 1, or exclude fewer layers (residual blocks share "
            "their channels: excluding one layer keeps its whole group).",
        )
    report: dict[str, Any] = {
        "channel_ratio": round(ratio, 4),
        "channels": {
            n: [channels_before[n], after[n]]
            for n in after
            if n in channels_before and channels_before[n] != after[n]
        },
        "protected": ignored_names,
        "importance": cfg.importance.value,
        "global_ranking": cfg.global_ranking,
        "round_to": cfg.round_to,
        "steps": cfg.steps,
    }
    if heads_before:
        after_heads = {a.name: a.heads for a in _attention(model)}
        report["heads"] = {n: [heads_before[n], after_heads.get(n, 0)] for n in heads_before}
        report["head_ratio"] = round(ratio if cfg.head_ratio is None else cfg.head_ratio, 4)
        report["kept_hidden_width"] = True
    if achieved is not None:
        report[f"target_{cfg.target.value}_reduction"] = {
            "goal": goal,
            "search": round(achieved, 4),
        }
    if train_reports:
        report["recovery"] = train_reports
    return report


def apply_prune(module: nn.Module, config: PruneConfig, ctx: PassContext) -> PassResult:
    """Pass handler for :class:`PruneConfig` (``module`` is a private copy)."""
    from torchslim.passes.base import PassResult

    first, last = _first_last(module, ctx.inputs())
    if config.method == PruneMethod.STRUCTURED and _attention(module):
        first = None  # a transformer keeps its hidden width, so its first layer is not special
    protected = {n for n in (first, last) if n} if config.protect_first_last else set()
    if config.method == PruneMethod.STRUCTURED and last:
        protected.add(last)  # the model's outputs (e.g. classes) must keep their width
    if config.method == PruneMethod.STRUCTURED:
        report = _structured(module, config, ctx, protected)
    else:
        if config.method == PruneMethod.NM:
            report = _nm(module, config, protected)
        else:
            report = _unstructured(module, config, protected)
        report["protected"] = sorted(protected)
        if config.recover is not None:
            report["recovery_note"] = RECOVERY_NOTE
    report["method"] = config.method.value
    return PassResult(module, report)
