"""``torchslim predict MODEL DATA --out FILE``: offline batch inference over a whole data set.

A thin layer over :func:`torchslim.predict.predict`; heavy imports happen inside the command.
"""

from __future__ import annotations

import sys
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

__all__ = ["SKIPPED_EXIT_CODE", "predict_command", "register"]

SKIPPED_EXIT_CODE = 4
"""Exit code of a run that finished and wrote its file but skipped at least one sample."""

HELP = """\
Run MODEL over every sample of DATA and write the predictions to FILE, as fast as this machine allows.

MODEL is any model source or an artifact directory (from export, quantize, prune ...). DATA is any data source torchslim reads (torchslim:fashion_mnist, .npz, .pt, IDX files, ...), a folder of images (JPEG/PNG, flat or one sub-folder per class; .npy arrays too) decoded and preprocessed as the artifact's manifest says (or --preprocess), or a .txt/.jsonl file of sentences for a text model (tokenised with its tokenizer).

Rows keep the input order and carry the sample's id (its path for files): top-k labels and probabilities for classifiers (--topk, 0 for raw logits), the raw outputs or embeddings otherwise. Formats: jsonl, parquet (pyarrow), npy (one structured array).

Speed: --workers auto and the model's threads share the cores by the measured cost of loading a sample vs running the model; --batch-size auto probes for the best throughput within the memory limit, preferring a size the artifact was compiled for. On GPUs (--device cuda:0,1) one model replica per GPU, pinned inputs copied on a side stream while the previous batch computes.

Reliability: the file is written under a temporary name and renamed when complete; progress is checkpointed, so after an interruption --resume continues without losing or duplicating rows. A bad sample (unreadable image, wrong shape, NaN) is skipped and listed with its reason (also in FILE.skipped.jsonl); the exit code is 4 when anything was skipped, 0 otherwise.

\b
Examples:
  torchslim predict torchslim:fashion_cnn torchslim:fashion_mnist --out preds.jsonl
  torchslim predict out/resnet-ov photos/ --out preds.parquet --batch-size auto
  torchslim predict torchslim:minilm sentences.txt --out emb.npy --json
  torchslim predict torchslim:fashion_cnn torchslim:fashion_mnist --out p.jsonl --resume
  torchslim predict torchslim:fashion_cnn torchslim:fashion_mnist --out p.parquet --ray
"""


def _parse_auto(value: str, what: str, low: int) -> int | str:
    text = value.strip().lower()
    if text == "auto":
        return "auto"
    try:
        n = int(text)
    except ValueError:
        n = low - 1
    if n < low:
        raise TorchslimError(
            f"Invalid {what} '{value}'.", f"Give an integer of at least {low}, or auto."
        )
    return n


def _progress_bar(err: Any, enabled: bool) -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]Predicting[/bold]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]} items/s"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=not enabled,
    )


