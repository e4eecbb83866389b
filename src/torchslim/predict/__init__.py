"""Offline batch inference over a whole data set: :func:`predict`.

``predict(MODEL, DATA)`` runs any model source or artifact directory over every sample of a data
source and either yields :class:`Prediction` batches in input order or (with ``out=``) writes one
file (``jsonl``, ``parquet`` or ``npy``; see :mod:`torchslim.predict._output` for the columns).

* Fast: DataLoader settings from the machine (workers vs intra-op threads measured and split,
  ``pin_memory`` only with a GPU, prefetching, persistent workers); ``batch_size="auto"``
  probes for the best throughput within a memory limit, preferring a size the artifact was
  compiled for; on GPUs one replica per listed device with the batches dealt round-robin, inputs
  pinned and copied ``non_blocking`` on a side stream while the previous batch computes.
* Reliable: output written under a temporary name and renamed when complete; progress
  checkpointed so ``resume=True`` after a kill continues without losing or duplicating rows; a
  bad sample (unreadable image, wrong shape, NaN, a sample the model refuses) is skipped and
  listed with its reason and never stops the run.
* Scale-out: ``ray=True`` runs the same job with Ray Data (``map_batches`` over an actor pool,
  one model per actor), sharded output with the input position in every row, merged in order.

Example::

    import torchslim
    summary = torchslim.predict("torchslim:fashion_cnn", "torchslim:fashion_mnist",
                                out="preds.parquet", batch_size="auto")
    for batch in torchslim.predict("torchslim:fashion_cnn", "torchslim:fashion_mnist"):
        print(batch.ids[:3], batch.labels[:3])
"""

from __future__ import annotations

import queue
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

from torchslim.errors import TorchslimError
from torchslim.predict._common import (
    PredictSummary,
    class_names_of,
    first_good,
    manifest_preprocess,
    parse_preprocess,
    write_skipped,
)
from torchslim.predict._output import FORMATS, PartStore, format_for, read_predictions, write_final
from torchslim.predict._runner import (
    Head,
    Replica,
    Result,
    cuda_prefetch,
    make_replicas,
    parse_devices,
)
from torchslim.predict._sources import Batch, Skipped, open_source
from torchslim.predict._tuning import (
    BatchProbe,
    LoaderPlan,
    choose_split,
    default_batch_size,
    probe_batch_size,
    usable_cores,
)

if TYPE_CHECKING:
    from torchslim.models import LoadedModel

__all__ = [
    "FORMATS",
    "BatchProbe",
    "LoaderPlan",
    "PredictSummary",
    "Prediction",
    "Skipped",
    "predict",
    "read_predictions",
]

Prediction = Result
"""One batch of predictions (input order): ``index``, ``ids``, ``labels``/``label_ids``/``scores``
(classifiers) or ``output``, and ``skipped`` samples with their reason."""

ProgressFn = Callable[[int, int], None]
"""``progress(done, total)``: samples handled so far (predicted or skipped) out of all."""

_JOB_VERSION = 1
_CHECKPOINT_S = 5.0


@dataclass
class _Job:
    """Everything resolved before the loop runs."""

    model: str
    data: str
    loaded: LoadedModel
    source: Any
    replicas: list[Replica]
    head: Head
    class_names: list[str] | None
    batch_size: int
    plan: LoaderPlan
    probe: BatchProbe | None
    overlap: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------
# Public entry point
# ------------------------------------------------------------------------------------------------


@overload
def predict(
    model: str | LoadedModel,
    data: str,
    *,
    out: None = None,
    batch_size: int | Literal["auto"] | None = ...,
    workers: int | Literal["auto"] = ...,
    threads: int | None = ...,
    device: str = ...,
    format: str | None = ...,
    topk: int = ...,
    resume: bool = ...,
    force: bool = ...,
    memory_limit_mb: float | None = ...,
    preprocess: Mapping[str, Any] | str | None = ...,
    limit: int | None = ...,
    checkpoint_every: int | None = ...,
    overlap: bool = ...,
    progress: ProgressFn | None = ...,
    ray: bool = ...,
    address: str | None = ...,
    actors: int | None = ...,
    trust_code: bool = ...,
    verify: bool = ...,
) -> Iterator[Prediction]: ...


