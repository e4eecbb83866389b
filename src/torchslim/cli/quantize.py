"""``torchslim quantize``: INT8/INT4/FP16/BF16 quantization, checked against the FP32 model."""

from __future__ import annotations

import typer

from torchslim.cli import _run
from torchslim.cli._common import (
    DEBUG_OPTION,
    JSON_OPTION,
    Command,
    handle_errors,
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
    "points (needs --eval; bundled torchslim: models default to their own data, as static "
    "quantization defaults to their calibration data): it calibrates once, ranks the layers by "
    "their own quantization error and bisects on how many of the most sensitive to keep in "
    "float, within --time-budget (default 5m). If nothing meets it, or the time runs out first, "
    "it fails, shows the best result reached and saves nothing.\n\n"
    "Exit codes: 0 done; 3 the accuracy budget was not met (nothing saved; the error gives the "
    "best drop reached and how many layers were kept in float); 2 bad input.\n\n"
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
    time_budget: str = typer.Option(
        "5m",
        "--time-budget",
        help="Time limit of the --max-drop search, e.g. 90s, 5m, 1h; 'none' for no limit.",
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
    threads: int | None = typer.Option(None, "--threads", help="Torch threads (at least 1)."),
    seed: int = typer.Option(0, "--seed", help="Seed for calibration subsets and QAT."),
    force: bool = _run.FORCE_OPTION,
    dry_run: bool = _run.DRY_RUN_OPTION,
    trust_code: bool = _run.TRUST_CODE_OPTION,
    json_out: bool = JSON_OPTION,
    debug: bool = DEBUG_OPTION,
) -> None:
    """Quantize MODEL."""

    from torchslim.cli._common import parse_duration
    from torchslim.passes.quantize import (
        Calibration,
        QuantBackend,
        QuantizeConfig,
        QuantMethod,
        _enum,
    )

    no_limit = time_budget.strip().lower() in ("none", "off", "no")
    time_budget_s = None if no_limit else parse_duration(time_budget)

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
        time_budget_s=time_budget_s,
        ignored_layers=tuple(ignore),
        compile=not no_compile,
        seed=seed,
    )
    # --max-drop without --eval: run_command uses a bundled model's own data, else refuses.
    _run.run_command(
        model,
        (config,),
        calib=calib,
        eval_src=eval_data,
        train=train,
        out=out,
        force=force,
        arch=arch,
        input_shape=input_shape,
        trust_code=trust_code,
        measure=not no_latency,
        seed=seed,
        threads=threads,
        max_drop=None if relative else max_drop,
        dry_run=dry_run,
        as_json=json_out,
        title=f"quantize {model}: {config.name}",
    )


def register(app: typer.Typer) -> None:
    """Add the ``quantize`` command to ``app``."""
    app.command("quantize", help=_HELP, no_args_is_help=True, cls=Command)(handle_errors(quantize))
