"""``torchslim demo``: the main job on the bundled reference model, no arguments needed."""

from __future__ import annotations

import typer

from torchslim.cli._common import (
    DEBUG_OPTION,
    JSON_OPTION,
    Command,
    emit_json,
    handle_errors,
    stderr_console,
    stdout_console,
)
from torchslim.errors import TorchslimError

HELP = (
    "Run torchslim optimize on the bundled Fashion-MNIST ResNet (torchslim:fashion_resnet, "
    "94% top-1) with its packaged data and a 1-point accuracy budget: structured pruning with "
    "recovery, INT8 static quantization on OpenVINO / ONNX Runtime and the float runtimes, each "
    "candidate built in its own process, re-loaded, evaluated on the test set in the runtime it "
    "ships in and measured interleaved with the original. Writes the chosen artifact to "
    "OUT/best, every candidate to OUT/search.json and a report to OUT/report.html. About five "
    "minutes on two cores.\n\n"
    "Exit codes: 0 a variant was chosen; 3 nothing met the budget; 2 bad input.\n\n"
    "Examples:\n\n"
    "  torchslim demo\n\n"
    "  torchslim demo --time-budget 2m --out quick-demo\n\n"
    "  torchslim demo --json > demo.json"
)


@handle_errors
def demo(
    max_drop: float = typer.Option(1.0, help="Accuracy budget: largest allowed drop in points."),
    time_budget: str = typer.Option("5m", "--time-budget", help="e.g. 5m, 90s."),
    threads: int | None = typer.Option(None, help="Intra-op threads (default: all cores)."),
    out: str = typer.Option(
        "demo-out",
        help="Output directory (best/, search.json, report.html). An earlier demo output is "
        "replaced; any other non-empty directory needs --force.",
    ),
    force: bool = typer.Option(False, "--force", help="Replace a non-empty --out directory."),
    json_out: bool = JSON_OPTION,
    debug: bool = DEBUG_OPTION,
) -> None:
    """Optimise the bundled reference model within a 1-point budget; show the result."""
    from torchslim.cli.optimize import parse_duration, print_search
    from torchslim.demo import DemoConfig, run_demo

    if not out.strip():  # Path("") is the current directory: never write the demo there
        raise TorchslimError(
            "The output directory is empty.", "Give --out DIR, e.g. --out demo-out."
        )
    cfg = DemoConfig(
        max_drop=max_drop,
        time_budget_s=parse_duration(time_budget),
        threads=threads,
        out=out,
        force=force,
    )
    err = stderr_console()
    with err.status("starting") as status:
        result = run_demo(cfg, progress=lambda msg: status.update(f"{msg} …"))
    data = result.to_dict()
    if json_out:
        emit_json(data)
    else:
        print_search(data, stdout_console())
    if result.chosen is None:
        raise typer.Exit(3)


def register(app: typer.Typer) -> None:
    """Add the ``demo`` command to ``app``."""
    app.command("demo", help=HELP, cls=Command)(demo)
