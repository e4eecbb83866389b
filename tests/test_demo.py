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
    rows = report["candidates"]
    built = [r for r in rows if r["status"] == "ok"]
    assert len(built) >= 3, rows
    base = built[0]["baseline_accuracy"]
    assert base > 0.9  # the reference CNN on the real packaged test set
    for r in built:  # every built candidate carries its accuracy and fidelity vs the baseline
        assert r["baseline_accuracy"] == base
        assert r["accuracy"] is not None and r["fidelity"]["cosine"] is not None
        assert r["drop_points"] == pytest.approx(100 * (base - r["accuracy"]), abs=1e-6)
        # the verdict is the constraints' own: within 1 point and a speed-up CI above 1
        ok = r["drop_points"] <= 1.0 and r["speedup"]["1"]["ci95"][0] > 1.0
        assert ok == (r["rejected_because"] == []), r
    passing = [r for r in built if not r["rejected_because"]]
    if passing:  # the fastest passing candidate at batch 1 is recommended, and only it
        best = max(passing, key=lambda r: r["speedup"]["1"]["ratio"])
        assert report["recommended"] == best["name"]
        assert [r["name"] for r in rows if r["recommended"]] == [best["name"]]
        from torchslim.artifact import load_artifact

        art = load_artifact(out)  # the recommended artifact, hash-verified
        assert art.recipe.to_dict() == best["recipe"]
    else:
        assert report["recommended"] is None and not (out / "manifest.json").exists()
    on_disk = json.loads((out / "demo.json").read_text())
    assert on_disk["recommended"] == report["recommended"]


def test_demo_refuses_a_directory_it_did_not_write_before_any_work(tmp_path: Path) -> None:
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    res = CliRunner().invoke(app, ["demo", "--out", str(busy)])
    assert res.exit_code == 2 and "--force" in res.output
    assert (busy / "notes.txt").read_text() == "mine"
