"""The search space of ``optimize``: which recipes a search may propose, as data.

A :class:`SearchSpace` lists the choices per dimension — structured pruning ratio (0 = none) with
its recovery (KD or label-only fine-tuning: a choice the search makes), quantization method and
backend, runtime, OpenVINO precision and performance hint, threads — and turns one choice per
dimension into a valid :class:`~torchslim.recipe.Recipe` (or ``None`` for a combination that
cannot run, e.g. OpenVINO INT8 on ONNX Runtime). Presets: ``fast`` (no retraining: graph +
quantization + runtime), ``balanced`` (adds pruning: each level recovered for a quarter epoch
first, and only the promising ones — successive halving — for two epochs in all), ``thorough`` (more
pruning levels, longer recovery). A user space is YAML with the same fields.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from torchslim.config import config_type
from torchslim.errors import TorchslimError

__all__ = ["PRESETS", "Choice", "SearchSpace", "load_space"]

QUANT_CHOICES = (
    "none",
    "static/openvino",
    "static/onnxruntime",
    "dynamic/onnxruntime",
    "dynamic/torch",
    "static/executorch",
)
RUNTIME_CHOICES = ("openvino", "onnxruntime", "eager", "executorch")


@config_type("SearchSpace")
@dataclass(frozen=True)
class SearchSpace:
    """Choices per dimension; every combination is one candidate recipe (when valid).

    Attributes:
        prune_ratios: Structured channel-pruning ratios (``0.0`` = no pruning); channel counts
            are rounded to ``round_to`` (hardware-friendly widths).
        round_to: Channel multiple after pruning.
        recoveries: Recovery after pruning: ``kd`` (distil from the original) or ``finetune``
            (labels only).
        recovery_epochs: Epochs of recovery training.
        short_recovery_epochs: Multi-fidelity (``None``: off): every pruning level is first
            recovered this long; only the promising ones (successive halving over the drop after
            short recovery, Optuna's pruner) continue to ``recovery_epochs`` in a second
            training step that starts from the short-recovered model (same recovery method;
            ``kd`` keeps the original model as teacher).
        promote_within_points: A pruning level whose drop after short recovery is over the
            accuracy budget by more than this many points is never promoted.
        factorize: Layer replacements that cut FLOPs, as an alternative to pruning: ``none``,
            ``lowrank`` (SVD of Conv/Linear layers keeping ``lowrank_energy`` of the spectrum,
            where it saves FLOPs) or ``depthwise`` (depthwise-separable swap of KxK convs); each
            followed by the same recovery choice as pruning.
        lowrank_energy: Spectrum energy kept by ``lowrank``.
        recovery_lr: Peak learning rate of every recovery (``None``: the trainer's default,
            1e-3; 1e-4 suits pretrained transformers).
        recovery_batch_size: Batch size of every recovery (``None``: the trainer's, 128).
        quantize: ``none`` or ``method/backend`` (``static/openvino``, ``static/onnxruntime``,
            ``dynamic/onnxruntime``, ``dynamic/torch``).
        runtimes: Runtimes for float models (quantized ones run in their backend's runtime).
        precisions: OpenVINO float precision: ``f32``, ``bf16`` (only where the CPU has it).
        hints: OpenVINO performance hints: ``latency``, ``throughput`` (several streams, a
            batch split into one slice per stream run as concurrent requests; offered only when
            a batch size above 1 is optimised for).
        threads: Intra-op thread counts (empty: the machine's cores).
        shapes: OpenVINO input shapes: ``dynamic`` (one compiled model for any batch) or
            ``static`` (a model compiled for each batch size as it first comes, so every kernel
            is specialised for its shape; past a few shapes, padded chunks).
    """

    prune_ratios: tuple[float, ...] = (0.0,)
    round_to: int = 8
    recoveries: tuple[str, ...] = ("finetune", "kd")
    recovery_epochs: float = 1.0
    short_recovery_epochs: float | None = None
    promote_within_points: float = 3.0
    factorize: tuple[str, ...] = ("none",)
    lowrank_energy: float = 0.9
    recovery_lr: float | None = None
    recovery_batch_size: int | None = None
    quantize: tuple[str, ...] = ("none", "static/openvino", "static/onnxruntime", "dynamic/torch")
    runtimes: tuple[str, ...] = ("openvino", "onnxruntime")
    precisions: tuple[str, ...] = ("f32", "bf16")
    hints: tuple[str, ...] = ("latency", "throughput")
    threads: tuple[int, ...] = ()
    shapes: tuple[str, ...] = ("dynamic", "static")

    def __post_init__(self) -> None:
        bad = [q for q in self.quantize if q not in QUANT_CHOICES]
        bad += [r for r in self.runtimes if r not in RUNTIME_CHOICES]
        bad += [r for r in self.recoveries if r not in ("kd", "finetune")]
        bad += [p for p in self.precisions if p not in ("f32", "bf16")]
        bad += [h for h in self.hints if h not in ("latency", "throughput")]
        bad += [x for x in self.shapes if x not in ("dynamic", "static")]
        bad += [x for x in self.factorize if x not in ("none", "lowrank", "depthwise")]
        if bad:
            raise TorchslimError(
                f"Unknown search-space choice(s): {', '.join(map(str, bad))}.",
                f"quantize: {', '.join(QUANT_CHOICES)}; runtimes: {', '.join(RUNTIME_CHOICES)}; "
                "recoveries: kd, finetune; precisions: f32, bf16; hints: latency, throughput; "
                "shapes: dynamic, static; factorize: none, lowrank, depthwise.",
            )
        if any(not 0.0 <= r < 1.0 for r in self.prune_ratios) or not self.prune_ratios:
            raise TorchslimError(
                "Pruning ratios must be in [0, 1).", "E.g. prune_ratios: [0, 0.5]."
            )
        if self.recovery_epochs <= 0 or any(t < 1 for t in self.threads):
            raise TorchslimError("recovery_epochs and threads must be positive.")
        short = self.short_recovery_epochs
        if short is not None and not 0 < short < self.recovery_epochs:
            raise TorchslimError(
                f"short_recovery_epochs ({short}) must be above 0 and below recovery_epochs "
                f"({self.recovery_epochs}).",
                "E.g. short_recovery_epochs: 0.25 with recovery_epochs: 1, or leave it out.",
            )

    def _training(self) -> dict[str, Any]:
        """Recovery settings the space overrides (learning rate, batch size)."""
        out: dict[str, Any] = {}
        if self.recovery_lr is not None:
            out["lr"] = self.recovery_lr
        if self.recovery_batch_size is not None:
            out["batch_size"] = self.recovery_batch_size
        return out

    def dimensions(self) -> dict[str, list[Any]]:
        """The categorical choices per dimension (what a sampler draws from)."""
        cores = os.cpu_count() or 1
        return {
            "prune": list(self.prune_ratios),
            "recover": list(self.recoveries),
            "quantize": list(self.quantize),
            "runtime": list(self.runtimes),
            "precision": list(self.precisions) if _has_native_bf16() else ["f32"],
            "hint": list(self.hints),
            "threads": list(self.threads or (cores,)),
            "shapes": list(self.shapes or ("dynamic",)),
            "factorize": list(self.factorize or ("none",)),
        }

    def recipe(self, choice: Choice, base: Any) -> Any:
        """The recipe for one choice per dimension, or ``None`` when the combination is invalid
        or a duplicate of a canonical one (dimensions that do not apply take their first value).

        Args:
            choice: The values drawn.
            base: A :class:`~torchslim.recipe.Recipe` carrying batch sizes, data and seed.
        """
        from torchslim.passes.prune import PruneConfig, PruneTarget
        from torchslim.passes.quantize import QuantBackend, QuantizeConfig, QuantMethod
        from torchslim.runtimes.configs import (
            EagerConfig,
            OpenVINOConfig,
            OrtConfig,
            PerformanceHint,
            Precision,
        )
        from torchslim.train import DistillConfig, DistillMethod

        dims = self.dimensions()
        steps: list[Any] = []
        teacher = None
        if choice.factorize != "none":
            if choice.prune > 0:
                return None  # an alternative to pruning, not a chain with it
            from torchslim.passes.compress import DepthwiseConfig, LowRankConfig

            recover = DistillConfig(
                method=DistillMethod(choice.recover),
                epochs=self.recovery_epochs,
                seed=base.seed,
                **self._training(),
            )
            steps.append(
                LowRankConfig(energy=self.lowrank_energy, recover=recover)
                if choice.factorize == "lowrank"
                else DepthwiseConfig(recover=recover)
            )
        elif choice.prune > 0:
            recovery = DistillMethod(choice.recover)
            short = self.short_recovery_epochs
            first = self.recovery_epochs if short is None else short
            recover = DistillConfig(
                method=recovery, epochs=first, seed=base.seed, **self._training()
            )
            steps.append(
                PruneConfig(
                    ratio=choice.prune,
                    target=PruneTarget.FLOPS,
                    round_to=self.round_to,
                    recover=recover,
                )  # type: ignore[arg-type]
            )
            if short is not None:  # the rest of the recovery, for promoted levels only
                rest = round(self.recovery_epochs - short, 6)
                steps.append(
                    DistillConfig(method=recovery, epochs=rest, seed=base.seed, **self._training())
                )
                if recovery == DistillMethod.KD:
                    teacher = base.data.teacher  # the original, not the short-recovered model
        elif choice.recover != dims["recover"][0]:
            return None
        quant = choice.quantize
        rt = choice.runtime
        if quant == "static/executorch" or rt == "executorch":
            # the XNNPACK INT8 build (PT2E with calibration) is the executorch runtime's own
            if (quant == "static/executorch") != (rt == "executorch") and quant != "none":
                return None
            if any(
                getattr(choice, d) != dims[d][0] for d in ("precision", "hint", "shapes", "threads")
            ):
                return None  # ExecuTorch keeps its own thread pool and dynamic batch
            from torchslim.runtimes.configs import EdgeQuantize, ExecuTorchConfig

            edge = ExecuTorchConfig(
                quantize=EdgeQuantize.INT8 if quant == "static/executorch" else EdgeQuantize.NONE,
                calib=base.data.calib if quant == "static/executorch" else None,
                max_batch=max(base.batch_sizes),
                seed=base.seed,
            )
            return replace(
                base, steps=tuple(steps), runtime=edge, data=replace(base.data, teacher=teacher)
            )
        if quant != "none":
            method, backend = quant.split("/")
            steps.append(QuantizeConfig(QuantMethod(method), QuantBackend(backend), seed=base.seed))
            implied = {"openvino": "openvino", "onnxruntime": "onnxruntime", "torch": "eager"}
            if rt != dims["runtime"][0]:
                return None  # the backend implies the runtime: keep one canonical choice
            rt = implied[backend]
        uses_ov = rt == "openvino"
        if not uses_ov and (
            choice.precision != dims["precision"][0]
            or choice.hint != dims["hint"][0]
            or choice.shapes != dims["shapes"][0]
        ):
            return None
        if choice.hint == "throughput" and max(base.batch_sizes) == 1:
            return None  # several streams only pay off when a call carries several items
        static = choice.shapes == "static"
        if static and choice.hint == "throughput":
            return None  # the streams split batches into slices of other shapes: dynamic only
        threads = choice.threads
        if rt == "openvino":
            precision = (
                Precision.DEFAULT if quant.endswith("openvino") else Precision(choice.precision)
            )
            runtime: Any = OpenVINOConfig(
                precision=precision,
                performance_hint=PerformanceHint(choice.hint),
                threads=threads,
                dynamic=not static,
            )
            if quant.endswith("openvino") and choice.precision != dims["precision"][0]:
                return None
        elif rt == "onnxruntime":
            runtime = OrtConfig(intra_op_threads=threads)
        else:
            runtime = None if quant.endswith("torch") else EagerConfig(threads=threads)
        return replace(
            base, steps=tuple(steps), runtime=runtime, data=replace(base.data, teacher=teacher)
        )


@dataclass(frozen=True)
class Choice:
    """One value per dimension of a :class:`SearchSpace`."""

    prune: float
    recover: str
    quantize: str
    runtime: str
    precision: str
    hint: str
    threads: int
    shapes: str = "dynamic"
    factorize: str = "none"


def _has_native_bf16() -> bool:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in text or "amx_bf16" in text


PRESETS: dict[str, SearchSpace] = {
    "fast": SearchSpace(),
    # Two epochs: split 0.25 + 0.75 (a learning-rate restart between), one epoch left a 50%
    # pruned ResNet 1.65-1.75 points down where one uninterrupted epoch lost 0.55.
    "balanced": SearchSpace(
        prune_ratios=(0.0, 0.3, 0.5), recovery_epochs=2.0, short_recovery_epochs=0.25
    ),
    "thorough": SearchSpace(
        prune_ratios=(0.0, 0.25, 0.5, 0.7),
        recovery_epochs=3.0,
        short_recovery_epochs=0.5,
        factorize=("none", "lowrank", "depthwise"),
        quantize=QUANT_CHOICES,
        runtimes=("openvino", "onnxruntime", "eager"),
        hints=("latency", "throughput"),
    ),
}


PRESETS["text"] = SearchSpace(
    prune_ratios=(0.0, 0.3, 0.4, 0.5),
    recoveries=("kd",),
    recovery_epochs=1.0,
    short_recovery_epochs=0.25,
    recovery_lr=1e-4,
    recovery_batch_size=32,
    quantize=("none", "static/openvino"),
    runtimes=("openvino",),
    precisions=("f32",),
    shapes=("dynamic",),
)
"""Sentence encoders (BERT-style, e.g. ``torchslim:minilm``): attention heads and FFN width
pruned together, recovered by embedding distillation (give ``--train
'torchslim:text_background?seq_len=64'``), then OpenVINO INT8."""

PRESETS["edge"] = SearchSpace(
    prune_ratios=(0.0, 0.3, 0.5),
    recovery_epochs=1.0,
    short_recovery_epochs=0.25,
    quantize=("none", "static/executorch"),
    runtimes=("executorch",),
    precisions=("f32",),
    hints=("latency",),
    shapes=("dynamic",),
)
"""``--target edge``: ExecuTorch/XNNPACK programs (FP32 or INT8), with pruning; pair it with
batch 1 and ``--max-size-mb`` to optimise for a phone or an embedded board."""


def load_space(preset_or_path: str) -> SearchSpace:
    """A preset name (``fast``, ``balanced``, ``thorough``, ``text``, ``edge``) or a YAML file of
    :class:`SearchSpace` fields (``yaml.safe_load``; unknown fields are refused)."""
    if preset_or_path in PRESETS:
        return PRESETS[preset_or_path]
    path = Path(preset_or_path)
    if not path.is_file():
        raise TorchslimError(
            f"Unknown search space '{preset_or_path}'.",
            f"Use a preset ({', '.join(PRESETS)}) or a YAML file of SearchSpace fields.",
        )
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError:
        raise TorchslimError(f"'{path}' is not valid YAML.", "Fix the file.") from None
    known = {f.name for f in fields(SearchSpace)}
    if not isinstance(data, dict) or set(data) - known:
        unknown = sorted(set(data) - known) if isinstance(data, dict) else ["(not a mapping)"]
        raise TorchslimError(
            f"'{path}' has unknown search-space field(s): {', '.join(unknown)}.",
            f"Known: {', '.join(sorted(known))}.",
        )
    tuples: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    return SearchSpace(**tuples)
