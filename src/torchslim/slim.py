"""One-step recipes for shrinking a model: prune, distill, low-rank, cluster, depthwise swap.

Each verb takes a model (never modified), a config object and data, runs the one-step recipe
through :func:`torchslim.pipeline.run_recipe` and returns its
:class:`~torchslim.candidate.Candidate` — the same typed result, in the same units, as every other
command (accuracy fractions, ``drop_points``, ``size_mb`` of the deployment files, speed-ups from
interleaved runs)::

    import torchslim
    from torchslim.passes.prune import PruneConfig
    from torchslim.train import DistillConfig

    base = torchslim.load_model("torchslim:fashion_resnet")
    train = torchslim.load_data("torchslim:fashion_mnist?split=train")
    test = torchslim.load_data("torchslim:fashion_mnist")
    res = torchslim.prune(base, PruneConfig(ratio=0.5, recover=DistillConfig(epochs=2)),
                          train=train, eval=test)
    print(res.drop_points, res.baseline_flops / res.flops, res.speedup(1))
    res.save("out/")                       # an artifact; torchslim.load_artifact("out/")
    pruned = res.model                     # the pruned nn.Module
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from torchslim.candidate import Candidate
    from torchslim.data import DataSet
    from torchslim.models import LoadedModel
    from torchslim.passes.compress import ClusterConfig, DepthwiseConfig, LowRankConfig
    from torchslim.passes.prune import PruneConfig
    from torchslim.train import DistillConfig

__all__ = ["cluster", "depthwise", "distill", "lowrank", "one_step", "prune"]


def _as_tuple(x: Any) -> tuple[Any, ...]:
    if x is None:
        return ()
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def one_step(
    model: nn.Module | LoadedModel | str,
    config: Any,
    example_inputs: Any = None,
    *,
    calib: DataSet | None = None,
    train: DataSet | None = None,
    eval: DataSet | None = None,
    teacher: nn.Module | None = None,
    runtime: Any = None,
    metric: Any = None,
    measure: bool = True,
    batch_sizes: tuple[int, ...] = (1,),
    seed: int = 0,
) -> Candidate:
    """Run the one-step recipe ``config`` (then ``runtime``) on ``model``.

    Args:
        model: An ``nn.Module``, a :class:`~torchslim.models.LoadedModel` or a source string.
        config: A pass config (``PruneConfig``, ``QuantizeConfig``, ...).
        example_inputs: A tensor or tuple of tensors (batch first) giving the input shapes, when
            the model does not know them and no data is given.
        calib: Calibration data.
        train: Training data (recovery, distillation, QAT).
        eval: Evaluation data: accuracy when labelled, fidelity always.
        teacher: Teacher for distillation (default: the original model).
        runtime: A runtime config to build the result for (default: eager).
        metric: ``"top1"`` or a callable ``(outputs, data) -> float``.
        measure: Measure latency interleaved with the original (a few seconds).
        batch_sizes: Batch sizes to measure.
        seed: Seed for everything stochastic.

    Returns:
        The checked :class:`~torchslim.candidate.Candidate`.

    Raises:
        TorchslimError: Whatever stopped the run, with a one-line message and a hint.
    """
    from torchslim.data import DataSet
    from torchslim.models import LoadedModel, load_model
    from torchslim.pipeline import RunData, run_recipe
    from torchslim.recipe import Recipe

    loaded: Any = load_model(model) if isinstance(model, str) else model
    spec = loaded.input_spec if isinstance(loaded, LoadedModel) else None
    inputs = _as_tuple(example_inputs)
    if inputs and spec is None:
        spec = DataSet("example inputs", inputs, None, synthetic=True).input_spec()
    data = RunData(calib=calib, eval=eval, train=train, teacher=teacher, metric=metric)
    recipe = Recipe((config,), runtime, tuple(batch_sizes), seed=seed)
    return run_recipe(
        recipe, loaded, data=data, input_spec=spec, measure=measure, raise_errors=True
    )


def prune(
    model: nn.Module | LoadedModel | str,
    config: PruneConfig | None = None,
    example_inputs: Any = None,
    *,
    train: DataSet | None = None,
    eval: DataSet | None = None,
    teacher: nn.Module | None = None,
    measure: bool = True,
) -> Candidate:
    """Prune ``model`` (structured channel removal by default); the input is never modified.

    Args:
        model: The trained model.
        config: What to prune (:class:`~torchslim.passes.prune.PruneConfig`).
        example_inputs: Input shapes when the model does not know them and no data is given.
        train: Training data for recovery (``config.recover``) and Taylor importance.
        eval: Labelled data for accuracy (else fidelity only).
        teacher: Teacher for KD recovery (default: the unpruned model).
        measure: Measure latency against the original (interleaved).
    """
    from torchslim.passes.prune import PruneConfig

    return one_step(
        model,
        config or PruneConfig(),
        example_inputs,
        train=train,
        eval=eval,
        teacher=teacher,
        measure=measure,
    )


def distill(
    student: nn.Module | LoadedModel | str,
    teacher: nn.Module | None,
    train: DataSet | None,
    config: DistillConfig | None = None,
    *,
    eval: DataSet | None = None,
    example_inputs: Any = None,
    measure: bool = True,
) -> Candidate:
    """Train a copy of ``student`` from ``teacher`` (or labels / its own EMA) on ``train``.

    The candidate compares the trained student with the student as given (its baseline) and
    carries the teacher's evaluation on the same data (``candidate.teacher``).
    """
    from torchslim.errors import DataError
    from torchslim.train import DistillConfig

    if train is None:
        raise DataError(
            "Distillation needs training data, and none was given.",
            "Give training samples, e.g. torchslim:fashion_mnist?split=train.",
        )
    return one_step(
        student,
        config or DistillConfig(),
        example_inputs,
        train=train,
        eval=eval,
        teacher=teacher,
        measure=measure,
    )


def lowrank(
    model: nn.Module | LoadedModel | str,
    config: LowRankConfig | None = None,
    example_inputs: Any = None,
    *,
    train: DataSet | None = None,
    eval: DataSet | None = None,
    measure: bool = True,
) -> Candidate:
    """Factorise Linear/Conv layers by truncated SVD where that reduces FLOPs."""
    from torchslim.passes.compress import LowRankConfig

    return one_step(
        model, config or LowRankConfig(), example_inputs, train=train, eval=eval, measure=measure
    )


def cluster(
    model: nn.Module | LoadedModel | str,
    config: ClusterConfig | None = None,
    example_inputs: Any = None,
    *,
    eval: DataSet | None = None,
    measure: bool = True,
) -> Candidate:
    """Share weights by per-layer k-means (codebook + indices); reports the compressed size."""
    from torchslim.passes.compress import ClusterConfig

    return one_step(model, config or ClusterConfig(), example_inputs, eval=eval, measure=measure)


def depthwise(
    model: nn.Module | LoadedModel | str,
    config: DepthwiseConfig | None = None,
    example_inputs: Any = None,
    *,
    train: DataSet | None = None,
    eval: DataSet | None = None,
    measure: bool = True,
) -> Candidate:
    """Swap KxK convolutions for depthwise + pointwise blocks, recovered by distillation."""
    from torchslim.passes.compress import DepthwiseConfig

    return one_step(
        model, config or DepthwiseConfig(), example_inputs, train=train, eval=eval, measure=measure
    )
