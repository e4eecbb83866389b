"""``torchslim profile`` and ``torchslim inspect --profile`` on the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from torchslim.cli import inspect as inspect_cli
from torchslim.cli import profile as profile_cli
from torchslim.profile.result import JSON_KEYS


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Test root."""

    profile_cli.register(app)
    inspect_cli.register(app)
    return app


def test_profile_json_and_trace(app: typer.Typer, tmp_path: Path) -> None:
    trace = tmp_path / "trace.json"
    res = CliRunner().invoke(
        app,
        [
            "profile",
            "torchslim:fashion_cnn",
            "--json",
            "--no-peak",
            "--no-save",
            "--iterations",
            "3",
            "--trace",
            str(trace),
        ],
    )
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert tuple(data) == JSON_KEYS
    assert data["runtime"] == "eager" and data["batch"] == 1
    assert data["table"] is None and data["trace"] == str(trace)
    assert {x["module"] for x in data["layers"]} >= {"conv1", "conv2", "fc1", "fc2"}
    assert data["layers"][0]["share"] >= data["layers"][-1]["share"]
    assert "traceEvents" in json.loads(trace.read_text(encoding="utf-8"))


def test_profile_human_output(app: typer.Typer) -> None:
    res = CliRunner().invoke(
        app,
        ["profile", "torchslim:fashion_cnn", "--no-peak", "--no-save", "-n", "3", "--top", "3"],
    )
    assert res.exit_code == 0, res.output
    for text in ("Slowest layers", "By module", "By operator", "Where the time goes", "conv2"):
        assert text in res.stdout


def test_profile_rejects_several_batch_sizes(app: typer.Typer) -> None:
    res = CliRunner().invoke(app, ["profile", "torchslim:fashion_cnn", "--batch", "1,8"])
    assert res.exit_code == 2
    assert "one batch size" in res.output


@pytest.mark.slow
def test_inspect_profile_adds_the_top_findings(app: typer.Typer) -> None:
    res = CliRunner().invoke(app, ["inspect", "torchslim:fashion_resnet", "--profile", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    prof = data["profile"]
    assert prof["runtime"] == "eager" and prof["findings"]
    ids = [f["id"] for f in data["findings"]]
    assert [f"profile-{f['id']}" for f in prof["findings"]] == ids[-len(prof["findings"]) :]
    assert "profile-conv-share" in ids  # a ResNet spends most of its time in convolutions


def test_profile_findings_join_the_checklist_and_score() -> None:
    from torchslim.doctor import Finding, Report
    from torchslim.profile.result import Advice

    report = Report({}, (Finding("a", "info", "A"),), (Finding("e", "warn", "E"),), {}, 92)
    advice = [Advice(f"r{i}", "warn", f"R{i}") for i in range(5)]

    class Profiled:
        findings = tuple(advice)

    merged = inspect_cli._with_profile(report, Profiled())
    assert [f.id for f in merged.findings] == ["a", "profile-r0", "profile-r1", "profile-r2"]
    assert merged.score == 100 - 8 * (1 + inspect_cli.PROFILE_FINDINGS)
