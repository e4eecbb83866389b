"""The one registry mechanism used by passes and runtimes.

An entry is a small frozen record: a name, where its implementation lives (``"module:attr"``,
imported only when first used), and what it needs and supports. ``Registry.list()`` answers what
exists without importing any backend.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from torchslim.errors import TorchslimError

__all__ = ["Entry", "Registry"]

T = TypeVar("T")


@dataclass(frozen=True)
class Entry:
    """One registered implementation.

    Attributes:
        name: Unique name (``"quantize.dynamic"``, ``"onnxruntime"``).
        target: ``"package.module:attribute"`` of the implementation, imported lazily.
        key: Optional dispatch key (e.g. the config class name that selects this entry).
        requires: Python modules that must be importable (``("openvino",)``).
        extra: The pip extra that provides ``requires``.
        needs: What the implementation needs from the caller (``("calibration_data",)``).
        tags: Free-form capabilities (``("cpu", "int8")``).
        description: One line for listings.
    """

    name: str
    target: str
    key: str | None = None
    requires: tuple[str, ...] = ()
    extra: str | None = None
    needs: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    description: str = ""

    def available(self) -> bool:
        """True when every module in ``requires`` can be found (without importing it)."""
        import importlib.util

        return all(importlib.util.find_spec(m) is not None for m in self.requires)

    def load(self) -> Any:
        """Import and return the implementation."""
        mod_name, _, attr = self.target.partition(":")
        return getattr(importlib.import_module(mod_name), attr)


@dataclass
class Registry(Generic[T]):
    """A named collection of :class:`Entry` records.

    Attributes:
        kind: What the entries are (``"pass"``, ``"runtime"``), used in error messages.
    """

    kind: str
    _entries: dict[str, Entry] = field(default_factory=dict)

    def register(self, entry: Entry) -> Entry:
        """Add ``entry``; names (and keys) must be unique."""
        if entry.name in self._entries:
            raise ValueError(f"{self.kind} '{entry.name}' is already registered")
        if entry.key is not None and any(e.key == entry.key for e in self._entries.values()):
            raise ValueError(f"{self.kind} key '{entry.key}' is already registered")
        self._entries[entry.name] = entry
        return entry

    def get(self, name: str) -> Entry:
        """The entry called ``name``, or a clear error listing the known names."""
        try:
            return self._entries[name]
        except KeyError:
            raise TorchslimError(
                f"Unknown {self.kind} '{name}'.", f"Known: {', '.join(sorted(self._entries))}."
            ) from None

    def by_key(self, key: str) -> Entry:
        """The entry whose dispatch key is ``key``."""
        for e in self._entries.values():
            if e.key == key:
                return e
        raise TorchslimError(f"No {self.kind} is registered for '{key}'.")

    def list(self) -> list[Entry]:
        """All entries, sorted by name."""
        return [self._entries[k] for k in sorted(self._entries)]

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.list())

    def __contains__(self, name: object) -> bool:
        return name in self._entries


# ------------------------------------------------------------------------------------------------
# Source hooks: how the sources floor reaches what lives above it without importing it
# ------------------------------------------------------------------------------------------------

MODEL_SOURCES: Registry[Any] = Registry("model source")
"""Model-source resolvers registered by upper floors (``key``: a source prefix such as
``"torchslim"``, or a marker file such as ``"manifest.json"`` for directories). ``models.py``
consults it; the entries are wired once in ``torchslim/__init__.py``."""

DATA_SOURCES: Registry[Any] = Registry("data source")
"""Data-source resolvers registered by upper floors (``key``: a source prefix)."""


def hook(registry: Registry[Any], key: str) -> Any:
    """The implementation registered under ``key`` in ``registry``, or ``None``."""
    for entry in registry.list():
        if entry.key == key:
            return entry.load()
    return None
