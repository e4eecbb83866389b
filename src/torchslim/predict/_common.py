"""Pieces the local and the Ray path share: the summary, preprocessing and class names of a
model, the first usable sample, the list of skipped samples beside the output."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torchslim.errors import ShapeError, TorchslimError
from torchslim.predict._sources import Batch

if TYPE_CHECKING:
    from torchslim.models import LoadedModel

__all__ = [
    "PredictSummary",
    "class_names_of",
    "first_good",
    "manifest_preprocess",
    "parse_preprocess",
    "write_skipped",
]


@dataclass
class PredictSummary:
    """What a :func:`predict` run did.

    Attributes:
        out: The file written.
        format: Its format.
        model: The model source.
        data: The data source.
        total: Samples in the data.
        items: Rows written (predicted samples).
        skipped: Samples left out, each ``{"index", "id", "reason"}``.
        wall_s: Seconds from the call to the renamed file (loading and probing included).
        run_s: Seconds spent predicting: the loop, checkpoints, and merging into the file.
        items_per_s: Samples handled this run per second of ``run_s``.
        batch_size: The batch size used.
        batch_probe: What ``batch_size="auto"`` measured, else ``None``.
        loader: The loader plan (workers, threads, pinning, the measured split).
        devices: Where the model ran.
        resumed_rows: Input positions already done by an interrupted run (0 for a fresh one).
        ray: Whether Ray Data ran it.
        write_s: Of ``run_s``, seconds spent merging the parts into the file.
    """

    out: str
    format: str
    model: str
    data: str
    total: int
    items: int
    skipped: list[dict[str, Any]]
    wall_s: float
    run_s: float
    items_per_s: float
    batch_size: int
    batch_probe: dict[str, Any] | None
    loader: dict[str, Any]
    devices: list[str]
    resumed_rows: int = 0
    ray: bool = False
    write_s: float = 0.0

    @property
    def ok(self) -> bool:
        """True when no sample was skipped."""
        return not self.skipped

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict."""
        d = asdict(self)
        d["skipped_count"] = len(self.skipped)
        return d


def parse_preprocess(pre: Mapping[str, Any] | str | None) -> dict[str, Any] | None:
    if pre is None:
        return None
    if isinstance(pre, Mapping):
        return dict(pre)
    out: dict[str, Any] = {}
    for item in str(pre).replace("&", ",").split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or key.strip() not in ("size", "normalize", "channels"):
            raise TorchslimError(
                f"Invalid --preprocess item '{item}'.",
                "Give e.g. --preprocess 'size=224,normalize=imagenet' (keys: size, normalize, "
                "channels).",
            )
        out[key.strip()] = value.strip()
    return out


def class_names_of(loaded: LoadedModel) -> list[str] | None:
    names = loaded.metadata.get("class_names")
    if names:
        return [str(n) for n in names]
    art = loaded.metadata.get("artifact")
    source = getattr(art, "source", None)
    if source and str(source).startswith("torchslim:"):
        from torchslim.models import load_model

        try:
            names = load_model(str(source)).metadata.get("class_names")
        except TorchslimError:
            names = None
    return [str(n) for n in names] if names else None


def manifest_preprocess(loaded: LoadedModel) -> dict[str, Any] | None:
    art = loaded.metadata.get("artifact")
    pre = getattr(art, "manifest", {}).get("preprocessing") if art is not None else None
    if pre is None:
        pre = loaded.metadata.get("preprocessing")
    return dict(pre) if isinstance(pre, Mapping) else None


def first_good(source: Any) -> Batch:
    """The first sample that loads (for shapes, probing and the split); errors if none does."""
    n = len(source)
    for start in range(0, n, 64):
        batch = source.get(range(start, min(n, start + 64)))
        if len(batch):
            return Batch(batch.index[:1], batch.ids[:1], tuple(x[:1] for x in batch.inputs))
    first = source.get(range(min(n, 64))).skipped
    why = first[0].reason if first else "no samples"
    raise ShapeError(
        f"No sample of the data can be given to the model (the first: {why}).",
        "Check that the data matches the model's input (see torchslim inspect MODEL).",
    )


def write_skipped(out: Path, skipped: list[dict[str, Any]]) -> None:
    """``FILE.skipped.jsonl`` lists the skipped samples (removed when none were)."""
    side = out.with_name(out.name + ".skipped.jsonl")
    if not skipped:
        if side.exists():
            side.unlink()
        return
    tmp = side.with_name(f".{side.name}.tmp")
    tmp.write_text("".join(json.dumps(s) + "\n" for s in skipped), encoding="utf-8")
    os.replace(tmp, side)
