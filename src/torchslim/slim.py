"""Public API for shrinking a model: prune, distill, low-rank, cluster, depthwise swap.

Each verb takes a model (never modified), a config object and data, and returns a
:class:`SlimResult` — the new model and a report with parameters, FLOPs, size, latency and
accuracy before and after (``model, report = torchslim.prune(...)`` works too)::

    import torchslim
    from torchslim.passes.prune import PruneConfig
    from torchslim.train import DistillConfig

    base = torchslim.load_model("torchslim:fashion_resnet").module
    train = torchslim.load_data("torchslim:fashion_mnist?split=train")
    test = torchslim.load_data("torchslim:fashion_mnist")
    res = torchslim.prune(base, PruneConfig(ratio=0.5, recover=DistillConfig(epochs=2)),
                          test.inputs[0][:2], train=train, eval=test)
    print(res.report["accuracy_drop"], res.report["speedup"])
    torchslim.save_slim(res.model, "out/", arch="torchslim:fashion_resnet",
                        example_inputs=test.inputs[0][:2])
    again = torchslim.load_slim("out/")

Pruned and factorised models have a different architecture from the original. They are saved as
``model.safetensors`` plus ``slim.json`` (the original architecture source and the list of
changes, replayed by :func:`load_slim`) and as ``model.pt2`` (``torch.export``), which any
torchslim command loads as a model source. Neither needs unpickling.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torchslim.errors import SourceError, TorchslimError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from torchslim.data import DataSet
    from torchslim.passes.compress import ClusterConfig, DepthwiseConfig, LowRankConfig
    from torchslim.passes.prune import PruneConfig
    from torchslim.train import DistillConfig

__all__ = [
    "SlimResult",
    "cluster",
    "depthwise",
    "distill",
    "load_slim",
    "lowrank",
    "measure_pair",
    "prune",
    "save_slim",
]

SLIM_FORMAT = "torchslim.slim"
SLIM_VERSION = 1


@dataclass
class SlimResult:
    """A transformed model and its before/after report.

    Attributes:
        model: The new model (eval mode).
        report: ``params_before/after``, ``flops_before/after``, ``size_mb_before/after``,
            ``latency_ms_before/after`` (p50, batch 1), ``speedup``, ``accuracy_before/after``,
            ``accuracy_drop`` (points, ``None`` without labelled eval data), ``fidelity``
            (agreement, cosine, max_abs_error) and ``details`` (the pass's own report).
    """

    model: Any
    report: dict[str, Any] = field(default_factory=dict)

    def __iter__(self) -> Iterator[Any]:
        return iter((self.model, self.report))


# --------------------------------------------------------------------------------------------
# Measuring a before/after pair
# --------------------------------------------------------------------------------------------


def _as_tuple(x: Any) -> tuple[Any, ...]:
    if x is None:
        return ()
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def _params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _size_mb(m: nn.Module) -> float:
    from torchslim.models import state_dict_bytes

    return state_dict_bytes(m) / 2**20


def measure_pair(
    before: nn.Module,
    after: nn.Module,
    example_inputs: tuple[Any, ...],
    *,
    eval_data: DataSet | None = None,
    latency: bool = True,
    batch_sizes: tuple[int, ...] = (1,),
    max_time_s: float = 3.0,
) -> dict[str, Any]:
    """Compare two models: params, FLOPs, size, latency (interleaved), accuracy and fidelity.

    Args:
        before: The original model.
        after: The transformed model.
        example_inputs: Inputs (batch first) used for FLOPs and latency.
        eval_data: Labelled data for accuracy; synthetic or unlabelled data gives fidelity only;
            without it fidelity is measured on ``example_inputs``.
        latency: Measure latency (takes a few seconds).
        batch_sizes: Batch sizes for latency; ``latency_ms_before/after`` is the first.
        max_time_s: Time budget per model and batch size.

    Returns:
        The report dict (keys as in :class:`SlimResult`).
    """
    import torch

    from torchslim.data import DataSet
    from torchslim.evaluate import Evaluator
    from torchslim.measure import count_flops

    before.eval()
    after.eval()
    one = tuple(x[:1] for x in example_inputs)
    fb, fa = count_flops(before, one), count_flops(after, one)
    rep: dict[str, Any] = {
        "params_before": _params(before),
        "params_after": _params(after),
        "flops_before": fb,
        "flops_after": fa,
        "flops_reduction": (fb / fa) if fb and fa else None,
        "size_mb_before": round(_size_mb(before), 4),
        "size_mb_after": round(_size_mb(after), 4),
    }
    data = eval_data or DataSet("example_inputs", example_inputs, None, synthetic=True)
    ev = Evaluator(data)
    with torch.no_grad():
        base = ev.set_baseline(before)
        new = ev.evaluate(after)
    fid = new.fidelity
    rep.update(
        {
            "accuracy_before": base.value,
            "accuracy_after": new.value,
            "accuracy_drop": (base.value - new.value)
            if base.value is not None and new.value is not None
            else None,
            "eval_data": data.name,
            "eval_samples": len(data),
            "fidelity_only": new.value is None,
            "fidelity": {
                "agreement": fid.agreement,
                "cosine": fid.cosine,
                "max_abs_error": fid.max_abs_error,
            }
            if fid
            else None,
        }
    )
    if latency:
        rep.update(_latency(before, after, example_inputs, batch_sizes, max_time_s))
    return rep


def _latency(
    before: nn.Module,
    after: nn.Module,
    inputs: tuple[Any, ...],
    batch_sizes: tuple[int, ...],
    max_time_s: float,
) -> dict[str, Any]:
    import torch

    from torchslim.measure import BenchTarget, TimingConfig, measure_models

    def make(bs: int) -> tuple[Any, ...]:
        reps = -(-bs // len(inputs[0]))
        return tuple(torch.cat([x] * reps)[:bs] for x in inputs)

    cfg = TimingConfig(
        min_samples=20, min_time_s=min(1.0, max_time_s), max_time_s=max_time_s, max_warmup_s=1.0
    )
    targets = [
        BenchTarget.from_module(before, make, name="before"),
        BenchTarget.from_module(after, make, name="after"),
    ]
    mb, ma = measure_models(targets, batch_sizes, config=cfg, memory=False)
    out: dict[str, Any] = {}
    for i, bs in enumerate(batch_sizes):
        lb = mb.batches[bs].latency.p50_ms
        la = ma.batches[bs].latency.p50_ms
        suffix = "" if i == 0 else f"_b{bs}"
        out[f"latency_ms_before{suffix}"] = round(lb, 4)
        out[f"latency_ms_after{suffix}"] = round(la, 4)
        out[f"speedup{suffix}"] = round(lb / la, 4) if la else None
    out["latency_batch"] = batch_sizes[0]
    out["threads"] = torch.get_num_threads()
    return out


# --------------------------------------------------------------------------------------------
# Verbs
# --------------------------------------------------------------------------------------------


def _run(
    model: nn.Module,
    config: Any,
    example_inputs: Any,
    *,
    train: DataSet | None,
    eval_data: DataSet | None,
    teacher: nn.Module | None,
    measure: bool,
    progress: bool,
    seed: int = 0,
    latency: bool = True,
) -> SlimResult:
    from torchslim.passes import PassContext, apply_pass

    inputs = _as_tuple(example_inputs)
    if not inputs:
        src = eval_data or train
        if src is None:
            raise TorchslimError(
                "Example inputs are needed (for tracing, FLOPs and latency).",
                "Pass example_inputs, e.g. a batch of 2 from your data.",
            )
        inputs = tuple(x[:2] for x in src.inputs)
    ctx = PassContext(
        train=train,
        eval=eval_data,
        teacher=teacher,
        example_inputs=inputs,
        seed=seed,
        progress=progress,
    )
    start = time.perf_counter()
    res = apply_pass(model, config, ctx)
    new = res.module.eval()
    report: dict[str, Any] = {
        "pass": res.report.get("pass"),
        "seconds": round(time.perf_counter() - start, 3),
    }
    if measure:
        report.update(measure_pair(model, new, inputs, eval_data=eval_data, latency=latency))
    report["details"] = res.report
    return SlimResult(new, report)


def prune(
    model: nn.Module,
    config: PruneConfig | None = None,
    example_inputs: Any = None,
    *,
    train: DataSet | None = None,
    eval: DataSet | None = None,
    teacher: nn.Module | None = None,
    measure: bool = True,
    progress: bool = False,
    latency: bool = True,
) -> SlimResult:
    """Prune ``model`` (structured channel removal by default); the input is never modified.

    Args:
        model: The trained model.
        config: What to prune (:class:`~torchslim.passes.prune.PruneConfig`).
        example_inputs: A tensor or tuple of tensors (batch first) for tracing, FLOPs, latency.
        train: Training data for recovery (``config.recover``) and Taylor importance.
        eval: Labelled data for accuracy before/after (else fidelity only).
        teacher: Teacher for KD recovery (default: the unpruned model).
        measure: Measure the before/after report (latency takes a few seconds).
        progress: Progress bars for recovery training.
    """
    from torchslim.passes.prune import PruneConfig

    return _run(
        model,
        config or PruneConfig(),
        example_inputs,
        train=train,
        eval_data=eval,
        teacher=teacher,
        measure=measure,
        progress=progress,
        latency=latency,
    )


def distill(
    student: nn.Module,
    teacher: nn.Module | None,
    train: DataSet | None,
    config: DistillConfig | None = None,
    *,
    eval: DataSet | None = None,
    example_inputs: Any = None,
    measure: bool = True,
    progress: bool = False,
    latency: bool = True,
) -> SlimResult:
    """Train a copy of ``student`` from ``teacher`` (or labels / its own EMA) on ``train``.

    The report compares the student before and after training (accuracy, fidelity to the
    untrained student) and, when a teacher is given, ``teacher_accuracy`` and ``gap_to_teacher``.
    """
    from torchslim.errors import DataError
    from torchslim.train import DistillConfig

    if train is None:
        raise DataError(
            "Distillation needs training data, and none was given.",
            "Give training samples, e.g. torchslim:fashion_mnist?split=train.",
        )
    res = _run(
        student,
        config or DistillConfig(),
        example_inputs,
        train=train,
        eval_data=eval,
        teacher=teacher,
        measure=measure,
        progress=progress,
        latency=latency,
    )
    if teacher is not None and eval is not None and eval.has_labels and measure:
        from torchslim.evaluate import predict, top1_accuracy

        acc = top1_accuracy(predict(teacher.eval(), eval), eval)
        res.report["teacher_accuracy"] = acc
        if res.report.get("accuracy_after") is not None:
            res.report["gap_to_teacher"] = acc - res.report["accuracy_after"]
    return res


def lowrank(
    model: nn.Module,
    config: LowRankConfig | None = None,
    example_inputs: Any = None,
    *,
    train: DataSet | None = None,
    eval: DataSet | None = None,
    measure: bool = True,
    progress: bool = False,
    latency: bool = True,
) -> SlimResult:
    """Factorise Linear/Conv layers by truncated SVD where that reduces FLOPs."""
    from torchslim.passes.compress import LowRankConfig

    return _run(
        model,
        config or LowRankConfig(),
        example_inputs,
        train=train,
        eval_data=eval,
        teacher=None,
        measure=measure,
        progress=progress,
        latency=latency,
    )


def cluster(
    model: nn.Module,
    config: ClusterConfig | None = None,
    example_inputs: Any = None,
    *,
    eval: DataSet | None = None,
    measure: bool = True,
    latency: bool = True,
) -> SlimResult:
    """Share weights by per-layer k-means (codebook + indices); reports the compressed size."""
    from torchslim.passes.compress import ClusterConfig

    return _run(
        model,
        config or ClusterConfig(),
        example_inputs,
        train=None,
        eval_data=eval,
        teacher=None,
        measure=measure,
        progress=False,
        latency=latency,
    )


def depthwise(
    model: nn.Module,
    config: DepthwiseConfig | None = None,
    example_inputs: Any = None,
    *,
    train: DataSet | None = None,
    eval: DataSet | None = None,
    measure: bool = True,
    progress: bool = False,
    latency: bool = True,
) -> SlimResult:
    """Swap KxK convolutions for depthwise + pointwise blocks, recovered by distillation."""
    from torchslim.passes.compress import DepthwiseConfig

    return _run(
        model,
        config or DepthwiseConfig(),
        example_inputs,
        train=train,
        eval_data=eval,
        teacher=None,
        measure=measure,
        progress=progress,
        latency=latency,
    )


# --------------------------------------------------------------------------------------------
# Saving and loading changed architectures
# --------------------------------------------------------------------------------------------


def _assign_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load ``state`` by replacing tensors (shapes may differ from the freshly built model)."""
    from torch import nn

    expected = set(model.state_dict())
    missing, unexpected = expected - set(state), set(state) - expected
    if missing or unexpected:
        raise SourceError(
            "The saved weights do not fit the rebuilt architecture "
            f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]}).",
            "Re-save the model with this torchslim version.",
        )
    mods = dict(model.named_modules())
    for key, tensor in state.items():
        owner, _, leaf = key.rpartition(".")
        mod = mods[owner]
        if leaf in mod._parameters and mod._parameters[leaf] is not None:
            old = mod._parameters[leaf]
            mod._parameters[leaf] = nn.Parameter(
                tensor.clone(), requires_grad=bool(old is not None and old.requires_grad)
            )
        else:
            mod._buffers[leaf] = tensor.clone()


