"""Bottleneck advice: rules over a :class:`~torchslim.profile.result.ProfileResult`, each finding
in plain words with its number and a next step.

========================  =====================================================================
rule (``Advice.id``)      fires when
========================  =====================================================================
``conv-share``            convolution layers take ≥ :data:`COMPUTE_SHARE` of the layer time:
                          names the blocks (top-level modules) whose convolutions cost the most,
                          the candidates for structured pruning
``matmul-share``          the same for Linear/MatMul/Gemm layers
``reorder-share``         reorders, transposes, copies and layout conversions take
                          ≥ :data:`REORDER_SHARE`: channels_last or the OpenVINO runtime
``float-in-int8``         a model whose convolutions/matmuls run in int8 runs others in float:
                          how many, which, and what they cost
``call-overhead``         at batch 1, the time outside the layers is ≥ :data:`OVERHEAD_SHARE` of
                          the end-to-end latency: batch requests / a leaner call path
========================  =====================================================================

Each rule is a plain function ``(result) -> Advice | None``; :func:`advise` runs them all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from torchslim.profile.result import Advice, LayerTime

if TYPE_CHECKING:
    from torchslim.profile.result import ProfileResult

__all__ = [
    "COMPUTE_SHARE",
    "OVERHEAD_SHARE",
    "REORDER_SHARE",
    "RULES",
    "advise",
    "call_overhead",
    "compute_share",
    "float_in_int8",
    "reorder_share",
]

COMPUTE_SHARE = 0.5
"""Share of the layer time in convolutions (or matmuls) from which pruning them is the lever."""
REORDER_SHARE = 0.10
"""Share of the layer time in reorders/transposes worth a layout change."""
OVERHEAD_SHARE = 0.25
"""Share of batch-1 latency outside the layers worth batching or a leaner call."""
_FLOAT = ("fp32", "bf16", "fp16")


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _names(layers: Sequence[LayerTime], k: int = 4) -> str:
    shown = [f"`{x.module or x.name}` ({x.self_ms:.3f} ms)" for x in layers[:k]]
    more = f" and {len(layers) - k} more" if len(layers) > k else ""
    return ", ".join(shown) + more


def _blocks(layers: Sequence[LayerTime]) -> list[tuple[str, float]]:
    """Layer time per block, largest first. A block is the module at the shallowest depth where
    no single block holds 90% of the time (``layer3`` for a ResNet's ``layer3.0.conv1``;
    ``backbone.encoder.layer.3`` for a BERT, whose top-level module is one wrapper)."""
    paths = [(x.module.split("."), x.self_ms) for x in layers if x.module]
    if not paths:
        return []
    deepest = max(len(p) for p, _ in paths)
    per: dict[str, float] = {}
    for depth in range(1, deepest + 1):
        per = {}
        for parts, ms in paths:
            key = ".".join(parts[:depth])
            per[key] = per.get(key, 0.0) + ms
        total = sum(per.values())
        if len(per) > 1 and max(per.values()) < 0.9 * total:
            break
    return sorted(per.items(), key=lambda kv: -kv[1])


def compute_share(result: ProfileResult, kind: str = "conv") -> Advice | None:
    """``conv-share`` / ``matmul-share``: most of the time is in one kind of compute layer."""
    total = result.layer_sum_ms
    layers = [x for x in result.layers if x.kind == kind]
    ms = sum(x.self_ms for x in layers)
    if total <= 0 or ms / total < COMPUTE_SHARE:
        return None
    share = ms / total
    word = "convolution" if kind == "conv" else "linear/matmul"
    blocks = _blocks(layers)
    picked: list[tuple[str, float]] = []
    for name, t in blocks:
        picked.append((name, t))
        if sum(v for _, v in picked) >= 0.6 * ms or len(picked) == 2:
            break
    title = f"{len(layers)} {word} layers take {_pct(share)} of the time"
    if picked and len(blocks) > 1:
        where = " and ".join(f"`{n}`" for n, _ in picked)
        cut = sum(v for _, v in picked) / total
        title += f" — structured pruning of {where} would cut the most ({_pct(cut)} of the time)"
    source = result.source
    return Advice(
        f"{kind}-share",
        "info",
        title,
        f"Slowest: {_names(sorted(layers, key=lambda x: -x.self_ms))}.",
        f"torchslim prune {source} --method structured --ratio 0.5 (fewer channels: every "
        f"{word} layer gets cheaper); then torchslim quantize {source} for INT8 kernels.",
        {
            "share": share,
            "ms": ms,
            "layers": len(layers),
            "blocks": {n: t for n, t in picked},
        },
    )


def reorder_share(result: ProfileResult) -> Advice | None:
    """``reorder-share``: layout changes (reorders, transposes, copies) cost a lot."""
    total = result.layer_sum_ms
    layers = [x for x in result.layers if x.kind == "reorder"]
    ms = sum(x.self_ms for x in layers)
    if total <= 0 or ms / total < REORDER_SHARE:
        return None
    share = ms / total
    if result.runtime == "openvino":
        step = (
            "Feed the model its preferred layout (NHWC) or fold the transposes into the model; "
            "compare with torchslim bench MODEL --runtime all."
        )
    else:
        step = (
            "Try channels_last or the OpenVINO runtime: torchslim bench "
            f"{result.source} --runtime all compares them here."
        )
    return Advice(
        "reorder-share",
        "warn",
        f"{_pct(share)} of the time is in reorders/transposes ({len(layers)} layers, "
        f"{ms:.3f} ms per call)",
        f"Slowest: {_names(sorted(layers, key=lambda x: -x.self_ms))}.",
        step,
        {"share": share, "ms": ms, "layers": len(layers)},
    )


def float_in_int8(result: ProfileResult) -> Advice | None:
    """``float-in-int8``: compute layers that ran in float inside a model that runs int8."""
    if not any(x.precision == "int8" and x.kind in ("conv", "matmul") for x in result.layers):
        return None
    floats = [x for x in result.layers if x.precision in _FLOAT and x.kind in ("conv", "matmul")]
    if not floats:
        return None
    ms = sum(x.self_ms for x in floats)
    total = result.layer_sum_ms
    share = ms / total if total > 0 else 0.0
    precisions = sorted({str(x.precision) for x in floats})
    return Advice(
        "float-in-int8",
        "info",
        f"{len(floats)} layer{'s' if len(floats) != 1 else ''} ran in "
        f"{'/'.join(precisions)} inside the INT8 model: {ms:.3f} ms per call, {_pct(share)} "
        "of the time",
        f"Kept float (by accuracy-aware quantization or --ignore, or unsupported in int8): "
        f"{_names(sorted(floats, key=lambda x: -x.self_ms))}.",
        "If the accuracy budget allows, quantize them too (a larger --max-drop, or fewer "
        "--ignore); each one's cost is listed above.",
        {
            "layers": len(floats),
            "ms": ms,
            "share": share,
            "names": [x.module or x.name for x in floats],
        },
    )


def call_overhead(result: ProfileResult) -> Advice | None:
    """``call-overhead``: at batch 1 much of the latency is spent outside the layers."""
    if result.batch != 1 or result.latency_ms <= 0:
        return None
    share = result.overhead_share
    if share < OVERHEAD_SHARE:
        return None
    if result.runtime == "openvino":
        step = (
            "Batch requests (torchslim serve batches them), or call the bare infer request "
            "(torchslim's openvino runtime does) instead of compiled_model(inputs)."
        )
    elif result.runtime == "onnxruntime":
        step = "Batch requests (torchslim serve batches them); reuse one session and IO binding."
    else:
        step = (
            "Batch requests (torchslim serve batches them), or run it in a compiled runtime "
            "with less per-call overhead (--runtime inductor, onnxruntime or openvino)."
        )
    return Advice(
        "call-overhead",
        "warn",
        f"per-call overhead is {_pct(share)} of batch-1 latency",
        f"{result.overhead_ms:.3f} ms of {result.latency_ms:.3f} ms per call run outside the "
        f"layers ({result.layer_sum_ms:.3f} ms in layers, {result.runtime}).",
        step,
        {
            "share": share,
            "overhead_ms": result.overhead_ms,
            "latency_ms": result.latency_ms,
            "layer_sum_ms": result.layer_sum_ms,
        },
    )


RULES: tuple[Callable[[ProfileResult], Advice | None], ...] = (
    lambda r: compute_share(r, "conv"),
    lambda r: compute_share(r, "matmul"),
    reorder_share,
    float_in_int8,
    call_overhead,
)
"""Every rule, in the order findings are listed."""


def advise(result: ProfileResult) -> tuple[Advice, ...]:
    """Run every rule of :data:`RULES` on ``result``; the findings that fired, in order."""
    out = []
    for rule in RULES:
        found = rule(result)
        if found is not None:
            out.append(found)
    return tuple(out)
