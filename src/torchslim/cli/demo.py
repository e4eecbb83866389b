"""``torchslim demo``: the main job on the bundled reference model, no arguments needed."""

from __future__ import annotations

from typing import Any

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
    out: str = typer.Option(
        "demo-out",
        help="Output directory: the recommended artifact + demo.json. An earlier demo output is "
        "replaced atomically; any other non-empty directory needs --force.",
    ),
    force: bool = typer.Option(False, "--force", help="Replace a non-empty --out directory."),
    json_out: bool = JSON_OPTION,
    debug: bool = DEBUG_OPTION,
) -> None:
    """Measure, optimise and check the bundled reference model; recommend the best variant."""
    from torchslim.demo import DemoConfig, run_demo

    if not out.strip():  # Path("") is the current directory: never write the demo there
        raise TorchslimError(
            "The output directory is empty.", "Give --out DIR, e.g. --out demo-out."
        )
    cfg = DemoConfig(model, data, calib, max_drop, threads, (1, 32), min_time, out, force)
    err = stderr_console()
    with err.status("starting") as status:
        result = run_demo(cfg, progress=lambda msg: status.update(msg))
    if json_out:
        emit_json(result.to_dict())
        return
    _print(result.to_dict())


def _fmt(v: Any, pattern: str) -> str:
    return "—" if v is None else format(v, pattern)


def _print(d: dict[str, Any]) -> None:
    from rich.table import Table

    cfg = d["config"]
    con = stdout_console()
    con.print(f"[bold]torchslim demo[/] — {cfg['model']} on {cfg['data']}")
    con.print(f"Machine: {d['machine']}; {cfg['threads']} threads")
    con.print(f"Checklist score: {d['checklist_score']}")
    for f in d["findings"]:
        con.print(f"  • {f}")
    rows = d["candidates"]
    base_acc = next((r["baseline_accuracy"] for r in rows if r["baseline_accuracy"]), None)
    table = Table(
        title=f"Candidates vs the baseline (top-1 {_fmt(base_acc, '.2%')}; budget ≤ "
        f"{cfg['max_drop']:g} point drop, speed-up CI above 1)"
    )
    for col in ("candidate", "top-1", "drop (pts)", "cosine", "MB", "× b=1 [95% CI]", "× b=32"):
        table.add_column(col, justify="left" if col == "candidate" else "right")
    for r in rows:
        sp = r.get("speedup") or {}
        one, big = sp.get("1"), sp.get("32")
        label = ("★ " if r["recommended"] else "") + r["name"]
        if r["rejected_because"]:
            label += f"\n[yellow]{'; '.join(r['rejected_because'])[:110]}[/]"
        table.add_row(
            label,
            _fmt(r["accuracy"], ".2%"),
            _fmt(r["drop_points"], "+.2f"),
            _fmt((r.get("fidelity") or {}).get("cosine"), ".5f"),
            _fmt(r["size_mb"], ".3f"),
            "—"
            if one is None
            else f"{one['ratio']:.2f} [{one['ci95'][0]:.2f}–{one['ci95'][1]:.2f}]",
            "—" if big is None else f"{big['ratio']:.2f}",
        )
    con.print(table)
    if d["recommended"]:
        con.print(
            f"Recommended: [bold]{d['recommended']}[/], written to {d['artifact']}/ "
            f"(torchslim bench {d['artifact']}; torchslim.load_artifact({d['artifact']!r}))"
        )
    else:
        con.print("Nothing met the budget and was measurably faster; nothing is recommended.")


def register(app: typer.Typer) -> None:
    """Add the ``demo`` command to ``app``."""
    app.command("demo", help=HELP, cls=Command)(demo)
