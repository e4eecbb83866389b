"""Shared plumbing of ``torchslim prune``, ``distill`` and ``compress``: load, run, show, save."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from torchslim.errors import TorchslimError

if TYPE_CHECKING:
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
    help="Write the result as an artifact directory (manifest.json, recipe.yaml, module/ with "
    "model.safetensors + model.pt2, report.json); refused if it exists and is not empty, unless "
    "--force.",
)
ARCH_OPTION = typer.Option(None, "--arch", help="Architecture for weights-only checkpoints.")
SHAPE_OPTION = typer.Option(None, "--input-shape", help="Input shape, e.g. 1x3x224x224.")
EPOCHS_OPTION = typer.Option(1.0, "--epochs", min=0.01, help="Recovery/training epochs.")
LR_OPTION = typer.Option(1e-3, "--lr", min=0.0, help="Peak learning rate (AdamW, cosine).")
BATCH_OPTION = typer.Option(128, "--batch-size", help="Training batch size (at least 1).")
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
