"""HTTP helpers for the server tests (plain ``http.client``: one connection per request)."""

from __future__ import annotations

import http.client
import json
from typing import Any

import numpy as np


class Reply:
    """A finished HTTP exchange."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


def request(
    url: str,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 20.0,
) -> Reply:
    """One request on a fresh connection (thread-safe; times out instead of hanging)."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


def predict_json(
    url: str, x: np.ndarray, headers: dict[str, str] | None = None, timeout: float = 20.0
) -> Reply:
    """``POST /v1/predict`` with ``x`` as a JSON array."""
    h = {"Content-Type": "application/json", **(headers or {})}
    return request(url, "POST", "/v1/predict", json.dumps(x.tolist()).encode(), h, timeout)


def logits(reply: Reply) -> np.ndarray:
    """The first output of a /v1/predict reply."""
    return np.asarray(reply.json()["outputs"][0]["data"], dtype=np.float32)


def metric(url: str, name: str, **labels: str) -> float:
    """The value of one Prometheus sample (0 when absent)."""
    text = request(url, "GET", "/metrics").body.decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        metric_name, _, rest = head.partition("{")
        if metric_name != name:
            continue
        pairs = dict(p.split("=", 1) for p in rest.rstrip("}").split(",") if "=" in p)
        if all(pairs.get(k, "").strip('"') == v for k, v in labels.items()):
            total += float(value)
    return total


def read_json_object(stream: Any) -> dict[str, Any]:
    """The one indented JSON object ``torchslim serve --json`` prints once it serves."""
    lines = [stream.readline()]
    while lines[-1] not in ("}\n", ""):
        lines.append(stream.readline())
    return dict(json.loads("".join(lines)))
