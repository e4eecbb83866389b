"""Shared plumbing of ``torchslim prune``, ``distill`` and ``compress``: load, run, show, save."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from torchslim.errors import TorchslimError

if TYPE_CHECKING:
    from torch import nn

    from torchslim.data import DataSet
    from torchslim.slim import SlimResult
    from torchslim.train import DistillConfig

# Options shared by the three commands (same names and meaning everywhere).
DATA_OPTION = typer.Option(
    None,
    "--data",
    help="Training data for recovery/distillation, e.g. 'torchslim:fashion_mnist?split=train'.",
)
EVAL_OPTION = typer.Option(
    None,
    "--eval",
    help="Labelled evaluation data for accuracy before/after, e.g. "
    "torchslim:fashion_mnist. Without it: fidelity only.",
)
OUT_OPTION = typer.Option(
    None,
    "--out",
    "-o",
    help="Write the result here (model.safetensors + slim.json, model.pt2, "
    "report.json); the directory must not exist.",
)
ARCH_OPTION = typer.Option(None, "--arch", help="Architecture for weights-only checkpoints.")
SHAPE_OPTION = typer.Option(None, "--input-shape", help="Input shape, e.g. 1x3x224x224.")
EPOCHS_OPTION = typer.Option(1.0, "--epochs", min=0.01, help="Recovery/training epochs.")
LR_OPTION = typer.Option(1e-3, "--lr", min=0.0, help="Peak learning rate (AdamW, cosine).")
BATCH_OPTION = typer.Option(128, "--batch-size", min=1, help="Training batch size.")
BUDGET_OPTION = typer.Option(
    None, "--time-budget", min=1.0, help="Stop training after this many seconds."
)
SEED_OPTION = typer.Option(0, "--seed", help="Random seed.")
NO_LATENCY_OPTION = typer.Option(False, "--no-latency", help="Skip the latency measurement.")


def choice(enum_cls: Any, value: str, option: str) -> Any:
    """``value`` as a member of ``enum_cls``, or a clear error naming ``option``."""
    try:
        return enum_cls(value)
    except ValueError:
        raise TorchslimError(
            f"Unknown {option} '{value}'.",
            f"Use one of: {', '.join(e.value for e in enum_cls)}.",
        ) from None


def load_module(
    source: str, arch: str | None, input_shape: str | None
) -> tuple[nn.Module, Any, str | None]:
    """Load a model source (or a torchslim output directory): module, input spec, arch source.

    The arch source is what :func:`torchslim.slim.save_slim` records so the result can be
    rebuilt; ``None`` when the source cannot be rebuilt from a string (``.pt2``, TorchScript).
    """
    from torchslim.models import load_model, parse_input_spec
    from torchslim.slim import is_slim_dir, load_slim

    if is_slim_dir(source):
        import json

        meta = json.loads((Path(source) / "slim.json").read_text(encoding="utf-8"))
        module = load_slim(source)
        spec = parse_input_spec(input_shape) if input_shape else None
        if spec is None and meta.get("example_input_shapes"):
            shape = meta["example_input_shapes"][0]
            spec = parse_input_spec("x".join(str(d) for d in [1, *shape[1:]]))
        if meta.get("rebuild") and meta.get("arch"):
            from torchslim.passes.prune import REBUILD_ATTR

            # load_slim already replayed the log onto the module; keep the original arch.
            assert getattr(module, REBUILD_ATTR, None) is not None
        return module, spec, meta.get("arch")
    loaded = load_model(source, arch=arch, input_spec=input_shape)
    module = loaded.require_module()
    rebuildable = loaded.kind in ("torchvision", "timm", "reference", "factory", "checkpoint")
    arch_src = arch if loaded.kind == "checkpoint" else (source if rebuildable else None)
    return module, loaded.input_spec, arch_src


def load_sets(
    data: str | None, eval_src: str | None, spec: Any, seed: int
) -> tuple[DataSet | None, DataSet | None]:
    """Load the training and evaluation data sets (either may be ``None``)."""
    from torchslim.data import load_data

    train = load_data(data, input_spec=spec, seed=seed) if data else None
    ev = load_data(eval_src, input_spec=spec, seed=seed) if eval_src else None
    return train, ev


def example_inputs(spec: Any, *sets: DataSet | None) -> tuple[Any, ...]:
    """Two real samples when data exists, else synthetic inputs from the spec."""
    for ds in sets:
        if ds is not None and len(ds):
            return tuple(x[:2] for x in ds.inputs)
    if spec is None:
        raise TorchslimError(
            "Cannot tell the model's input shape.",
            "Give --input-shape (e.g. 1x3x224x224) or --eval/--data.",
        )
    return tuple(spec.example_inputs(batch_size=2))


def recover_config(
    recover: str,
    *,
    epochs: float,
    lr: float,
    batch_size: int,
    time_budget: float | None,
    seed: int,
    temperature: float = 4.0,
    alpha: float = 0.7,
) -> DistillConfig | None:
    """``--recover kd|finetune|self|none`` as a :class:`DistillConfig` (or ``None``)."""
    from torchslim.train import DistillConfig, DistillMethod

    if recover == "none":
        return None
    if recover not in ("kd", "finetune", "self"):
        raise TorchslimError(f"Unknown --recover '{recover}'.", "Use kd, finetune, self or none.")
    return DistillConfig(
        method=choice(DistillMethod, recover, "--recover"),
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,  # type: ignore[arg-type]
        time_budget_s=time_budget,
        seed=seed,
        temperature=temperature,
        alpha=alpha,
    )


def finish(
    result: SlimResult,
    *,
    title: str,
    out: str | None,
    arch: str | None,
    inputs: tuple[Any, ...],
    as_json: bool,
) -> None:
    """Save (when ``--out``), then print the report as JSON or a table."""
    from torchslim.cli._common import emit_json, stdout_console
    from torchslim.slim import save_slim

    report = dict(result.report)
    report["output"] = None
    if out:
        path = save_slim(result.model, out, arch=arch, example_inputs=inputs, report=report)
        report["output"] = str(path)
        import json

        meta = json.loads((path / "slim.json").read_text(encoding="utf-8"))
        report["output_files"] = meta["files"]
        if meta.get("notes"):
            report["output_notes"] = meta["notes"]
    if as_json:
        emit_json(report)
        return
    _print_table(report, title, stdout_console())


def _fmt(v: Any, kind: str) -> str:
    if v is None:
        return "n/a"
    if kind == "int":
        return f"{int(v):,}"
    if kind == "flops":
        return f"{v / 1e6:,.1f} M"
    if kind == "pct":
        return f"{100 * v:.2f}%"
    if kind == "ms":
        return f"{v:.3f} ms"
    return f"{v:.3f} MB"


def _print_table(report: dict[str, Any], title: str, console: Any) -> None:
    from rich.table import Table

    table = Table(title=title)
    for col in ("", "before", "after", "change"):
        table.add_column(col, justify="right" if col else "left")
    rows = [
        ("parameters", "params", "int"),
        ("FLOPs / item", "flops", "flops"),
        ("size", "size_mb", "mb"),
        ("accuracy", "accuracy", "pct"),
        ("latency p50 (batch 1)", "latency_ms", "ms"),
    ]
    for label, key, kind in rows:
        b, a = report.get(f"{key}_before"), report.get(f"{key}_after")
        if b is None and a is None:
            continue
        if kind == "pct":
            change = (
                f"{-100 * report['accuracy_drop']:+.2f} pts"
                if report.get("accuracy_drop") is not None
                else ""
            )
        elif kind == "ms":
            change = f"{report['speedup']:.2f}x faster" if report.get("speedup") else ""
        else:
            change = f"{b / a:.2f}x smaller" if a and b else ""
        table.add_row(label, _fmt(b, kind), _fmt(a, kind), change)
    console.print(table)
    fid = report.get("fidelity")
    if fid:
        console.print(
            f"fidelity vs original: agreement {100 * fid['agreement']:.2f}%, cosine "
            f"{fid['cosine']:.4f}, max abs error {fid['max_abs_error']:.4g}"
            + (" (fidelity only: no labelled eval data)" if report.get("fidelity_only") else "")
        )
    details = report.get("details", {})
    for key in ("speedup_note", "note", "warning"):
        if details.get(key):
            console.print(f"note: {details[key]}")
    if report.get("teacher_accuracy") is not None:
        console.print(f"teacher accuracy {100 * report['teacher_accuracy']:.2f}%")
    if report.get("output"):
        console.print(
            f"saved to {report['output']} (reload: torchslim.load_slim or "
            f"{report['output']}/model.pt2)"
        )
