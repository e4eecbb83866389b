"""Runtime registry and the :class:`Deployed` protocol every backend implements."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from torchslim._registry import Entry, Registry
from torchslim.errors import BackendUnavailableError

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "RUNTIMES",
    "Deployed",
    "RuntimeEntry",
    "build",
    "list_runtimes",
    "load_deployed",
    "rebuild",
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
    """Register a runtime builder ``(module, config, example_inputs) -> Deployed``.

    The builder's module must also define ``load(directory) -> Deployed``.
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


def build(module: nn.Module, config: Any, example_inputs: tuple[Any, ...]) -> Deployed:
    """Build ``module`` for the runtime that ``config`` selects.

    Raises:
        BackendUnavailableError: The backend is not installed (names the extra to install).
    """
    entry = RUNTIMES.by_key(type(config).__name__)
    reason = entry.reason() if isinstance(entry, RuntimeEntry) else None
    if reason is not None or not entry.available():
        raise BackendUnavailableError(
            entry.name, entry.extra, reason or f"needs {', '.join(entry.requires)}"
        )
    builder = entry.load()
    deployed: Deployed = builder(module, config, example_inputs)
    return deployed


def rebuild(deployed: Any, config: Any) -> Deployed:
    """Build an already lowered model (an ONNX Runtime or OpenVINO runtime, e.g. from a
    quantization step) again with ``config``'s settings.

    Raises:
        TorchslimError: ``config`` selects a different runtime than ``deployed`` runs in, or that
            runtime cannot rebuild.
    """
    import importlib

    from torchslim.errors import TorchslimError

    entry = RUNTIMES.by_key(type(config).__name__)
    have = str(getattr(deployed, "runtime", "?"))
    if entry.name != have:
        raise TorchslimError(
            f"A model lowered for '{have}' cannot be rebuilt for '{entry.name}'.",
            f"Use the {have} runtime, or quantize with the {entry.name} backend.",
        )
    module = importlib.import_module(entry.target.partition(":")[0])
    fn = getattr(module, "rebuild", None)
    if fn is None:
        raise TorchslimError(f"The '{entry.name}' runtime cannot rebuild a lowered model.")
    result: Deployed = fn(deployed, config)
    return result


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
