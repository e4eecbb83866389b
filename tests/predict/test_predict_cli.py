"""``torchslim predict``: the command writes the file, prints a summary (``--json``), and its exit
code says whether anything was skipped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from predict_helpers import DATA, MODEL, write_jpegs
from typer.testing import CliRunner

from torchslim.cli import predict as predict_cli
from torchslim.predict import read_predictions


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Test root."""

    predict_cli.register(app)
    return app


def _invoke(app: typer.Typer, *args: str) -> Any:
    return CliRunner().invoke(app, ["predict", *args])


def test_json_summary(app: typer.Typer, tmp_path: Path) -> None:
    out = tmp_path / "p.parquet"
    res = _invoke(
        app,
        MODEL,
        DATA,
        "--out",
        str(out),
        "--limit",
        "100",
        "--batch-size",
        "32",
        "--topk",
        "3",
        "--json",
    )
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["items"] == 100 and summary["skipped_count"] == 0
    assert summary["batch_size"] == 32 and summary["format"] == "parquet"
    assert summary["items_per_s"] > 0 and summary["wall_s"] >= summary["run_s"]
    assert {"workers", "threads", "pin_memory", "reason"} <= set(summary["loader"])
    cols = read_predictions(out)
    assert cols["labels"].shape == (100, 3)


def test_skipped_samples_give_exit_code_4(app: typer.Typer, tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    write_jpegs(root, 6, per_class_dirs=False)
    (root / "zz-broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "p.npy"
    res = _invoke(app, MODEL, str(root), "--out", str(out), "--workers", "1")
    assert res.exit_code == predict_cli.SKIPPED_EXIT_CODE, res.output
    assert "zz-broken.png" in res.stdout and "skipped" in res.stdout
    rec = np.load(out, allow_pickle=False)
    assert len(rec) == 6 and "zz-broken.png" not in rec["id"].tolist()


def test_bad_options_are_one_line_errors(app: typer.Typer, tmp_path: Path) -> None:
    res = _invoke(
        app, MODEL, DATA, "--out", str(tmp_path / "p.jsonl"), "--batch-size", "zero", "--json"
    )
    assert res.exit_code == 2
    assert "batch-size" in json.loads(res.stdout)["error"]
    res = _invoke(app, MODEL, DATA, "--out", str(tmp_path / "p.jsonl"), "--resume")
    assert res.exit_code == 2 and "Nothing to resume" in res.output
    res = _invoke(app, MODEL, DATA, "--out", str(tmp_path / "p.jsonl"), "--device", "tpu")
    assert res.exit_code == 2 and "Unknown device" in res.output
