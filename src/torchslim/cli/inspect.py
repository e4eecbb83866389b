"""``torchslim inspect MODEL``: the optimisation checklist for a model on this machine."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from torchslim.cli._common import DEBUG_OPTION, JSON_OPTION, Command, emit_json, handle_errors
from torchslim.cli._run import NO_VERIFY_OPTION

if TYPE_CHECKING:
    from torchslim.doctor import Finding, Report

__all__ = ["inspect_command", "register"]

HELP = """\
Check a model and this machine before optimising: what to fuse, what to quantize, what will break export, and whether threads, CPU features and backends are set up for fast inference.

Prints a model summary (parameters, size, FLOPs at batch 1, layer types, fusable patterns, quantizable share), a checklist (✓ fine or an opportunity, ! worth fixing, ✗ wrong results or a broken step) with a concrete recommendation per item, and a score (100 minus 8 per !, 25 per ✗).

Loaded models are put in eval mode, so Dropout/BatchNorm left in training mode are reported only when the loader recorded them (training_mode_at_load). Python API: torchslim.doctor.diagnose(), inspect_model(), check_environment().

\b
Examples:
  torchslim inspect torchvision:resnet18
  torchslim inspect torchslim:fashion_cnn --data torchslim:fashion_mnist
  torchslim inspect weights.pt --arch torchvision:resnet18 --input-shape 1x3x160x160
  torchslim inspect mypkg.models:build --input-shape 1x16
  torchslim inspect model.onnx --json | jq .score
  torchslim inspect torchslim:fashion_resnet --profile
"""

_ICONS = {"info": ("✓", "green"), "warn": ("!", "yellow"), "fail": ("✗", "red")}


def register(app: typer.Typer) -> None:
    """Add the ``inspect`` command to ``app``."""
    app.command(
        "inspect",
        help=HELP,
        short_help="Checklist: what to optimise, what will break.",
        cls=Command,
    )(inspect_command)


@handle_errors
def inspect_command(
    model: str = typer.Argument(
        ...,
        metavar="MODEL",
        help="Model source: torchvision:NAME, torchslim:fashion_cnn, file.pt/.safetensors "
        "(with --arch), file.pt2, file.onnx, hf:DIR or pkg.module:factory.",
    ),
    data: str | None = typer.Option(
        None,
        "--data",
        help="Data source for DataLoader advice and a shape check, e.g. "
        "torchslim:fashion_mnist, DIR/, data.npz, synthetic.",
    ),
    arch: str | None = typer.Option(
        None, "--arch", help="Architecture for weights-only files, e.g. torchvision:resnet18."
    ),
    input_shape: str | None = typer.Option(
        None,
        "--input-shape",
        help="Input shape(s), e.g. 1x3x224x224 or "
        "input_ids:1x128:int64,attention_mask:1x128:int64.",
    ),
    trust_pickle: bool = typer.Option(
        False,
        "--trust-pickle",
        help="Allow unpickling a full module (runs code from the file: "
        "only for files you created).",
    ),
    profile: bool = typer.Option(
        False,
        "--profile",
        help="Also profile one batch-1 call (torch.profiler, or an artifact's own runtime) and "
        "add the top bottleneck findings to the checklist (see torchslim profile).",
    ),
    no_verify: bool = NO_VERIFY_OPTION,
    json_out: bool = JSON_OPTION,
    debug: bool = DEBUG_OPTION,
) -> None:
    """Inspect MODEL and print the checklist."""
    from torchslim.cli._common import stderr_console
    from torchslim.doctor import diagnose
    from torchslim.models import load_model

    err = stderr_console()
    with err.status(f"Loading {model} …"):
        loaded = load_model(
            model,
            arch=arch,
            input_spec=input_shape,
            trust_pickle=trust_pickle,
            verify=not no_verify,
        )
    dataset = None
    if data:
        from torchslim.data import load_data

        with err.status(f"Loading data {data} …"):
            dataset = load_data(data, input_spec=loaded.input_spec)
    art = loaded.metadata.get("artifact")
    summary = _artifact_summary(art) if art is not None else None
    report = None
    if loaded.module is not None:
        with err.status("Inspecting …"):
            report = diagnose(loaded, dataset)
    profiled = None
    if profile:
        from torchslim.profile import profile as run_profile

        with err.status("Profiling one call …"):
            profiled = run_profile(loaded, batch=1, peak=False, iterations=20)
        if report is not None:
            report = _with_profile(report, profiled)
    if json_out:
        out = report.to_dict() if report is not None else {}
        if summary is not None:
            out["artifact"] = summary
        if profiled is not None:
            out["profile"] = _profile_summary(profiled)
        emit_json(out)
        return
    if summary is not None:
        _print_artifact(summary)
    if report is not None:
        _print_report(report)
    elif profiled is not None:
        from torchslim.cli._common import stdout_console
        from torchslim.cli.profile import print_findings

        print_findings(stdout_console(), profiled, PROFILE_FINDINGS)


PROFILE_FINDINGS = 3
"""How many bottleneck findings of ``--profile`` join the checklist."""


def _with_profile(report: Report, profiled: Any) -> Report:
    """The report with the profile's top findings appended to the model checklist, re-scored."""
    import dataclasses

    from torchslim.doctor import score

    extra = tuple(a.to_finding() for a in profiled.findings[:PROFILE_FINDINGS])
    findings = (*report.findings, *extra)
    return dataclasses.replace(
        report, findings=findings, score=score([*findings, *report.environment])
    )


