"""``Recipe``: what was done to a model, as data that can be saved, checked and replayed.

A recipe is an ordered list of pass configs (the *steps*), one runtime config (where the result
runs; ``None`` keeps it as an eager PyTorch module), the batch sizes it is built and measured for,
the data it used (source strings, never the data itself) and the seed. It is a frozen, versioned
config like every other, so it round-trips through ``recipe.yaml`` and loads only known types::

    from torchslim.recipe import Recipe
    from torchslim.passes.prune import PruneConfig
    from torchslim.runtimes.configs import OpenVINOConfig

    r = Recipe(steps=(PruneConfig(ratio=0.5),), runtime=OpenVINOConfig())
    r.validate()                       # before any work: each step accepts what the last produced
    r.save("recipe.yaml")
    assert Recipe.load("recipe.yaml") == r

``recipe.yaml`` layout (``format``/``version`` first, then plain fields)::

    format: torchslim.recipe
    version: 1
    seed: 0
    batch_sizes: [1]
    data: {calib: null, eval: torchslim:fashion_mnist, train: ...}
    steps:
    - {type: PruneConfig, version: 1, fields: {ratio: 0.5, ...}}
    runtime: {type: OpenVINOConfig, version: 1, fields: {...}}   # or null

Loading never executes code: YAML is read with ``safe_load`` and every ``type`` must be a
registered pass or runtime config.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from torchslim.config import config_from_dict, config_to_dict, config_type
from torchslim.errors import TorchslimError

__all__ = ["DataRefs", "Recipe", "RecipeError", "Representation"]

RECIPE_FORMAT = "torchslim.recipe"
RECIPE_VERSION = 1
_TOP_KEYS = ("format", "version", "seed", "batch_sizes", "data", "steps", "runtime")


class RecipeError(TorchslimError):
    """A recipe that cannot be read or whose steps do not fit together."""


class Representation:
    """What a step produces, checked by :meth:`Recipe.validate` (plain strings)."""

    MODULE = "module"  # a PyTorch module (trainable or quantized)
    QUANTIZED_MODULE = "quantized module"  # a torch-quantized module: no more training passes
    ONNX = "onnx graph"  # lowered for ONNX Runtime
    OPENVINO = "openvino model"  # lowered for OpenVINO


def _ensure_catalogs() -> None:
    """Register every built-in pass and runtime config type (the recipe floor sits above both)."""
    import torchslim.passes.catalog
    import torchslim.runtimes.catalog  # noqa: F401


@config_type("DataRefs")
@dataclass(frozen=True)
class DataRefs:
    """The data a recipe used, as the source strings the user typed (never the data itself).

    Attributes:
        calib: Calibration data (static quantization).
        eval: Evaluation data (task metric and fidelity).
        train: Training data (recovery, distillation, QAT).
        teacher: Teacher model source for distillation (default: the model being optimised).
    """

    calib: str | None = None
    eval: str | None = None
    train: str | None = None
    teacher: str | None = None


def static_shapes(runtime: Any) -> bool:
    """Whether a runtime config compiles fixed input shapes (``dynamic=False``): its model is
    built for the recipe's first batch size, and specialised for other shapes as they come."""
    return runtime is not None and getattr(runtime, "dynamic", True) is False


