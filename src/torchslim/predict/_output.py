"""Checkpointed, atomic prediction output: parts while running, one file at the end.

While a job runs, results go to ``.FILE.partial/`` beside the output: ``job.json`` (what the job
is: model, data, options, the resolved batch size) and one ``part-START-END.npz`` per committed
range of input positions, each written under a temporary name and renamed (so a part is either
complete or absent). ``--resume`` reads the parts back and runs only the ranges no part covers;
batch boundaries stay where they were, so the resumed file equals an uninterrupted run's.
When every range is done the parts are merged, in input order, into ``FILE`` written under a
temporary name and renamed; then ``.FILE.partial/`` is removed.

Columns (every format): ``index`` (input position), ``id`` (sample id or path), and either
``label_ids`` / ``labels`` / ``scores`` (top-k classes, probabilities) or ``output`` (raw outputs
or embeddings). Formats: ``jsonl`` (one object per row), ``parquet`` (pyarrow; fixed-size row
groups), ``npy`` (one structured array; ``np.load`` reads it without pickle).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from torchslim.errors import BackendUnavailableError, TorchslimError

__all__ = ["FORMATS", "PartStore", "format_for", "read_predictions", "write_final"]

FORMATS = ("jsonl", "parquet", "npy")
_PART = re.compile(r"^part-(\d{12})-(\d{12})\.npz$")
_ROW_GROUP = 65536
_DATA_KEYS = ("index", "id", "label_ids", "scores", "output")


def format_for(out: Path, fmt: str | None) -> str:
    """The output format: ``fmt``, else from the file's suffix.

    Raises:
        TorchslimError: Unknown format, or a suffix that names none and no ``fmt``.
    """
    if fmt is None:
        suffix = out.suffix.lower().lstrip(".")
        fmt = {"json": "jsonl", "pq": "parquet"}.get(suffix, suffix)
        if fmt not in FORMATS:
            raise TorchslimError(
                f"Cannot tell the output format from '{out.name}'.",
                "Name the file .jsonl, .parquet or .npy, or give --format.",
            )
    if fmt not in FORMATS:
        raise TorchslimError(f"Unknown format '{fmt}'.", f"Use one of: {', '.join(FORMATS)}.")
    if fmt == "parquet":
        _pyarrow()
    return fmt


def _pyarrow() -> Any:
    try:
        import pyarrow as pa
        import pyarrow.parquet
    except ImportError as exc:
        raise BackendUnavailableError("pyarrow", "predict", "parquet output needs pyarrow") from exc
    return pa


def _fsync(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class PartStore:
    """The ``.FILE.partial/`` directory of one job.

    Args:
        out: The final output file.
    """

    def __init__(self, out: Path) -> None:
        self.out = out
        self.dir = out.with_name(f".{out.name}.partial")

    @property
    def exists(self) -> bool:
        """Whether an interrupted job left parts here."""
        return (self.dir / "job.json").is_file()

    def start(self, job: Mapping[str, Any]) -> None:
        """Begin a fresh job (removing any earlier parts)."""
        self.clear()
        self.dir.mkdir(parents=True)
        self._write_text("job.json", json.dumps(dict(job), indent=2, sort_keys=True) + "\n")

    def job(self) -> dict[str, Any]:
        """The job an interrupted run recorded.

        Raises:
            TorchslimError: ``job.json`` is unreadable.
        """
        try:
            job: dict[str, Any] = json.loads((self.dir / "job.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise TorchslimError(
                f"Cannot read the checkpoint '{self.dir}/job.json': {exc}.",
                "Start over without --resume (add --force).",
            ) from None
        return job

    def _write_text(self, name: str, text: str) -> None:
        tmp = self.dir / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, self.dir / name)

    def done(self) -> list[tuple[int, int]]:
        """Ranges ``[start, end)`` of input positions committed so far, sorted."""
        ranges = []
        if self.dir.is_dir():
            for p in self.dir.iterdir():
                m = _PART.match(p.name)
                if m:
                    ranges.append((int(m.group(1)), int(m.group(2))))
        return sorted(ranges)

    def commit(self, start: int, end: int, cols: Mapping[str, Any], skipped: list[Any]) -> None:
        """Write the results for positions ``[start, end)`` as one part, atomically."""
        import numpy as np

        arrays = {k: np.asarray(v) for k, v in cols.items() if v is not None}
        arrays["id"] = np.asarray(cols["id"], dtype=str)
        arrays["skipped_index"] = np.asarray([s.index for s in skipped], dtype=np.int64)
        arrays["skipped_id"] = np.asarray([s.id for s in skipped], dtype=str)
        arrays["skipped_reason"] = np.asarray([s.reason for s in skipped], dtype=str)
        name = f"part-{start:012d}-{end:012d}.npz"
        tmp = self.dir / f".{name}.tmp"
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)  # type: ignore[arg-type]
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.dir / name)

    def parts(self) -> Iterator[dict[str, Any]]:
        """Each part's columns in input order (``skipped`` as a list of dicts)."""
        import numpy as np

        for start, end in self.done():
            path = self.dir / f"part-{start:012d}-{end:012d}.npz"
            with np.load(path, allow_pickle=False) as z:
                part = {k: z[k] for k in z.files}
            part["skipped"] = [
                {"index": int(i), "id": str(s), "reason": str(r)}
                for i, s, r in zip(
                    part.pop("skipped_index"),
                    part.pop("skipped_id"),
                    part.pop("skipped_reason"),
                    strict=True,
                )
            ]
            yield part

    def clear(self) -> None:
        """Remove the parts directory."""
        if self.dir.exists():
            shutil.rmtree(self.dir)


