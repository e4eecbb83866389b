"""The main job: ``torchslim demo`` is ``optimize`` on the bundled ResNet; only a candidate that
keeps its promises is chosen, and the report says why every other one was not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from support_models import requires_reference
from torchslim.cli.main import app


@pytest.mark.slow
@requires_reference
def test_demo_runs_the_search_and_chooses_within_budget(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    res = CliRunner().invoke(app, ["demo", "--out", str(out), "--time-budget", "150s", "--json"])
    assert res.exit_code in (0, 3), res.output
    report = json.loads(res.stdout)
    assert report["baseline"]["source"] == "torchslim:fashion_resnet"
    assert report["baseline"]["accuracy"] > 0.9  # the reference ResNet on the real test set
    built = [c for c in report["candidates"] if c["status"] != "failed"]
    assert built, report["candidates"]
    for c in built:  # judged against the original: drop in points with its interval
        assert c["drop_points"] == pytest.approx(
            100 * (report["baseline"]["accuracy"] - c["accuracy"])
        )
        faster = all(c["speedup"][b]["ci95"][0] > 1.0 for b in ("1", "64"))  # at every batch
        ok = c["drop_points"] <= 1.0 and faster and not c["noisy"]
        assert ok == (c["status"] == "accepted"), c
    accepted = [c for c in built if c["status"] == "accepted"]
    if accepted:
        best = max(  # the geometric mean of its speed-ups over the batch sizes
            accepted, key=lambda c: c["speedup"]["1"]["ratio"] * c["speedup"]["64"]["ratio"]
        )
        assert report["chosen"]["key"] == best["key"] and res.exit_code == 0
        from torchslim.artifact import load_artifact

        assert load_artifact(out / "best").recipe.to_dict() == best["recipe"]
    else:
        assert report["chosen"] is None and res.exit_code == 3
    on_disk = json.loads((out / "search.json").read_text())
    assert on_disk["chosen"] == report["chosen"]
    assert "<svg" in (out / "report.html").read_text()
    assert "| recipe |" in (out / "report.md").read_text()


def test_demo_refuses_a_directory_it_did_not_write_before_any_work(tmp_path: Path) -> None:
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    res = CliRunner().invoke(app, ["demo", "--out", str(busy)])
    assert res.exit_code == 2 and "--force" in res.output
    assert (busy / "notes.txt").read_text() == "mine"
