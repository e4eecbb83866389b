"""Helpers shared by the runtime profilers: module totals, shape text, medians."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from torchslim.profile.result import LayerTime, OperatorTime

__all__ = [
    "ancestors",
    "median",
    "module_totals",
    "shapes_text",
    "trimmed_mean",
    "with_shares",
    "write_text_atomic",
]


def median(values: Sequence[float]) -> float:
    """The median of ``values`` (0.0 when empty)."""
    if not values:
        return 0.0
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def trimmed_mean(values: Sequence[float], cut: float = 0.2) -> float:
    """Mean of ``values`` without the lowest and highest ``cut`` fraction (0.0 when empty).

    Per-layer times use it: unlike a median per layer, the trimmed means of the layers add up to
    about the typical whole call, while the odd call slowed by a busy machine still drops out.
    """
    if not values:
        return 0.0
    s = sorted(values)
    k = int(len(s) * cut)
    kept = s[k : len(s) - k] or s
    return sum(kept) / len(kept)


def shapes_text(shapes: Any) -> str | None:
    """``[[1, 3, 8, 8], [16, 3, 3, 3], []]`` → ``"1x3x8x8, 16x3x3x3"`` (empty shapes left out)."""
    if not shapes:
        return None
    parts = []
    for s in shapes:
        if isinstance(s, (list, tuple)) and s and all(isinstance(d, int) for d in s):
            parts.append("x".join(str(d) for d in s))
    return ", ".join(parts) or None


def ancestors(path: str) -> list[str]:
    """``"layer1.0.conv1"`` → ``["", "layer1", "layer1.0", "layer1.0.conv1"]``."""
    if not path:
        return [""]
    parts = path.split(".")
    return ["", *(".".join(parts[: i + 1]) for i in range(len(parts)))]


def module_totals(
    layers: Iterable[LayerTime], types: dict[str, str] | None = None
) -> list[LayerTime]:
    """Per ``nn.Module`` path (every level, ``""`` the whole model): the layers' self times summed
    into ``total_ms``, slowest first. Layers without a module are left out."""
    totals: dict[str, float] = {}
    own: dict[str, float] = {}
    for layer in layers:
        if layer.module is None:
            continue
        own[layer.module] = own.get(layer.module, 0.0) + layer.self_ms
        for a in ancestors(layer.module):
            totals[a] = totals.get(a, 0.0) + layer.self_ms
    types = types or {}
    rows = [
        LayerTime(
            name=path,
            type=types.get(path, "module"),
            self_ms=own.get(path, 0.0),
            total_ms=ms,
            module=path,
        )
        for path, ms in totals.items()
    ]
    return sorted(rows, key=lambda r: (-r.total_ms, r.name))


def with_shares(
    layers: Sequence[LayerTime], operators: Sequence[OperatorTime]
) -> tuple[tuple[LayerTime, ...], tuple[OperatorTime, ...], float]:
    """Layers and operators sorted slowest first with their ``share`` of the summed self time;
    also returns that sum (ms per call)."""
    total = sum(x.self_ms for x in layers)
    op_total = sum(x.self_ms for x in operators) or total
    ls = tuple(
        sorted(
            (replace(x, share=x.self_ms / total if total > 0 else 0.0) for x in layers),
            key=lambda x: (-x.self_ms, x.name),
        )
    )
    os_ = tuple(
        sorted(
            (replace(x, share=x.self_ms / op_total if op_total > 0 else 0.0) for x in operators),
            key=lambda x: (-x.self_ms, x.name),
        )
    )
    return ls, os_, total


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename, so a
    reader never sees half a file."""
    import os
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
