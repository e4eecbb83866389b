"""``torchslim export MODEL --runtime NAME --out DIR``: build, check parity, save."""

from __future__ import annotations

from typing import Any

import typer

from torchslim.cli._common import DEBUG_OPTION, JSON_OPTION, emit_json, handle_errors

__all__ = ["export_command", "export_model", "register"]

HELP = """\
Export MODEL for one runtime, check that it computes what the original computes, and save it.

The model is built for the runtime, then compared with eager FP32 PyTorch on the same inputs at batch 1 and batch 4 (and two sequence lengths for token inputs), with a tolerance for the precision the runtime computes in; a mismatch is an error and nothing is saved. DIR gets the runtime's model file(s) and runtime.json (config, parity, build time), written atomically. Load it back in Python with torchslim.runtimes.load_deployed(DIR).

Runtimes: onnxruntime (model.onnx + the optimised graph), openvino (model.xml/.bin), torchscript (model.ts), export (torch.export model.pt2; --aot for an AOTInductor package), inductor (AOTInductor package), eager (torch.export model.pt2), tensorrt (NVIDIA GPU only).

\b
Examples:
  torchslim export torchslim:fashion_cnn --runtime onnxruntime --out out/cnn-ort
  torchslim export torchvision:resnet18 --runtime openvino --precision default --out out/r18-ov
  torchslim export torchslim:minilm --runtime torchscript --out out/minilm-ts --json
"""

RUNTIME_NAMES = (
    "onnxruntime",
    "openvino",
    "torchscript",
    "export",
    "inductor",
    "eager",
    "tensorrt",
)


def register(app: typer.Typer) -> None:
    """Add the ``export`` command to ``app``."""
    app.command("export", help=HELP, short_help="Export for a runtime, parity-checked.")(
        export_command
    )


def runtime_config(
    runtime: str,
    *,
    opset: int | None = None,
    precision: str | None = None,
    threads: int | None = None,
    aot: bool = False,
) -> Any:
    """The runtime config for the CLI options (defaults elsewhere).

    Raises:
        TorchslimError: Unknown runtime or an option that does not apply.
    """
    from torchslim.errors import TorchslimError
    from torchslim.runtimes import configs as c

    if runtime not in RUNTIME_NAMES:
        raise TorchslimError(
            f"Unknown runtime '{runtime}'.", f"Use one of: {', '.join(RUNTIME_NAMES)}."
        )
    if precision and runtime not in ("openvino", "tensorrt"):
        raise TorchslimError(
            f"--precision applies to openvino and tensorrt, not {runtime}.",
            "Drop --precision (other runtimes compute in FP32).",
        )
    if runtime == "onnxruntime":
        return c.OrtConfig(opset=opset or 18, intra_op_threads=threads)
    if runtime == "openvino":
        try:
            prec = c.Precision(precision or "f32")
        except ValueError:
            raise TorchslimError(
                f"Unknown precision '{precision}'.", "Use f32, bf16, f16 or default."
            ) from None
        return c.OpenVINOConfig(precision=prec, threads=threads)
    if runtime == "torchscript":
        return c.TorchScriptConfig(threads=threads)
    if runtime == "export":
        return c.ExportConfig(aot_inductor=aot, threads=threads)
    if runtime == "inductor":
        return c.InductorConfig(threads=threads)
    if runtime == "eager":
        return c.EagerConfig(threads=threads)
    return c.TensorRTConfig(fp16=(precision or "f16") != "f32", opset=opset or 18)