def _profile_summary(profiled: Any) -> dict[str, Any]:
    """What ``inspect --profile --json`` adds under ``"profile"``."""
    return {
        "runtime": profiled.runtime,
        "batch": profiled.batch,
        "latency_ms": profiled.latency_ms,
        "layer_sum_ms": profiled.layer_sum_ms,
        "overhead_share": profiled.overhead_share,
        "slowest": [x.to_dict() for x in profiled.top(5)],
        "findings": [a.to_dict() for a in profiled.findings[:PROFILE_FINDINGS]],
        "table": profiled.table,
    }


def _artifact_summary(art: Any) -> dict[str, Any]:
    """Recipe, manifest facts and the metrics measured when the artifact was made."""
    m = art.manifest
    return {
        "path": str(art.path),
        "source": art.source,
        "runtime": m.get("runtime"),
        "representation": art.representation,
        "steps": art.recipe.describe(),
        "recipe": art.recipe.to_dict(),
        "deployment_files": m.get("deployment_files"),
        "size_mb": art.size_mb,
        "created": m.get("created"),
        "versions": m.get("versions"),
        "machine": (m.get("machine") or {}).get("fingerprint"),
        "metrics": m.get("metrics"),
        "verified": True,
    }


def _print_artifact(s: dict[str, Any]) -> None:
    from torchslim.cli._common import stdout_console

    con = stdout_console()
    met = s.get("metrics") or {}
    con.print(f"[bold]artifact[/] {s['path']} (hashes verified) from {s['source']}")
    con.print("  recipe: " + " → ".join(s["steps"]))
    con.print(
        f"  runtime: {s['runtime']}; files: {', '.join(s['deployment_files'] or [])} "
        f"({s['size_mb']:.3f} MB)"
    )
    if met.get("accuracy") is not None:
        con.print(
            f"  accuracy {met['accuracy']:.2%} vs {met['baseline_accuracy']:.2%} "
            f"(drop {met['drop_points']:.2f} points) on {met.get('eval_data')}"
        )
    for b, sp in (met.get("speedup") or {}).items():
        con.print(f"  batch {b}: {sp['candidate_ms']:.3f} ms, {sp['ratio']:.2f}× the original")


