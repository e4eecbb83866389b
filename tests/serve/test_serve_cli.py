"""``torchslim serve``: the help teaches, options are checked, --find-batch-size reports, and a
real server process drains and exits cleanly on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _client import Reply, predict_json, request
from typer.testing import CliRunner

from torchslim.cli.main import app

runner = CliRunner()


def test_help_teaches_the_batching_modes_and_endpoints() -> None:
    res = runner.invoke(app, ["serve", "--help"], terminal_width=200)
    assert res.exit_code == 0
    for needle in (
        "--p99-target-ms",
        "--max-wait-ms",
        "--max-batch 1",
        "/v2/models/NAME/infer",
        "Examples",
        "503",
    ):
        assert needle in res.output, needle


def test_bad_options_are_one_error_and_hint(artifacts: dict[str, Path]) -> None:
    res = runner.invoke(app, ["serve", str(artifacts["ort"]), "--split", "90-10", "--json"])
    assert res.exit_code == 2
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert "--split" in out["error"] and "90:10" in out["hint"]
    res = runner.invoke(app, ["serve", str(artifacts["ort"]), "--max-batch", "0"])
    assert res.exit_code == 2


def test_find_batch_size_measures_and_suggests(artifacts: dict[str, Path]) -> None:
    res = runner.invoke(
        app, ["serve", str(artifacts["ort"]), "--find-batch-size", "--max-batch", "4", "--json"]
    )
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert [r["batch"] for r in report["rows"]] == [1, 2, 4]
    assert all(r["p50_ms"] > 0 and r["items_per_s"] > 0 for r in report["rows"])
    assert report["suggested"]["max_batch"] in (1, 2, 4)


@pytest.mark.slow
def test_sigterm_drains_accepted_requests_and_exits_cleanly(
    artifacts: dict[str, Path], images: np.ndarray
) -> None:
    env = {**os.environ, "TORCHSLIM_API_KEY": "k"}
    cmd = [
        sys.executable,
        "-m",
        "torchslim.cli.main",
        "serve",
        str(artifacts["ort"]),
        "--port",
        "0",
        "--json",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline()]
        while lines[-1] not in ("}\n", ""):  # one indented JSON object, printed once listening
            lines.append(proc.stdout.readline())
        info = json.loads("".join(lines))
        url = info["url"]
        assert url.startswith("http://127.0.0.1:") and info["auth"] is True
        auth = {"Authorization": "Bearer k"}
        while request(url, "GET", "/v2/health/ready").status != 200:
            assert proc.poll() is None
        outcomes: list[Any] = []
        first = threading.Event()

        def client(i: int) -> None:
            for k in range(20):  # keep the server busy until SIGTERM closes it
                try:
                    outcomes.append(
                        predict_json(url, images[(i + k) % len(images)], auth, timeout=30)
                    )
                except OSError as exc:  # refused after SIGTERM: never accepted
                    outcomes.append(exc)
                    return
                first.set()

        threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        assert first.wait(30)
        proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(30)
        assert proc.wait(30) == 0
        replies = [o for o in outcomes if isinstance(o, Reply)]
        assert replies and all(r.status == 200 for r in replies), [r.status for r in replies]
        assert proc.stderr is not None and "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