@config_type("Recipe", version=RECIPE_VERSION)
@dataclass(frozen=True)
class Recipe:
    """An ordered chain of pass configs plus the runtime that runs the result.

    Attributes:
        steps: Pass configs, applied in order (each a registered config, e.g. ``PruneConfig``).
        runtime: A runtime config (``OrtConfig``, ``OpenVINOConfig``, ...), or ``None`` to keep an
            eager PyTorch module (saved as a ``torch.export`` program).
        batch_sizes: Batch sizes the result is built, parity-checked and measured for.
        data: The data sources used (replayed by ``torchslim run``).
        seed: Seed for everything stochastic (sampling, training).
    """

    steps: tuple[Any, ...] = ()
    runtime: Any = None
    batch_sizes: tuple[int, ...] = (1,)
    data: DataRefs = field(default_factory=DataRefs)
    seed: int = 0

    # ---- composition --------------------------------------------------------------------------
    def then(self, *steps: Any, runtime: Any = None) -> Recipe:
        """A new recipe with ``steps`` appended (and ``runtime`` replaced when given)."""
        return replace(
            self, steps=(*self.steps, *steps), runtime=self.runtime if runtime is None else runtime
        )

    def with_data(self, **refs: str | None) -> Recipe:
        """A new recipe whose data references are updated with the non-``None`` ``refs``."""
        given = {k: v for k, v in refs.items() if v is not None}
        return replace(self, data=replace(self.data, **given))

    def describe(self) -> list[str]:
        """One short line per step and the runtime (``["PruneConfig ratio=0.5", ...]``)."""
        lines = [_short(s) for s in self.steps]
        if self.runtime is not None:
            lines.append(f"runtime {_short(self.runtime)}")
        else:
            lines.append(f"runtime {self.default_runtime_name()}")
        return lines

    def default_runtime_name(self) -> str:
        """The runtime the result runs in when ``runtime`` is ``None``: the backend's own for a
        quantization lowered to ONNX Runtime / OpenVINO, Inductor for a torch static/QAT INT8
        graph with ``compile`` on, else eager."""
        last = _produces(self.steps[-1]) if self.steps else Representation.MODULE
        if last == Representation.ONNX:
            return "onnxruntime"
        if last == Representation.OPENVINO:
            return "openvino"
        step = self.steps[-1] if self.steps else None
        if (
            last == Representation.QUANTIZED_MODULE
            and getattr(step, "compile", False)
            and getattr(getattr(step, "method", None), "value", None) in ("static", "qat")
        ):
            return "inductor"
        return "eager"

    # ---- checking -----------------------------------------------------------------------------
    def validate(self) -> list[str]:
        """Check, before any work, that the recipe can run.

        Every step must be a registered pass config and accept what the step before it produced;
        the runtime must be a registered runtime config able to run the last representation.

        Returns:
            What each step produces, in order (:class:`Representation` values).

        Raises:
            RecipeError: Naming the first step that does not fit and why.
        """
        from torchslim.passes.base import PASSES
        from torchslim.runtimes.base import RUNTIMES

        _ensure_catalogs()
        if not self.batch_sizes or any(int(b) < 1 for b in self.batch_sizes):
            raise RecipeError(
                f"Recipe batch sizes {list(self.batch_sizes)} are invalid.",
                "Give positive batch sizes, e.g. [1, 32].",
            )
        rep = Representation.MODULE
        produced: list[str] = []
        for i, step in enumerate(self.steps, 1):
            name = type(step).__name__
            try:
                PASSES.by_key(name)
            except TorchslimError:
                raise RecipeError(
                    f"Recipe step {i} ({name}) is not a pass config.",
                    "Steps are pass configs such as PruneConfig or QuantizeConfig.",
                ) from None
            if rep != Representation.MODULE:
                raise RecipeError(
                    f"Recipe step {i} ({_short(step)}) cannot follow a step that produced a "
                    f"{rep}: passes work on trainable PyTorch modules.",
                    "Put quantization last (after pruning, distillation and compression).",
                )
            rep = _produces(step)
            produced.append(rep)
        if self.runtime is not None:
            rname = type(self.runtime).__name__
            try:
                entry = RUNTIMES.by_key(rname)
            except TorchslimError:
                raise RecipeError(
                    f"Recipe runtime {rname} is not a runtime config.",
                    "Use OrtConfig, OpenVINOConfig, TorchScriptConfig, ExportConfig, ...",
                ) from None
            allowed = {
                Representation.MODULE: None,
                Representation.QUANTIZED_MODULE: {"eager", "torchscript", "export", "inductor"},
                Representation.ONNX: {"onnxruntime"},
                Representation.OPENVINO: {"openvino"},
            }[rep]
            if allowed is not None and entry.name not in allowed:
                raise RecipeError(
                    f"The last step produced a {rep}, which the '{entry.name}' runtime cannot run.",
                    f"Use the {' or '.join(sorted(allowed))} runtime, or quantize with a backend "
                    f"that matches '{entry.name}'.",
                )
        return produced

    # ---- files --------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The ``recipe.yaml`` form (format, version, then plain fields)."""
        d = config_to_dict(self)["fields"]
        d["data"] = config_to_dict(self.data)["fields"]
        return {"format": RECIPE_FORMAT, "version": RECIPE_VERSION, **d}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "recipe") -> Recipe:
        """Rebuild a recipe from :meth:`to_dict`'s form, accepting only known types and fields.

        Raises:
            RecipeError: Wrong format, newer version, unknown key, unknown step type or field.
        """
        _ensure_catalogs()
        if not isinstance(data, Mapping):
            raise RecipeError(f"{where} is not a mapping.", "Write it as torchslim does.")
        if data.get("format") != RECIPE_FORMAT:
            raise RecipeError(
                f"{where} is not a torchslim recipe (format is {data.get('format')!r}).",
                f"The first key must be 'format: {RECIPE_FORMAT}'.",
            )
        version = data.get("version")
        if not isinstance(version, int) or version > RECIPE_VERSION:
            raise RecipeError(
                f"{where} has recipe version {version!r}; this torchslim reads up to "
                f"{RECIPE_VERSION}.",
                "Upgrade torchslim.",
            )
        unknown = sorted(set(data) - set(_TOP_KEYS))
        if unknown:
            raise RecipeError(
                f"{where} has unknown key(s): {', '.join(unknown)}.",
                f"Known keys: {', '.join(_TOP_KEYS)}.",
            )
        steps = data.get("steps") or []
        if not isinstance(steps, list):
            raise RecipeError(f"{where}: 'steps' must be a list.", "Write it as torchslim does.")
        try:
            decoded = tuple(_decode_config(s, f"{where} step {i}") for i, s in enumerate(steps, 1))
            runtime = data.get("runtime")
            rt = None if runtime is None else _decode_config(runtime, f"{where} runtime")
            refs = data.get("data") or {}
            if not isinstance(refs, Mapping):
                raise RecipeError(
                    f"{where}: 'data' must be a mapping.", "Write it as torchslim does."
                )
            bad = sorted(set(refs) - {"calib", "eval", "train", "teacher"})
            if bad:
                raise RecipeError(
                    f"{where}: unknown data key(s) {', '.join(bad)}.",
                    "Data keys are calib, eval, train and teacher.",
                )
            batch_sizes = tuple(int(b) for b in (data.get("batch_sizes") or (1,)))
            seed = int(data.get("seed", 0))
        except (TypeError, ValueError) as exc:
            raise RecipeError(
                f"{where} is invalid: {exc}.", "Write it as torchslim does."
            ) from None
        return cls(decoded, rt, batch_sizes, DataRefs(**{k: refs[k] for k in refs}), seed)

    def to_yaml(self) -> str:
        """``recipe.yaml`` text."""
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)

    @classmethod
    def from_yaml(cls, text: str, *, where: str = "recipe") -> Recipe:
        """Parse ``recipe.yaml`` text (``yaml.safe_load``: no tags, no code)."""
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f" at line {mark.line + 1}" if mark is not None else ""
            if isinstance(exc, yaml.constructor.ConstructorError):  # e.g. !!python/object
                tag = str(getattr(exc, "problem", "")).rsplit(" ", 1)[-1].strip("'")
                raise RecipeError(
                    f"{where} is not valid YAML for a recipe{at}: the tag "
                    f"'{tag.replace('tag:yaml.org,2002:', '!!')}' is refused.",
                    "Recipes are plain YAML without tags (tags such as !!python/object run code); "
                    "write it as torchslim does.",
                ) from None
            raise RecipeError(f"{where} is not valid YAML{at}.", "Fix the file.") from None
        return cls.from_dict(data, where=where)

    def save(self, path: str | Path) -> Path:
        """Write ``recipe.yaml`` to ``path`` (a file; directories are written atomically by the
        artifact writer, which calls this inside its temporary directory)."""
        p = Path(path)
        p.write_text(self.to_yaml(), encoding="utf-8")
        return p

    @classmethod
    def load(cls, path: str | Path) -> Recipe:
        """Read a ``recipe.yaml`` (or an artifact directory's).

        Raises:
            RecipeError: Missing, unreadable or invalid file.
        """
        p = Path(path)
        if p.is_dir():
            p = p / "recipe.yaml"
        if not p.is_file():
            raise RecipeError(f"Recipe file '{p}' does not exist.", "Give a recipe.yaml path.")
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise RecipeError(
                f"Cannot read recipe '{p}': {exc}.",
                "Give a recipe.yaml written by torchslim (or an artifact directory).",
            ) from None
        return cls.from_yaml(text, where=str(p))


