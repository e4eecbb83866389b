"""``torchslim.quantize()``: quantize a model and check it against its FP32 baseline.

A one-step recipe over :func:`torchslim.pipeline.run_recipe`, so the result is the same typed
:class:`~torchslim.candidate.Candidate` every command returns::

    import torchslim
    from torchslim.passes.quantize import QuantizeConfig

    q = torchslim.quantize(
        "torchslim:fashion_cnn",
        QuantizeConfig(method="static", backend="openvino", max_drop=1.0),
        calib="torchslim:fashion_mnist?split=train",
        eval="torchslim:fashion_mnist",
    )
    print(q.drop_points, q.evaluation.fidelity.cosine, q.speedup(1))
    q.save("fashion_cnn_int8")             # an artifact; torchslim.load_artifact() reads it back

Every result is validated on the same inputs as the FP32 model: the task metric when the
evaluation data has labels (top-1, or polarity accuracy for sentence encoders) and fidelity
(top-1 agreement, cosine, max abs error, SQNR) always. A speed-up, when measured, comes from the
FP32 model and the result measured interleaved. The caller's model is never modified.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from torchslim.errors import AccuracyBudgetError, TorchslimError
from torchslim.passes.quantize import QuantizeConfig, QuantMethod

if TYPE_CHECKING:
    from torchslim.candidate import Candidate
    from torchslim.data import DataSet

__all__ = ["QuantizeConfig", "quantize"]


def _resolve_data(data: Any, spec: Any, split: str | None = None) -> DataSet | None:
    if data is None or not isinstance(data, str):
        return data
    from torchslim.data import load_data

    if split and not (data.startswith("torchslim:") and "split=" not in data):
        split = None
    return load_data(data, input_spec=spec, split=split)


def quantize(
    model: Any,
    config: QuantizeConfig | None = None,
    *,
    calib: Any = None,
    eval: Any = None,
    train: Any = None,
    example_inputs: tuple[Any, ...] | None = None,
    metric: Any = None,
    runtime: Any = None,
    measure_latency: bool = False,
    **overrides: Any,
) -> Candidate:
    """Quantize ``model`` and validate it against its FP32 baseline.

    Args:
        model: An ``nn.Module``, a :class:`~torchslim.models.LoadedModel` or a source string.
        config: What to do (default: dynamic INT8 in PyTorch); keyword ``overrides`` replace
            fields (``method="static"``, ``backend="openvino"``, ``max_drop=1.0``...).
        calib: Calibration data (a :class:`~torchslim.data.DataSet` or a source string);
            required for static quantization.
        eval: Evaluation data: accuracy before/after when labelled, fidelity always. Needed for
            ``max_drop`` (accuracy-aware mode).
        train: Training data for QAT (default: the calibration data).
        example_inputs: Inputs giving the shapes, when no data is given.
        metric: ``"top1"`` or a callable ``(outputs, data) -> float`` (default: top-1, or
            polarity accuracy for sentence encoders on labelled text).
        runtime: A runtime config to build the result for (ONNX Runtime / OpenVINO results run
            in their own runtime by default).
        measure_latency: Also measure latency at batch 1, interleaved with the FP32 model.

    Returns:
        The :class:`~torchslim.candidate.Candidate`: ``drop_points`` (points), ``evaluation``
        (metric + fidelity), ``size_mb`` of the deployment files, ``reports[0]`` with the layers
        quantized / kept in float (and why).

    Raises:
        AccuracyBudgetError: ``max_drop`` cannot be met (carries the best result reached).
        TorchslimError: Missing calibration data, unsupported method/backend, NaN/Inf data.
        BackendUnavailableError: The backend is not installed (names the extra).
    """
    from torchslim.models import LoadedModel, load_model
    from torchslim.slim import one_step

    config = config or QuantizeConfig()
    if overrides:
        config = replace(config, **overrides)
    loaded = load_model(model) if isinstance(model, str) else model
    spec = loaded.input_spec if isinstance(loaded, LoadedModel) else None
    calib_ds = _resolve_data(calib, spec, "train")
    eval_ds = _resolve_data(eval, spec)
    train_ds = _resolve_data(train, spec, "train")
    if config.max_drop is not None and eval_ds is None:
        raise TorchslimError(
            "An accuracy budget (max_drop) needs evaluation data.",
            "Give --eval DATA (e.g. torchslim:fashion_mnist), or drop --max-drop.",
        )
    if config.method is QuantMethod.QAT and train_ds is None:
        train_ds = calib_ds
    cand = one_step(
        loaded,
        config,
        example_inputs,
        calib=calib_ds,
        train=train_ds,
        eval=eval_ds,
        runtime=runtime,
        metric=metric,
        measure=measure_latency,
        seed=config.seed,
    )
    drop = cand.drop_points
    budget = config.max_drop
    if budget is not None and not config.relative and drop is not None and drop > budget:
        raise AccuracyBudgetError(
            f"The final {config.name} model dropped {drop:.2f} points, over the budget of "
            f"{budget:g}.",
            "Raise --max-drop or try another method/backend.",
            best=cand.to_dict(),
        )
    return cand
