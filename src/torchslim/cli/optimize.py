"""``torchslim optimize MODEL``: search recipes for the fastest variant within the budget."""

from __future__ import annotations

from typing import Any

import typer

from torchslim.cli import _run
from torchslim.cli._common import (
    DEBUG_OPTION,
    JSON_OPTION,
    Command,
    handle_errors,
    parse_duration,
)

__all__ = ["optimize", "parse_duration", "register"]

_HELP = (
    "Search recipes (pruning + recovery, quantization, runtime and its settings) for the fastest "
    "variant of MODEL that stays within the accuracy budget, each candidate built in its own "
    "process, re-loaded from its files, evaluated on --eval in the runtime it ships in and "
    "measured interleaved with the original. Writes OUT/best (the chosen artifact), "
    "OUT/search.json (every candidate, why it was accepted or not), OUT/report.html (Pareto "
    "plot and table; opens offline) and OUT/report.md.\n\n"
    "Presets: fast (no retraining: quantization + runtime), balanced (adds structured pruning: "
    "each level gets a short recovery first and only the promising ones — successive halving — "
    "the full one; needs --train), thorough (more levels, longer recovery); or a YAML file of "
    "search-space fields.\n\n"
    "Ctrl-C or a kill keeps OUT/best (the best so far); --resume continues without redoing "
    "finished candidates.\n\n"
    "Exit codes: 0 a variant was chosen; 3 nothing met the constraints (the table says why); "
    "2 bad input.\n\n"
    "Examples:\n\n"
    "  torchslim optimize torchslim:fashion_cnn --calib 'torchslim:fashion_mnist?split=train"
    "&limit=512' --eval torchslim:fashion_mnist --max-drop 1 --out opt\n\n"
    "  torchslim optimize torchslim:fashion_resnet --preset balanced --train "
    "'torchslim:fashion_mnist?split=train' --calib ... --eval ... --batch 1,64 --time-budget 20m"
)


def optimize(
    model: str = typer.Argument(..., metavar="MODEL", help="The model source."),
    calib: str | None = typer.Option(None, "--calib", help="Calibration data (static INT8)."),
    eval_data: str | None = typer.Option(None, "--eval", help="Evaluation data (required)."),
    train: str | None = typer.Option(None, "--train", help="Training data (pruning recovery)."),
    preset: str = typer.Option(
        "fast", "--preset", help="fast, balanced, thorough, edge or SPACE.yaml."
    ),
    target: str = typer.Option(
        "cpu",
        "--target",
        help="cpu (this machine's runtimes) or edge (ExecuTorch/XNNPACK programs for phones and "
        "boards: the edge preset; pair with --max-size-mb).",
    ),
    max_drop: float | None = typer.Option(
        None, "--max-drop", help="Accuracy budget in points (default 1)."
    ),
    max_drop_rel: float | None = typer.Option(
        None,
        "--max-drop-rel",
        help="Accuracy budget relative to the original, in percent (1: keep 99% of its "
        "accuracy); instead of --max-drop.",
    ),
    batch: str = typer.Option(
        "1",
        "--batch",
        help="Batch sizes to optimise for, e.g. 1,64: a variant must be measurably faster at "
        "each; ranked by the geometric mean of its speed-ups.",
    ),
    target_latency_ms: float | None = typer.Option(None, "--target-latency-ms"),
    max_size_mb: float | None = typer.Option(None, "--max-size-mb", help="Size limit (MB)."),
    max_memory_mb: float | None = typer.Option(
        None, "--max-memory-mb", help="Peak-memory limit while running, first batch (MiB)."
    ),
    time_budget: str = typer.Option("20m", "--time-budget", help="e.g. 20m, 90s, 1h."),
    max_trials: int | None = typer.Option(None, "--max-trials", min=1),
    sampler: str = typer.Option("tpe", "--sampler", help="tpe, random or grid."),
    out: str = typer.Option("optimize-out", "--out", "-o", help="Output directory."),
    storage: str | None = typer.Option(None, "--storage", help="Optuna storage URL."),
    resume: bool = typer.Option(False, "--resume", help="Continue the search in --out."),
    threads: int | None = typer.Option(None, "--threads", help="Intra-op threads."),
    min_time: float = typer.Option(0.5, "--min-time", help="Seconds measured per model/batch."),
    seed: int = typer.Option(0, "--seed"),
    executor: str = typer.Option(
        "local",
        "--executor",
        help="Where candidates are built: local (worker processes here) or ray (a Ray "
        "cluster; measuring stays here, one candidate at a time).",
    ),
    address: str | None = typer.Option(
        None, "--address", help="Ray address: auto, host:port, ray://host:10001, or local."
    ),
    fmt: str = typer.Option(
        "table", "--format", help="What to print: table, md (the Markdown report) or json."
    ),
    force: bool = _run.FORCE_OPTION,
    trust_code: bool = _run.TRUST_CODE_OPTION,
    json_out: bool = JSON_OPTION,
    debug: bool = DEBUG_OPTION,
) -> None:
    """Search for the fastest variant of MODEL within the budget."""
    from torchslim.cli._common import emit_json, parse_int_list, stderr_console, stdout_console
    from torchslim.errors import TorchslimError
    from torchslim.search import optimize as run

    if fmt not in ("table", "md", "json"):
        raise TorchslimError(f"Unknown --format '{fmt}'.", "Use table, md or json.")
    if target not in ("cpu", "edge"):
        raise TorchslimError(f"Unknown --target '{target}'.", "Use cpu or edge.")
    if max_drop is not None and max_drop_rel is not None:
        raise TorchslimError(
            "--max-drop and --max-drop-rel are two ways to give one budget.",
            "Give one: --max-drop 1 (points) or --max-drop-rel 1 (percent of the original).",
        )
    if target == "edge":
        if preset not in ("fast", "edge"):
            raise TorchslimError(
                "--target edge chooses the edge search space; it cannot be combined with "
                f"--preset {preset}.",
                "Drop --preset, or give a SPACE.yaml with runtimes: [executorch].",
            )
        preset = "edge"
    err = stderr_console()
    with err.status("Starting the search …") as status:
        result = run(
            model,
            calib=calib,
            eval=eval_data,
            train=train,
            space=preset,
            max_drop=1.0 if max_drop is None else max_drop,
            max_drop_rel=max_drop_rel,
            batch_sizes=tuple(parse_int_list(batch, "--batch")),
            target_latency_ms=target_latency_ms,
            max_size_mb=max_size_mb,
            max_memory_mb=max_memory_mb,
            time_budget_s=parse_duration(time_budget),
            max_trials=max_trials,
            sampler=sampler,
            out=out,
            storage=storage,
            resume=resume,
            force=force,
            threads=threads,
            trust_code=trust_code,
            min_time_s=min_time,
            seed=seed,
            executor=executor,
            address=address,
            progress=_progress(status, parse_duration(time_budget)),
        )
    data = result.to_dict()
    if json_out or fmt == "json":
        emit_json(data)
    elif fmt == "md":
        from torchslim._json import to_jsonable
        from torchslim.report import render_search_markdown

        typer.echo(render_search_markdown(to_jsonable(data)))
    else:
        print_search(data, stdout_console())
    if result.chosen is None:
        raise typer.Exit(3)


