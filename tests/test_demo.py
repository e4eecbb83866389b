"""The main job: every candidate is checked against the baseline; only a good one is recommended."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from support_models import requires_reference
from torchslim.cli.main import app


@pytest.mark.slow
@requires_reference
def test_demo_cli_checks_every_variant_and_recommends_within_budget(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    res = CliRunner().invoke(app, ["demo", "--out", str(out), "--min-time", "0.2", "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    variants = {v["name"]: v for v in report["variants"]}
    base = variants["eager fp32 (baseline)"]
    assert base["accuracy"] > 0.9  # the reference CNN on the real packaged test set
    built = [v for v in report["variants"][1:] if v["status"] != "error"]
    assert len(built) >= 3, report["variants"]
    for v in built:  # every built variant carries its accuracy and fidelity vs the baseline
        assert v["accuracy"] is not None and v["cosine"] is not None
        assert v["drop_points"] == pytest.approx(100 * (base["accuracy"] - v["accuracy"]), abs=1e-3)
    if report["recommended"] is not None:
        best = variants[report["recommended"]]
        assert best["status"] == "ok" and best["drop_points"] <= 1.0
        assert best["speedup_ci95"][0] > 1.0
        assert any((out / "model").iterdir())
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["recommended"] == report["recommended"]