def _print_summary(summary: Any) -> None:
    from rich.table import Table

    out = stdout_console()
    table = Table(header_style="bold", title="Predictions", title_justify="left", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    loader = summary.loader
    rows = [
        ("file", f"{summary.out} ({summary.format})"),
        ("items", f"{summary.items:,} of {summary.total:,}"),
        ("skipped", f"{len(summary.skipped):,}"),
        ("wall time", f"{summary.wall_s:.2f} s (predicting {summary.run_s:.2f} s)"),
        ("throughput", f"{summary.items_per_s:,.1f} items/s"),
        ("batch size", str(summary.batch_size)),
        ("devices", ", ".join(summary.devices)),
    ]
    if "workers" in loader:
        rows.append(("loader", f"{loader['workers']} worker(s), {loader['threads']} thread(s)"))
    if summary.resumed_rows:
        rows.append(("resumed", f"{summary.resumed_rows:,} samples were already done"))
    for key, value in rows:
        table.add_row(key, value)
    out.print(table)
    if summary.batch_probe:
        out.print(f"[dim]batch size auto: {summary.batch_probe['reason']}[/dim]", highlight=False)
    if "reason" in loader:
        out.print(f"[dim]split: {loader['reason']}[/dim]", highlight=False)
    for s in summary.skipped[:20]:
        out.print(
            f"[yellow]skipped[/yellow] #{s['index']} {s['id']}: {s['reason']}", highlight=False
        )
    if len(summary.skipped) > 20:
        out.print(f"… and {len(summary.skipped) - 20} more in {summary.out}.skipped.jsonl")


@handle_errors
def predict_command(
    model: str = typer.Argument(
        ..., metavar="MODEL_OR_ARTIFACT", help="Model source or artifact directory."
    ),
    data: str = typer.Argument(
        ...,
        metavar="DATA",
        help="Data source, image folder, or .txt/.jsonl of sentences.",
    ),
    out: str = typer.Option(..., "--out", "-o", help="Output file (.jsonl, .parquet or .npy)."),
    batch_size_opt: str | None = typer.Option(
        None,
        "--batch-size",
        "-b",
        help="Samples per model call, or auto (probe for the best throughput within the memory "
        "limit). Default: the artifact's static size, else ~8 MB of input per batch (8–64).",
    ),
    workers_opt: str = typer.Option(
        "auto", "--workers", "-w", help="DataLoader worker processes, or auto (measured split)."
    ),
    threads: int | None = typer.Option(
        None,
        "--threads",
        "-t",
        help="Intra-op threads of the model (default: chosen with workers).",
    ),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:1 or cuda:0,1."),
    fmt: str | None = typer.Option(
        None, "--format", "-f", help="npy, jsonl or parquet (default: from the file's suffix)."
    ),
    topk: int = typer.Option(5, "--topk", "-k", min=0, help="Classes per sample; 0: raw outputs."),
    resume: bool = typer.Option(
        False, "--resume", help="Continue an interrupted run of the same job writing FILE."
    ),
    force: bool = typer.Option(
        False, "--force", help="Replace FILE and any checkpoint of an interrupted run."
    ),
    memory_limit: float | None = typer.Option(
        None, "--memory-limit", min=1.0, help="MB of memory --batch-size auto may use."
    ),
    preprocess: str | None = typer.Option(
        None, "--preprocess", help="Image preprocessing: 'size=224,normalize=imagenet|none'."
    ),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Only the first N samples."),
    ray: bool = typer.Option(False, "--ray", help="Run with Ray Data (one model per actor)."),
    address: str | None = typer.Option(
        None, "--address", help="Ray cluster address (default: a local cluster)."
    ),
    actors: int | None = typer.Option(None, "--actors", min=1, help="Ray actors (default 2)."),
    trust_code: bool = typer.Option(
        False,
        "--trust-code",
        help="Allow an artifact to rebuild an architecture from outside torchslim's registries.",
    ),
    no_verify: bool = typer.Option(
        False, "--no-verify", help="Skip the artifact's hash check (unsafe; for debugging)."
    ),
    json_out: bool = JSON_OPTION,
    debug: bool = DEBUG_OPTION,
) -> None:
    """Run MODEL over DATA and write the predictions to FILE."""
    from torchslim.predict import predict

    if address and not ray:
        raise TorchslimError("--address applies to --ray.", "Add --ray, or drop --address.")
    batch = _parse_auto(batch_size_opt, "--batch-size", 1) if batch_size_opt else None
    workers = _parse_auto(workers_opt, "--workers", 0)
    err = stderr_console()
    with _progress_bar(err, not json_out) as bar:
        task = bar.add_task("predict", total=None, rate="–")
        import time

        first: list[float] = []  # (time, done) of the first report: rates exclude loading

        def progress(done: int, total: int) -> None:
            now = time.perf_counter()
            if not first:
                first.extend((now, done))
            rate = f"{(done - first[1]) / (now - first[0]):,.0f}" if now > first[0] else "–"
            bar.update(task, completed=done, total=total, rate=rate)

        run: Any = predict  # one call for both kinds of batch size and workers
        try:
            summary = run(
                model,
                data,
                out=out,
                batch_size=batch,
                workers=workers,
                threads=threads,
                device=device,
                format=fmt,
                topk=topk,
                resume=resume,
                force=force,
                memory_limit_mb=memory_limit,
                preprocess=preprocess,
                limit=limit,
                progress=progress,
                ray=ray,
                address=address,
                actors=actors,
                trust_code=trust_code,
                verify=not no_verify,
            )
        except KeyboardInterrupt:
            hint = "Rerun the same command with --resume to continue where it stopped."
            if ray:
                hint = "Rerun the command (--ray runs start over)."
            sys.stderr.write(
                f"error: Interrupted; finished batches are checkpointed.\nhint: {hint}\n"
            )
            raise typer.Exit(130) from None
    if json_out:
        emit_json(summary.to_dict())
    else:
        _print_summary(summary)
    if summary.skipped:
        raise typer.Exit(SKIPPED_EXIT_CODE)


def register(app: typer.Typer) -> None:
    """Add the ``predict`` command to ``app``."""
    app.command(
        "predict",
        help=HELP,
        short_help="Batch inference over a whole data set.",
        cls=Command,
        no_args_is_help=True,
    )(predict_command)
