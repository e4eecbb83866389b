"""``torchslim bench``: latency, throughput, memory, size and FLOPs of one or more models.

A thin layer over :func:`torchslim.measure.measure_models`; heavy imports happen inside the
command.
"""

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
from torchslim.errors import BackendUnavailableError, TorchslimError

if TYPE_CHECKING:
    from torchslim.machine import MachineInfo, PeakFlops
    from torchslim.measure import Measurement, TimingConfig

__all__ = ["bench", "register"]

_HELP = (
    "Measure latency, throughput, memory, size and FLOPs of one or more models, honestly.\n\n"
    "Each model runs a first call (reported apart), warms up until timings settle, then is timed "
    "for at least --repeats calls and --min-time seconds (at most --max-time). Several models "
    "run interleaved (A B A B ...) so machine noise hits them alike; each is compared with the "
    "FIRST model by median latency, with a 95% confidence interval.\n\n"
    "Reported: p50/p90/p99 latency per call with the CI on the median, first-call time, "
    "items/s, peak memory growth (RSS on CPU), on-disk size, parameters, GFLOPs per call, and % "
    "of this machine's GEMM peak (measured once per machine and thread count, then cached in "
    "$TORCHSLIM_CACHE_DIR or ~/.cache/torchslim).\n\n"
    "Examples:\n\n"
    "  torchslim bench torchvision:resnet18 --batch 1,8\n\n"
    "  torchslim bench torchslim:fashion_cnn model_int8.onnx --batch 1,32 --threads 2\n\n"
    "  torchslim bench weights.pt --arch torchvision:resnet18 --input-shape 1x3x160x160\n\n"
    "  torchslim bench torchvision:mobilenet_v2 --json > bench.json\n\n"
    "Runtimes (--runtime): eager (default) runs the model as loaded; a runtime name "
    "(onnxruntime, openvino, torchscript, inductor, export, tensorrt) builds it there first; "
    "'all' builds every runtime available on this machine, checks each against eager FP32 "
    "(parity), measures them side by side and names the fastest per batch size; 'auto' picks "
    "the fastest (runtime, threads, hint) for this machine, caches the choice per model and "
    "machine, and measures it against eager.\n\n"
    "  torchslim bench torchslim:fashion_resnet --runtime all --batch 1,32"
)


