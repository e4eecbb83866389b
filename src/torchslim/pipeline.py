"""The one executor: ``run_recipe()`` turns a model and a :class:`~torchslim.recipe.Recipe` into a
:class:`~torchslim.candidate.Candidate`.

Phases, always in this order and each timed::

    validate   the recipe fits together (before any work)
    passes     each step on a private copy (the caller's model is never modified)
    runtime    the recipe's runtime is built from what the last step produced: the module, or the
               ONNX / OpenVINO model a quantization step lowered to (with that runtime's default
               settings when the recipe names none; see Recipe.default_runtime_name)
    parity     a runtime built from a float module must compute what that module computes
    evaluate   task metric + fidelity against the *original* model on the same data
    measure    (optional) baseline and candidate measured interleaved at the recipe's batch sizes
    files      the files a deployment needs, written once; their size is the candidate's size

Every public verb (``prune``, ``quantize``, ``export`` …) is a one-step recipe run through here, so
every result has the same shape and the same units, and can be saved as an artifact with
:func:`torchslim.artifact.save_artifact` and replayed with ``torchslim run``.
"""

from __future__ import annotations

import copy
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torchslim.candidate import Candidate
from torchslim.errors import TorchslimError
from torchslim.recipe import Recipe, Representation

if TYPE_CHECKING:
    from torch import nn

    from torchslim.data import DataSet
    from torchslim.evaluate import Evaluator
    from torchslim.measure import TimingConfig
    from torchslim.models import LoadedModel
    from torchslim.specs import InputSpec

__all__ = ["Built", "RunData", "baseline_size_mb", "run_recipe"]

Progress = Callable[[str], None]


@dataclass
class RunData:
    """The data a run uses (already loaded).

    Attributes:
        calib: Calibration samples.
        eval: Evaluation samples (labelled: accuracy and fidelity; otherwise fidelity only).
        train: Training samples.
        teacher: Teacher module for distillation (default: the original model).
        metric: ``"top1"`` or a callable ``(outputs, data) -> float`` (higher is better); default:
            top-1, or polarity accuracy of embeddings for sentence encoders on labelled text.
    """

    calib: DataSet | None = None
    eval: DataSet | None = None
    train: DataSet | None = None
    teacher: nn.Module | None = None
    metric: Any = None


@dataclass
class Built:
    """What a run built, kept so the candidate can be saved as an artifact.

    Attributes:
        module: The final PyTorch module (``None`` when a step lowered it to ONNX/OpenVINO).
        deployed: The runtime object (``None`` for an eager module).
        representation: What the last step produced (:class:`~torchslim.recipe.Representation`).
        files: Directory holding the model files (``module/``, ``runtime/``) a deployment
            needs, written once by the run; the artifact writer copies them.
        input_spec: The model's inputs.
        source: The source string of the original model, when known.
        source_loaded: The original model as loaded (for its hash and size).
    """

    module: Any
    deployed: Any
    representation: str
    files: Path
    input_spec: InputSpec | None
    source: str | None
    source_loaded: LoadedModel | None = None
    _tmp: Any = field(default=None, repr=False)

    def __call__(self, *inputs: Any) -> Any:
        """Run the built model (runtime when there is one, else the module)."""
        import torch

        fn = self.deployed if self.deployed is not None else self.module
        with torch.inference_mode():
            return fn(*inputs)


def _example_inputs(spec: InputSpec | None, data: RunData, batch: int = 2) -> tuple[Any, ...]:
    if spec is not None:
        return spec.example_inputs(batch_size=batch)
    for ds in (data.calib, data.eval, data.train):
        if ds is not None:
            xs = tuple(x[:batch] for x in ds.inputs)
            if len(xs[0]) < batch:
                xs = tuple(x.repeat(batch, *([1] * (x.dim() - 1)))[:batch] for x in xs)
            return xs
    raise TorchslimError(
        "The model's input shapes are unknown: the source states none and no data was given.",
        "Give --input-shape (e.g. 1x3x224x224), or --calib/--eval/--train data to infer them "
        "from; a factory's module can state them itself (an example_inputs, input_spec or "
        "input_size attribute; timm models: pretrained_cfg['input_size']).",
    )