def _with_labels(part: dict[str, Any], class_names: list[str] | None) -> dict[str, Any]:
    import numpy as np

    if "label_ids" in part and "labels" not in part:
        ids = part["label_ids"]
        if class_names:
            names = np.asarray(class_names, dtype=str)
            part["labels"] = names[np.clip(ids, 0, len(names) - 1)]
        else:
            part["labels"] = ids.astype(str)
    return part


def write_final(
    parts: Iterator[dict[str, Any]] | list[dict[str, Any]],
    out: Path,
    fmt: str,
    *,
    class_names: list[str] | None = None,
) -> tuple[int, list[dict[str, Any]]]:
    """Merge ``parts`` (in input order) into ``out``, written under a temporary name and renamed.

    Returns:
        ``(rows written, skipped records)``.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    skipped: list[dict[str, Any]] = []

    def rows() -> Iterator[dict[str, Any]]:
        for part in parts:
            skipped.extend(part.get("skipped", []))
            yield _with_labels({k: v for k, v in part.items() if k != "skipped"}, class_names)

    try:
        writer = {"jsonl": _write_jsonl, "parquet": _write_parquet, "npy": _write_npy}[fmt]
        n = writer(rows(), tmp)
        _fsync(tmp)
        os.replace(tmp, out)
        _fsync(out.parent)
    finally:
        if tmp.exists():
            tmp.unlink()
    return n, skipped


_ORDER = ("index", "id", "labels", "label_ids", "scores", "output")


def _write_jsonl(parts: Iterator[dict[str, Any]], path: Path) -> int:
    n = 0
    with open(path, "w", encoding="utf-8") as fh:
        for part in parts:
            keys = [k for k in _ORDER if k in part]
            lists = {k: part[k].tolist() for k in keys}
            for j in range(len(part["index"])):
                fh.write(json.dumps({k: lists[k][j] for k in keys}, ensure_ascii=False) + "\n")
            n += len(part["index"])
        fh.flush()
        os.fsync(fh.fileno())
    return n


def _arrow_table(part: dict[str, Any]) -> Any:
    import numpy as np

    pa = _pyarrow()
    cols: dict[str, Any] = {
        "index": pa.array(part["index"], pa.int64()),
        "id": pa.array(part["id"].tolist(), pa.string()),
    }
    for key, typ in (("labels", pa.string()), ("label_ids", pa.int64()), ("scores", pa.float32())):
        if key in part:
            arr = part[key]
            flat = pa.array(arr.reshape(-1).tolist() if key == "labels" else arr.reshape(-1), typ)
            cols[key] = pa.FixedSizeListArray.from_arrays(flat, int(arr.shape[1]))
    if "output" in part:
        arr = np.ascontiguousarray(part["output"])
        width = int(np.prod(arr.shape[1:])) if arr.ndim > 1 else 1
        flat = pa.array(arr.reshape(-1))
        cols["output"] = pa.FixedSizeListArray.from_arrays(flat, width)
    table = pa.table(cols)
    if "output" in part:
        shape = json.dumps([int(d) for d in part["output"].shape[1:]])
        table = table.replace_schema_metadata({"torchslim.output_shape": shape})
    return table


def _write_parquet(parts: Iterator[dict[str, Any]], path: Path) -> int:
    pa = _pyarrow()
    import pyarrow.parquet as pq

    writer = None
    pending: list[Any] = []
    buffered = 0
    n = 0

    def flush(all_rows: bool) -> None:
        nonlocal pending, buffered, writer
        if not pending:
            return
        table = pa.concat_tables(pending)
        cut = len(table) if all_rows else (len(table) // _ROW_GROUP) * _ROW_GROUP
        if writer is None:
            writer = pq.ParquetWriter(str(path), table.schema)
        for s in range(0, cut, _ROW_GROUP):
            writer.write_table(table.slice(s, min(_ROW_GROUP, cut - s)), row_group_size=_ROW_GROUP)
        rest = table.slice(cut)
        pending, buffered = ([rest], len(rest)) if len(rest) else ([], 0)

    try:
        for part in parts:
            if not len(part["index"]):
                continue
            pending.append(_arrow_table(part))
            buffered += len(part["index"])
            n += len(part["index"])
            if buffered >= _ROW_GROUP:
                flush(False)
        flush(True)
        if writer is None:
            pq.write_table(
                pa.table({"index": pa.array([], pa.int64()), "id": pa.array([], pa.string())}),
                str(path),
            )
    finally:
        if writer is not None:
            writer.close()
    return n


def _npy_dtype(parts: list[dict[str, Any]]) -> Any:
    import numpy as np

    first: dict[str, Any] = parts[0] if parts else {}
    id_width = max([int(p["id"].dtype.itemsize // 4) for p in parts] + [1])
    fields: list[tuple[Any, ...]] = [("index", "<i8"), ("id", f"<U{id_width}")]
    if "label_ids" in first:
        k = first["label_ids"].shape[1]
        lw = max([int(p["labels"].dtype.itemsize // 4) for p in parts] + [1])
        fields += [("labels", f"<U{lw}", (k,)), ("label_ids", "<i8", (k,)), ("scores", "<f4", (k,))]
    if "output" in first:
        out = first["output"]
        fields.append(("output", out.dtype.str, tuple(out.shape[1:])))
    return np.dtype(fields)


def _write_npy(parts: Iterator[dict[str, Any]], path: Path) -> int:
    import numpy as np

    # The header needs the row count and the widest id first, so the parts are held at once
    # (an .npy file is one array: whoever reads it holds it all too).
    kept = [p for p in parts if len(p["index"])]
    dtype = _npy_dtype(kept)
    n = sum(len(p["index"]) for p in kept)
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(
            fh,
            {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (n,)},
        )
        for p in kept:
            rec = np.zeros(len(p["index"]), dtype=dtype)
            for name in dtype.names:
                rec[name] = p[name]
            fh.write(rec.tobytes())
        fh.flush()
        os.fsync(fh.fileno())
    return n


def read_predictions(path: str | Path) -> dict[str, Any]:
    """Read a prediction file back into columns (numpy arrays), whatever its format.

    Args:
        path: A ``.jsonl``, ``.parquet`` or ``.npy`` file written by ``predict``.

    Returns:
        ``{"index": ..., "id": ..., "labels"/"label_ids"/"scores" or "output": ...}``.

    Raises:
        TorchslimError: Not a prediction file.
    """
    import numpy as np

    p = Path(path)
    fmt = format_for(p, None)
    if fmt == "npy":
        rec = np.load(p, allow_pickle=False)
        return {name: rec[name] for name in rec.dtype.names}
    if fmt == "jsonl":
        rows = [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line]
        keys = list(rows[0]) if rows else ["index", "id"]
        cols: dict[str, Any] = {}
        for k in keys:
            vals = [r[k] for r in rows]
            dtype = {
                "index": np.int64,
                "label_ids": np.int64,
                "scores": np.float32,
                "id": str,
                "labels": str,
            }.get(k, np.float32)
            cols[k] = np.asarray(vals, dtype=dtype)
        return cols
    import pyarrow.parquet as pq

    table = pq.read_table(p)
    meta = table.schema.metadata or {}
    out: dict[str, Any] = {}
    for name in table.column_names:
        col = table.column(name).combine_chunks()
        if name in ("index",):
            out[name] = col.to_numpy()
        elif name == "id":
            out[name] = np.asarray(col.to_pylist(), dtype=str)
        else:
            width = col.type.list_size
            flat = col.flatten()
            values = (
                np.asarray(flat.to_pylist(), dtype=str) if name == "labels" else flat.to_numpy()
            )
            arr = values.reshape(len(col), width)
            if name == "output" and b"torchslim.output_shape" in meta:
                shape = json.loads(meta[b"torchslim.output_shape"])
                arr = arr.reshape(len(col), *shape)
            out[name] = arr
    return out