@overload
def predict(
    model: str | LoadedModel,
    data: str,
    *,
    out: str | Path,
    batch_size: int | Literal["auto"] | None = ...,
    workers: int | Literal["auto"] = ...,
    threads: int | None = ...,
    device: str = ...,
    format: str | None = ...,
    topk: int = ...,
    resume: bool = ...,
    force: bool = ...,
    memory_limit_mb: float | None = ...,
    preprocess: Mapping[str, Any] | str | None = ...,
    limit: int | None = ...,
    checkpoint_every: int | None = ...,
    overlap: bool = ...,
    progress: ProgressFn | None = ...,
    ray: bool = ...,
    address: str | None = ...,
    actors: int | None = ...,
    trust_code: bool = ...,
    verify: bool = ...,
) -> PredictSummary: ...


def predict(
    model: str | LoadedModel,
    data: str,
    *,
    out: str | Path | None = None,
    batch_size: int | Literal["auto"] | None = None,
    workers: int | Literal["auto"] = "auto",
    threads: int | None = None,
    device: str = "cpu",
    format: str | None = None,
    topk: int = 5,
    resume: bool = False,
    force: bool = False,
    memory_limit_mb: float | None = None,
    preprocess: Mapping[str, Any] | str | None = None,
    limit: int | None = None,
    checkpoint_every: int | None = None,
    overlap: bool = True,
    progress: ProgressFn | None = None,
    ray: bool = False,
    address: str | None = None,
    actors: int | None = None,
    trust_code: bool = False,
    verify: bool = True,
) -> Iterator[Prediction] | PredictSummary:
    """Run ``model`` over every sample of ``data``.

    Args:
        model: Any model source (``torchslim:fashion_cnn``, ``model.pt2``, ``model.onnx``, ...),
            an artifact directory, or a model already loaded with
            :func:`torchslim.load_model` (not with ``ray``).
        data: Any data source torchslim reads (``torchslim:fashion_mnist``, ``.npz``, ``.pt``,
            IDX, ...), a folder of image files (flat or one sub-folder per class; ``.npy``
            arrays too), or a ``.txt``/``.jsonl`` file of sentences for a text model.
        out: The file to write; ``None`` returns an iterator of :class:`Prediction` batches.
        batch_size: Samples per model call; ``"auto"`` probes for the best throughput within
            ``memory_limit_mb``; ``None``: the artifact's static size, else about 8 MB of input
            per batch (8 to 256 samples).
        workers: DataLoader worker processes, or ``"auto"`` (measured split, see
            :func:`~torchslim.predict._tuning.choose_split`).
        threads: Intra-op threads of the model (default: chosen with the workers).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"cuda:0,1"`` (one replica per GPU).
        format: ``"jsonl"``, ``"parquet"`` or ``"npy"`` (default: from ``out``'s suffix).
        topk: Classes kept per sample for a classifier; ``0`` keeps the raw outputs.
        resume: Continue an interrupted run of the same job writing ``out``.
        force: Replace an existing ``out`` (and discard an interrupted run's checkpoint).
        memory_limit_mb: Memory growth ``batch_size="auto"`` may use, MB (default: half the
            available memory; 80% of a GPU's free memory).
        preprocess: Image preprocessing, ``{"size": 224, "normalize": "imagenet"|"none"}`` or
            ``"size=224,normalize=none"``; default: the artifact's manifest, else the model's
            input shape.
        limit: Only the first ``limit`` samples, in input order.
        checkpoint_every: Commit a checkpoint part every this many samples (default: at least
            every 5 s and every 4096 samples).
        overlap: GPU only: copy the next batch on a side stream while this one computes.
        progress: Called as ``progress(done, total)`` after every batch.
        ray: Run with Ray Data (``out`` required; see :mod:`torchslim.predict._ray`).
        address: Ray cluster address (default: a local cluster, or the one ``ray.init`` made).
        actors: Ray actors, one model each (default: 2).
        trust_code: Allow an artifact to rebuild an architecture from outside torchslim's
            registries.
        verify: Check an artifact's hashes before loading it.

    Returns:
        With ``out``: the :class:`PredictSummary` (the file is complete when it returns).
        Without: an iterator of :class:`Prediction` batches in input order.

    Raises:
        TorchslimError: Bad model, data or option; an ``out`` that exists (without ``force``);
            a checkpoint of a different job under ``resume``.
    """
    started = time.perf_counter()
    if ray:
        if out is None:
            raise TorchslimError(
                "The Ray path writes a file.", "Give out= (--out FILE) with --ray."
            )
        if resume:
            raise TorchslimError(
                "--resume is not supported with --ray.",
                "Rerun the Ray job from the start, or run it locally with --resume.",
            )
        from torchslim.predict._ray import run_ray

        if not isinstance(model, str):
            raise TorchslimError(
                "The Ray path loads the model in every actor from its source.",
                "Give the model as a source string with --ray.",
            )

        return run_ray(
            model,
            data,
            Path(out),
            batch_size=batch_size,
            format=format,
            topk=topk,
            force=force,
            preprocess=parse_preprocess(preprocess),
            limit=limit,
            address=address,
            actors=actors,
            progress=progress,
            started=started,
        )
    if out is None:
        job = _prepare(
            model,
            data,
            batch_size=batch_size,
            workers=workers,
            threads=threads,
            device=device,
            topk=topk,
            memory_limit_mb=memory_limit_mb,
            preprocess=preprocess,
            limit=limit,
            overlap=overlap,
            trust_code=trust_code,
            verify=verify,
        )
        return _iterate_labelled(job, _all_spans(len(job.source), job.batch_size), progress)
    return _predict_to_file(
        model,
        data,
        Path(out),
        batch_size=batch_size,
        workers=workers,
        threads=threads,
        device=device,
        format=format,
        topk=topk,
        resume=resume,
        force=force,
        memory_limit_mb=memory_limit_mb,
        preprocess=preprocess,
        limit=limit,
        checkpoint_every=checkpoint_every,
        overlap=overlap,
        progress=progress,
        trust_code=trust_code,
        verify=verify,
        started=started,
    )


