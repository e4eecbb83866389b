"""Runtime registry and the :class:`Deployed` protocol every backend implements.

A runtime builds from what a pass produced: a PyTorch module, or a lowered representation from
:mod:`torchslim.lowering` (:class:`~torchslim.lowering.OnnxModel` for ``onnxruntime``,
:class:`~torchslim.lowering.OpenVINOModel` for ``openvino``). A representation given to another
runtime is a clear :class:`~torchslim.errors.TorchslimError`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from torchslim._registry import Entry, Registry
from torchslim.errors import BackendUnavailableError, TorchslimError
from torchslim.lowering import is_lowered

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "RUNTIMES",
    "Deployed",
    "RuntimeEntry",
    "build",
    "default_config",
    "list_runtimes",
    "load_deployed",
    "lowered_for",
    "register_runtime",
]

RUNTIMES: Registry[Any] = Registry("runtime")


@dataclass(frozen=True)
class RuntimeEntry(Entry):
    """A registry entry for a runtime, with an optional machine check.

    Attributes:
        probe: ``"module:function"`` returning ``None`` when the backend can run on this machine,
            or a one-line reason why not (e.g. no GPU). Evaluated only when asked.
    """

    probe: str | None = None

    def reason(self) -> str | None:
        """Why this runtime cannot run here, or ``None`` when it can."""
        missing = [m for m in self.requires if not _has_module(m)]
        if missing:
            return f"needs {', '.join(missing)}"
        if self.probe:
            mod_name, _, attr = self.probe.partition(":")
            import importlib

            try:
                result: str | None = getattr(importlib.import_module(mod_name), attr)()
            except Exception as exc:
                return f"{type(exc).__name__}: {exc}"
            return result
        return None

    def available(self) -> bool:
        """True when the modules are installed and the probe (if any) finds the machine fit."""
        return self.reason() is None


def _has_module(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


@runtime_checkable
class Deployed(Protocol):
    """A model ready to run on one backend.

    Attributes:
        runtime: Backend name (``"eager"``, ``"onnxruntime"``, ...).
        build_seconds: Time spent exporting/compiling, reported apart from steady-state latency.
    """

    runtime: str
    build_seconds: float
    info: dict[str, Any]

    def __call__(self, *inputs: Any) -> Any:
        """Run on torch tensors (one per model input) and return torch tensor output(s)."""
        ...

    def save(self, directory: Path) -> Path:
        """Write the backend's model file(s) into ``directory`` and return the main file."""
        ...


def register_runtime(
    name: str,
    target: str,
    *,
    config: type | None = None,
    requires: tuple[str, ...] = (),
    extra: str | None = None,
    tags: tuple[str, ...] = (),
    description: str = "",
    probe: str | None = None,
) -> Entry:
    """Register a runtime builder ``(module_or_representation, config, example_inputs) -> Deployed``.

    The builder's module must also define ``load(directory) -> Deployed``; a runtime that builds
    from a lowered representation also defines ``default_config(representation) -> config``.
    """
    return RUNTIMES.register(
        RuntimeEntry(
            name,
            target,
            config.__name__ if config else None,
            requires,
            extra,
            (),
            tags,
            description,
            probe,
        )
    )


def list_runtimes() -> list[Entry]:
    """All registered runtimes; ``entry.available()`` tells which can run here."""
    return RUNTIMES.list()


def lowered_for(model: Any, runtime: str) -> Any:
    """``model`` when it is a representation lowered for ``runtime``; ``None`` for a module.

    Raises:
        TorchslimError: ``model`` is a representation lowered for another runtime (names both).
    """
    if not is_lowered(model):
        return None
    have = str(model.runtime)
    if have != runtime:
        raise TorchslimError(
            f"The '{runtime}' runtime cannot build a {type(model).__name__} (a model lowered "
            f"for '{have}').",
            f"Use the {have} runtime for it, or quantize with the {runtime} backend (or a torch "
            "backend) instead.",
        )
    return model


def build(model: nn.Module | Any, config: Any, example_inputs: tuple[Any, ...]) -> Deployed:
    """Build ``model`` for the runtime that ``config`` selects.

    Args:
        model: A PyTorch module, or a lowered representation from a pass
            (:class:`~torchslim.lowering.OnnxModel` for ``OrtConfig``,
            :class:`~torchslim.lowering.OpenVINOModel` for ``OpenVINOConfig``).
        config: A registered runtime config.
        example_inputs: Inputs for tracing/compiling (batch first).

    Raises:
        TorchslimError: ``model`` is a representation lowered for another runtime.
        BackendUnavailableError: The backend is not installed (names the extra to install).
    """
    entry = RUNTIMES.by_key(type(config).__name__)
    lowered_for(model, entry.name)
    reason = entry.reason() if isinstance(entry, RuntimeEntry) else None
    if reason is not None or not entry.available():
        raise BackendUnavailableError(
            entry.name, entry.extra, reason or f"needs {', '.join(entry.requires)}"
        )
    builder = entry.load()
    deployed: Deployed = builder(model, config, example_inputs)
    return deployed


def default_config(representation: Any) -> Any:
    """The config of the runtime a lowered representation runs in when a recipe names none.

    ``OrtConfig()`` for an :class:`~torchslim.lowering.OnnxModel`; ``OpenVINOConfig`` at the
    model's own inference precision for an :class:`~torchslim.lowering.OpenVINOModel` (OpenVINO's
    default for NNCF INT8 models, BF16 for a BF16 lowering).

    Raises:
        TorchslimError: ``representation`` is not a lowered representation.
    """
    import importlib

    if not is_lowered(representation):
        raise TorchslimError(
            f"{type(representation).__name__} is not a lowered representation.",
            "Give the recipe a runtime config for a PyTorch module.",
        )
    entry = RUNTIMES.get(str(representation.runtime))
    module = importlib.import_module(entry.target.partition(":")[0])
    return module.default_config(representation)


def load_deployed(directory: str | Path) -> Any:
    """Load any runtime saved with ``deployed.save(directory)``.

    Raises:
        SourceError: Not a saved runtime directory, or saved by a newer torchslim.
        BackendUnavailableError: The runtime's backend is not installed here.
    """
    from torchslim.runtimes._common import read_manifest

    meta = read_manifest(Path(directory))
    entry = RUNTIMES.get(meta["runtime"])
    if not entry.available():
        raise BackendUnavailableError(
            entry.name, entry.extra, getattr(entry, "reason", lambda: None)()
        )
    mod_name = entry.target.partition(":")[0]
    import importlib

    module = importlib.import_module(mod_name)
    loader: Callable[[str | Path], Any] = module.load
    return loader(directory)
