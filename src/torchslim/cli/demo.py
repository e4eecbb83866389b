"""``torchslim demo``: the main job on the bundled reference model, no arguments needed."""

from __future__ import annotations

from typing import Any

import typer

from torchslim.cli._common import (
    DEBUG_OPTION,
    JSON_OPTION,
    emit_json,
    handle_errors,
    stderr_console,
    stdout_console,
)

HELP = (
    "Run the whole loop on a bundled default: checklist, baseline, candidate optimisations "
    "(fusion on ONNX Runtime/OpenVINO, INT8 dynamic and static), each checked for accuracy and "
    "fidelity against the baseline and measured side by side; then recommend the fastest variant "
    "within the accuracy budget and write it with report.json to --out.\n\n"
    "Examples:\n\n"
    "  torchslim demo\n\n"
    "  torchslim demo --model torchslim:fashion_resnet --max-drop 0.5 --out resnet-out\n\n"
    "  torchslim demo --json > demo.json"
)


@handle_errors
def demo(
    model: str = typer.Option("torchslim:fashion_cnn", help="Model source."),
    data: str = typer.Option("torchslim:fashion_mnist", help="Labelled evaluation data."),
    calib: str = typer.Option(
        "torchslim:fashion_mnist?split=train&limit=512", help="Calibration data for static INT8."
    ),
    max_drop: float = typer.Option(1.0, help="Accuracy budget: largest allowed drop in points."),
    threads: int = typer.Option(2, help="Intra-op threads for every variant."),
    min_time: float = typer.Option(1.0, help="Seconds of measuring per model and batch size."),
    out: str = typer.Option("demo-out", help="Output directory (replaced atomically)."),
    json_out: bool = JSON_OPTION,
    debug: bool = DEBUG_OPTION,
) -> None:
    """Measure, optimise and check the bundled reference model; recommend the best variant."""
    from torchslim.demo import DemoConfig, run_demo

    cfg = DemoConfig(model, data, calib, max_drop, threads, (1, 32), min_time, out)
    err = stderr_console()
    with err.status("starting") as status:
        result = run_demo(cfg, progress=lambda msg: status.update(msg))
    if json_out:
        emit_json(result.to_dict())
        return
    _print(result)


def _fmt(v: Any, pattern: str) -> str:
    return "—" if v is None else format(v, pattern)


def _print(result: Any) -> None:
    from rich.table import Table

    con = stdout_console()
    con.print(f"[bold]torchslim demo[/] — {result.config.model} on {result.config.data}")
    con.print(f"Machine: {result.machine}; {result.config.threads} threads")
    con.print(f"Checklist score: {result.checklist_score}")
    for f in result.findings:
        con.print(f"  • {f}")
    table = Table(title=f"Variants (budget: ≤ {result.config.max_drop:g} point accuracy drop)")
    columns = ("variant", "top-1 %", "drop", "cosine", "MB", "ms b=1", "× b=1 [95% CI]")
    for col in (*columns, "ms b=32", "× b=32"):
        table.add_column(col, justify="left" if col == "variant" else "right")
    for v in result.variants:
        ci = f" [{v.speedup_ci95[0]:.2f}–{v.speedup_ci95[1]:.2f}]" if v.speedup_ci95 else ""
        mark = "★ " if v.name == result.recommended else ""
        label = mark + v.name
        if v.status != "ok":
            label += f"\n[red]{v.status}{': ' + v.error[:70] if v.error else ''}[/]"
        table.add_row(
            label,
            _fmt(None if v.accuracy is None else 100 * v.accuracy, ".2f"),
            _fmt(v.drop_points, ".2f"),
            _fmt(v.cosine, ".4f"),
            _fmt(v.size_mb, ".2f"),
            _fmt(v.p50_ms.get(1), ".3f"),
            (_fmt(v.speedup.get(1), ".2f") + ci) if v.speedup else "—",
            _fmt(v.p50_ms.get(32), ".3f"),
            _fmt(v.speedup.get(32), ".2f"),
        )
    con.print(table)
    if result.recommended:
        con.print(
            f"Recommended: [bold]{result.recommended}[/] — saved to {result.out}/model "
            f"with {result.out}/report.json"
        )
    else:
        con.print(
            "No variant was both within the accuracy budget and measurably faster than the "
            f"baseline here; the report is in {result.out}/report.json."
        )


def register(app: typer.Typer) -> None:
    """Add the ``demo`` command to ``app``."""
    app.command("demo", help=HELP)(demo)