# ------------------------------------------------------------------------------------------------
# Preparing a job
# ------------------------------------------------------------------------------------------------


def _set_threads(n: int) -> None:
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def _prepare(
    model: str | LoadedModel,
    data: str,
    *,
    batch_size: int | str | None,
    workers: int | str,
    threads: int | None,
    device: str,
    topk: int,
    memory_limit_mb: float | None,
    preprocess: Mapping[str, Any] | str | None,
    limit: int | None,
    overlap: bool,
    trust_code: bool,
    verify: bool,
    fixed_batch: int | None = None,
) -> _Job:
    from torchslim.models import load_model

    _check_numbers(batch_size, workers, threads, topk, limit)
    devices = parse_devices(device)
    if isinstance(model, str):
        loaded, name = load_model(model, trust_code=trust_code, verify=verify), model
    else:
        loaded, name = model, model.source
    spec = loaded.input_spec
    pre = parse_preprocess(preprocess) or manifest_preprocess(loaded)
    source = open_source(data, spec=spec, loaded=loaded, preprocess=pre, limit=limit)
    if len(source) == 0:
        raise TorchslimError(f"Data '{data}' holds no samples.", "Give at least one sample.")
    class_names = class_names_of(loaded)
    classify = loaded.task == "classification" or bool(class_names)
    head = Head(topk, classify)
    cores = usable_cores()
    gpu = devices[0].startswith("cuda")
    _set_threads(threads or cores)
    replicas = make_replicas(loaded, devices, head, threads=threads)
    art = loaded.metadata.get("artifact")
    caps = getattr(art, "capabilities", None)
    compiled = tuple(getattr(caps, "batch_sizes", ()) or ())
    dynamic = bool(getattr(caps, "dynamic_batch", True))

    sample = first_good(source)
    probe: BatchProbe | None = None
    if fixed_batch is not None:
        chosen = fixed_batch
    elif batch_size == "auto":
        probe = _probe(replicas[0], source, sample, len(source), memory_limit_mb, compiled, dynamic)
        chosen = probe.chosen
    elif batch_size is None:
        nbytes = sum(x[0].numel() * x.element_size() for x in sample.inputs)
        chosen = min(default_batch_size(nbytes, compiled, dynamic), len(source))
    else:
        chosen = int(batch_size)
    decode_s, model_s = _costs(replicas[0], source, sample, chosen, probe)
    one = None
    if workers == "auto" and threads is None and not gpu:
        one = _one_thread_seconds(replicas[0], sample, chosen, decode_s, model_s, cores)
    plan = choose_split(
        cores,
        decode_s,
        model_s,
        model_s_one_thread=one,
        workers=None if workers == "auto" else int(workers),
        threads=threads,
        gpu=gpu,
    )
    _set_threads(plan.threads)
    return _Job(
        name, data, loaded, source, replicas, head, class_names, chosen, plan, probe, overlap
    )