def _evaluator(
    module: nn.Module, spec: InputSpec | None, data: RunData, seed: int, task: str = "unknown"
) -> Evaluator:
    """The evaluator every candidate is judged by: eval data, else a fidelity-only sample."""
    from torchslim.data import DataSet
    from torchslim.evaluate import Evaluator

    ds = data.eval
    metric: Any = "top1"
    if ds is None:
        if data.calib is not None:
            ds = data.calib.take(min(256, len(data.calib)), seed=seed)
            ds = DataSet(f"{ds.name} (fidelity only)", ds.inputs, None, synthetic=True)
        else:
            if spec is None:
                raise TorchslimError(
                    "Nothing to check the result on: no evaluation data and unknown input shapes.",
                    "Give --eval DATA (labelled for accuracy), or --input-shape.",
                )
            xs = spec.example_inputs(batch_size=64, seed=seed)
            ds = DataSet("synthetic (fidelity only)", xs, None, synthetic=True)
    else:
        from torchslim.evaluate import metric_for

        metric = data.metric if data.metric is not None else (metric_for(ds, task) or "top1")
    return Evaluator(ds, metric, batch_size=32)


def baseline_size_mb(
    loaded: LoadedModel | None, module: nn.Module | None, examples: tuple[Any, ...] = ()
) -> float | None:
    """MB of the original model's files: its file when loaded from one, else the files an eager
    deployment of it needs (its ``model.pt2``, written once here) — the same rule as every
    candidate's size."""
    from torchslim.measure import deployment_size_mb

    if loaded is not None and loaded.path is not None and Path(loaded.path).exists():
        files = loaded.metadata.get("deployment_files")
        if files:
            return deployment_size_mb(*files)
        return deployment_size_mb(loaded.onnx_path or loaded.path)
    if module is None:
        return None
    from torchslim.artifact import deployment_files, write_model_files

    with tempfile.TemporaryDirectory(prefix="torchslim-size-") as tmp:
        try:
            write_model_files(Path(tmp), module, None, Representation.MODULE, examples)
        except Exception:
            return None
        return deployment_size_mb(*deployment_files(tmp))


def _params_flops(module: Any, examples: tuple[Any, ...]) -> tuple[int | None, int | None]:
    """Parameter count and FLOPs per item (batch 1) of a module."""
    from torchslim.measure import count_flops

    try:
        params = sum(p.numel() for p in module.parameters())
    except Exception:
        params = None
    flops = count_flops(module, tuple(x[:1] for x in examples))
    return params, flops


def _is_training_step(step: Any) -> bool:
    name = type(step).__name__
    if name == "DistillConfig":
        return True
    if getattr(step, "recover", None) is not None:
        return True
    return name == "QuantizeConfig" and getattr(step.method, "value", step.method) == "qat"


def run_recipe(
    recipe: Recipe,
    model: LoadedModel | nn.Module,
    *,
    data: RunData | None = None,
    input_spec: InputSpec | None = None,
    measure: bool = True,
    timing: TimingConfig | None = None,
    threads: int | None = None,
    progress: Progress | None = None,
    raise_errors: bool = False,
    start: Any = None,
) -> Candidate:
    """Run ``recipe`` on ``model`` and return the checked, optionally measured, candidate.

    Args:
        recipe: What to do.
        model: The original model (a :class:`~torchslim.models.LoadedModel` or an
            ``nn.Module``); never modified.
        data: Calibration / evaluation / training data and an optional teacher.
        input_spec: The model's inputs (default: the loaded model's).
        measure: Measure baseline and candidate interleaved at ``recipe.batch_sizes``.
        timing: Timing budget for the measurement.
        threads: Intra-op threads for passes, evaluation and measurement (restored after).
        progress: Called with a short message at each phase.
        raise_errors: Re-raise the error that stops the run instead of returning a failed
            candidate (the CLI uses this for one-line errors; a search keeps going instead).
        start: An :class:`~torchslim.artifact.Artifact` whose recipe is a prefix of ``recipe``:
            its steps are not run again; the run continues from what it holds. ``model`` is
            still the original model, so drops and speed-ups are against the original.

    Returns:
        The :class:`~torchslim.candidate.Candidate`; ``candidate.built`` holds what was built.
    """
    from torchslim.runtimes._common import torch_threads

    data = data or RunData()
    say = progress or (lambda _msg: None)
    cand = Candidate(recipe, seed=recipe.seed)
    began = time.perf_counter()
    try:
        with torch_threads(threads):
            _run(recipe, model, data, input_spec, measure, timing, threads, say, cand, start)
    except TorchslimError as exc:
        if raise_errors:
            raise
        cand.status, cand.reason = "failed", exc.message
    except Exception as exc:  # a crashing backend is recorded, never fatal to a search
        if raise_errors:
            raise
        cand.status = "failed"
        cand.reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}"
    cand.build_seconds = cand.build_seconds or (time.perf_counter() - began)
    return cand