def _produces(step: Any) -> str:
    """What a pass config's step turns a module into."""
    from torchslim.passes.quantize import QuantBackend, QuantizeConfig

    if isinstance(step, QuantizeConfig):
        backend = QuantBackend(step.backend)
        if backend is QuantBackend.ONNXRUNTIME:
            return Representation.ONNX
        if backend is QuantBackend.OPENVINO:
            return Representation.OPENVINO
        return Representation.QUANTIZED_MODULE
    return Representation.MODULE


def _decode_config(data: Any, where: str) -> Any:
    if not isinstance(data, Mapping) or "type" not in data:
        raise RecipeError(
            f"{where} must be a mapping with 'type' and 'fields'.",
            "Write steps as {type: PruneConfig, version: 1, fields: {...}}.",
        )
    try:
        return config_from_dict(data)
    except RecipeError:
        raise
    except TorchslimError as exc:
        raise RecipeError(f"{where}: {exc.message}", exc.hint) from None


def _short(config: Any) -> str:
    """``"PruneConfig(ratio=0.5, recover=DistillConfig(...))"`` with only non-default fields."""
    import dataclasses

    if config is None:
        return "none"
    if not dataclasses.is_dataclass(config):
        return repr(config)
    changed = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        default = (
            f.default
            if f.default is not dataclasses.MISSING
            else (f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        )
        if value != default:
            v = _short(value) if dataclasses.is_dataclass(value) else getattr(value, "value", value)
            changed.append(f"{f.name}={v}")
    return f"{type(config).__name__}({', '.join(changed)})"