def _human_bytes(n: int | None) -> str:
    if n is None:
        return "—"
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"


def _human_count(n: float | None, unit: str = "") -> str:
    if n is None:
        return "—"
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {suffix}{unit}"
    return f"{n:.0f} {unit}".strip()


def _summary_rows(s: dict[str, Any]) -> list[tuple[str, str]]:
    rows = [("source", f"{s.get('source')} ({s.get('kind')}, {s.get('type')})")]
    total = s.get("params_total")
    trainable = s.get("params_trainable")
    rows.append(
        (
            "parameters",
            f"{total:,}" + (f" ({trainable:,} trainable)" if trainable is not None else "")
            if total is not None
            else "—",
        )
    )
    rows.append(("size fp32", _human_bytes(s.get("size_fp32_bytes"))))
    if s.get("file_bytes") is not None:
        rows.append(("size on disk", _human_bytes(s["file_bytes"])))
    spec = s.get("input_spec")
    if spec:
        rows.append(
            (
                "inputs",
                ", ".join(
                    f"{k} {'x'.join(map(str, v['shape']))} {v['dtype']}" for k, v in spec.items()
                ),
            )
        )
    if "flops" in s:
        rows.append(("FLOPs (batch 1)", _human_count(s.get("flops"), "FLOPs")))
    q = s.get("quantizable")
    if q:
        share = q.get("flops_share")
        rows.append(
            (
                "quantizable",
                f"{100 * q['params_share']:.0f}% of params"
                + (f", {100 * share:.0f}% of FLOPs" if share is not None else ""),
            )
        )
    patterns = s.get("fusable_patterns")
    if patterns is not None:
        counts: dict[str, int] = {}
        for p in patterns:
            counts[p["pattern"]] = counts.get(p["pattern"], 0) + 1
        found = ", ".join(f"{n}× {k}" for k, n in counts.items()) or "none"
        rows.append(("fusable", f"{found} (by {s.get('pattern_method')})"))
    at_load = s.get("training_mode_at_load")
    rows.append(
        ("train mode at load", "unknown (loader calls eval())" if at_load is None else str(at_load))
    )
    return rows


def _print_report(report: Report) -> None:
    from rich.table import Table

    from torchslim.cli._common import stdout_console

    out = stdout_console()
    s = report.model_summary
    table = Table(title="Model", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in _summary_rows(s):
        table.add_row(key, value)
    out.print(table)

    layers = s.get("layers") or {}
    if layers:
        lt = Table(title="Layer types", title_justify="left")
        for col in ("type", "count", "params", "FLOPs"):
            lt.add_column(col, justify="left" if col == "type" else "right")
        for name, v in list(layers.items())[:12]:
            lt.add_row(name, str(v["count"]), f"{v['params']:,}", _human_count(v["flops"]))
        if len(layers) > 12:
            lt.add_row(f"… {len(layers) - 12} more", "", "", "")
        out.print(lt)

    _print_findings(out, "Model checklist", report.findings)
    _print_findings(out, "Environment checklist", report.environment)
    color = {"A": "green", "B": "green", "C": "yellow", "D": "yellow"}.get(report.grade, "red")
    out.print(
        f"\n[bold]Score: [{color}]{report.score}/100 ({report.grade})[/{color}][/bold]  "
        "(100 minus 8 per !, 25 per ✗)"
    )


def _print_findings(out: Any, title: str, findings: tuple[Finding, ...]) -> None:
    from rich.markup import escape

    out.print(f"\n[bold]{title}[/bold]")
    if not findings:
        out.print("  [green]✓[/green] nothing to report")
    for f in findings:
        icon, color = _ICONS[f.severity]
        out.print(f"  [{color}]{icon}[/{color}] {escape(f.title)}")
        if f.detail:
            out.print(f"      [dim]{escape(f.detail)}[/dim]")
        if f.recommendation:
            out.print(f"      → {escape(f.recommendation)}")