def _run(
    recipe: Recipe,
    model: Any,
    data: RunData,
    input_spec: InputSpec | None,
    measure: bool,
    timing: TimingConfig | None,
    threads: int | None,
    say: Progress,
    cand: Candidate,
    start: Any = None,
) -> None:
    import torch

    from torchslim._safe_load import eval_mode
    from torchslim.models import LoadedModel
    from torchslim.passes import PassContext, apply_pass

    produced = recipe.validate()
    loaded = model if isinstance(model, LoadedModel) else None
    original: nn.Module = loaded.require_module() if loaded is not None else model
    spec = input_spec or (loaded.input_spec if loaded is not None else None)
    if spec is None:
        ds = data.eval or data.calib or data.train
        spec = ds.input_spec() if ds is not None else None
    examples = _example_inputs(spec, data)
    for ds in (data.calib, data.eval, data.train):
        if ds is not None:
            ds.check_finite()

    say("Evaluating the baseline")
    baseline_module = eval_mode(copy.deepcopy(original))
    evaluator = _evaluator(
        baseline_module, spec, data, recipe.seed, loaded.task if loaded is not None else "unknown"
    )
    with torch.no_grad():
        cand.baseline = evaluator.set_baseline(baseline_module)
    cand.baseline_size_mb = baseline_size_mb(loaded, original, examples)
    cand.baseline_params, cand.baseline_flops = _params_flops(baseline_module, examples)
    if data.teacher is not None:
        with torch.no_grad():
            cand.teacher = evaluator.evaluate(eval_mode(data.teacher))

    build_start = time.perf_counter()
    module: Any = baseline_module
    deployed: Any = None
    lowered: Any = None  # an ONNX / OpenVINO representation a step lowered the model to
    rep = Representation.MODULE
    ctx = PassContext(
        calib=data.calib,
        train=data.train,
        eval=data.eval,
        teacher=data.teacher if data.teacher is not None else baseline_module,
        example_inputs=examples,
        input_spec=spec,
        seed=recipe.seed,
        progress=False,
    )
    done = 0
    if start is not None:
        prefix = start.recipe.steps
        if tuple(recipe.steps[: len(prefix)]) != tuple(prefix):
            raise TorchslimError(
                "The recipe does not start with the steps of the artifact it continues from.",
                "Append steps to the artifact's recipe (recipe.then(...)).",
            )
        done = len(prefix)
        module, deployed, rep = start.state()
        say(f"Continuing from {start.path} ({done} step(s) already applied)")
    for i, (step, rep_after) in enumerate(zip(recipe.steps, produced, strict=True), 1):
        if i <= done:
            continue
        say(f"Step {i}/{len(recipe.steps)}: {recipe.describe()[i - 1]}")
        torch.manual_seed(recipe.seed)
        result = apply_pass(module, step, ctx)
        cand.reports.append({"step": i, "seconds": round(result.seconds, 3), **result.report})
        if _is_training_step(step):
            cand.train_seconds += result.seconds
        rep = rep_after
        deployed = None
        if rep in (Representation.ONNX, Representation.OPENVINO):
            module, lowered = None, result.module
        else:
            module = eval_mode(result.module) if hasattr(result.module, "eval") else result.module

    # The runtime builds from what the last step produced: the module, or the ONNX / OpenVINO
    # representation (in its own runtime, with that runtime's default config when the recipe
    # names none). A torch static/QAT INT8 graph runs on Inductor unless compile=False.
    runtime_config = recipe.runtime
    if runtime_config is None and lowered is not None:
        from torchslim.runtimes import default_config

        runtime_config = default_config(lowered)
    if runtime_config is None and recipe.default_runtime_name() == "inductor":
        from torchslim.runtimes.configs import InductorConfig

        runtime_config = InductorConfig()
    lowered_from_module = False
    if runtime_config is not None:
        from torchslim.runtimes import build

        if lowered is None and rep in (Representation.ONNX, Representation.OPENVINO):
            lowered = deployed.representation()  # continuing from an artifact's runtime
        from torchslim.recipe import static_shapes

        build_examples = examples
        if static_shapes(runtime_config):  # compiled for the recipe's first batch size
            if spec is None:
                raise TorchslimError(
                    "Static shapes need the model's input shapes.", "Give --input-shape."
                )
            build_examples = spec.example_inputs(batch_size=recipe.batch_sizes[0], seed=recipe.seed)
        say(f"Building the {type(runtime_config).__name__} runtime")
        deployed = build(lowered if lowered is not None else module, runtime_config, build_examples)
        lowered_from_module = rep == Representation.MODULE
    cand.runtime = str(getattr(deployed, "runtime", "eager")) if deployed is not None else "eager"

    if lowered_from_module:
        from torchslim.parity import check_parity

        say("Checking parity of the runtime against the module it was built from")
        cand.parity = check_parity(
            deployed,
            module,
            spec if spec is not None else examples,
            batch_sizes=tuple(sorted({1, 4, *recipe.batch_sizes})),
        )

    tmp = tempfile.TemporaryDirectory(prefix="torchslim-run-")
    say("Writing the model files")
    from torchslim.artifact import write_model_files

    write_model_files(Path(tmp.name), module, deployed, rep, examples)
    built = Built(
        module, deployed, rep, Path(tmp.name), spec, loaded.source if loaded else None, loaded, tmp
    )
    cand.built = built
    cand.build_seconds = time.perf_counter() - build_start
    from torchslim.artifact import deployment_files
    from torchslim.measure import deployment_size_mb

    cand.size_mb = deployment_size_mb(*deployment_files(built.files))

    if module is not None and rep == Representation.MODULE:
        cand.params, cand.flops = _params_flops(module, examples)
    say("Evaluating the result against the baseline")
    with torch.no_grad():
        cand.evaluation = evaluator.evaluate(built)

    if measure:
        from torchslim.measure import BenchTarget, measure_models

        say("Measuring baseline and result side by side (interleaved)")
        if spec is None:
            raise TorchslimError(
                "Cannot measure latency: the model's input shapes are unknown.",
                "Give --input-shape, or skip measuring.",
            )

        def make(b: int) -> tuple[Any, ...]:
            return spec.example_inputs(batch_size=b, seed=recipe.seed)

        targets = [
            BenchTarget.from_module(baseline_module, make, name="baseline"),
            BenchTarget("candidate", built, make, module=module if deployed is None else None),
        ]
        base_m, mine = measure_models(
            targets, recipe.batch_sizes, threads=threads, config=timing, memory=False
        )
        cand.baseline_measurement, cand.measurement = base_m, mine


