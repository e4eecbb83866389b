"""``torchslim quantize``: INT8/INT4/FP16/BF16 quantization, checked against the FP32 model."""

from __future__ import annotations

from typing import Any

import typer

from torchslim.cli._common import (
    DEBUG_OPTION,
    JSON_OPTION,
    emit_json,
    handle_errors,
    stderr_console,
)

__all__ = ["quantize", "register"]

_HELP = (
    "Quantize a model and check it against the FP32 original on the same inputs: accuracy "
    "before/after when --eval has labels, fidelity (top-1 agreement, cosine, max abs error, SQNR) "
    "always, latency at batch 1 and size.\n\n"
    "Methods: dynamic (no calibration), static (needs --calib), weight-only (--bits 8|4), fp16, "
    "bf16 (slower than FP32 on CPUs without native support; the report says so), qat (fine-tunes "
    "on --train, or --calib). Backends: torch, onnxruntime, openvino (extra 'openvino').\n\n"
    "--max-drop N keeps the most sensitive layers in float until accuracy drops by at most N "
    "points (needs --eval); if nothing meets it, it fails and shows the best result.\n\n"
    "Examples:\n\n"
    "  torchslim quantize torchslim:fashion_cnn --method static --backend openvino "
    "--calib 'torchslim:fashion_mnist?split=train' --eval torchslim:fashion_mnist --max-drop 1.0 "
    "--out cnn_int8/\n\n"
    "  torchslim quantize torchslim:minilm --method dynamic --backend onnxruntime "
    "--eval torchslim:text_polarity --json\n\n"
    "  torchslim quantize torchvision:resnet18 --method static --backend onnxruntime "
    "--calib synthetic   (fidelity only)"
)


def quantize(
    model: str = typer.Argument(..., metavar="MODEL", help="Model source to quantize."),
    method: str = typer.Option(
        "dynamic", "--method", "-m", help="dynamic | static | weight-only | fp16 | bf16 | qat."
    ),
    backend: str = typer.Option("torch", "--backend", "-b", help="torch | onnxruntime | openvino."),
    calib: str | None = typer.Option(
        None,
        "--calib",
        help="Calibration data (static, qat); 'synthetic' for a fidelity-only result.",
    ),
    eval_data: str | None = typer.Option(
        None, "--eval", help="Evaluation data (accuracy when labelled; fidelity always)."
    ),
    train: str | None = typer.Option(
        None, "--train", help="Training data for qat (default: --calib)."
    ),
    max_drop: float | None = typer.Option(
        None,
        "--max-drop",
        help="Accuracy budget in points; keeps sensitive layers in float to meet it.",
    ),
    relative: bool = typer.Option(
        False, "--relative", help="--max-drop is a percentage of the baseline."
    ),
    calibration: str = typer.Option(
        "auto", "--calibration", help="auto | minmax | percentile | entropy | mse."
    ),
    percentile: float = typer.Option(
        99.99, "--percentile", help="Percentile for --calibration percentile."
    ),
    per_tensor: bool = typer.Option(
        False, "--per-tensor", help="Per-tensor weight scales (default per-channel)."
    ),
    symmetric: bool = typer.Option(
        False, "--symmetric-activations", help="Symmetric activation ranges."
    ),
    samples: int = typer.Option(300, "--samples", min=1, help="Calibration samples."),
    bits: int = typer.Option(8, "--bits", help="Weight bits for weight-only: 8 or 4."),
    group_size: int = typer.Option(128, "--group-size", min=1, help="Group size for 4-bit."),
    qat_steps: int = typer.Option(200, "--qat-steps", min=0, help="QAT fine-tuning steps."),
    qat_lr: float = typer.Option(1e-5, "--qat-lr", help="QAT learning rate."),
    ignore: list[str] = typer.Option(
        [], "--ignore", help="Module name to keep in float; repeatable."
    ),
    no_compile: bool = typer.Option(
        False,
        "--no-compile",
        help="torch static/qat: skip the Inductor compile (slow reference kernels).",
    ),
    out: str | None = typer.Option(
        None, "--out", "-o", help="Write the quantized model here (atomically)."
    ),
    arch: str | None = typer.Option(
        None, "--arch", help="Architecture for weights-only checkpoints."
    ),
    input_shape: str | None = typer.Option(None, "--input-shape", help="e.g. 1x3x224x224."),
    no_latency: bool = typer.Option(False, "--no-latency", help="Skip the latency measurement."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="Torch threads."),
    seed: int = typer.Option(0, "--seed", help="Seed for calibration subsets and QAT."),
    json_out: bool = JSON_OPTION,
    debug: bool = DEBUG_OPTION,
) -> None:
    """Quantize MODEL."""
    import torch

    from torchslim.data import load_data
    from torchslim.models import load_model
    from torchslim.passes.quantize import (
        Calibration,
        QuantBackend,
        QuantizeConfig,
        QuantMethod,
        _enum,
    )
    from torchslim.quantization import quantize as run

    if threads:
        torch.set_num_threads(threads)
    config = QuantizeConfig(
        method=_enum(QuantMethod, method),
        backend=_enum(QuantBackend, backend),
        calibration=_enum(Calibration, calibration),
        percentile=percentile,
        per_channel=not per_tensor,
        symmetric_activations=symmetric,
        num_calibration_samples=samples,
        weight_bits=bits,
        group_size=group_size,
        qat_steps=qat_steps,
        qat_lr=qat_lr,
        max_drop=max_drop,
        relative=relative,
        ignored_layers=tuple(ignore),
        compile=not no_compile,
        seed=seed,
    )
    console = stderr_console()
    loaded = load_model(model, arch=arch, input_spec=input_shape)

    def data(src: str | None, split: str | None) -> Any:
        if src is None:
            return None
        return load_data(src, input_spec=loaded.input_spec, split=split, seed=seed)

    calib_ds = data(
        calib,
        "train" if calib and calib.startswith("torchslim:") and "split=" not in calib else None,
    )
    eval_ds = data(eval_data, None)
    train_ds = data(
        train,
        "train" if train and train.startswith("torchslim:") and "split=" not in train else None,
    )
    if not json_out:
        console.print(f"[bold]Quantizing[/] {model}: {config.name}")
    q = run(
        loaded, config, calib=calib_ds, eval=eval_ds, train=train_ds, measure_latency=not no_latency
    )
    path = str(q.save(out)) if out else None
    rep = q.report
    summary = {
        "model": model,
        "method": config.method.value,
        "backend": config.backend.value,
        "runtime": q.runtime,
        "metric": rep.get("metric"),
        "accuracy_before": rep.get("accuracy_before"),
        "accuracy_after": rep.get("accuracy_after"),
        "accuracy_drop": rep.get("accuracy_drop"),
        "fidelity_only": rep.get("fidelity_only"),
        "fidelity": {
            k: rep["fidelity"].get(k)
            for k in ("agreement", "cosine", "max_abs_error", "sqnr_db", "samples")
        },
        "latency_ms_before": rep.get("latency_ms_before"),
        "latency_ms_after": rep.get("latency_ms_after"),
        "speedup": rep.get("speedup"),
        "size_mb_before": rep.get("size_mb_before"),
        "size_mb_after": rep.get("size_mb_after"),
        "quantized_layers": rep.get("quantized_layers", []),
        "float_layers": rep.get("float_layers", {}),
        "calibration_seconds": rep.get("calibration_seconds"),
        "within_budget": rep.get("within_budget"),
        "notes": [n for n in (rep.get("note"),) if n],
        "output": path,
        "threads": torch.get_num_threads(),
        "report": rep,
    }
    if json_out:
        emit_json(summary)
        return
    _print(summary)


