"""``torchslim compress``: low-rank factorisation, weight sharing, depthwise-separable swap."""

from __future__ import annotations

import typer

from torchslim.cli import _run, _slim
from torchslim.cli._common import DEBUG_OPTION, JSON_OPTION, Command, handle_errors

__all__ = ["compress", "register"]

_HELP = (
    "Compress a model's layers.\n\n"
    "--method lowrank: SVD-factorise Linear/Conv layers, keeping --energy of the spectrum (or "
    "--rank-ratio of the rank), only where FLOPs drop. cluster: per-layer k-means weight "
    "sharing with --clusters values (codebook + indices; the compressed size is reported, the "
    "model stays dense). depthwise: KxK convolutions become depthwise + pointwise, recovered "
    "with --recover kd.\n\n"
    "Examples:\n\n"
    "  torchslim compress torchslim:fashion_cnn --method lowrank --energy 0.8 "
    "--eval torchslim:fashion_mnist\n\n"
    "  torchslim compress torchslim:fashion_resnet --method cluster --clusters 16 --json\n\n"
    "  torchslim compress torchslim:fashion_resnet --method depthwise --recover kd "
    "--data 'torchslim:fashion_mnist?split=train' --eval torchslim:fashion_mnist --out dw/"
)


def compress(
    model: str = typer.Argument(..., metavar="MODEL", help="Model source to compress."),
    method: str = typer.Option("lowrank", "--method", "-m", help="lowrank | cluster | depthwise."),
    energy: float = typer.Option(0.9, "--energy", help="lowrank: spectrum energy kept."),
    rank_ratio: float | None = typer.Option(
        None, "--rank-ratio", help="lowrank: rank as a fraction of full rank."
    ),
    clusters: int = typer.Option(16, "--clusters", help="cluster: shared values per layer."),
    no_protect: bool = typer.Option(
        False, "--no-protect", help="Also change the first and last layers."
    ),
    exclude: list[str] = typer.Option([], "--exclude", help="Module name (glob) to leave alone."),
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
    """Compress MODEL and report size, FLOPs, latency and accuracy before/after."""
    from torchslim.errors import TorchslimError
    from torchslim.passes.compress import ClusterConfig, DepthwiseConfig, LowRankConfig

    rec = _slim.recover_config(
        recover, epochs=epochs, lr=lr, batch_size=batch_size, time_budget=time_budget, seed=seed
    )
    config: object
    if method == "lowrank":
        config = LowRankConfig(
            energy=energy,
            rank_ratio=rank_ratio,
            protect_first_last=not no_protect,
            exclude=tuple(exclude),
            recover=rec,
        )
    elif method == "cluster":
        if rec is not None:
            raise TorchslimError(
                "Recovery training would undo weight sharing.",
                "Distil first (torchslim distill), then cluster.",
            )
        config = ClusterConfig(
            clusters=clusters, protect_first_last=not no_protect, exclude=tuple(exclude)
        )
    elif method == "depthwise":
        config = DepthwiseConfig(
            protect_first_last=not no_protect, exclude=tuple(exclude), recover=rec
        )
    else:
        raise TorchslimError(
            f"Unknown compression method '{method}'.", "Use --method lowrank, cluster or depthwise."
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
        title=f"compress {model} ({method})",
    )


def register(app: typer.Typer) -> None:
    """Add the ``compress`` command to ``app``."""
    app.command("compress", help=_HELP, no_args_is_help=True, cls=Command)(handle_errors(compress))