def _unique_names(sources: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    names = []
    for src in sources:
        seen[src] = seen.get(src, 0) + 1
        names.append(src if seen[src] == 1 else f"{src} ({seen[src]})")
    return names


def _check_device(device: str) -> None:
    if device not in ("cpu", "cuda"):
        raise TorchslimError(f"Unknown device '{device}'.", "Use --device cpu or --device cuda.")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise BackendUnavailableError("cuda", reason="no CUDA GPU is visible to torch")


def bench(
    models: list[str] = typer.Argument(
        ..., metavar="MODEL", help="Model sources; the first is the baseline for ratios."
    ),
    batch: str = typer.Option("1", "--batch", "-b", help="Batch sizes, comma-separated: 1,8,32."),
    threads: int | None = typer.Option(
        None,
        "--threads",
        "-t",
        help="Intra-op threads (torch.set_num_threads; ONNX Runtime intra_op threads). "
        "Default: torch's current setting.",
    ),
    input_shape: str | None = typer.Option(
        None,
        "--input-shape",
        help="Input shape(s), batch first: 1x3x224x224 or input_ids:1x128:int64,... "
        "(the batch dimension is replaced by --batch).",
    ),
    arch: str | None = typer.Option(
        None, "--arch", help="Architecture for weights-only checkpoints: torchvision:resnet18."
    ),
    trust_pickle: bool = typer.Option(
        False, "--trust-pickle", help="Allow unpickling full modules (only for your own files)."
    ),
    repeats: int = typer.Option(30, "--repeats", "-r", min=1, help="Measured calls at least."),
    min_time: float = typer.Option(
        1.0, "--min-time", min=0.0, help="Measured seconds at least, per model and batch size."
    ),
    max_time: float = typer.Option(
        10.0, "--max-time", min=0.001, help="Measured seconds at most, per model and batch size."
    ),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    runtime: str = typer.Option(
        "eager",
        "--runtime",
        help="eager, a runtime name (onnxruntime, openvino, torchscript, inductor, export, "
        "tensorrt), 'all' (every available runtime, parity-checked, side by side) or 'auto' "
        "(the fastest for this machine, cached).",
    ),
    peak: bool = typer.Option(
        True, "--peak/--no-peak", help="Compute %-of-peak (runs a ~2 s GEMM benchmark once)."
    ),
    refresh_peak: bool = typer.Option(
        False, "--refresh-peak", help="Re-measure the machine's GEMM peak instead of the cache."
    ),
    no_verify: bool = NO_VERIFY_OPTION,
    json_out: bool = JSON_OPTION,
    debug: bool = DEBUG_OPTION,
) -> None:
    """Measure latency, throughput, memory, size and FLOPs of one or more models."""
    _run(
        models,
        batch=batch,
        threads=threads,
        input_shape=input_shape,
        arch=arch,
        trust_pickle=trust_pickle,
        verify=not no_verify,
        repeats=repeats,
        min_time=min_time,
        max_time=max_time,
        device=device,
        peak=peak,
        refresh_peak=refresh_peak,
        json_out=json_out,
        runtime=runtime,
    )


def _run(
    sources: list[str],
    *,
    batch: str,
    threads: int | None,
    input_shape: str | None,
    arch: str | None,
    trust_pickle: bool,
    repeats: int,
    verify: bool = True,
    min_time: float,
    max_time: float,
    device: str,
    peak: bool,
    refresh_peak: bool,
    json_out: bool,
    runtime: str = "eager",
) -> None:
    batch_sizes = parse_int_list(batch, "--batch")
    if max_time < min_time:
        raise TorchslimError(
            f"--max-time {max_time} is shorter than --min-time {min_time}.",
            "Give --max-time at least as long as --min-time.",
        )
    _check_device(device)
    from torchslim.measure import TimingConfig

    config = TimingConfig(min_samples=repeats, min_time_s=min_time, max_time_s=max_time)
    err = stderr_console()

    import torch

    from torchslim.machine import machine_info, machine_peak
    from torchslim.measure import BenchTarget, measure_models, measurements_to_dict
    from torchslim.models import load_model, parse_input_spec

    if threads:
        torch.set_num_threads(threads)
    threads_used = torch.get_num_threads()
    spec = parse_input_spec(input_shape) if input_shape else None

    targets = []
    runtime_info: dict[str, Any] = {}
    with err.status("Loading models…") as status:
        for name, src in zip(_unique_names(sources), sources, strict=True):
            loaded = load_model(
                src, arch=arch, input_spec=spec, trust_pickle=trust_pickle, verify=verify
            )
            base = BenchTarget.from_loaded(loaded, name=name, threads=threads_used, device=device)
            if runtime == "eager" or loaded.module is None:
                targets.append(base)
                continue
            extra, rt_info = _runtime_targets(
                runtime, base, loaded, batch_sizes, threads_used, status.update
            )
            targets += extra
            runtime_info[name] = rt_info
        info = machine_info(include_gpu=device == "cuda")
    peak_flops = None
    if peak:
        with err.status("Measuring this machine's GEMM peak (cached after the first run)…"):
            peak_flops = machine_peak(
                threads=threads_used, device=device, info=info, refresh=refresh_peak
            )

    measurements = _measure_with_progress(
        err, targets, batch_sizes, threads_used, config, peak_flops, info, measure_models
    )
    fastest = _fastest(measurements, runtime_info, batch_sizes)
    if json_out:
        report = measurements_to_dict(measurements, peak=peak_flops, config=config)
        if runtime != "eager":
            report["runtime"] = {"mode": runtime, "models": runtime_info, "fastest": fastest}
        emit_json(report)
        return
    _print_report(measurements, info, peak_flops, config)
    if runtime != "eager":
        _print_runtime_summary(runtime, runtime_info, fastest)


def _runtime_targets(
    runtime: str,
    base: Any,
    loaded: Any,
    batch_sizes: list[int],
    threads: int,
    say: Any,
) -> tuple[list[Any], dict[str, Any]]:
    """Targets for one model under ``--runtime``: eager first, then the built runtimes."""
    from torchslim.measure import BenchTarget
    from torchslim.runtimes.auto import build_variants, cached_autotune, candidate_variants

    module = loaded.require_module()
    spec = loaded.input_spec
    targets = [replace_name(base, f"{base.name} · eager")]
    info: dict[str, Any] = {"variants": {}, "failures": []}
    if runtime == "auto":
        say(f"Choosing the fastest runtime for {base.name} (cached per machine)…")
        choice = cached_autotune(module, spec, batch_sizes=batch_sizes, source=loaded.source)
        info["choice"] = choice.to_dict()
        info["cached"] = choice.cached
        for b, (name, dep) in choice.deployed_by_batch().items():
            label = f"{base.name} · auto b{b}: {name}"
            if any(t.name == label for t in targets):
                continue
            targets.append(BenchTarget(label, dep, spec.example_inputs, module=module))
            info["variants"][label] = {"variant": name, "batch": b}
        return targets, info
    names = None if runtime == "all" else [runtime]
    image = spec is not None and len(spec.inputs[0].shape) == 4
    variants = [
        v
        for v in candidate_variants(names, threads=[threads], image_inputs=image)
        if not (v.runtime == "eager" and not getattr(v.config, "channels_last", False))
    ]
    if not variants:
        raise TorchslimError(
            f"Runtime '{runtime}' is not available on this machine.",
            "Run `torchslim bench MODEL --runtime all` to see what is.",
        )
    say(f"Building and parity-checking {len(variants)} runtime variant(s) for {base.name}…")
    built, failures = build_variants(module, spec, variants)
    info["failures"] = failures
    if runtime != "all" and not built:
        raise TorchslimError(
            f"Runtime '{runtime}' failed for {base.name}: {failures[0]['error'] if failures else ''}",
            "Try another runtime, or --runtime all to compare what works.",
        )
    for v, dep, parity in built:
        label = f"{base.name} · {v.name}"
        targets.append(BenchTarget(label, dep, spec.example_inputs, module=module, threads=threads))
        info["variants"][label] = {
            "variant": v.name,
            "runtime": v.runtime,
            "build_seconds": round(float(dep.build_seconds), 3),
            "parity": parity.to_dict(),
        }
    return targets, info


def replace_name(target: Any, name: str) -> Any:
    """A copy of a bench target under another name."""
    import dataclasses

    return dataclasses.replace(target, name=name)


def _fastest(
    measurements: list[Measurement], runtime_info: dict[str, Any], batch_sizes: list[int]
) -> dict[str, dict[str, str]]:
    """Per model and batch size, the fastest measured variant (by median latency)."""
    out: dict[str, dict[str, str]] = {}
    for model in runtime_info:
        rows = [m for m in measurements if m.name.startswith(f"{model} · ")]
        out[model] = {
            str(b): min(rows, key=lambda m: m.batches[b].latency.p50_ms).name.split(" · ", 1)[1]
            for b in batch_sizes
            if rows
        }
    return out


def _print_runtime_summary(
    runtime: str, runtime_info: dict[str, Any], fastest: dict[str, dict[str, str]]
) -> None:
    out = stdout_console()
    for model, info in runtime_info.items():
        for fail in info.get("failures", []):
            out.print(
                f"[red]✗[/red] {model} · {fail['variant']}: {fail['error'][:160]}", highlight=False
            )
        if runtime == "auto":
            src = "cached choice" if info.get("cached") else "measured now, cached for next time"
            out.print(f"[bold]auto[/bold] {model}: {src}", highlight=False)
        picks = ", ".join(f"batch {b} → {v}" for b, v in fastest.get(model, {}).items())
        out.print(f"[bold]Fastest here[/bold] {model}: {picks}", highlight=False)


def _measure_with_progress(
    err: Any,
    targets: list[Any],
    batch_sizes: list[int],
    threads: int,
    config: TimingConfig,
    peak_flops: PeakFlops | None,
    info: MachineInfo,
    measure_models: Any,
) -> list[Measurement]:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task("Measuring", total=1.0)

        def progress(message: str, fraction: float) -> None:
            bar.update(task, completed=fraction, description=message)

        result: list[Measurement] = measure_models(
            targets,
            batch_sizes,
            threads=threads,
            config=config,
            progress=progress,
            peak=peak_flops,
            machine=info,
        )
    return result


def _fmt(value: float | None, spec: str = ".2f", suffix: str = "") -> str:
    return "–" if value is None else f"{value:{spec}}{suffix}"


def _fmt_ms(ms: float) -> str:
    if ms >= 100:
        return f"{ms:.0f}"
    if ms >= 10:
        return f"{ms:.1f}"
    return f"{ms:.2f}" if ms >= 1 else f"{ms:.3f}"


def _fmt_count(n: int | None) -> str:
    if n is None:
        return "–"
    if n >= 1e6:
        return f"{n / 1e6:.2f}M"
    return f"{n / 1e3:.1f}k" if n >= 1e3 else str(n)


def _fmt_flops(flops: float | None) -> str:
    if flops is None:
        return "–"
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if flops >= scale:
            return f"{flops / scale:.3g} {unit}"
    return f"{flops:.0f}"


def _print_report(
    measurements: list[Measurement],
    info: MachineInfo,
    peak: PeakFlops | None,
    config: TimingConfig,
) -> None:
    from rich.table import Table

    out = stdout_console()
    if not out.is_terminal:
        out.width = max(out.width, 160)  # piped output: do not squeeze the table to 80 columns
    first = measurements[0]
    threads = first.threads
    out.print(f"[bold]Machine[/bold]  {info.summary()}", highlight=False)
    if peak is not None:
        out.print(f"[bold]Peak[/bold]     {peak.summary()}", highlight=False)
    timing = (
        f"warm-up until ±{config.warmup_tolerance:.0%} stable, then ≥{config.min_samples} calls "
        f"and ≥{config.min_time_s:g} s (≤{config.max_time_s:g} s) per model and batch"
    )
    interleave = " · models interleaved" if len(measurements) > 1 else ""
    out.print(
        f"[bold]Run[/bold]      {threads} thread{'s' if threads != 1 else ''} · "
        f"{first.device} · {timing}{interleave}",
        highlight=False,
    )

    models = Table(header_style="bold", title="Models", title_justify="left")
    for col in ("model", "params", "size MiB", "FLOPs/item", "dtype", "threads"):
        models.add_column(col, justify="left" if col == "model" else "right")
    for m in measurements:
        models.add_row(
            m.name,
            _fmt_count(m.params),
            _fmt(m.size_mb, ".2f"),
            _fmt_flops(m.flops_per_item),
            m.dtype,
            str(m.threads),
        )
    out.print(models)

    table = Table(header_style="bold", title="Latency per call (ms)", title_justify="left")
    for col in (
        "model",
        "batch",
        "p50 [95% CI]",
        "p90",
        "p99",
        "1st call",
        "items/s",
        "mem MiB",
        "% peak",
        "vs first",
    ):
        table.add_column(col, justify="left" if col == "model" else "right")
    notes: list[str] = []
    for m in measurements:
        for b, bm in m.batches.items():
            lat = bm.latency
            ci = f"{_fmt_ms(lat.p50_ms)} [{_fmt_ms(lat.ci95_low_ms)}–{_fmt_ms(lat.ci95_high_ms)}]"
            if m is first:
                vs = "baseline"
            else:
                base = first.batches[b].latency
                speed = base.p50_ms / lat.p50_ms
                lo = base.ci95_low_ms / lat.ci95_high_ms
                hi = base.ci95_high_ms / lat.ci95_low_ms
                vs = f"×{speed:.2f} [{lo:.2f}–{hi:.2f}]"
            table.add_row(
                m.name,
                str(b),
                ci,
                _fmt_ms(lat.p90_ms),
                _fmt_ms(lat.p99_ms),
                _fmt_ms(bm.first_call_ms),
                f"{bm.throughput_per_s:,.1f}",
                _fmt(bm.peak_memory_mb, ".1f"),
                _fmt(bm.percent_of_peak, ".1f", "%"),
                vs,
            )
            if lat.ci_coverage < 0.95:
                notes.append(
                    f"{m.name} batch {b}: only {lat.n} samples, the CI is min–max "
                    f"(coverage {lat.ci_coverage:.0%}); raise --max-time."
                )
            if not bm.warmup_stable:
                notes.append(
                    f"{m.name} batch {b}: timings did not settle during warm-up "
                    f"({bm.warmup_calls} calls); treat the numbers with care."
                )
            if bm.percent_of_peak is not None and bm.percent_of_peak > 100:
                notes.append(
                    f"{m.name} batch {b}: above 100% of the measured peak; the peak was probably "
                    "measured while the machine was busy — rerun on a quiet machine with "
                    "--refresh-peak."
                )
    out.print(table)
    out.print(
        "vs first: speed-up of the median latency over the first model (×>1 is faster), with a "
        "conservative 95% interval. Memory: growth above the level before the first call.",
        style="dim",
    )
    if first.load_avg and max(first.load_avg) > info.usable_cores + 1:
        notes.append(
            f"the machine was busy (load average {max(first.load_avg):.1f} on "
            f"{info.usable_cores} cores): absolute numbers are noisy, ratios hold up better."
        )
    for note in notes:
        out.print(f"[yellow]note:[/yellow] {note}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add the ``bench`` command to ``app``."""
    app.command("bench", help=_HELP, no_args_is_help=True, cls=Command)(handle_errors(bench))
