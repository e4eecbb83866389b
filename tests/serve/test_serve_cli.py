"""``torchslim serve``: the help teaches, options are checked, --find-batch-size reports, and a
real server process drains and exits cleanly on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _client import Reply, logits, predict_json, read_json_object, request
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


@pytest.mark.slow
def test_workers_share_one_port_answer_correctly_and_all_drain_on_sigterm(
    artifacts: dict[str, Path],
    images: np.ndarray,
    direct: Any,
) -> None:
    cmd = [sys.executable, "-m", "torchslim.cli.main", "serve", str(artifacts["ort"])]
    cmd += ["--port", "0", "--workers", "2", "--max-batch", "1", "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        info = read_json_object(proc.stdout)
        url, pids = info["url"], info["pids"]
        assert info["workers"] == 2 and len(set(pids)) == 2 and proc.pid not in pids
        seen: dict[str, int] = {}
        deadline = time.monotonic() + 90
        lock = threading.Lock()
        wrong: list[tuple[int, bytes]] = []

        def client(i: int) -> None:
            k = i
            while len(seen) < 2 and time.monotonic() < deadline:
                x = images[k % len(images)][None]
                reply = predict_json(url, x, timeout=30)
                k += 4
                if reply.status == 503:  # a worker still warming up
                    continue
                ok = reply.status == 200 and np.allclose(
                    logits(reply).ravel(), direct(x).ravel(), rtol=1e-4, atol=1e-4
                )
                with lock:
                    if not ok:  # asserted in the main thread, where a failure fails the test
                        wrong.append((reply.status, reply.body[:200]))
                        return
                    worker = reply.headers["x-torchslim-worker"]
                    seen[worker] = seen.get(worker, 0) + 1

        threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not wrong, wrong  # each answer was the model's own for that input
        # every answer came from one of the supervised workers, and both took connections
        assert set(seen) == {str(p) for p in pids}, (seen, pids)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        for pid in pids:  # no worker outlives the supervisor
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
        assert proc.stderr is not None and "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_workers_option_is_checked() -> None:
    res = runner.invoke(app, ["serve", "x", "--workers", "0", "--json"])
    assert res.exit_code == 2
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert "--workers" in out["error"]