def replay(model: nn.Module, ops: list[dict[str, Any]]) -> nn.Module:
    """Apply a rebuild log (see :data:`torchslim.passes.prune.REBUILD_ATTR`) to a fresh model."""
    from torchslim.passes.prune import add_rebuild_op

    for op in ops:
        kind = op.get("op")
        if kind == "attrs":
            mods = dict(model.named_modules())
            for name, attrs in op["changes"].items():
                if name not in mods:
                    raise SourceError(f"Module '{name}' in slim.json is not in the architecture.")
                for k, v in attrs.items():
                    old = getattr(mods[name], k, None)
                    setattr(mods[name], k, tuple(v) if isinstance(old, tuple) else v)
        else:
            from torchslim.passes.compress import replay_op

            replay_op(model, op)
        add_rebuild_op(model, op)
    return model


def save_slim(
    model: nn.Module,
    out_dir: str | Path,
    *,
    arch: str | None = None,
    example_inputs: Any = None,
    report: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``model`` to a directory atomically: weights + rebuild recipe, and ``model.pt2``.

    Args:
        model: The (pruned, factorised, ...) model.
        out_dir: Output directory; it must not exist unless ``overwrite``.
        arch: The original architecture's source string (``torchslim:fashion_resnet``,
            ``torchvision:resnet18``, ``pkg.module:factory``) so :func:`load_slim` can rebuild
            it; without it only ``model.pt2`` can be reloaded.
        example_inputs: Inputs for ``torch.export`` (``model.pt2``); skipped when ``None``.
        report: A report to store as ``report.json``.
        overwrite: Replace an existing directory.

    Returns:
        The output directory.
    """
    import torch
    from safetensors.torch import save_file

    from torchslim.passes.prune import REBUILD_ATTR

    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise TorchslimError(
            f"Output directory '{out}' already exists.",
            "Choose a new --out directory or remove it first.",
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.eval()
        state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / "model.safetensors"))
        notes: list[str] = []
        inputs = _as_tuple(example_inputs)
        if inputs:
            try:
                ep = torch.export.export(model, inputs)
                torch.export.save(ep, str(tmp / "model.pt2"))
            except Exception as exc:
                notes.append(f"model.pt2 not written: {type(exc).__name__}: {exc}"[:300])
        meta = {
            "format": SLIM_FORMAT,
            "version": SLIM_VERSION,
            "arch": arch,
            "rebuild": list(getattr(model, REBUILD_ATTR, [])),
            "files": sorted(p.name for p in tmp.iterdir()),
            "example_input_shapes": [list(x.shape) for x in inputs],
            "notes": notes,
        }
        (tmp / "slim.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
        if report is not None:
            from torchslim._json import to_jsonable

            (tmp / "report.json").write_text(
                json.dumps(to_jsonable(report), indent=2, default=str), encoding="utf-8"
            )
        if out.exists():
            old = out.with_name(f".{out.name}.old{os.getpid()}")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def is_slim_dir(path: str | Path) -> bool:
    """True when ``path`` is a directory written by :func:`save_slim`."""
    return (Path(path) / "slim.json").is_file()


def load_slim(path: str | Path) -> nn.Module:
    """Load a model written by :func:`save_slim` (no unpickling), in eval mode.

    Rebuilds the original architecture and replays the recorded changes when ``arch`` was
    saved, so the result is an ordinary trainable module; otherwise loads ``model.pt2``.

    Raises:
        SourceError: Not a slim directory, or the files do not match.
    """
    import torch
    from safetensors.torch import load_file

    from torchslim.models import load_model

    folder = Path(path)
    meta_path = folder / "slim.json"
    if not meta_path.is_file():
        raise SourceError(
            f"'{folder}' is not a torchslim output directory (no slim.json).",
            "Give a directory written by torchslim prune/compress/distill --out.",
        )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise SourceError(f"'{meta_path}' is not valid JSON: {exc}.") from exc
    if meta.get("format") != SLIM_FORMAT or int(meta.get("version", 0)) > SLIM_VERSION:
        raise SourceError(
            f"'{meta_path}' has an unknown format or a newer version.", "Upgrade torchslim."
        )
    if meta.get("arch") and (folder / "model.safetensors").exists():
        model = load_model(meta["arch"]).require_module()
        replay(model, meta.get("rebuild", []))
        _assign_state(model, load_file(str(folder / "model.safetensors")))
        return model.eval()
    if (folder / "model.pt2").exists():
        return torch.export.load(str(folder / "model.pt2")).module()
    raise SourceError(
        f"'{folder}' has neither an architecture to rebuild nor model.pt2.",
        "Re-save with arch= (the original model's source) or example inputs.",
    )
