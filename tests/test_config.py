"""Config round-trips and the registry."""

from __future__ import annotations

import enum
from dataclasses import dataclass

import pytest

from torchslim._registry import Entry, Registry
from torchslim.config import config_from_dict, config_to_dict, config_type
from torchslim.errors import TorchslimError


class Color(str, enum.Enum):
    RED = "red"
    BLUE = "blue"


@config_type("_TestConfig", version=2)
@dataclass(frozen=True)
class _TestConfig:
    ratio: float = 0.5
    color: Color = Color.RED
    layers: tuple[str, ...] = ()
    limit: int | None = None


def test_round_trip_preserves_types() -> None:
    cfg = _TestConfig(0.3, Color.BLUE, ("a", "b"), 7)
    data = config_to_dict(cfg)
    assert data == {
        "type": "_TestConfig",
        "version": 2,
        "fields": {"ratio": 0.3, "color": "blue", "layers": ["a", "b"], "limit": 7},
    }
    back = config_from_dict(data)
    assert back == cfg and isinstance(back.layers, tuple) and back.color is Color.BLUE


def test_refuses_unknown_types_fields_and_newer_versions() -> None:
    with pytest.raises(TorchslimError, match="Unknown config type"):
        config_from_dict({"type": "os.system", "fields": {}})
    with pytest.raises(TorchslimError, match="unknown field"):
        config_from_dict({"type": "_TestConfig", "version": 1, "fields": {"evil": 1}})
    with pytest.raises(TorchslimError, match="newer"):
        config_from_dict({"type": "_TestConfig", "version": 3, "fields": {}})


def test_only_frozen_dataclasses_register() -> None:
    with pytest.raises(TypeError):

        @config_type("_Mutable")
        @dataclass
        class _Mutable:
            x: int = 1


def test_registry_lookup_and_availability() -> None:
    reg: Registry[object] = Registry("thing")
    reg.register(Entry("a", "math:sqrt", key="A", requires=("math",)))
    reg.register(Entry("b", "os.path:join", requires=("surely_not_installed_pkg",), extra="x"))
    assert [e.name for e in reg.list()] == ["a", "b"]
    assert reg.by_key("A").load()(9.0) == 3.0
    assert reg.get("a").available() and not reg.get("b").available()
    with pytest.raises(TorchslimError, match="Known: a, b"):
        reg.get("c")
    with pytest.raises(ValueError):
        reg.register(Entry("a", "math:cos"))


def test_builtin_configs_round_trip_without_prior_imports() -> None:
    """Recipes name built-in pass/runtime configs; loading them must not need manual imports."""
    import subprocess
    import sys

    code = (
        "from torchslim.recipe import Recipe\n"
        "r = Recipe.from_dict({'format': 'torchslim.recipe', 'version': 1, 'runtime': "
        "{'type': 'OrtConfig', 'version': 1, 'fields': {'opset': 17}}})\n"
        "c = r.runtime\n"
        "print(type(c).__name__, c.opset)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["OrtConfig", "17"]


def test_every_registered_config_round_trips() -> None:
    from torchslim.config import known_config_types
    from torchslim.passes import list_passes
    from torchslim.runtimes import list_runtimes

    list_passes()
    list_runtimes()
    types = known_config_types()
    assert {"QuantizeConfig", "PruneConfig", "FuseConfig", "OrtConfig", "OpenVINOConfig"} <= set(
        types
    )
    for cls in types.values():
        if cls is _TestConfig:
            continue
        cfg = cls()
        assert config_from_dict(config_to_dict(cfg)) == cfg
