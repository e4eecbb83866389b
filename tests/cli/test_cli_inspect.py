"""Tests for `torchslim inspect` (the command is registered on a local typer app)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import typer
from typer.testing import CliRunner

from torchslim.cli import inspect as inspect_cli

FACTORY = """
from torch import nn

def build():
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 4))
    return model.train()
"""


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Test root."""

    inspect_cli.register(app)
    return app


@pytest.fixture
def factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "inspect_factory_mod.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("inspect_factory_mod", None)
    return "inspect_factory_mod:build"


def run(app: typer.Typer, *args: str) -> object:
    return CliRunner().invoke(app, ["inspect", *args])


def test_resnet18_json(app: typer.Typer) -> None:
    res = run(app, "torchvision:resnet18", "--json")
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert set(d) >= {"model", "findings", "environment", "environment_findings", "score", "grade"}
    m = d["model"]
    assert m["params_total"] == 11_689_512
    assert m["flops"] > 3e9 and m["pattern_method"] == "fx"
    assert m["kind"] == "torchvision" and m["training_mode_at_load"] is None
    assert 0 <= d["score"] <= 100
    ids = {f["id"] for f in d["findings"]}
    assert {"fusable-patterns", "quantizable"} <= ids
    assert all(
        set(f) == {"id", "severity", "title", "detail", "recommendation"}
        for f in d["findings"] + d["environment_findings"]
    )


def test_resnet18_human(app: typer.Typer) -> None:
    res = run(app, "torchvision:resnet18")
    assert res.exit_code == 0, res.output
    out = res.stdout
    for text in (
        "Model",
        "Conv-BN-ReLU",
        "Model checklist",
        "Environment checklist",
        "Score:",
        "→",
        "✓",
    ):
        assert text in out


def test_factory_source_with_data(app: typer.Typer, factory: str) -> None:
    res = run(app, factory, "--input-shape", "1x16", "--data", "synthetic?n=8", "--json")
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert d["model"]["kind"] == "factory"
    assert d["model"]["params_total"] == 16 * 32 + 32 + 32 * 4 + 4
    assert [p["pattern"] for p in d["model"]["fusable_patterns"]] == ["Linear-ReLU"]
    assert d["environment"]["data"]["sample_bytes"] == 16 * 4
    env_ids = {f["id"] for f in d["environment_findings"]}
    assert "synthetic-data" in env_ids


def test_checkpoint_source(app: typer.Typer, factory: str, tmp_path: Path) -> None:
    import importlib

    model = importlib.import_module(factory.split(":")[0]).build()
    path = tmp_path / "weights.pt"
    torch.save(model.state_dict(), path)
    res = run(app, str(path), "--arch", factory, "--input-shape", "1x16", "--json")
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert d["model"]["kind"] == "checkpoint"
    assert d["model"]["file_bytes"] == path.stat().st_size


def test_weights_without_arch_is_one_line_error(app: typer.Typer, tmp_path: Path) -> None:
    path = tmp_path / "w.pt"
    torch.save({"w": torch.zeros(2)}, path)
    res = run(app, str(path))
    assert res.exit_code == 2
    assert "--arch" in res.stderr and "Traceback" not in res.output


def test_unknown_source_exit_2(app: typer.Typer) -> None:
    res = run(app, "definitely-not-a-model")
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert lines[0].startswith("error: Unknown model source")
    assert len([ln for ln in lines if ln.startswith("error:")]) == 1
    assert res.stdout == ""


def test_help_teaches(app: typer.Typer) -> None:
    res = run(app, "--help")
    assert res.exit_code == 0
    assert "torchslim inspect torchvision:resnet18" in res.stdout
    assert "--input-shape" in res.stdout


def test_registered_in_main_app() -> None:
    from torchslim.cli.main import app as main_app

    res = CliRunner().invoke(main_app, ["inspect", "--help"])
    assert res.exit_code == 0, res.output
    assert "torchslim inspect torchvision:resnet18" in res.stdout


# name -> (parameters, FLOPs of one 1x1x28x28 call); the weights are tracked in git
REFERENCE = {"fashion_cnn": (421_642, 8_482_304), "fashion_resnet": (696_042, 161_017_344)}


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_reference_models(app: typer.Typer, name: str) -> None:
    res = run(app, f"torchslim:{name}", "--data", "torchslim:fashion_mnist?limit=64", "--json")
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert (d["model"]["params_total"], d["model"]["flops"]) == REFERENCE[name]
    assert d["model"]["pattern_method"] == "fx" and d["model"]["fusable_patterns"]
    ids = {f["id"] for f in d["findings"]}
    assert "data-shape" not in ids and "train-mode" not in ids
    assert d["environment"]["data"]["sample_bytes"] == 28 * 28 * 4
