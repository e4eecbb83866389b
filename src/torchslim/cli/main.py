"""The ``torchslim`` command: makes trained PyTorch models smaller and faster, measured honestly.

Each sub-command lives in its own module and imports heavy libraries only when it runs.
"""

from __future__ import annotations

import typer

from torchslim._version import __version__

app = typer.Typer(
    name="torchslim",
    help=(
        "Make a trained PyTorch model smaller and faster for inference without silently losing "
        "accuracy.\n\n"
        "Models are given as sources: torchvision:resnet18, torchslim:fashion_cnn (bundled, "
        "trained on Fashion-MNIST), model.pt --arch torchvision:resnet18, model.pt2, model.onnx, "
        "hf:DIR or pkg.module:factory. Data: torchslim:fashion_mnist, an image folder, .npz, .pt, "
        "IDX files, or synthetic (fidelity only).\n\n"
        "Start with:  torchslim inspect torchslim:fashion_cnn   then   "
        "torchslim bench torchslim:fashion_cnn torchvision:resnet18 --batch 1,8"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"torchslim {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version."
    ),
) -> None:
    """torchslim: measure, shrink, speed up and serve PyTorch models."""


# One command per module of torchslim.cli, in the order --help lists them; each module has a
# ``register(app)`` and imports its heavy libraries only when the command runs.
_COMMANDS = (
    "demo",
    "inspect",
    "bench",
    "profile",
    "optimize",
    "quantize",
    "prune",
    "distill",
    "compress",
    "export",
    "run",
    "serve",
    "predict",
)


def _register() -> None:
    import importlib

    for name in _COMMANDS:
        importlib.import_module(f"torchslim.cli.{name}").register(app)


_register()


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
