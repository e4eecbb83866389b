"""``predict --ray``: the same job on a Ray cluster with Ray Data.

The driver opens the data (to know the samples and their ids) and runs the model once on one
sample (to know the output columns). Ray Data then maps ``range(N)`` (input positions) through
``map_batches`` over an actor pool — each actor loads the model once and the data source once,
and turns a batch of positions into rows — and writes sharded Parquet files under
``.FILE.ray/``. Every row carries its input position (``index``), so order is recovered by
sorting; skipped samples are rows with a ``reason``. The driver merges the shards into ``FILE``
through the same writer as the local path (temporary name, then rename).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torchslim.errors import BackendUnavailableError, TorchslimError

if TYPE_CHECKING:
    from torchslim.predict._common import PredictSummary

__all__ = ["PredictActor", "run_ray"]

_DEFAULT_ACTORS = 2


def _columns(
    loaded: Any, source: Any, topk: int, threads: int | None
) -> tuple[Any, Any, list[str] | None]:
    from torchslim.predict._common import class_names_of
    from torchslim.predict._runner import Head, make_replicas

    class_names = class_names_of(loaded)
    head = Head(topk, loaded.task == "classification" or bool(class_names))
    replica = make_replicas(loaded, ["cpu"], head, threads=threads)[0]
    return head, replica, class_names


class PredictActor:
    """One Ray actor: a model and a data source, turning batches of positions into rows.

    Args:
        model: The model source (loaded once per actor).
        data: The data source.
        topk: Top-k classes kept.
        preprocess: Image preprocessing.
        limit: Samples kept (as the driver saw them).
        threads: Intra-op threads per actor.
        template: Output column shapes/dtypes (from the driver's one-sample run), used to fill
            the rows of skipped samples.
    """

    def __init__(
        self,
        model: str,
        data: str,
        topk: int,
        preprocess: Mapping[str, Any] | None,
        limit: int | None,
        threads: int,
        template: dict[str, tuple[tuple[int, ...], str]],
    ) -> None:
        import torch

        from torchslim.models import load_model
        from torchslim.predict._sources import open_source

        torch.set_num_threads(max(1, threads))
        loaded = load_model(model)
        self.source = open_source(
            data, spec=loaded.input_spec, loaded=loaded, preprocess=preprocess, limit=limit
        )
        _, self.replica, _ = _columns(loaded, self.source, topk, threads)
        self.template = template

    def __call__(self, batch: dict[str, Any]) -> Any:
        """Rows for the input positions in ``batch["id"]`` (Ray's ``range`` column)."""
        import numpy as np

        from torchslim.predict._runner import Result
        from torchslim.predict._sources import Batch

        idx = [int(i) for i in np.asarray(batch["id"])]
        got: Batch = self.source.get(idx)
        res: Result = self.replica.run(got)
        n = len(idx)
        pos = {int(i): j for j, i in enumerate(idx)}
        cols: dict[str, Any] = {
            "index": np.asarray(idx, dtype=np.int64),
            "id": [self.source.ids[i] for i in idx],
            "reason": [""] * n,
        }
        for s in res.skipped or []:
            cols["reason"][pos[int(s.index)]] = s.reason or "skipped"
        rows = [pos[int(i)] for i in res.index]
        for key, (shape, dtype) in self.template.items():
            full = np.zeros((n, *shape), dtype=dtype)
            value = getattr(res, key)
            if value is not None and rows:
                full[rows] = value
            cols[key] = full
        return _to_arrow(cols)


def _to_arrow(cols: dict[str, Any]) -> Any:
    import numpy as np
    import pyarrow as pa

    arrays: dict[str, Any] = {
        "index": pa.array(cols["index"], pa.int64()),
        "id": pa.array(cols["id"], pa.string()),
        "reason": pa.array(cols["reason"], pa.string()),
    }
    for key in ("label_ids", "scores", "output"):
        if key in cols:
            arr = np.ascontiguousarray(cols[key])
            width = int(np.prod(arr.shape[1:])) if arr.ndim > 1 else 1
            arrays[key] = pa.FixedSizeListArray.from_arrays(pa.array(arr.reshape(-1)), width)
    return pa.table(arrays)


def _from_arrow(table: Any, template: dict[str, tuple[tuple[int, ...], str]]) -> dict[str, Any]:
    import numpy as np

    part: dict[str, Any] = {
        "index": table.column("index").to_numpy(),
        "id": np.asarray(table.column("id").to_pylist(), dtype=str),
    }
    for key, (shape, dtype) in template.items():
        flat = table.column(key).combine_chunks().flatten().to_numpy()
        part[key] = flat.astype(dtype).reshape(len(table), *shape)
    return part


def _import_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise BackendUnavailableError(
            "ray", "ray", "the ray[data] package is not installed"
        ) from exc
    return ray


def run_ray(
    model: str,
    data: str,
    out: Path,
    *,
    batch_size: int | str | None,
    format: str | None,
    topk: int,
    force: bool,
    preprocess: Mapping[str, Any] | None,
    limit: int | None,
    address: str | None,
    actors: int | None,
    progress: Callable[[int, int], None] | None,
    started: float,
) -> PredictSummary:
    """Run the job with Ray Data (see the module docstring) and write ``out``.

    Raises:
        BackendUnavailableError: Ray or pyarrow is not installed.
        TorchslimError: Bad options, or the Ray job failed.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from torchslim.models import load_model
    from torchslim.predict._common import (
        PredictSummary,
        first_good,
        manifest_preprocess,
        write_skipped,
    )
    from torchslim.predict._output import PartStore, format_for, write_final
    from torchslim.predict._sources import open_source
    from torchslim.predict._tuning import default_batch_size

    fmt = format_for(out, format)
    if out.exists() and not force:
        raise TorchslimError(
            f"--out '{out}' already exists.", "Choose another file, or add --force to replace it."
        )
    if batch_size == "auto":
        raise TorchslimError(
            "--batch-size auto is not supported with --ray.",
            "Give a batch size (probe one locally with --batch-size auto, without --ray).",
        )
    ray = _import_ray()
    loaded = load_model(model)
    pre = preprocess or manifest_preprocess(loaded)
    source = open_source(data, spec=loaded.input_spec, loaded=loaded, preprocess=pre, limit=limit)
    n = len(source)
    head, replica, class_names = _columns(loaded, source, topk, None)
    sample = first_good(source)
    one = head.apply(replica.raw(*sample.inputs))
    template = {k: (tuple(int(d) for d in v.shape[1:]), v.dtype.str) for k, v in one.items()}
    if batch_size is None:
        nbytes = sum(x[0].numel() * x.element_size() for x in sample.inputs)
        batch = min(default_batch_size(nbytes), n)
    else:
        batch = int(batch_size)
    pool = actors or _DEFAULT_ACTORS
    shards = out.with_name(f".{out.name}.ray")
    if shards.exists():
        shutil.rmtree(shards)
    from torchslim._ray import connect

    ray, started_here = connect(address)
    t_run = time.perf_counter()
    try:
        # Each actor holds a logical share of a CPU small enough that one CPU stays free for
        # Ray Data's own read and write tasks (else a small cluster waits for ever).
        cpus = float(ray.cluster_resources().get("CPU", 1.0))
        per_actor = min(1.0, max(0.1, (cpus - 1.0) / pool))
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ds = ray.data.range(n, override_num_blocks=max(1, min(pool * 4, -(-n // batch))))
        ds = ds.map_batches(
            PredictActor,
            batch_size=batch,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=pool),
            num_cpus=per_actor,
            fn_constructor_kwargs={
                "model": model,
                "data": data,
                "topk": topk,
                "preprocess": pre,
                "limit": limit,
                "threads": 1,
                "template": template,
            },
        )
        ds.write_parquet(str(shards))
    finally:
        if started_here:
            ray.shutdown()
    run_s = time.perf_counter() - t_run
    files = sorted(shards.glob("*.parquet"))
    table = pa.concat_tables([pq.read_table(f) for f in files]) if files else None
    if table is None or len(table) != n:
        raise TorchslimError(
            f"The Ray job returned {0 if table is None else len(table)} rows for {n} samples.",
            "Rerun it; see the Ray logs for the failed tasks.",
        )
    table = table.sort_by("index")
    reasons = np.asarray(table.column("reason").to_pylist(), dtype=object)
    bad = reasons != ""
    skipped = [
        {"index": int(i), "id": str(s), "reason": str(r)}
        for i, s, r in zip(
            table.column("index").to_numpy()[bad],
            np.asarray(table.column("id").to_pylist(), dtype=object)[bad],
            reasons[bad],
            strict=True,
        )
    ]
    good = table.filter(pa.array(~bad))
    parts = [
        _from_arrow(good.slice(s, 65536), template) for s in range(0, max(1, len(good)), 65536)
    ]
    parts[0]["skipped"] = skipped
    items, skipped = write_final(parts, out, fmt, class_names=class_names)
    write_skipped(out, skipped)
    shutil.rmtree(shards, ignore_errors=True)
    PartStore(out).clear()
    if progress is not None:
        progress(n, n)
    return PredictSummary(
        out=str(out),
        format=fmt,
        model=model,
        data=data,
        total=n,
        items=items,
        skipped=skipped,
        wall_s=round(time.perf_counter() - started, 3),
        run_s=round(run_s, 3),
        items_per_s=round(n / run_s, 2) if run_s > 0 else 0.0,
        batch_size=batch,
        batch_probe=None,
        loader={"ray_actors": pool, "threads_per_actor": 1, "address": address or "local"},
        devices=["cpu"] * pool,
        ray=True,
    )
