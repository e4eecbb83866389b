"""``torchslim run RECIPE MODEL``: replay a recipe (an artifact's ``recipe.yaml``) on a model."""

from __future__ import annotations

from typing import Any

import typer

from torchslim.cli import _run
from torchslim.cli._common import DEBUG_OPTION, JSON_OPTION, Command, handle_errors

__all__ = ["register", "run"]

_HELP = (
    "Replay RECIPE (a recipe.yaml, or an artifact directory) on MODEL: the same steps, runtime, "
    "batch sizes and seed. The data sources the recipe names are used unless you give others. "
    "Same recipe, model, data and seed give the same weights and accuracy.\\n\\n"
    "Examples:\\n\\n"
    "  torchslim run e/recipe.yaml torchslim:fashion_resnet --out r\\n\\n"
    "  torchslim run e/ torchslim:fashion_resnet --eval torchslim:fashion_mnist --dry-run"
)


def run(
    recipe: str = typer.Argument(..., metavar="RECIPE", help="recipe.yaml or an artifact dir."),
    model: str = typer.Argument(..., metavar="MODEL", help="The original model source."),
    calib: str | None = typer.Option(None, "--calib", help="Calibration data (else the recipe's)."),
    eval_data: str | None = typer.Option(
        None, "--eval", help="Evaluation data (else the recipe's)."
    ),
    train: str | None = typer.Option(None, "--train", help="Training data (else the recipe's)."),
    out: str | None = typer.Option(None, "--out", "-o", help="Artifact directory to write."),
    arch: str | None = typer.Option(None, "--arch", help="Architecture for weights-only files."),
    input_shape: str | None = typer.Option(None, "--input-shape", help="e.g. 1x3x224x224."),
    threads: int | None = typer.Option(None, "--threads", help="Intra-op threads."),
    no_latency: bool = typer.Option(False, "--no-latency", help="Skip the latency measurement."),
    trust_pickle: bool = _run.TRUST_PICKLE_OPTION,
    force: bool = _run.FORCE_OPTION,
    dry_run: bool = _run.DRY_RUN_OPTION,
    trust_code: bool = _run.TRUST_CODE_OPTION,
    no_verify: bool = _run.NO_VERIFY_OPTION,
    json_out: bool = JSON_OPTION,
    debug: bool = DEBUG_OPTION,
) -> None:
    """Replay RECIPE on MODEL."""
    if out is not None:  # the recipe (or its artifact) is an input too: never write over it
        from torchslim._io import check_out_dir

        check_out_dir(out, force=force, inputs=(recipe,))
    r = _load_recipe(recipe, trust_code=trust_code)
    refs = r.data
    _run.refuse_named_code(
        {
            "calib": None if calib else refs.calib,
            "eval": None if eval_data else refs.eval,
            "train": None if train else refs.train,
            "teacher": refs.teacher,
        },
        f"Recipe '{recipe}'",
        trust_code,
    )
    _run.run_command(
        model,
        recipe=r,
        calib=calib or refs.calib,
        eval_src=eval_data or refs.eval,
        train=train or refs.train,
        teacher=refs.teacher,
        out=out,
        force=force,
        arch=arch,
        input_shape=input_shape,
        trust_pickle=trust_pickle,
        trust_code=trust_code,
        verify=not no_verify,
        measure=not no_latency,
        threads=threads,
        dry_run=dry_run,
        as_json=json_out,
        title=f"run {recipe} on {model}",
    )


def _load_recipe(recipe: str, *, trust_code: bool) -> Any:
    """The recipe of a recipe.yaml, or of an artifact directory after checking its hashes (as
    every command does before it reads an artifact)."""
    from torchslim.artifact import ArtifactError, is_artifact, load_artifact
    from torchslim.recipe import Recipe

    if not is_artifact(recipe):
        return Recipe.load(recipe)
    try:
        return load_artifact(recipe, trust_code=trust_code).recipe
    except ArtifactError as exc:
        raise ArtifactError(
            exc.message,
            f"Regenerate the artifact, or give {recipe.rstrip('/')}/recipe.yaml to replay only its "
            "recipe.",
        ) from None


def register(app: typer.Typer) -> None:
    """Add the ``run`` command to ``app``."""
    app.command(
        "run",
        help=_HELP,
        short_help="Replay a recipe on a model.",
        no_args_is_help=True,
        cls=Command,
    )(handle_errors(run))