def _check_numbers(
    batch_size: Any, workers: Any, threads: int | None, topk: int, limit: int | None
) -> None:
    if batch_size not in (None, "auto") and not (isinstance(batch_size, int) and batch_size >= 1):
        raise TorchslimError(
            f"Invalid batch size {batch_size!r}.", "Give a positive integer or 'auto'."
        )
    if workers != "auto" and not (isinstance(workers, int) and workers >= 0):
        raise TorchslimError(f"Invalid workers {workers!r}.", "Give 0 or more, or 'auto'.")
    for name, value, low in (("threads", threads, 1), ("topk", topk, 0), ("limit", limit, 1)):
        if value is not None and value < low:
            raise TorchslimError(
                f"--{name} must be at least {low}, got {value}.",
                f"Give --{name} {max(low, 1)} or more.",
            )


def _tile(sample: Batch, b: int) -> tuple[Any, ...]:
    return tuple(x.expand(b, *x.shape[1:]).contiguous() for x in sample.inputs)


def _probe(
    replica: Replica,
    source: Any,
    sample: Batch,
    n: int,
    memory_limit_mb: float | None,
    compiled: tuple[int, ...],
    dynamic: bool,
) -> BatchProbe:
    def run(b: int) -> Callable[[], Any]:
        xs = replica._to_device(_tile(sample, b))
        return lambda: replica.raw(*xs)

    return probe_batch_size(
        run,
        max_batch=n,
        device=replica.device,
        memory_limit_mb=memory_limit_mb,
        compiled=compiled,
        dynamic=dynamic,
    )


def _costs(
    replica: Replica, source: Any, sample: Batch, batch: int, probe: BatchProbe | None
) -> tuple[float, float]:
    """Seconds per sample to produce one sample, and for the model at ``batch`` (all threads)."""
    m = min(len(source), max(8, min(32, batch)))
    decode_s = float("inf")
    for _ in range(2):  # the first pass also pays one-off costs (imports, caches)
        t0 = time.perf_counter()
        source.get(range(m))
        decode_s = min(decode_s, (time.perf_counter() - t0) / m)
    rate = None
    if probe is not None:
        rate = next((r["items_per_s"] for r in probe.rows if r["batch"] == batch), None)
    if rate:
        return decode_s, 1.0 / rate
    return decode_s, _model_seconds(replica, sample, batch)


def _model_seconds(replica: Replica, sample: Batch, batch: int) -> float:
    """Model seconds per sample at ``batch`` with the current threads (best of a few calls)."""
    xs = replica._to_device(_tile(sample, batch))
    replica.raw(*xs)  # warm-up
    best, calls, t0 = float("inf"), 0, time.perf_counter()
    sync = None
    if replica.device.startswith("cuda"):
        import torch

        sync = torch.cuda.synchronize
    while calls < 3 or time.perf_counter() - t0 < 0.1:
        t1 = time.perf_counter()
        replica.raw(*xs)
        if sync is not None:
            sync()
        best = min(best, time.perf_counter() - t1)
        calls += 1
    return best / batch


def _one_thread_seconds(
    replica: Replica, sample: Batch, batch: int, decode_s: float, model_s: float, cores: int
) -> float | None:
    """The model's seconds per sample on one intra-op thread, measured when the split depends
    on it: a torch module (its threads can be set), several cores, and decoding that costs."""
    from torch import nn

    if cores < 2 or not isinstance(replica.fn, nn.Module) or decode_s < 0.02 * model_s:
        return None
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _model_seconds(replica, sample, batch)
    finally:
        torch.set_num_threads(old)


# ------------------------------------------------------------------------------------------------
# The loop
# ------------------------------------------------------------------------------------------------


def _all_spans(n: int, b: int) -> list[tuple[int, int]]:
    return [(s, min(n, s + b)) for s in range(0, n, b)]


class _Batches:
    """A map-style dataset whose items are whole batches (so workers build whole batches)."""

    def __init__(self, source: Any, spans: list[tuple[int, int]]) -> None:
        self.source = source
        self.spans = spans

    def __len__(self) -> int:
        return len(self.spans)

    def __getitem__(self, i: int) -> Batch:
        s, e = self.spans[i]
        batch: Batch = self.source.get(range(s, e))
        batch.span = (s, e)
        return batch


def _identity(x: Any) -> Any:
    return x


