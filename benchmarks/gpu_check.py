"""GPU check (< 5 min): CUDA eager FP32/FP16, Inductor, ONNX Runtime CUDA and TensorRT on ResNet-18.

Prints one JSON object on stdout: the device, and per runtime its parity against eager FP32 on the
GPU (batch 1 and 8) and its p50 latency at batch 1 and 32 (CUDA-synchronised, interleaved via
:func:`torchslim.measure.measure_models`). Runtimes that cannot run (no onnxruntime-gpu, no
TensorRT) are listed under ``skipped`` with the reason. Without an NVIDIA GPU it prints
``{"gpu": null, "message": "no GPU: ..."}`` and exits 0.

    .venv/bin/python benchmarks/gpu_check.py [--model torchvision:resnet18] [--batch 1,32]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any


def _no_gpu(reason: str) -> None:
    print(json.dumps({"gpu": None, "message": f"no GPU: {reason}; nothing to check"}))
    sys.exit(0)


class _TorchCuda:
    """Eager or compiled module on CUDA, optionally in FP16 (inputs cast, outputs back to FP32)."""

    def __init__(self, fn: Any, runtime: str, precision: str, build_s: float) -> None:
        self.fn, self.runtime, self.build_seconds = fn, runtime, build_s
        self.device = "cuda"
        self.info = {"precision": precision}
        self.half = precision == "fp16"

    def __call__(self, *xs: Any) -> Any:
        import torch

        xs = tuple(x.to("cuda", non_blocking=True) for x in xs)
        if self.half:
            xs = tuple(x.half() if x.is_floating_point() else x for x in xs)
        with torch.inference_mode():
            out = self.fn(*xs)
        return out.float() if self.half else out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="torchvision:resnet18")
    ap.add_argument("--batch", default="1,32")
    ap.add_argument("--max-time", type=float, default=2.0)
    args = ap.parse_args()
    try:
        import torch
    except ImportError:
        _no_gpu("torch is not installed")
    if not torch.cuda.is_available():
        _no_gpu("torch.cuda.is_available() is False")

    import copy

    from torchslim.measure import BenchTarget, TimingConfig, measure_models
    from torchslim.models import load_model
    from torchslim.parity import check_parity

    start = time.perf_counter()
    batches = [int(b) for b in args.batch.split(",")]
    loaded = load_model(args.model)
    module = loaded.require_module().eval()
    spec = loaded.input_spec
    assert spec is not None
    ref_gpu = copy.deepcopy(module).cuda()
    result: dict[str, Any] = {
        "gpu": torch.cuda.get_device_name(0),
        "capability": list(torch.cuda.get_device_capability(0)),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "model": args.model,
        "runtimes": {},
        "skipped": {},
    }
    try:
        import onnxruntime as ort

        result["onnxruntime"] = ort.__version__
        result["ort_providers"] = ort.get_available_providers()
    except ImportError:
        result["ort_providers"] = []
    torch.backends.cudnn.benchmark = True
    example = spec.example_inputs(batch_size=2)

    def reference(*xs: Any) -> Any:
        with torch.inference_mode():
            return ref_gpu(*(x.cuda() for x in xs)).float().cpu()

    built: dict[str, Any] = {}

    def add(name: str, make: Any) -> None:
        t0 = time.perf_counter()
        try:
            dep = make()
            rep = check_parity(dep, reference, spec, batch_sizes=(1, 8), raise_on_failure=False)
        except Exception as exc:
            result["skipped"][name] = f"{type(exc).__name__}: {str(exc)[:300]}"
            return
        result["runtimes"][name] = {
            "build_s": round(getattr(dep, "build_seconds", 0.0) or time.perf_counter() - t0, 2),
            "precision": rep.precision,
            "parity_passed": rep.passed,
            "max_rel_error": rep.max_rel_error,
            "min_cosine": rep.min_cosine,
        }
        if rep.passed:
            built[name] = dep

    add("cuda eager fp32", lambda: _TorchCuda(ref_gpu, "eager", "fp32", 0.0))
    half = copy.deepcopy(module).cuda().half()
    add("cuda eager fp16", lambda: _TorchCuda(half, "eager", "fp16", 0.0))

    def inductor() -> Any:
        compiled = torch.compile(copy.deepcopy(module).cuda(), options={"freezing": True})
        t0 = time.perf_counter()
        with torch.inference_mode():
            compiled(*(x.cuda() for x in example))
        torch.cuda.synchronize()
        return _TorchCuda(compiled, "inductor", "fp32", time.perf_counter() - t0)

    add("inductor fp32 (freezing)", inductor)

    from torchslim.runtimes import build
    from torchslim.runtimes.configs import OrtConfig, TensorRTConfig

    if "CUDAExecutionProvider" in result["ort_providers"]:
        add("onnxruntime cuda", lambda: build(module, OrtConfig(device="cuda"), example))
    else:
        result["skipped"]["onnxruntime cuda"] = "onnxruntime-gpu not installed"
    if "TensorrtExecutionProvider" in result["ort_providers"]:
        add("onnxruntime tensorrt fp16", lambda: build(module, TensorRTConfig(fp16=True), example))
    else:
        result["skipped"]["onnxruntime tensorrt fp16"] = "no TensorrtExecutionProvider"

    timing = TimingConfig(
        min_samples=20, min_time_s=0.5, max_time_s=args.max_time, max_warmup_s=3.0, round_time_s=0.1
    )

    def make_inputs(b: int) -> tuple[Any, ...]:
        return tuple(x.cuda() for x in spec.example_inputs(batch_size=b))

    targets = [BenchTarget(n, d, make_inputs, device="cuda") for n, d in built.items()]
    if targets:
        measured = measure_models(targets, batches, config=timing, memory=False)
        base = {b: measured[0].batches[b].latency.p50_ms for b in batches}
        for m in measured:
            for b, bm in m.batches.items():
                r = result["runtimes"][m.name]
                r[f"p50_ms_b{b}"] = round(bm.latency.p50_ms, 4)
                r[f"first_call_ms_b{b}"] = round(bm.first_call_ms, 2)
                r[f"x_eager_fp32_b{b}"] = round(bm.latency.p50_ms / base[b], 3)
    result["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
