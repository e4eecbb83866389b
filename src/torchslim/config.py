"""Typed, frozen configs that round-trip safely through plain data (JSON/YAML).

A config is a frozen dataclass decorated with :func:`config_type`. It serialises as
``{"type": NAME, "version": N, "fields": {...}}``; :func:`config_from_dict` rebuilds only types
registered here (never arbitrary classes), rejects unknown fields and newer versions, and turns
lists back into tuples and strings back into enums.
"""

from __future__ import annotations

import dataclasses
import enum
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from torchslim.errors import TorchslimError

__all__ = ["config_from_dict", "config_to_dict", "config_type", "known_config_types"]

C = TypeVar("C")

_TYPES: dict[str, type] = {}


def config_type(name: str, version: int = 1) -> Callable[[type[C]], type[C]]:
    """Class decorator: register a frozen dataclass as a serialisable config.

    Args:
        name: Stable type name written to files (``"QuantizeConfig"``).
        version: Bump when fields change incompatibly.
    """

    def wrap(cls: type[C]) -> type[C]:
        if not dataclasses.is_dataclass(cls) or not cls.__dataclass_params__.frozen:  # type: ignore[attr-defined]
            raise TypeError(f"{cls.__name__} must be a frozen dataclass")
        if name in _TYPES and _TYPES[name] is not cls:
            raise ValueError(f"config type '{name}' is already registered")
        _TYPES[name] = cls
        cls.config_name = name  # type: ignore[attr-defined]
        cls.config_version = version  # type: ignore[attr-defined]
        return cls

    return wrap


def known_config_types() -> dict[str, type]:
    """Registered config type names → classes."""
    return dict(_TYPES)


def _encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return config_to_dict(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _encode(v) for k, v in value.items()}
    return value


def config_to_dict(config: Any) -> dict[str, Any]:
    """Serialise a registered config to ``{"type", "version", "fields"}``."""
    name = getattr(type(config), "config_name", None)
    if name is None:
        raise TypeError(f"{type(config).__name__} is not a registered config type")
    return {
        "type": name,
        "version": type(config).config_version,
        "fields": {f.name: _encode(getattr(config, f.name)) for f in dataclasses.fields(config)},
    }


def _decode(value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if isinstance(value, Mapping) and "type" in value and "fields" in value:
        return config_from_dict(value)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _decode(value, a)
            except (TypeError, ValueError):
                continue
        return value
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return hint(value)
    if origin is tuple and isinstance(value, list):
        inner = args[0] if args else Any
        return tuple(_decode(v, inner) for v in value)
    if origin is dict and isinstance(value, Mapping):
        return dict(value)
    return value


def config_from_dict(data: Mapping[str, Any]) -> Any:
    """Rebuild a config written by :func:`config_to_dict`.

    Only types registered by an imported module load (``import torchslim.passes`` and
    ``torchslim.runtimes`` register the built-in ones; this floor never imports them).

    Raises:
        TorchslimError: Unknown type, newer version, unknown or missing fields.
    """
    name = data.get("type")
    if name not in _TYPES:
        raise TorchslimError(
            f"Unknown config type '{name}'.", f"Known: {', '.join(sorted(_TYPES))}."
        )
    cls = _TYPES[name]
    version = int(data.get("version", 1))
    if version > cls.config_version:  # type: ignore[attr-defined]
        raise TorchslimError(
            f"Config '{name}' has version {version}, newer than this torchslim supports "
            f"({cls.config_version}).",  # type: ignore[attr-defined]
            "Upgrade torchslim.",
        )
    fields = dict(data.get("fields", {}))
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(fields) - set(known)
    if unknown:
        raise TorchslimError(f"Config '{name}' has unknown field(s): {', '.join(sorted(unknown))}.")
    hints = typing.get_type_hints(cls)
    kwargs = {k: _decode(v, hints.get(k, Any)) for k, v in fields.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise TorchslimError(f"Invalid config '{name}': {exc}.") from exc
