"""The per-layer latency table: what each layer of a model costs on this machine, kept so that a
later step (``optimize`` predicting the latency of pruned variants before building them) can read
it without profiling again.

One JSON file per machine and model::

    <cache_dir>/profile/<machine fingerprint>/<model hash>.json

``cache_dir`` is ``$TORCHSLIM_CACHE_DIR`` or ``~/.cache/torchslim``
(:func:`torchslim.machine.cache_dir`); the machine fingerprint is
:attr:`torchslim.machine.MachineInfo.fingerprint` (CPU, cores, ISA, torch version, GPU); the
model hash is :func:`model_hash` (weights and architecture of a module; file hashes of an
artifact or an ONNX file). The file is rewritten atomically; one entry per runtime, batch size
and thread count, the latest profile winning::

    {
      "format": "torchslim.profile.table",
      "version": 1,
      "machine": "<fingerprint>",
      "model_hash": "<64 hex>",
      "source": "torchslim:fashion_resnet",
      "entries": {
        "<runtime>/b<batch>/t<threads>": {
          "runtime": "openvino", "batch": 1, "threads": 2,
          "created": "2026-12-02T05:00:00Z",
          "latency_ms": 0.81,          # end-to-end median, no profiler
          "layer_sum_ms": 0.62,        # the layers below, summed
          "overhead_ms": 0.19,         # latency_ms - layer_sum_ms (>= 0)
          "iterations": 20,
          "layers": [                  # slowest first
            {"name": "Multiply_4746", "type": "Convolution", "kind": "conv",
             "module": "layer1.0.conv1", "ms": 0.071, "calls": 1, "flops": 14450688,
             "precision": "fp32", "shapes": "1x32x28x28, 32x32x3x3"}
          ]
        }
      }
    }

Times are ms per model call at that batch size. ``module`` is the ``nn.Module`` path
(``null`` when the runtime's layer could not be mapped to one); :func:`module_latency` sums the
layers per module, which is what a latency predictor for a pruned module needs.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torchslim.profile._common import write_text_atomic

if TYPE_CHECKING:
    from torchslim.profile.result import ProfileResult

__all__ = [
    "TABLE_FORMAT",
    "TABLE_VERSION",
    "entry_key",
    "load_table",
    "model_hash",
    "module_latency",
    "save_table",
    "table_path",
]

TABLE_FORMAT = "torchslim.profile.table"
TABLE_VERSION = 1


def model_hash(model: Any) -> str:
    """A stable SHA-256 of what a model computes.

    Args:
        model: An ``nn.Module`` (its class, parameter/buffer names, shapes, dtypes and bytes), a
            :class:`~torchslim.models.LoadedModel` (its module, else the artifact's file hashes,
            else the ONNX file), or a path to a file.

    Returns:
        64 hex digits.
    """
    from torchslim._io import sha256_file

    h = hashlib.sha256()
    if isinstance(model, (str, Path)):
        return sha256_file(model)
    metadata = getattr(model, "metadata", None)
    art = metadata.get("artifact") if isinstance(metadata, dict) else None
    if art is not None:
        h.update(json.dumps(art.manifest.get("files") or {}, sort_keys=True).encode())
        return h.hexdigest()
    if hasattr(model, "require_module"):  # a LoadedModel
        if model.module is None:
            if model.onnx_path is None:
                raise ValueError(f"'{model.source}' has neither a module nor a file to hash")
            return sha256_file(model.onnx_path)
        model = model.module
    import torch

    h.update(f"{type(model).__module__}.{type(model).__qualname__}".encode())
    for name, value in model.state_dict().items():
        if not isinstance(value, torch.Tensor):
            h.update(f"{name}:{value!r}".encode())
            continue
        t = value.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        try:
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        except (RuntimeError, TypeError):  # quantised or exotic dtypes
            h.update(repr(t).encode())
    return h.hexdigest()


def table_path(
    digest: str, *, machine: str | None = None, directory: str | Path | None = None
) -> Path:
    """Where the table of the model with hash ``digest`` lives for ``machine`` (default: this
    machine's fingerprint) under ``directory`` (default :func:`torchslim.machine.cache_dir`)."""
    from torchslim.machine import cache_dir, machine_info

    fp = machine or machine_info(include_gpu=False).fingerprint
    root = Path(directory) if directory is not None else cache_dir()
    return root / "profile" / fp / f"{digest}.json"


def entry_key(runtime: str, batch: int, threads: int) -> str:
    """The key of one profile in the table: ``"<runtime>/b<batch>/t<threads>"``."""
    return f"{runtime}/b{batch}/t{threads}"


def load_table(
    digest: str, *, machine: str | None = None, directory: str | Path | None = None
) -> dict[str, Any] | None:
    """The table of a model on a machine, or ``None`` when there is none (or it is unreadable
    or of another format version)."""
    path = table_path(digest, machine=machine, directory=directory)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if data.get("format") != TABLE_FORMAT or data.get("version") != TABLE_VERSION:
        return None
    return dict(data)


def save_table(
    result: ProfileResult,
    digest: str,
    *,
    machine: str | None = None,
    directory: str | Path | None = None,
) -> Path:
    """Add (or replace) ``result``'s entry in the model's table; returns the file.

    Args:
        result: A profile.
        digest: :func:`model_hash` of the model profiled.
        machine: Machine fingerprint (default: this machine's).
        directory: Cache folder (default :func:`torchslim.machine.cache_dir`).
    """
    path = table_path(digest, machine=machine or result.machine, directory=directory)
    data = load_table(digest, machine=machine or result.machine, directory=directory) or {
        "format": TABLE_FORMAT,
        "version": TABLE_VERSION,
        "machine": path.parent.name,
        "model_hash": digest,
        "source": result.source,
        "entries": {},
    }
    data["entries"][entry_key(result.runtime, result.batch, result.threads)] = {
        "runtime": result.runtime,
        "batch": result.batch,
        "threads": result.threads,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "latency_ms": result.latency_ms,
        "layer_sum_ms": result.layer_sum_ms,
        "overhead_ms": result.overhead_ms,
        "iterations": result.iterations,
        "layers": [
            {
                "name": x.name,
                "type": x.type,
                "kind": x.kind,
                "module": x.module,
                "ms": x.self_ms,
                "calls": x.calls,
                "flops": x.flops,
                "precision": x.precision,
                "shapes": x.shapes,
            }
            for x in result.layers
        ],
    }
    write_text_atomic(path, json.dumps(data, indent=1))
    return path


def module_latency(entry: dict[str, Any]) -> dict[str, float]:
    """Per ``nn.Module`` path, the ms of the layers mapped to it in one table entry (layers
    without a module are summed under ``None``'s key ``"?"``)."""
    out: dict[str, float] = {}
    for layer in entry.get("layers", []):
        key = layer.get("module")
        key = "?" if key is None else str(key)
        out[key] = out.get(key, 0.0) + float(layer.get("ms", 0.0))
    return out
