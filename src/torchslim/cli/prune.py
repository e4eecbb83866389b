"""``torchslim prune``: remove channels (or weights) and win the accuracy back by distillation."""

from __future__ import annotations

import typer

from torchslim.cli import _run, _slim
from torchslim.cli._common import DEBUG_OPTION, JSON_OPTION, Command, handle_errors

__all__ = ["prune", "register"]

_HELP = (
    "Prune a model: structured (whole channels removed, the model gets smaller and faster), "
    "unstructured or global (weights zeroed: smaller when compressed, not faster), or nm (2:4).\n\n"
    "--ratio is the fraction removed: of the channels of every layer group (structured, "
    "--target channels), of the FLOPs (--target flops) or of the batch-1 latency "
    "(--target latency); of the weights for unstructured/global. The first and last layers are "
    "protected unless --no-protect. --recover kd distils the pruned model from the original "
    "(--data needed); finetune uses labels only.\n\n"
    "Examples:\n\n"
    "  torchslim prune torchslim:fashion_resnet --ratio 0.5 --target flops "
    "--data 'torchslim:fashion_mnist?split=train' --eval torchslim:fashion_mnist "
    "--recover kd --out pruned/\n\n"
    "  torchslim prune torchvision:resnet18 --ratio 0.5 --json\n\n"
    "  torchslim prune model.pt --arch torchvision:mobilenet_v2 --method unstructured --ratio 0.8"
)


def prune(
    model: str = typer.Argument(..., metavar="MODEL", help="Model source to prune."),
    method: str = typer.Option(
        "structured", "--method", "-m", help="structured | unstructured | global | nm."
    ),
    ratio: float = typer.Option(0.5, "--ratio", "-r", help="Fraction to remove, in (0, 1)."),
    target: str = typer.Option(
        "channels", "--target", help="Structured: what --ratio removes: channels | flops | latency."
    ),
    importance: str = typer.Option("l2", "--importance", help="l1 | l2 | bn_scale | taylor."),
    global_ranking: bool = typer.Option(
        False, "--global-ranking", help="Structured: rank channels across all layers."
    ),
    round_to: int = typer.Option(
        8, "--round-to", min=0, help="Keep channel counts multiples of this (0: off)."
    ),
    no_protect: bool = typer.Option(
        False, "--no-protect", help="Also prune the first layer (and the last, unstructured)."
    ),
    exclude: list[str] = typer.Option(
        [], "--exclude", help="Module name (glob) to leave alone; repeatable."
    ),
    steps: int = typer.Option(1, "--steps", min=1, help="Prune in N steps, recovering between."),
    recover: str = typer.Option("none", "--recover", help="kd | finetune | self | none."),
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
    """Prune MODEL and report parameters, FLOPs, size, latency and accuracy before/after."""
    from torchslim.passes.prune import Importance, PruneConfig, PruneMethod, PruneTarget

    rec = _slim.recover_config(
        recover, epochs=epochs, lr=lr, batch_size=batch_size, time_budget=time_budget, seed=seed
    )
    config = PruneConfig(
        method=_slim.choice(PruneMethod, method, "--method"),
        ratio=ratio,
        target=_slim.choice(PruneTarget, target, "--target"),
        importance=_slim.choice(Importance, importance, "--importance"),  # type: ignore[arg-type]
        global_ranking=global_ranking,
        round_to=round_to or None,
        protect_first_last=not no_protect,
        exclude=tuple(exclude),
        steps=steps,
        recover=rec,
    )
    _run.run_command(
        model,
        (config,),
        train=data,
        eval_src=eval_data,
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
        title=f"prune {model} ({method}, ratio {ratio})",
    )


def register(app: typer.Typer) -> None:
    """Add the ``prune`` command to ``app``."""
    app.command("prune", help=_HELP, no_args_is_help=True, cls=Command)(handle_errors(prune))
