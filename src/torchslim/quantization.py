"""``torchslim.quantize()``: quantize a model and check it against its FP32 baseline.

Example::

    import torchslim
    from torchslim.passes.quantize import QuantizeConfig

    q = torchslim.quantize(
        "torchslim:fashion_cnn",
        QuantizeConfig(method="static", backend="openvino", max_drop=1.0),
        calib="torchslim:fashion_mnist?split=train",
        eval="torchslim:fashion_mnist",
    )
    print(q.report["accuracy_drop"], q.report["fidelity"]["cosine"])
    q.save("fashion_cnn_int8")                 # atomically; load_quantized() reads it back

Every result is validated on the same inputs as the FP32 model: the task metric when the
evaluation data has labels (top-1, or polarity accuracy for sentence encoders) and fidelity
(top-1 agreement, cosine, max abs error, SQNR) always. The caller's model is never modified.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torchslim._json import to_jsonable
from torchslim.errors import AccuracyBudgetError, SourceError, TorchslimError
from torchslim.evaluate import embedding_polarity_metric
from torchslim.passes.quantize import QuantBackend, QuantizeConfig, QuantMethod

if TYPE_CHECKING:
    from torch import nn

    from torchslim.data import DataSet
    from torchslim.evaluate import Evaluator

__all__ = [
    "QuantizeConfig",
    "QuantizedModel",
    "embedding_polarity_metric",
    "latency_p50_ms",
    "load_quantized",
    "quantize",
]

_META = "quantization.json"


@dataclass
class QuantizedModel:
    """A quantized model with its validation report.

    Attributes:
        config: The quantization that produced it.
        report: Layers quantized / kept in float (and why), accuracy before/after, fidelity,
            sizes, calibration time, the accuracy-aware sensitivity table.
        module: The quantized PyTorch module (torch backend), else ``None``.
        deployed: The runtime object that runs it (ONNX Runtime session, OpenVINO compiled
            model, or the Inductor-compiled INT8 graph), else ``None``.
        example_inputs: Inputs (batch 1) used to trace/save it.
    """

    config: QuantizeConfig
    report: dict[str, Any]
    module: Any = None
    deployed: Any = None
    example_inputs: tuple[Any, ...] = field(default=(), repr=False)

    def __call__(self, *inputs: Any) -> Any:
        """Run the quantized model on torch tensors."""
        fn = self.deployed if self.deployed is not None else self.module
        if fn is None:
            raise TorchslimError("This quantized model holds nothing to run.")
        import torch

        with torch.inference_mode():
            return fn(*inputs)

    @property
    def runtime(self) -> str:
        """Where it runs: ``torch``, ``inductor``, ``onnxruntime`` or ``openvino``."""
        if self.deployed is not None:
            return str(getattr(self.deployed, "runtime", "torch"))
        return "torch"

    def save(self, directory: str | Path) -> Path:
        """Write the model and ``quantization.json`` into ``directory`` atomically.

        Layout: ``runtime/`` (ONNX Runtime / OpenVINO files + ``runtime.json``), or
        ``model.pt2`` (torch.export program) / ``model.ts`` (TorchScript, torch dynamic INT8).

        Returns:
            The directory.
        """
        from torchslim.runtimes._common import atomic_directory

        directory = Path(directory)
        with atomic_directory(directory) as tmp:
            main = self._write_model(tmp)
            meta = {
                "format_version": 1,
                "config": _config_dict(self.config),
                "main_file": main,
                "example_inputs": [
                    {"shape": list(x.shape), "dtype": str(x.dtype).replace("torch.", "")}
                    for x in self.example_inputs
                ],
                "report": to_jsonable(self.report),
            }
            (tmp / _META).write_text(json.dumps(meta, indent=2) + "\n")
        return directory

    def _write_model(self, tmp: Path) -> str:
        import torch

        if self.config.backend is not QuantBackend.TORCH:
            self.deployed.save(tmp / "runtime")
            return "runtime"
        if self.config.method is QuantMethod.DYNAMIC:
            with torch.no_grad():
                ts = torch.jit.trace(self.module, self.example_inputs, check_trace=False)
            torch.jit.save(ts, str(tmp / "model.ts"))
            return "model.ts"
        from torchslim.passes.quant_torch import _dynamic_shapes, _quiet

        two = tuple(torch.cat([x, x]) for x in self.example_inputs)  # batch 2: stays symbolic
        with _quiet():
            try:
                ep = torch.export.export(
                    self.module, two, dynamic_shapes=_dynamic_shapes(two), strict=False
                )
            except Exception:
                ep = torch.export.export(self.module, self.example_inputs, strict=False)
                self.report["saved_static_shapes"] = [list(x.shape) for x in self.example_inputs]
        torch.export.save(ep, str(tmp / "model.pt2"))
        return "model.pt2"

    def size_mb(self) -> float:
        """On-disk size of the saved model files, in MB."""
        import tempfile

        with tempfile.TemporaryDirectory(prefix="torchslim-size-") as tmp:
            path = Path(tmp) / "q"
            self.save(path)
            main = path / json.loads((path / _META).read_text())["main_file"]
            files = (
                [main]
                if main.is_file()
                else [
                    p
                    for p in main.rglob("*")
                    if p.is_file()
                    and p.suffix in (".onnx", ".bin", ".xml")
                    and "optimized" not in p.name
                ]
            )
            return sum(p.stat().st_size for p in files) / 1e6


def _config_dict(config: QuantizeConfig) -> dict[str, Any]:
    from torchslim.config import config_to_dict

    return config_to_dict(config)


def load_quantized(directory: str | Path, *, compile: bool = False) -> QuantizedModel:
    """Load a model saved with :meth:`QuantizedModel.save`.

    Args:
        directory: The saved directory.
        compile: torch static/QAT: compile the INT8 graph with Inductor (the fast path).

    Raises:
        SourceError: Not a saved quantized model.
    """
    import torch

    from torchslim.config import config_from_dict

    directory = Path(directory)
    meta_path = directory / _META
    if not meta_path.is_file():
        raise SourceError(
            f"'{directory}' is not a saved quantized model (no {_META}).",
            "Save one with torchslim quantize MODEL --out DIR.",
        )
    meta = json.loads(meta_path.read_text())
    config = config_from_dict(meta["config"])
    inputs = tuple(
        torch.zeros(s["shape"], dtype=getattr(torch, s["dtype"])) for s in meta["example_inputs"]
    )
    main = directory / meta["main_file"]
    module = deployed = None
    if meta["main_file"] == "runtime":
        from torchslim.runtimes import load_deployed

        deployed = load_deployed(main)
    elif main.suffix == ".ts":
        module = torch.jit.load(str(main), map_location="cpu")
    else:
        from torchslim.passes.quant_torch import _quiet

        with _quiet():
            module = torch.export.load(str(main)).module()
        if compile and config.method in (QuantMethod.STATIC, QuantMethod.QAT):
            from torchslim.passes.quant_torch import compile_int8

            deployed = compile_int8(module, tuple(x[:1] for x in inputs))
    return QuantizedModel(config, meta.get("report", {}), module, deployed, inputs)


def _resolve_model(model: Any) -> tuple[nn.Module, Any]:
    from torchslim.models import LoadedModel, load_model

    if isinstance(model, str):
        model = load_model(model)
    if isinstance(model, LoadedModel):
        return model.require_module(), model
    return model, None


def _resolve_data(data: Any, loaded: Any, split: str | None = None) -> DataSet | None:
    if data is None or not isinstance(data, str):
        return data
    from torchslim.data import load_data

    spec = getattr(loaded, "input_spec", None)
    return load_data(data, input_spec=spec, split=split)


def _param_mb(module: nn.Module) -> float:
    total = sum(p.numel() * p.element_size() for p in module.parameters())
    total += sum(b.numel() * b.element_size() for b in module.buffers())
    return total / 1e6


def latency_p50_ms(fn: Any, inputs: tuple[Any, ...], max_time_s: float = 2.0) -> float:
    """Median latency of ``fn(*inputs)`` in ms (warm-up apart, via :mod:`torchslim.measure`)."""
    from torchslim.measure import TimingConfig, time_callable

    cfg = TimingConfig(
        min_samples=10,
        min_time_s=min(0.5, max_time_s),
        max_time_s=max_time_s,
        max_warmup_s=2.0,
        max_warmup_calls=50,
    )
    return float(time_callable(lambda: fn(*inputs), cfg).latency.p50_ms)


def _metric_for(module: nn.Module, loaded: Any, data: DataSet, metric: Any) -> Any:
    if metric is not None:
        return metric
    task = getattr(loaded, "task", None)
    if data.has_labels and (
        task == "embedding"
        or (len(data.inputs) == 2 and data.num_classes == 2 and data.name.endswith("text_polarity"))
    ):
        return embedding_polarity_metric
    return "top1"


def quantize(
    model: Any,
    config: QuantizeConfig | None = None,
    *,
    calib: Any = None,
    eval: Any = None,
    train: Any = None,
    example_inputs: tuple[Any, ...] | None = None,
    metric: Any = None,
    measure_latency: bool = False,
    **overrides: Any,
) -> QuantizedModel:
    """Quantize ``model`` and validate it against its FP32 baseline.

    Args:
        model: An ``nn.Module``, a :class:`~torchslim.models.LoadedModel` or a source string.
        config: What to do (default: dynamic INT8 in PyTorch); keyword ``overrides`` replace
            fields (``method="static"``, ``backend="openvino"``, ``max_drop=1.0``...).
        calib: Calibration data (a :class:`~torchslim.data.DataSet` or a source string);
            required for static quantization.
        eval: Evaluation data: accuracy before/after when labelled, fidelity always. Needed for
            ``max_drop`` (accuracy-aware mode).
        train: Training data for QAT.
        example_inputs: Inputs for tracing, when no data is given.
        metric: ``"top1"`` or a callable ``(outputs, data) -> float`` (default: top-1, or
            polarity accuracy for sentence encoders on labelled text).
        measure_latency: Also measure p50 latency at batch 1 before and after.

    Returns:
        The :class:`QuantizedModel`; ``report`` holds ``accuracy_before``, ``accuracy_after``,
        ``accuracy_drop`` (points), ``fidelity``, sizes and the per-layer decisions.

    Raises:
        AccuracyBudgetError: ``max_drop`` cannot be met (carries the best result reached).
        TorchslimError: Missing calibration data, unsupported method/backend, NaN/Inf data.
        BackendUnavailableError: The backend is not installed (names the extra).
    """
    from dataclasses import replace

    import torch

    from torchslim.evaluate import Evaluator
    from torchslim.passes.base import PassContext
    from torchslim.passes.quant_pass import apply_quantize

    config = config or QuantizeConfig()
    if overrides:
        config = replace(config, **overrides)
    module, loaded = _resolve_model(model)
    calib_ds = _resolve_data(calib, loaded, "train")
    eval_ds = _resolve_data(eval, loaded, None)
    train_ds = _resolve_data(train, loaded, "train")
    if config.max_drop is not None and eval_ds is None:
        raise TorchslimError(
            "An accuracy budget (max_drop) needs evaluation data.",
            "Give --eval DATA (e.g. torchslim:fashion_mnist), or drop --max-drop.",
        )
    for ds in (calib_ds, eval_ds):
        if ds is not None:
            ds.check_finite()
    if config.method is QuantMethod.QAT and train_ds is None:
        train_ds = calib_ds
    spec = getattr(loaded, "input_spec", None)
    baseline = copy.deepcopy(module).eval()
    evaluator: Evaluator | None = None
    if eval_ds is not None:
        evaluator = Evaluator(eval_ds, _metric_for(module, loaded, eval_ds, metric), batch_size=32)
        evaluator.set_baseline(baseline)
    ctx = PassContext(
        calib=calib_ds,
        train=train_ds,
        eval=eval_ds,
        example_inputs=example_inputs,
        input_spec=None if (calib_ds or eval_ds or example_inputs) else spec,
        seed=config.seed,
    )
    from torchslim.passes.quantize import example_inputs as _examples

    inputs1 = tuple(x[:1] for x in _examples(ctx, calib_ds or eval_ds or train_ds, batch=1))
    import time

    start = time.perf_counter()
    work = copy.deepcopy(module).eval()
    result = apply_quantize(work, config, ctx, evaluator)
    seconds = time.perf_counter() - start
    torch_result = config.backend is QuantBackend.TORCH
    qm = QuantizedModel(
        config,
        dict(result.report),
        result.module if torch_result else None,
        result.deployed,
        inputs1,
    )
    rep = qm.report
    rep["seconds"] = round(seconds, 3)
    rep["runtime"] = qm.runtime

    # -- validation: same inputs as the FP32 model -----------------------------------------
    fid_eval = evaluator
    if fid_eval is None:
        fid_data = calib_ds.take(256, seed=config.seed) if calib_ds is not None else None
        if fid_data is None:
            from torchslim.data import DataSet

            xs = ctx.inputs() if (example_inputs is not None or spec is not None) else inputs1
            fid_data = DataSet("example inputs", tuple(xs), synthetic=True)
        fid_eval = Evaluator(fid_data, batch_size=32)
        fid_eval.set_baseline(baseline)
    after = fid_eval.evaluate(qm)
    before = fid_eval.baseline
    assert before is not None and after.fidelity is not None
    rep["validation_data"] = fid_eval.data.name
    rep["metric"] = before.metric
    rep["accuracy_before"] = before.value
    rep["accuracy_after"] = after.value
    rep["accuracy_drop"] = (
        None
        if before.value is None or after.value is None
        else round((before.value - after.value) * 100, 4)
    )
    rep["fidelity_only"] = before.value is None
    rep["fidelity"] = after.fidelity.to_dict()
    with torch.inference_mode():
        rep["size_mb_before"] = round(_param_mb(module), 4)
    rep["size_mb_after"] = round(qm.size_mb(), 4)
    if measure_latency:
        before_ms = latency_p50_ms(baseline, inputs1)
        after_ms = latency_p50_ms(qm, inputs1)
        rep["latency_ms_before"] = round(before_ms, 4)
        rep["latency_ms_after"] = round(after_ms, 4)
        rep["speedup"] = round(before_ms / after_ms, 3) if after_ms > 0 else None
    if config.max_drop is not None and evaluator is not None:
        from torchslim.passes.quant_accuracy import _budget

        budget = _budget(config, before)
        drop = budget.drop(after)
        rep["within_budget"] = budget.ok(drop)
        if not budget.ok(drop):
            raise AccuracyBudgetError(
                f"The final {config.name} model dropped {drop:.2f} {budget.unit()} "
                f"({budget.metric}), over the budget of {config.max_drop:g}.",
                "Raise --max-drop or try another method/backend.",
                best={"drop": drop, "report": to_jsonable(rep)},
            )
    return qm
