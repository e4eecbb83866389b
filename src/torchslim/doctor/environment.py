"""Environment checks: threads, CPU instruction sets, libraries, torch.compile, backends, data."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sysconfig
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torchslim.doctor.findings import CheckResult, Finding

if TYPE_CHECKING:
    from torchslim.data import DataSet

__all__ = ["check_environment", "parse_cpu_flags"]

_OPTIONAL_BACKENDS = {
    "onnxruntime": "ONNX Runtime (INT8 static/dynamic, CPU/GPU)",
    "openvino": "OpenVINO (fast INT8 on Intel CPUs; pip install 'torchslim[openvino]')",
    "nncf": "NNCF (OpenVINO quantization; pip install 'torchslim[openvino]')",
    "tensorrt": "TensorRT (NVIDIA GPUs only)",
}


def parse_cpu_flags(cpuinfo: str) -> frozenset[str]:
    """CPU feature flags from the text of ``/proc/cpuinfo`` (x86 ``flags``, Arm ``Features``)."""
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features"):
            return frozenset(value.split())
    return frozenset()


def _read_cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return ""


def _isa(flags: frozenset[str]) -> dict[str, bool]:
    return {
        "avx2": "avx2" in flags,
        "avx512": "avx512f" in flags,
        "vnni": bool({"avx512_vnni", "avx_vnni", "avx512vnni"} & flags),
        "amx": bool({"amx_tile", "amx_int8", "amx_bf16"} & flags),
        "bf16": bool({"avx512_bf16", "amx_bf16", "bf16"} & flags),
        "fp16": bool({"avx512_fp16", "fphp", "asimdhp"} & flags),
        "neon": bool({"asimd", "neon"} & flags),
        "int8_dot": bool({"asimddp", "i8mm"} & flags),
    }


def _isa_findings(flags: frozenset[str]) -> list[Finding]:
    if not flags:
        return [
            Finding(
                "cpu-isa",
                "info",
                "CPU instruction sets unknown",
                "/proc/cpuinfo has no flags line (not Linux?).",
            )
        ]
    isa = _isa(flags)
    names = [k for k in ("avx2", "avx512", "vnni", "amx", "bf16", "fp16", "int8_dot") if isa[k]]
    out = []
    arm = isa["neon"]
    if not arm and not isa["avx2"]:
        out.append(
            Finding(
                "cpu-isa",
                "warn",
                "No AVX2: CPU kernels will be slow",
                "PyTorch, ONNX Runtime and OpenVINO fall back to SSE kernels.",
                "Run on a CPU with AVX2 (any x86 since ~2015) for meaningful timings.",
            )
        )
    else:
        out.append(
            Finding(
                "cpu-isa",
                "info",
                f"CPU features: {', '.join(names) or 'baseline'}",
                f"{len(flags)} flags read.",
            )
        )
    if isa["vnni"] or isa["amx"] or isa["int8_dot"]:
        out.append(
            Finding(
                "int8-native",
                "info",
                "Native INT8 dot products (VNNI/AMX/dotprod)",
                "INT8 GEMM/conv run several times faster than FP32 here.",
                "Static INT8 (OpenVINO or ONNX Runtime) is the first thing to try.",
            )
        )
    else:
        out.append(
            Finding(
                "int8-native",
                "warn",
                "No native INT8 dot-product instructions (VNNI/AMX)",
                "INT8 kernels emulate dot products; speed-ups are smaller (often 1.2-2x).",
                "Still quantize for size; for speed prefer pruning or a smaller architecture.",
            )
        )
    if isa["bf16"]:
        out.append(
            Finding(
                "bf16-native",
                "info",
                "Native BF16 on this CPU",
                "avx512_bf16/amx_bf16 (or Arm bf16) present.",
                "BF16 autocast (torch.autocast('cpu', dtype=torch.bfloat16)) is a cheap speed-up.",
            )
        )
    else:
        out.append(
            Finding(
                "bf16-native",
                "info",
                "No native BF16 on this CPU",
                "BF16 would be emulated (slower than FP32).",
                "Stay in FP32 or use INT8 on CPU.",
            )
        )
    return out


def _thread_findings(
    threads: int,
    logical: int | None,
    physical: int | None,
    usable: int | None,
    environ: Mapping[str, str],
) -> list[Finding]:
    out = []
    cores = physical or usable or logical
    if usable and physical:
        cores = min(physical, usable)
    if cores and threads > cores:
        out.append(
            Finding(
                "threads",
                "warn",
                f"{threads} threads for {cores} physical core(s)",
                "More threads than physical cores oversubscribes them (hyper-threads share FPUs); "
                "latency gets slower and noisier.",
                f"torch.set_num_threads({cores}) or OMP_NUM_THREADS={cores}.",
            )
        )
    elif cores and threads < cores:
        out.append(
            Finding(
                "threads",
                "info",
                f"{threads} thread(s) for {cores} physical core(s)",
                "Fewer threads than cores: fine for many parallel servers, slower for one model.",
                f"For the lowest single-model latency use torch.set_num_threads({cores}).",
            )
        )
    else:
        out.append(Finding("threads", "info", f"{threads} thread(s) = physical cores"))
    omp, mkl = environ.get("OMP_NUM_THREADS"), environ.get("MKL_NUM_THREADS")
    if omp is None:
        out.append(
            Finding(
                "omp-num-threads",
                "info",
                "OMP_NUM_THREADS is not set",
                "Backends (ONNX Runtime, OpenVINO, MKL) pick their own thread counts.",
                f"export OMP_NUM_THREADS={cores or threads} for consistent, comparable timings.",
            )
        )
    elif not omp.isdigit() or (mkl is not None and mkl != omp):
        out.append(
            Finding(
                "omp-num-threads",
                "warn",
                "OMP_NUM_THREADS / MKL_NUM_THREADS disagree or are invalid",
                f"OMP_NUM_THREADS={omp}, MKL_NUM_THREADS={mkl}.",
                "Set both to the number of physical cores.",
            )
        )
    return out


def _cuda_findings() -> tuple[dict[str, Any], list[Finding]]:
    import torch

    if not torch.cuda.is_available():
        return {"available": False}, []
    cap = torch.cuda.get_device_capability(0)
    info = {
        "available": True,
        "device": torch.cuda.get_device_name(0),
        "capability": f"{cap[0]}.{cap[1]}",
        "cudnn_version": torch.backends.cudnn.version(),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        "fp16_reduced_precision_reduction": (
            torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction
        ),
    }
    out = [
        Finding(
            "gpu",
            "info",
            f"GPU: {info['device']} (compute capability {info['capability']})",
            "BF16 native"
            if cap >= (8, 0)
            else "FP16 tensor cores"
            if cap >= (7, 0)
            else "no tensor cores",
            "Use BF16/FP16 autocast or TensorRT FP16/INT8 for inference." if cap >= (7, 0) else "",
        )
    ]
    if not info["cudnn_benchmark"]:
        out.append(
            Finding(
                "cudnn-benchmark",
                "info",
                "cudnn.benchmark is off",
                "cuDNN does not search for the fastest convolution algorithm.",
                "For fixed input shapes set torch.backends.cudnn.benchmark = True.",
            )
        )
    if cap >= (8, 0) and not info["tf32_matmul"]:
        out.append(
            Finding(
                "tf32",
                "info",
                "TF32 matmul is off on an Ampere+ GPU",
                "FP32 matmuls run without tensor cores.",
                "torch.backends.cuda.matmul.allow_tf32 = True (or set_float32_matmul_precision"
                "('high')) if ~1e-3 relative error is acceptable.",
            )
        )
    return info, out


def _compile_findings(cuda: bool) -> tuple[dict[str, Any], list[Finding]]:
    cxx = next(
        (
            shutil.which(c)
            for c in (os.environ.get("CXX", ""), "g++", "c++", "clang++")
            if c and shutil.which(c)
        ),
        None,
    )
    include = sysconfig.get_paths().get("include", "")
    headers = bool(include) and (Path(include) / "Python.h").exists()
    triton = importlib.util.find_spec("triton") is not None
    info = {"cxx": cxx, "python_headers": headers, "triton": triton}
    if cxx and headers:
        return info, [
            Finding(
                "torch-compile",
                "info",
                "torch.compile (Inductor) can build CPU kernels",
                f"C++ compiler {cxx}; Python headers found.",
                "Try torch.compile with freezing (torch._inductor.config.freezing = True) for "
                "inference; without freezing it can be slower than eager at batch 1.",
            )
        ]
    missing = ", ".join(
        m
        for m, ok in (("a C++ compiler (g++/clang++)", cxx), ("Python headers", headers))
        if not ok
    )
    return info, [
        Finding(
            "torch-compile",
            "warn",
            "torch.compile cannot build CPU kernels here",
            f"Missing: {missing}." + (" GPU kernels need triton." if cuda and not triton else ""),
            "Install build tools (e.g. apt-get install g++ python3-dev) for the inductor runtime.",
        )
    ]


def _data_findings(
    data: DataSet, physical: int | None, cuda: bool
) -> tuple[dict[str, Any], list[Finding]]:
    sample_bytes = (
        int(sum(x[0].numel() * x.element_size() for x in data.inputs)) if len(data) else 0
    )
    workers = max(0, min(4, (physical or 1) - 1))
    info = {
        "name": data.name,
        "samples": len(data),
        "sample_bytes": sample_bytes,
        "synthetic": data.synthetic,
        "suggested_loader": {
            "num_workers": 0,
            "num_workers_if_decoding": workers,
            "pin_memory": cuda,
            "prefetch_factor": 2 if workers else None,
            "persistent_workers": bool(workers),
        },
    }
    out = [
        Finding(
            "dataloader",
            "info",
            f"Data: {len(data):,} samples, {sample_bytes:,} bytes each",
            "torchslim holds this data in memory as tensors: no decoding per batch.",
            "In memory: DataLoader(num_workers=0). If you decode files per batch: "
            f"num_workers={workers} (physical cores - 1), prefetch_factor=2, "
            "persistent_workers=True"
            + (
                ", pin_memory=True (CUDA)."
                if cuda
                else "; pin_memory only helps with CUDA, keep it off."
            ),
        )
    ]
    if data.synthetic:
        out.append(
            Finding(
                "synthetic-data",
                "warn",
                "Synthetic data: fidelity only, no accuracy",
                "Random inputs show whether outputs change, not whether predictions stay right.",
                "Give real labelled data (--data DIR, .npz, .pt, torchslim:fashion_mnist) to guard "
                "accuracy.",
            )
        )
    elif not data.has_labels:
        out.append(
            Finding(
                "unlabelled-data",
                "info",
                "Data has no labels: fidelity only",
                "Agreement with the original model can be measured, task accuracy cannot.",
                "Add labels (y) to measure accuracy.",
            )
        )
    return info, out


def check_environment(
    data: DataSet | None = None,
    *,
    cpuinfo: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> CheckResult:
    """Check this machine for fast inference: threads, CPU features, libraries, backends, data.

    CPU flags come from a small private ``/proc/cpuinfo`` reader (:func:`parse_cpu_flags`), so this
    works before :mod:`torchslim.machine` exists; backends are found with
    :func:`importlib.util.find_spec` and never imported.

    Args:
        data: A data set to give DataLoader advice for.
        cpuinfo: ``/proc/cpuinfo`` text to use instead of this machine's (for tests).
        environ: Environment variables to use instead of ``os.environ`` (for tests).

    Returns:
        Summary keys: ``threads``, ``logical_cpus``, ``physical_cores``, ``usable_cpus``,
        ``omp_num_threads``, ``mkl_num_threads``, ``cpu_flags`` (the relevant ones), ``isa``,
        ``mkldnn``, ``mkl``, ``cuda``, ``compile``, ``backends``, ``data``.
    """
    import psutil
    import torch

    env = os.environ if environ is None else environ
    flags = parse_cpu_flags(_read_cpuinfo() if cpuinfo is None else cpuinfo)
    threads = torch.get_num_threads()
    logical = os.cpu_count()
    physical = psutil.cpu_count(logical=False)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    findings = _thread_findings(threads, logical, physical, usable, env)
    findings += _isa_findings(flags)
    mkldnn, mkl = torch.backends.mkldnn.is_available(), torch.backends.mkl.is_available()
    if not mkldnn:
        findings.append(
            Finding(
                "onednn",
                "warn",
                "oneDNN (mkldnn) is not available in this PyTorch build",
                "CPU convolutions and INT8 kernels use slower fallbacks.",
                "Install the official PyTorch wheel for your platform.",
            )
        )
    cuda_info, cuda_findings = _cuda_findings()
    findings += cuda_findings
    compile_info, compile_findings = _compile_findings(bool(cuda_info["available"]))
    findings += compile_findings
    backends = {name: importlib.util.find_spec(name) is not None for name in _OPTIONAL_BACKENDS}
    missing = [
        n for n, ok in backends.items() if not ok and (n != "tensorrt" or cuda_info["available"])
    ]
    findings.append(
        Finding(
            "backends",
            "info",
            "Backends: " + ", ".join(f"{n} {'✓' if ok else '✗'}" for n, ok in backends.items()),
            "; ".join(_OPTIONAL_BACKENDS[n] for n in missing),
            f"Install the missing ones to compare more runtimes: {', '.join(missing)}."
            if missing
            else "",
        )
    )
    data_info = None
    if data is not None:
        data_info, data_findings = _data_findings(data, physical, bool(cuda_info["available"]))
        findings += data_findings
    relevant = {
        "avx2",
        "avx512f",
        "avx512_vnni",
        "avx_vnni",
        "avx512_bf16",
        "avx512_fp16",
        "amx_tile",
        "amx_int8",
        "amx_bf16",
        "fma",
        "f16c",
        "asimd",
        "asimddp",
        "bf16",
        "i8mm",
        "sve",
    }
    summary = {
        "torch": torch.__version__,
        "threads": threads,
        "logical_cpus": logical,
        "physical_cores": physical,
        "usable_cpus": usable,
        "omp_num_threads": env.get("OMP_NUM_THREADS"),
        "mkl_num_threads": env.get("MKL_NUM_THREADS"),
        "cpu_flags": sorted(flags & relevant),
        "cpu_flags_source": "/proc/cpuinfo (torchslim.doctor private reader)",
        "isa": _isa(flags),
        "mkldnn": mkldnn,
        "mkl": mkl,
        "cuda": cuda_info,
        "compile": compile_info,
        "backends": backends,
        "data": data_info,
    }
    return CheckResult(summary, tuple(findings))