def _progress(status: Any, budget_s: float) -> Any:
    """A live status line: the stage and candidate, the best so far, the time left."""
    import time

    start = time.perf_counter()
    best = ["none yet"]

    def show(msg: str) -> None:
        if msg.startswith("New best: "):
            best[0] = msg.removeprefix("New best: ")
        left = max(0.0, budget_s - (time.perf_counter() - start))
        status.update(f"{msg} … [dim]| best: {best[0]} | {left / 60:.1f} min left[/]")

    return show


def print_search(d: dict[str, Any], con: Any) -> None:
    """The candidate table and the verdict."""
    from rich.table import Table

    bs = [str(x) for x in d["constraints"].get("batch_sizes") or [d["constraints"]["batch_size"]]]
    base = d["baseline"]
    t = Table(
        title=f"optimize {base['source']}: {len(d['candidates'])} candidates, "
        f"{d['seconds']} s ({d['stopped']})"
    )
    cols = ["recipe", "status", "top-1", "drop (pts)"]
    for b in bs:
        cols += [f"ms b={b}", f"speed-up b={b} [95% CI]"]
    for col in [*cols, "MB"]:
        t.add_column(col, justify="left" if col in ("recipe", "status") else "right")
    t.add_row(
        "original",
        "",
        "—" if base["accuracy"] is None else f"{base['accuracy']:.2%}",
        "",
        *[x for b in bs for x in (f"{base['latency_ms'][b]:.3f}", "1.00×")],
        f"{base['size_mb'] or 0:.3f}",
    )
    chosen = (d.get("chosen") or {}).get("key")
    for c in d["candidates"]:
        mark = "★ " if c["key"] == chosen else ""
        label = mark + " → ".join(c["steps"])
        if c.get("reason"):
            label += f"\n[yellow]{str(c['reason'])[:110]}[/]"
        t.add_row(
            label,
            c["status"],
            "—" if c.get("accuracy") is None else f"{c['accuracy']:.2%}",
            "—" if c.get("drop_points") is None else f"{c['drop_points']:+.2f}",
            *[x for b in bs for x in _speed_cells(c, b)],
            "—" if c.get("size_mb") is None else f"{c['size_mb']:.3f}",
        )
    con.print(t)
    if chosen:
        con.print(
            f"Chosen: {' → '.join(d['chosen']['steps'])}; artifact {d['artifact']}; "
            f"report {d['out']}/report.html"
        )
    else:
        con.print(
            "[bold]No candidate met the constraints[/]; nothing was chosen "
            f"(report: {d['out']}/report.html)."
        )
        for c in closest(d):
            con.print(f"  closest: {' → '.join(c['steps'])}\n    [yellow]{c['reason']}[/]")


def closest(d: dict[str, Any], n: int = 3) -> list[dict[str, Any]]:
    """The ``n`` built candidates nearest to acceptance: fewest broken rules, then the smallest
    accuracy drop, then the highest speed-up at the first batch size."""
    b = str(d["constraints"]["batch_size"])
    built = [c for c in d["candidates"] if c.get("status") == "rejected"]

    def key(c: dict[str, Any]) -> tuple[int, float, float]:
        rules = len(str(c.get("reason") or "").split("; "))
        drop = c.get("drop_points")
        ratio = ((c.get("speedup") or {}).get(b) or {}).get("ratio") or 0.0
        return rules, float("inf") if drop is None else max(drop, 0.0), -float(ratio)

    return sorted(built, key=key)[:n]


def _speed_cells(c: dict[str, Any], b: str) -> tuple[str, str]:
    lat = (c.get("latency_ms") or {}).get(b)
    sp = (c.get("speedup") or {}).get(b)
    return (
        "—" if lat is None else f"{lat:.3f}",
        "—" if sp is None else f"{sp['ratio']:.2f}× [{sp['ci95'][0]:.2f}–{sp['ci95'][1]:.2f}]",
    )


def register(app: typer.Typer) -> None:
    """Add the ``optimize`` command to ``app``."""
    app.command(
        "optimize",
        help=_HELP,
        short_help="Search recipes within a budget.",
        no_args_is_help=True,
        cls=Command,
    )(handle_errors(optimize))