def _print(s: dict[str, Any]) -> None:
    from rich.table import Table

    from torchslim.cli._common import stdout_console

    out = stdout_console()
    t = Table(title=f"{s['model']}: {s['method']} / {s['backend']} ({s['runtime']})")
    t.add_column("")
    t.add_column("FP32", justify="right")
    t.add_column("quantized", justify="right")

    def f(v: Any, fmt: str = "{:.4f}") -> str:
        return "-" if v is None else fmt.format(v)

    if not s["fidelity_only"]:
        t.add_row(str(s["metric"]), f(s["accuracy_before"]), f(s["accuracy_after"]))
    t.add_row(
        "latency p50 batch 1 (ms)",
        f(s["latency_ms_before"], "{:.3f}"),
        f(s["latency_ms_after"], "{:.3f}"),
    )
    t.add_row("size (MB)", f(s["size_mb_before"], "{:.3f}"), f(s["size_mb_after"], "{:.3f}"))
    out.print(t)
    fid = s["fidelity"]
    drop = "" if s["fidelity_only"] else f"accuracy drop {f(s['accuracy_drop'], '{:.2f}')} points; "
    out.print(
        f"{drop}speed-up {f(s['speedup'], '{:.2f}')}x; agreement {f(fid['agreement'])}, cosine "
        f"{f(fid['cosine'], '{:.5f}')}, max abs error {f(fid['max_abs_error'], '{:.4g}')}, SQNR "
        f"{f(fid['sqnr_db'], '{:.1f}')} dB"
        + (" (fidelity only: no labels)" if s["fidelity_only"] else "")
    )
    if s["float_layers"]:
        out.print("kept in float:")
        for layer, why in s["float_layers"].items():
            out.print(f"  {layer}: {why}")
    for note in s["notes"]:
        out.print(f"[yellow]note:[/] {note}")
    if s["output"]:
        out.print(f"saved to {s['output']}")


def register(app: typer.Typer) -> None:
    """Add the ``quantize`` command to ``app``."""
    app.command("quantize", help=_HELP, no_args_is_help=True)(handle_errors(quantize))