def export_model(
    model: str,
    runtime: str,
    out: str,
    *,
    arch: str | None = None,
    input_shape: str | None = None,
    opset: int | None = None,
    precision: str | None = None,
    threads: int | None = None,
    aot: bool = False,
    trust_pickle: bool = False,
    progress: Any = None,
) -> dict[str, Any]:
    """Load, build, parity-check and save; return a JSON-friendly summary.

    Raises:
        TorchslimError: Bad source, unavailable backend, export failure or parity failure.
    """
    import json
    from pathlib import Path

    from torchslim.errors import ShapeError
    from torchslim.models import load_model
    from torchslim.parity import check_parity
    from torchslim.runtimes import build
    from torchslim.runtimes._common import MANIFEST

    def step(msg: str) -> None:
        if progress is not None:
            progress(msg)

    auto = runtime == "auto"
    config = (
        None
        if auto
        else runtime_config(runtime, opset=opset, precision=precision, threads=threads, aot=aot)
    )
    step(f"Loading {model}")
    loaded = load_model(model, arch=arch, input_spec=input_shape, trust_pickle=trust_pickle)
    module = loaded.require_module()
    spec = loaded.input_spec
    if spec is None:
        raise ShapeError(
            f"Input shapes of '{model}' are unknown.", "Give --input-shape, e.g. 1x3x224x224."
        )
    chosen = None
    if auto:
        from torchslim.runtimes.auto import cached_autotune

        step("Choosing the fastest runtime for this machine (cached per machine and model)")
        choice = cached_autotune(module, spec, batch_sizes=(spec.batch_size,), source=model)
        config = choice.config(spec.batch_size)
        runtime = choice.choices[spec.batch_size]["runtime"]
        chosen = {"variant": choice.choices[spec.batch_size]["variant"], "cached": choice.cached}
    step(f"Building {runtime}")
    deployed = build(module, config, spec.example_inputs(batch_size=2))
    step("Checking parity against eager FP32")
    report = check_parity(deployed, module, spec)
    deployed.info["parity"] = report.to_dict()
    step(f"Saving to {out}")
    main = deployed.save(Path(out))
    files = sorted(p.name for p in Path(out).iterdir() if p.is_file())
    size = sum((Path(out) / f).stat().st_size for f in files if f != MANIFEST)
    manifest = json.loads((Path(out) / MANIFEST).read_text())
    return {
        "model": model,
        "runtime": runtime,
        "out": str(out),
        "main_file": str(main),
        "files": files,
        "size_mb": size / 2**20,
        "build_seconds": deployed.build_seconds,
        "config": manifest["config"],
        "info": {k: v for k, v in deployed.info.items() if k != "parity"},
        "parity": report.to_dict(),
        "parity_summary": report.summary(),
        "auto": chosen,
    }


@handle_errors
def export_command(
    model: str = typer.Argument(
        ...,
        metavar="MODEL",
        help="Model source: torchvision:NAME, torchslim:fashion_cnn, file.pt/.safetensors "
        "(with --arch), file.pt2, hf:DIR or pkg.module:factory.",
    ),
    runtime: str = typer.Option(
        ...,
        "--runtime",
        "-r",
        help=f"Target runtime: {'|'.join(RUNTIME_NAMES)}, or auto (the fastest parity-checked "
        "runtime for this machine at the --input-shape batch size, measured once and cached).",
    ),
    out: str = typer.Option(..., "--out", "-o", help="Output directory (written atomically)."),
    arch: str | None = typer.Option(
        None, "--arch", help="Architecture for weights-only files, e.g. torchvision:resnet18."
    ),
    input_shape: str | None = typer.Option(
        None,
        "--input-shape",
        help="Input shape(s), e.g. 1x3x224x224 or input_ids:1x128:int64,attention_mask:1x128:int64.",
    ),
    opset: int | None = typer.Option(None, "--opset", help="ONNX opset (onnxruntime, tensorrt)."),
    precision: str | None = typer.Option(
        None,
        "--precision",
        help="openvino: f32 (default), bf16, f16 or default (OpenVINO's choice: BF16 on CPUs "
        "with BF16 support; checked with the BF16 tolerance). tensorrt: f16 (default) or f32.",
    ),
    threads: int | None = typer.Option(
        None, "--threads", help="Threads the runtime uses (default: torch's setting)."
    ),
    aot: bool = typer.Option(False, "--aot", help="export: compile with AOTInductor."),
    trust_pickle: bool = typer.Option(
        False,
        "--trust-pickle",
        help="Allow unpickling a full module (runs code from the file: only for files you created).",
    ),
    json_out: bool = JSON_OPTION,
    debug: bool = DEBUG_OPTION,
) -> None:
    """Export MODEL for RUNTIME into DIR."""
    from torchslim.cli._common import stderr_console, stdout_console

    err = stderr_console()
    with err.status("Exporting …") as status:
        result = export_model(
            model,
            runtime,
            out,
            arch=arch,
            input_shape=input_shape,
            opset=opset,
            precision=precision,
            threads=threads,
            aot=aot,
            trust_pickle=trust_pickle,
            progress=lambda msg: status.update(f"{msg} …"),
        )
    if json_out:
        emit_json(result)
        return
    con = stdout_console()
    con.print(f"[bold]{model}[/] → [bold]{runtime}[/] in {result['out']}")
    con.print(f"  files: {', '.join(result['files'])} ({result['size_mb']:.2f} MiB)")
    con.print(f"  build: {result['build_seconds']:.2f} s")
    prec = result["info"].get("precision")
    if prec:
        con.print(f"  precision: {prec}")
    con.print(f"  {result['parity_summary']}")
    con.print(f"  load it: torchslim.runtimes.load_deployed({result['out']!r})")
