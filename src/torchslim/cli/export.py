"""``torchslim export MODEL --runtime NAME --out DIR``: build, check parity, save."""

from __future__ import annotations

from typing import Any

import typer

from torchslim.cli import _run
from torchslim.cli._common import DEBUG_OPTION, JSON_OPTION, Command, handle_errors

__all__ = ["export_command", "export_model", "register"]

HELP = """\
Export MODEL for one runtime, check that it computes what the original computes, and save it.

The model is built for the runtime, then compared with eager FP32 PyTorch on the same inputs at batch 1 and batch 4 (and two sequence lengths for token inputs), with a tolerance for the precision the runtime computes in; a mismatch is an error and nothing is saved. The result is evaluated against the original and measured interleaved with it. DIR is an artifact (runtime/ with the runtime's files, recipe.yaml, manifest.json with every file's hash), written atomically. MODEL may be an artifact (from prune or quantize): its recipe gets this runtime. Load it back in Python with torchslim.load_artifact(DIR).

Runtimes: onnxruntime (model.onnx), openvino (model.xml/.bin), torchscript (model.ts), export (torch.export model.pt2; --aot for an AOTInductor package), inductor (AOTInductor package), eager (torch.export model.pt2), tensorrt (NVIDIA GPU only), executorch (model.pte with the XNNPACK delegate, for phones and boards; --quantize int8 --calib DATA for INT8 through the XNNPACK quantizer; needs torchslim[edge]). For executorch, runtime/runtime.json reports the program size, the planned memory arena and which operators XNNPACK did not take (and why).

\b
Examples:
  torchslim export torchslim:fashion_cnn --runtime onnxruntime --out out/cnn-ort
  torchslim export torchvision:resnet18 --runtime openvino --precision default --out out/r18-ov
  torchslim export torchslim:minilm --runtime torchscript --out out/minilm-ts --json
  torchslim export torchslim:fashion_cnn --runtime executorch --quantize int8 --calib torchslim:fashion_mnist --eval torchslim:fashion_mnist --out out/cnn-pte
"""

RUNTIME_NAMES = (
    "onnxruntime",
    "openvino",
    "torchscript",
    "export",
    "inductor",
    "eager",
    "tensorrt",
    "executorch",
)


def register(app: typer.Typer) -> None:
    """Add the ``export`` command to ``app``."""
    app.command(
        "export", help=HELP, short_help="Export for a runtime, parity-checked.", cls=Command
    )(export_command)


def runtime_config(
    runtime: str,
    *,
    opset: int | None = None,
    precision: str | None = None,
    threads: int | None = None,
    aot: bool = False,
    quantize: str | None = None,
    calib: str | None = None,
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
    if (quantize or calib) and runtime != "executorch":
        raise TorchslimError(
            f"--quantize/--calib apply to the executorch runtime, not {runtime}.",
            "Quantize first with `torchslim quantize MODEL --out DIR`, then export DIR.",
        )
    if runtime == "executorch":
        if quantize not in (None, "none", "int8"):
            raise TorchslimError(f"Unknown --quantize '{quantize}'.", "Use --quantize int8.")
        if quantize == "int8" and not calib:
            raise TorchslimError(
                "--quantize int8 needs calibration data.",
                "Give --calib DATA, e.g. --calib torchslim:fashion_mnist.",
            )
        if threads:
            raise TorchslimError(
                "--threads does not apply to executorch (its thread pool has one thread per core).",
                "Drop --threads.",
            )
        return c.ExecuTorchConfig(quantize=c.EdgeQuantize(quantize or "none"), calib=calib)
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
    out: str | None,
    *,
    arch: str | None = None,
    input_shape: str | None = None,
    opset: int | None = None,
    precision: str | None = None,
    threads: int | None = None,
    aot: bool = False,
    trust_pickle: bool = False,
    trust_code: bool = False,
    verify: bool = True,
    force: bool = False,
    dry_run: bool = False,
    as_json: bool = False,
    batch_sizes: tuple[int, ...] | None = None,
    quantize: str | None = None,
    calib: str | None = None,
    eval_src: str | None = None,
) -> dict[str, Any]:
    """Build MODEL for a runtime, check parity, evaluate, measure and save the artifact.

    Raises:
        TorchslimError: Bad source, unavailable backend, export failure or parity failure.
    """
    from torchslim.cli._run import run_command

    config = None
    chosen = None
    if runtime == "auto":
        from torchslim.errors import ShapeError
        from torchslim.models import load_model
        from torchslim.runtimes.auto import cached_autotune

        loaded = load_model(model, arch=arch, input_spec=input_shape, trust_pickle=trust_pickle)
        spec = loaded.input_spec
        if spec is None:
            raise ShapeError(
                f"Input shapes of '{model}' are unknown.", "Give --input-shape, e.g. 1x3x224x224."
            )
        choice = cached_autotune(
            loaded.require_module(), spec, batch_sizes=(spec.batch_size,), source=model
        )
        config = choice.config(spec.batch_size)
        chosen = {"variant": choice.choices[spec.batch_size]["variant"], "cached": choice.cached}
    else:
        config = runtime_config(
            runtime,
            opset=opset,
            precision=precision,
            threads=threads,
            aot=aot,
            quantize=quantize,
            calib=calib,
        )
    return run_command(
        model,
        (),
        config,
        eval_src=eval_src,
        out=out,
        force=force,
        arch=arch,
        input_shape=input_shape,
        trust_pickle=trust_pickle,
        trust_code=trust_code,
        verify=verify,
        threads=threads,
        batch_sizes=batch_sizes,
        dry_run=dry_run,
        as_json=as_json,
        title=f"export {model} → {runtime}",
        extra={"auto": chosen},
    )


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
    quantize: str | None = typer.Option(
        None,
        "--quantize",
        help="executorch: int8 quantizes with the XNNPACK quantizer (static INT8, calibrated "
        "on --calib) before lowering.",
    ),
    calib: str | None = typer.Option(
        None,
        "--calib",
        help="executorch --quantize int8: calibration data (bundled data sets use their "
        "training split), e.g. torchslim:fashion_mnist.",
    ),
    eval_src: str | None = typer.Option(
        None,
        "--eval",
        help="Labelled evaluation data for the accuracy change (default: fidelity to the "
        "original on synthetic inputs), e.g. torchslim:fashion_mnist.",
    ),
    trust_pickle: bool = typer.Option(
        False,
        "--trust-pickle",
        help="Allow unpickling a full module (runs code from the file: only for files you created).",
    ),
    force: bool = _run.FORCE_OPTION,
    dry_run: bool = _run.DRY_RUN_OPTION,
    trust_code: bool = _run.TRUST_CODE_OPTION,
    no_verify: bool = _run.NO_VERIFY_OPTION,
    json_out: bool = JSON_OPTION,
    debug: bool = DEBUG_OPTION,
) -> None:
    """Export MODEL for RUNTIME into DIR."""
    export_model(
        model,
        runtime,
        out,
        arch=arch,
        input_shape=input_shape,
        opset=opset,
        precision=precision,
        threads=threads,
        aot=aot,
        quantize=quantize,
        calib=calib,
        eval_src=eval_src,
        trust_pickle=trust_pickle,
        trust_code=trust_code,
        verify=not no_verify,
        force=force,
        dry_run=dry_run,
        as_json=json_out,
    )