@dataclass
class Plan:
    """A recipe ready to run on a model source, continuing an artifact when given one.

    Attributes:
        recipe: The full recipe (an artifact's steps, then the new ones).
        original: The original model: the baseline every drop and speed-up is measured against.
        start: The artifact the run continues from (its steps are not run again), or ``None``.
    """

    recipe: Recipe
    original: LoadedModel
    start: Any = None


def plan(
    loaded: LoadedModel,
    steps: tuple[Any, ...] = (),
    runtime: Any = None,
    *,
    batch_sizes: tuple[int, ...] | None = None,
    data: Any = None,
    seed: int | None = None,
    trust_code: bool = False,
) -> Plan:
    """The recipe a command runs on ``loaded``: its steps appended to an artifact's recipe.

    A command applied to an artifact **appends** its step, so ``prune → quantize → export`` yields
    one three-step recipe; a new pass step drops the artifact's runtime (the runtime comes last).

    Args:
        loaded: The model as loaded (an artifact directory, or any other source).
        steps: Pass configs to append.
        runtime: The runtime config (``None``: keep the artifact's when no step is added).
        batch_sizes: Batch sizes to build and measure for (default: the artifact's, else ``(1,)``).
        data: A :class:`~torchslim.recipe.DataRefs` with the data sources used now.
        seed: Seed (default: the artifact's, else 0).
        trust_code: Allow loading an original model the artifact names outside torchslim's
            registries.

    Raises:
        TorchslimError: The original model an artifact names cannot be loaded.
    """
    from dataclasses import replace

    from torchslim.models import load_model
    from torchslim.recipe import DataRefs

    art = loaded.metadata.get("artifact")
    refs = data or DataRefs()
    if art is None:
        recipe = Recipe(
            tuple(steps),
            runtime,
            tuple(batch_sizes or (1,)),
            refs,
            0 if seed is None else seed,
        )
        return Plan(recipe, loaded, None)
    base: Recipe = art.recipe
    new_runtime = runtime if (steps or runtime is not None) else base.runtime
    recipe = replace(
        base,
        steps=(*base.steps, *steps),
        runtime=new_runtime,
        batch_sizes=tuple(batch_sizes or base.batch_sizes),
        seed=base.seed if seed is None else seed,
    ).with_data(**{k: getattr(refs, k) for k in ("calib", "eval", "train", "teacher")})
    source = art.source
    if source is None:
        raise TorchslimError(
            f"Artifact '{art.path}' does not name the model it came from.",
            "Run the recipe on the original model instead: torchslim run RECIPE MODEL.",
        )
    from torchslim.artifact import TRUSTED_PREFIXES

    if not source.startswith(TRUSTED_PREFIXES) and not Path(source).exists() and not trust_code:
        raise TorchslimError(
            f"Artifact '{art.path}' came from '{source}', which cannot be loaded here to compare "
            "against.",
            "Run the recipe on the original model: torchslim run ARTIFACT/recipe.yaml MODEL.",
        )
    original = load_model(source, input_spec=loaded.input_spec, trust_code=trust_code)
    return Plan(recipe, original, art)
