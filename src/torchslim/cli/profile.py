"""``torchslim profile MODEL``: where the time goes, per layer and per operator, in a runtime's
own profiler, with bottleneck advice. A thin layer over :func:`torchslim.profile.profile`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from torchslim.cli._common import (
    DEBUG_OPTION,
    JSON_OPTION,
    Command,
    emit_json,
    handle_errors,
    parse_int_list,
    stderr_console,
    stdout_console,
)
from torchslim.cli._run import NO_VERIFY_OPTION

if TYPE_CHECKING:
    from torchslim.profile.result import ProfileResult

__all__ = ["print_findings", "profile_command", "register"]

HELP = """\
Show where the time and memory of one model call go: per layer (with the nn.Module it belongs to) and per operator, measured by the runtime's own profiler, next to the end-to-end latency that bench measures, with bottleneck advice.

Runtimes: eager (torch.profiler with shapes, FLOPs and memory; grouped by operator and by nn.Module, self and total time, achieved GFLOP/s and % of this machine's GEMM peak, peak memory per layer), inductor (the same profiler on the torch.compile'd model, by kernel), onnxruntime (the session's own profiling, each node of the optimised graph mapped back to the ONNX nodes and modules it came from), openvino (per-layer performance counters: layer, type, kernel and the precision it ran in: an INT8 model shows which layers ran in int8 and which in f32/bf16). An artifact directory is profiled in its own runtime by default.

Advice: convolution (or matmul) layers that dominate and the blocks to prune; time lost in reorders/transposes; float layers inside an INT8 model and their cost; per-call overhead at batch 1.

--trace FILE writes a Chrome trace (eager, inductor, onnxruntime): open it in https://ui.perfetto.dev or chrome://tracing. Each profile also updates this machine's per-layer latency table for the model under $TORCHSLIM_CACHE_DIR/profile/ (or ~/.cache/torchslim/profile/).

--json prints one object: source, runtime, batch, threads, iterations, latency_ms, profiled_ms, layer_sum_ms, overhead_ms, overhead_share, profiler_overhead, flops, peak_memory_mb, peak_gflops, precision, layers, modules, operators, findings, trace, table, machine, notes (see torchslim.profile.result).

\b
Examples:
  torchslim profile torchslim:fashion_resnet
  torchslim profile torchslim:fashion_resnet --runtime openvino
  torchslim profile cnn_int8/            (an artifact, in its own runtime)
  torchslim profile torchvision:mobilenet_v2 --runtime onnxruntime --trace trace.json
  torchslim profile torchslim:minilm --batch 8 --top 20 --json
"""


def register(app: typer.Typer) -> None:
    """Add the ``profile`` command to ``app``."""
    app.command(
        "profile",
        help=HELP,
        short_help="Where the time goes: per layer, per operator, with advice.",
        no_args_is_help=True,
        cls=Command,
    )(handle_errors(profile_command))


def profile_command(
    model: str = typer.Argument(
        ...,
        metavar="MODEL",
        help="Model source or artifact directory: torchslim:fashion_resnet, torchvision:NAME, "
        "file.pt (with --arch), file.pt2, file.onnx, DIR/, hf:DIR, pkg.module:factory.",
    ),
    runtime: str | None = typer.Option(
        None,
        "--runtime",
        help="eager, inductor, onnxruntime or openvino (default: an artifact's own runtime, "
        "onnxruntime for .onnx, else eager).",
    ),
    batch: str = typer.Option("1", "--batch", "-b", help="Batch size (one positive integer)."),
    top: int = typer.Option(15, "--top", "-k", min=1, help="Rows per table."),
    trace: str | None = typer.Option(
        None, "--trace", help="Write a Chrome-trace JSON here (Perfetto, chrome://tracing)."
    ),
    iterations: int | None = typer.Option(
        None, "--iterations", "-n", min=1, help="Profiled calls (default: ~1 s of calls, 10-100)."
    ),
    threads: int | None = typer.Option(
        None, "--threads", "-t", min=1, help="Intra-op threads (default: torch's setting)."
    ),
    input_shape: str | None = typer.Option(
        None, "--input-shape", help="Input shape(s), batch first: 1x3x224x224 or name:1x128:int64."
    ),
    arch: str | None = typer.Option(
        None, "--arch", help="Architecture for weights-only checkpoints: torchvision:resnet18."
    ),
    trust_pickle: bool = typer.Option(
        False, "--trust-pickle", help="Allow unpickling full modules (only for your own files)."
    ),
    peak: bool = typer.Option(
        True, "--peak/--no-peak", help="Compare FLOP/s with this machine's GEMM peak (cached)."
    ),
    save: bool = typer.Option(
        True, "--save/--no-save", help="Update this machine's per-layer latency table."
    ),
    no_verify: bool = NO_VERIFY_OPTION,
    json_out: bool = JSON_OPTION,
    debug: bool = DEBUG_OPTION,
) -> None:
    """Profile MODEL per layer and per operator and print the advice."""
    from torchslim.errors import TorchslimError
    from torchslim.profile import profile

    sizes = parse_int_list(batch, "--batch")
    if len(sizes) != 1:
        raise TorchslimError(
            f"--batch takes one batch size here, got '{batch}'.",
            "Profile one batch size per run, e.g. --batch 8.",
        )
    err = stderr_console()
    with err.status(f"Profiling {model} ({runtime or 'its own runtime'}, batch {sizes[0]}) …"):
        result = profile(
            model,
            runtime=runtime,
            batch=sizes[0],
            iterations=iterations,
            threads=threads,
            trace=trace,
            input_spec=input_shape,
            arch=arch,
            trust_pickle=trust_pickle,
            verify=not no_verify,
            peak=peak,
            save=save,
        )
    if json_out:
        emit_json(result.to_dict())
        return
    print_report(result, top)


def _ms(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x:.3f}" if x < 10 else f"{x:.1f}"


def _count(x: float | None, unit: str = "") -> str:
    if not x:
        return "–"
    for scale, s in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.3g} {s}{unit}"
    return f"{x:.0f} {unit}".strip()


def print_report(result: ProfileResult, top: int = 15) -> None:
    """The human-readable profile: summary, slowest layers, modules, operators, advice."""
    from rich.markup import escape
    from rich.table import Table

    out = stdout_console()
    r = result
    out.print(
        f"[bold]Profile[/bold]  {escape(r.source)} · {r.runtime} · batch {r.batch} · "
        f"{r.threads} thread{'s' if r.threads != 1 else ''} · {r.iterations} profiled calls",
        highlight=False,
    )
    share = r.layer_sum_ms / r.latency_ms if r.latency_ms > 0 else 0.0
    out.print(
        f"[bold]Time[/bold]     end-to-end {_ms(r.latency_ms)} ms (median, no profiler) · "
        f"layers {_ms(r.layer_sum_ms)} ms ({share:.0%}) · outside the layers "
        f"{_ms(r.overhead_ms)} ms · profiler overhead {r.profiler_overhead:+.0%}",
        highlight=False,
    )
    extras = []
    if r.flops:
        extras.append(f"{_count(r.flops, 'FLOPs')} per call")
    if r.peak_memory_mb is not None:
        extras.append(f"peak memory {r.peak_memory_mb:.2f} MB per call")
    if r.peak_gflops:
        extras.append(f"machine peak {r.peak_gflops:,.0f} GFLOP/s")
    if extras:
        out.print("[bold]Work[/bold]     " + " · ".join(extras), highlight=False)
    if r.precision:
        parts = [
            f"{p} {int(v['layers'])} layers {_ms(v['ms'])} ms ({v['share']:.0%})"
            for p, v in sorted(r.precision.items(), key=lambda kv: -kv[1]["ms"])
        ]
        out.print("[bold]Precision[/bold] " + " · ".join(parts), highlight=False)

    eager = r.runtime == "eager"
    table = Table(title=f"Slowest layers (of {len(r.layers)})", title_justify="left")
    cols = ["layer", "type"]
    if not eager:
        cols.append("module")
    cols += ["precision", "kernel" if r.runtime == "openvino" else "", "self ms"]
    if eager:
        cols.append("total ms")
    cols += ["share", "calls", "GFLOP/s", "% peak"]
    if eager:
        cols.append("mem MB")
    shapes = any(x.shapes for x in r.top(top))
    if shapes:
        cols.append("input shapes")
    cols = [c for c in cols if c]
    for c in cols:
        table.add_column(
            c,
            justify="left"
            if c in ("layer", "type", "module", "kernel", "precision", "input shapes")
            else "right",
        )
    for x in r.top(top):
        row = [escape(x.name or "(model)"), escape(x.type)]
        if not eager:
            row.append(escape(x.module) if x.module is not None else "?")
        row.append(x.precision or "–")
        if r.runtime == "openvino":
            row.append(escape(x.exec_type or ""))
        row.append(_ms(x.self_ms))
        if eager:
            row.append(_ms(x.total_ms))
        row += [
            f"{x.share:.1%}",
            str(x.calls),
            f"{x.gflops_per_s:.1f}" if x.gflops_per_s else "–",
            f"{x.percent_of_peak:.0f}%" if x.percent_of_peak is not None else "–",
        ]
        if eager:
            row.append(f"{x.peak_memory_mb:.2f}" if x.peak_memory_mb is not None else "–")
        if shapes:
            row.append(escape(x.shapes or ""))
        table.add_row(*row)
    out.print(table)

    mods = [m for m in r.modules if m.name and m.name.count(".") <= 1][:top]
    if mods:
        whole = next((m.total_ms for m in r.modules if m.name == ""), None) or r.layer_sum_ms
        mt = Table(title="By module (two levels)", title_justify="left")
        for c in ("module", "type", "total ms", "share"):
            mt.add_column(c, justify="left" if c in ("module", "type") else "right")
        for m in mods:
            mt.add_row(
                escape(m.name),
                escape(m.type),
                _ms(m.total_ms),
                f"{m.total_ms / whole:.0%}" if whole else "–",
            )
        out.print(mt)

    ot = Table(title="By operator", title_justify="left")
    for c in ("operator", "self ms", "share", "calls", "FLOPs", "input shapes"):
        ot.add_column(c, justify="left" if c in ("operator", "input shapes") else "right")
    for o in r.operators[:top]:
        ot.add_row(
            escape(o.name),
            _ms(o.self_ms),
            f"{o.share:.1%}",
            str(o.calls),
            _count(o.flops),
            escape(o.shapes or ""),
        )
    out.print(ot)
    print_findings(out, r)
    for note in r.notes:
        out.print(f"[yellow]note:[/yellow] {escape(note)}", highlight=False)
    if r.trace:
        out.print(
            f"Trace: {escape(r.trace)} (open in https://ui.perfetto.dev or chrome://tracing)",
            highlight=False,
        )
    if r.table:
        out.print(f"Latency table: {escape(r.table)}", style="dim", highlight=False)


def print_findings(out: Any, result: ProfileResult, limit: int | None = None) -> None:
    """The advice, one item per finding: title, evidence, next step."""
    from rich.markup import escape

    out.print("\n[bold]Where the time goes[/bold]")
    found = result.findings[:limit] if limit else result.findings
    if not found:
        out.print("  [green]✓[/green] no bottleneck rule fired")
    for f in found:
        icon = "[yellow]![/yellow]" if f.severity == "warn" else "[green]✓[/green]"
        out.print(f"  {icon} {escape(f.title)}")
        if f.detail:
            out.print(f"      [dim]{escape(f.detail)}[/dim]")
        if f.recommendation:
            out.print(f"      → {escape(f.recommendation)}")
