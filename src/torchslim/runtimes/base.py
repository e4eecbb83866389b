"""Runtime registry and the :class:`Deployed` protocol every backend implements."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from torchslim._registry import Entry, Registry
from torchslim.errors import BackendUnavailableError

if TYPE_CHECKING:
    from torch import nn

__all__ = ["RUNTIMES", "Deployed", "build", "list_runtimes", "register_runtime"]

RUNTIMES: Registry[Any] = Registry("runtime")


@runtime_checkable
class Deployed(Protocol):
    """A model ready to run on one backend.

    Attributes:
        runtime: Backend name (``"eager"``, ``"onnxruntime"``, ...).
        build_seconds: Time spent exporting/compiling, reported apart from steady-state latency.
    """

    runtime: str
    build_seconds: float

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
) -> Entry:
    """Register a runtime builder ``(module, config, example_inputs) -> Deployed``."""
    return RUNTIMES.register(
        Entry(name, target, config.__name__ if config else None, requires, extra, (), tags,
              description)
    )


def list_runtimes() -> list[Entry]:
    """All registered runtimes; ``entry.available()`` tells which can run here."""
    from torchslim.runtimes import catalog  # noqa: F401

    return RUNTIMES.list()


def build(module: nn.Module, config: Any, example_inputs: tuple[Any, ...]) -> Deployed:
    """Build ``module`` for the runtime that ``config`` selects.

    Raises:
        BackendUnavailableError: The backend is not installed (names the extra to install).
    """
    from torchslim.runtimes import catalog  # noqa: F401

    entry = RUNTIMES.by_key(type(config).__name__)
    if not entry.available():
        raise BackendUnavailableError(entry.name, entry.extra, f"needs {', '.join(entry.requires)}")
    builder = entry.load()
    deployed: Deployed = builder(module, config, example_inputs)
    return deployed