def _worker_init(_: int) -> None:
    import os

    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _loader(source: Any, spans: list[tuple[int, int]], plan: LoaderPlan, workers: int) -> Any:
    from torch.utils.data import DataLoader

    kw = plan.loader_kwargs()
    kw["num_workers"] = min(workers, len(spans))
    if not kw["num_workers"]:
        kw.pop("prefetch_factor", None)
        kw.pop("persistent_workers", None)
    if kw["num_workers"]:
        # Not fork: the runtimes (OpenVINO, ONNX Runtime, torch's OpenMP) own thread pools, and a
        # child forked from a multi-threaded process can crash in them. forkserver children
        # start from a clean single-threaded server instead.
        import multiprocessing as mp

        if "forkserver" in mp.get_all_start_methods():
            kw["multiprocessing_context"] = "forkserver"
    return DataLoader(
        _Batches(source, spans),  # type: ignore[arg-type]  # a map-style dataset, duck-typed
        batch_size=None,
        shuffle=False,
        collate_fn=_identity,
        worker_init_fn=_worker_init if kw["num_workers"] else None,
        **kw,
    )


def _shard(
    job: _Job, replica: Replica, spans: list[tuple[int, int]], workers: int
) -> Iterator[Result]:
    if not spans:
        return
    loader = _loader(job.source, spans, job.plan, workers)
    if replica.device.startswith("cuda"):
        import torch

        with torch.cuda.device(torch.device(replica.device)):
            for batch, xs in cuda_prefetch(loader, replica.device, overlap=job.overlap):
                yield replica.run(batch, xs)
        return
    for batch in loader:
        yield replica.run(batch)


def _iterate(job: _Job, spans: list[tuple[int, int]]) -> Iterator[Result]:
    """Results for ``spans``, in their order; with several replicas the spans are dealt
    round-robin to one thread per replica and read back in order."""
    k = len(job.replicas)
    if k == 1:
        yield from _shard(job, job.replicas[0], spans, job.plan.workers)
        return
    workers = max(job.plan.workers // k, 1 if job.plan.workers else 0)
    queues: list[queue.Queue[Any]] = [queue.Queue(maxsize=4) for _ in range(k)]
    stop = threading.Event()

    def run(j: int) -> None:
        try:
            for res in _shard(job, job.replicas[j], spans[j::k], workers):
                while not stop.is_set():
                    try:
                        queues[j].put(("ok", res), timeout=0.5)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        except BaseException as exc:  # handed to the consumer, which raises it
            queues[j].put(("error", exc))

    threads = [threading.Thread(target=run, args=(j,), daemon=True) for j in range(k)]
    for t in threads:
        t.start()
    try:
        for i in range(len(spans)):
            kind, item = queues[i % k].get()
            if kind == "error":
                raise item
            yield item
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=5)


def _labels(job: _Job, res: Result) -> Result:
    import numpy as np

    if res.label_ids is not None and res.labels is None:
        if job.class_names:
            names = np.asarray(job.class_names, dtype=str)
            res.labels = names[np.clip(res.label_ids, 0, len(names) - 1)]
        else:
            res.labels = res.label_ids.astype(str)
    return res


def _iterate_labelled(
    job: _Job, spans: list[tuple[int, int]], progress: ProgressFn | None
) -> Iterator[Result]:
    done, total = 0, len(job.source)
    for res in _iterate(job, spans):
        done += res.span[1] - res.span[0]
        if progress is not None:
            progress(done, total)
        yield _labels(job, res)


# ------------------------------------------------------------------------------------------------
# Writing a file, checkpointed
# ------------------------------------------------------------------------------------------------


def _job_record(job: _Job, fmt: str, topk: int, limit: int | None, pre: Any) -> dict[str, Any]:
    return {
        "version": _JOB_VERSION,
        "model": job.model,
        "data": job.data,
        "format": fmt,
        "topk": topk,
        "limit": limit,
        "preprocess": pre,
        "total": len(job.source),
        "batch_size": job.batch_size,
        "threads": job.plan.threads,
    }


_MUST_MATCH = ("version", "model", "data", "format", "topk", "limit", "preprocess", "total")


def _check_out(out: Path, store: PartStore, *, resume: bool, force: bool) -> None:
    if out.is_dir():
        raise TorchslimError(
            f"--out '{out}' is a directory.", "Give a file path, e.g. preds.jsonl."
        )
    if resume and not store.exists:
        raise TorchslimError(
            f"Nothing to resume: no interrupted run of '{out}' ({store.dir} is missing).",
            "Run without --resume to start.",
        )
    if not resume and store.exists and not force:
        raise TorchslimError(
            f"An interrupted run of '{out}' left a checkpoint ({store.dir}).",
            "Add --resume to continue it, or --force to start over.",
        )
    if out.exists() and not force and not resume:
        raise TorchslimError(
            f"--out '{out}' already exists.", "Choose another file, or add --force to replace it."
        )


