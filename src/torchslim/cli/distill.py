"""``torchslim distill``: train a student from a teacher (or labels, or its own EMA)."""

from __future__ import annotations

import typer

from torchslim.cli import _run, _slim
from torchslim.cli._common import DEBUG_OPTION, JSON_OPTION, Command, handle_errors

__all__ = ["distill", "register"]

_HELP = (
    "Distil a student model from a teacher on training data, then report accuracy before/after "
    "and the gap to the teacher.\n\n"
    "--method kd (default): (1-alpha)·labels + alpha·T²·KL(teacher ‖ student), plus --feature "
    "pairs (student.layer=teacher.layer, 1x1 adapters learnt when widths differ); finetune: "
    "labels only; self: an EMA of the student is the teacher. Interrupted runs resume from "
    "--checkpoint-dir. Multi-GPU/multi-node: launch with torchrun.\n\n"
    "Examples:\n\n"
    "  torchslim distill pruned/ --teacher torchslim:fashion_resnet "
    "--data 'torchslim:fashion_mnist?split=train' --eval torchslim:fashion_mnist --epochs 2 "
    "--out distilled/\n\n"
    "  torchrun --nproc-per-node 2 -m torchslim.cli.main distill pruned/ --teacher "
    "torchslim:fashion_resnet --data 'torchslim:fashion_mnist?split=train'"
)


def distill(
    student: str = typer.Argument(..., metavar="STUDENT", help="Student model source."),
    teacher: str | None = typer.Option(None, "--teacher", help="Teacher model source (kd)."),
    method: str = typer.Option("kd", "--method", "-m", help="kd | finetune | self."),
    temperature: float = typer.Option(4.0, "--temperature", "-T", help="Softmax temperature."),
    alpha: float = typer.Option(0.7, "--alpha", help="Weight of the soft (teacher) loss."),
    feature: list[str] = typer.Option(
        [], "--feature", help="Feature pair student.layer[=teacher.layer]; repeatable."
    ),
    optimizer: str = typer.Option("adamw", "--optimizer", help="adamw | sgd."),
    patience: int = typer.Option(
        0,
        "--patience",
        min=0,
        help="Early stopping patience (evaluations without improvement; 0: off).",
    ),
    amp: str = typer.Option("off", "--amp", help="off | bf16 | auto (bf16 where native)."),
    checkpoint_dir: str | None = typer.Option(
        None, "--checkpoint-dir", help="Resumable checkpoints here."
    ),
    data: str | None = _slim.DATA_OPTION,
    eval_data: str | None = _slim.EVAL_OPTION,
    epochs: float = _slim.EPOCHS_OPTION,
    lr: float = _slim.LR_OPTION,
    batch_size: int = _slim.BATCH_OPTION,
    time_budget: float | None = _slim.BUDGET_OPTION,
    out: str | None = _slim.OUT_OPTION,
    arch: str | None = _slim.ARCH_OPTION,
    input_shape: str | None = _slim.SHAPE_OPTION,
    seed: int = _slim.SEED_OPTION,
    no_latency: bool = _slim.NO_LATENCY_OPTION,
    force: bool = _run.FORCE_OPTION,
    dry_run: bool = _run.DRY_RUN_OPTION,
    trust_code: bool = _run.TRUST_CODE_OPTION,
    no_verify: bool = _run.NO_VERIFY_OPTION,
    json_out: bool = JSON_OPTION,
    debug: bool = DEBUG_OPTION,
) -> None:
    """Distil STUDENT from --teacher on --data."""
    from torchslim.errors import DataError
    from torchslim.train import DistillConfig, DistillMethod

    if not data:
        raise DataError(
            "Distillation needs training data (--data), and none was given.",
            "Give e.g. --data 'torchslim:fashion_mnist?split=train'.",
        )
    config = DistillConfig(
        method=_slim.choice(DistillMethod, method, "--method"),
        temperature=temperature,
        alpha=alpha,
        features=tuple(feature),  # type: ignore[arg-type]
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        time_budget_s=time_budget,
        optimizer=optimizer,
        patience=patience,
        amp=amp,
        checkpoint_dir=checkpoint_dir,
        seed=seed,
    )
    _run.run_command(
        student,
        (config,),
        train=data,
        eval_src=eval_data,
        teacher=teacher,
        out=out,
        force=force,
        arch=arch,
        input_shape=input_shape,
        trust_code=trust_code,
        verify=not no_verify,
        measure=not no_latency,
        seed=seed,
        dry_run=dry_run,
        as_json=json_out,
        title=f"distill {student} ({method})",
    )


def register(app: typer.Typer) -> None:
    """Add the ``distill`` command to ``app``."""
    app.command("distill", help=_HELP, no_args_is_help=True, cls=Command)(handle_errors(distill))
