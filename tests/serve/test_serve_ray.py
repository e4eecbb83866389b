"""``torchslim serve --ray``: the server as a Ray Serve application on a private local cluster
the test starts: two warm replicas behind Ray's proxy answer with the model's own outputs, batch
as the plain server does, and drain and exit cleanly on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _client import logits, predict_json, read_json_object, request
from typer.testing import CliRunner

from torchslim.cli.main import app

pytest.importorskip("ray.serve", reason="ray[serve] is part of the serve extra")


def _histogram(text: str, name: str) -> tuple[float, float]:
    """``(sum, count)`` of a Prometheus histogram over all its label sets."""
    total = count = 0.0
    for line in text.splitlines():
        if line.startswith(name + "_sum"):
            total += float(line.rpartition(" ")[2])
        elif line.startswith(name + "_count"):
            count += float(line.rpartition(" ")[2])
    return total, count


@pytest.mark.slow
def test_ray_serve_replicas_answer_batch_and_drain(
    artifacts: dict[str, Path], images: np.ndarray, direct: Any
) -> None:
    cmd = [sys.executable, "-m", "torchslim.cli.main", "serve", str(artifacts["ort"]), "--ray"]
    cmd += ["--replicas", "2", "--replica-cpus", "0.5", "--port", "0", "--json"]
    cmd += ["--max-wait-ms", "30", "--max-batch", "8"]  # a fixed window: batches must form
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        info = read_json_object(proc.stdout)
        assert info["replicas"] == 2 and info["ray"] == "local", info
        url = info["url"]
        # ready at once: the deployment runs only when every replica has warmed up
        assert request(url, "GET", "/v2/health/ready").status == 200
        meta = request(url, "GET", f"/v2/models/{info['model']}").json()
        assert meta["inputs"][0]["shape"][1:] == [1, 28, 28]
        seen: dict[str, int] = {}
        wrong: list[Any] = []
        lock = threading.Lock()

        def client(i: int) -> None:
            for k in range(i, 96, 8):
                x = images[k % len(images)][None]
                reply = predict_json(url, x, timeout=30)
                ok = reply.status == 200 and np.allclose(
                    logits(reply).ravel(), direct(x).ravel(), rtol=1e-4, atol=1e-4
                )
                with lock:
                    if not ok:
                        wrong.append((reply.status, reply.body[:300]))
                        return
                    worker = reply.headers["x-torchslim-worker"]
                    seen[worker] = seen.get(worker, 0) + 1

        threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not wrong, wrong  # every answer is the model's own for that input
        assert sum(seen.values()) == 96
        assert len(seen) == 2 and str(proc.pid) not in seen, seen  # both replicas answered
        # the replicas batch like the plain server: concurrent requests shared model calls
        rows, calls = 0.0, 0.0
        for _ in range(6):  # /metrics is per replica; the proxy picks one per request
            r, c = _histogram(request(url, "GET", "/metrics").body.decode(), "torchslim_batch_size")
            rows, calls = max(rows, r), max(calls, c)
        assert calls > 0 and rows / calls > 1.0, (rows, calls)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(120) == 0
        assert proc.stderr is not None and "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_ray_options_are_checked(artifacts: dict[str, Path]) -> None:
    res = CliRunner().invoke(
        app, ["serve", str(artifacts["ort"]), "--ray", "--workers", "2", "--json"]
    )
    assert res.exit_code != 0 and "--replicas" in res.stdout
    started = time.monotonic()
    res = CliRunner().invoke(
        app, ["serve", str(artifacts["ort"]), "--ray", "--replicas", "0", "--json"]
    )
    assert res.exit_code != 0 and "--replicas" in res.stdout
    assert time.monotonic() - started < 60  # refused before any cluster starts