def _predict_to_file(
    model: str | LoadedModel,
    data: str,
    out: Path,
    *,
    batch_size: int | str | None,
    workers: int | str,
    threads: int | None,
    device: str,
    format: str | None,
    topk: int,
    resume: bool,
    force: bool,
    memory_limit_mb: float | None,
    preprocess: Mapping[str, Any] | str | None,
    limit: int | None,
    checkpoint_every: int | None,
    overlap: bool,
    progress: ProgressFn | None,
    trust_code: bool,
    verify: bool,
    started: float,
) -> PredictSummary:
    fmt = format_for(out, format)
    store = PartStore(out)
    _check_out(out, store, resume=resume, force=force)
    pre = parse_preprocess(preprocess)
    record = store.job() if resume else None
    if record is not None:
        threads = threads or record.get("threads")
    job = _prepare(
        model,
        data,
        batch_size=batch_size,
        workers=workers,
        threads=threads,
        device=device,
        topk=topk,
        memory_limit_mb=memory_limit_mb,
        preprocess=pre,
        limit=limit,
        overlap=overlap,
        trust_code=trust_code,
        verify=verify,
        fixed_batch=int(record["batch_size"]) if record is not None else None,
    )
    fresh = _job_record(job, fmt, topk, limit, pre)
    if record is not None:
        diff = [k for k in _MUST_MATCH if record.get(k) != fresh.get(k)]
        if diff:
            raise TorchslimError(
                f"The checkpoint in {store.dir} is of a different job ({', '.join(diff)} differ).",
                "Resume with the same model, data and options, or add --force to start over.",
            )
    else:
        store.start(fresh)
    n = len(job.source)
    done_ranges = store.done()
    spans = [s for s in _all_spans(n, job.batch_size) if not _covered(s, done_ranges)]
    resumed = n - sum(e - s for s, e in spans)
    every = checkpoint_every or 4096
    t_run = time.perf_counter()
    handled = resumed
    buf: list[Result] = []
    last_commit = time.perf_counter()

    def commit() -> None:
        nonlocal buf, last_commit
        if buf:
            _commit(store, buf)
        buf, last_commit = [], time.perf_counter()

    for res in _iterate(job, spans):
        if buf and buf[-1].span[1] != res.span[0]:
            commit()
        buf.append(res)
        handled += res.span[1] - res.span[0]
        rows = sum(r.span[1] - r.span[0] for r in buf)
        if rows >= every or time.perf_counter() - last_commit >= _CHECKPOINT_S:
            commit()
        if progress is not None:
            progress(handled, n)
    commit()
    t_write = time.perf_counter()
    items, skipped = write_final(store.parts(), out, fmt, class_names=job.class_names)
    write_skipped(out, skipped)
    store.clear()
    run_s = time.perf_counter() - t_run
    return PredictSummary(
        out=str(out),
        format=fmt,
        model=job.model,
        data=data,
        total=n,
        items=items,
        skipped=skipped,
        wall_s=round(time.perf_counter() - started, 3),
        run_s=round(run_s, 3),
        items_per_s=round((n - resumed) / run_s, 2) if run_s > 0 else 0.0,
        batch_size=job.batch_size,
        batch_probe=job.probe.to_dict() if job.probe else None,
        loader=job.plan.to_dict(),
        devices=[r.device for r in job.replicas],
        resumed_rows=resumed,
        write_s=round(time.perf_counter() - t_write, 3),
    )


def _covered(span: tuple[int, int], done: list[tuple[int, int]]) -> bool:
    return any(s <= span[0] and span[1] <= e for s, e in done)


def _commit(store: PartStore, results: list[Result]) -> None:
    import numpy as np

    cols: dict[str, Any] = {
        "index": np.concatenate([np.asarray(r.index, dtype=np.int64) for r in results]),
        "id": [i for r in results for i in r.ids],
    }
    for key in ("label_ids", "scores", "output"):
        vals = [getattr(r, key) for r in results if len(r) and getattr(r, key) is not None]
        if vals:
            cols[key] = np.concatenate(vals)
    skipped = [s for r in results for s in (r.skipped or [])]
    store.commit(results[0].span[0], results[-1].span[1], cols, skipped)


class _CallableModule(types.ModuleType):
    """``torchslim.predict`` is both this module and the function: ``import torchslim.predict``
    binds the module to that name, so calling it calls :func:`predict`."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return predict(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
