"""Load test of ``torchslim serve``: batching off / fixed window / adaptive, and above capacity.

For each mode a fresh ``torchslim serve ARTIFACT`` process is started on 127.0.0.1 (a free port),
waited on until ready, then driven by N concurrent closed-loop clients (each keeps one HTTP/1.1
connection and sends its next request when the previous one is answered) for a fixed time after
a short warm-up; then it gets SIGTERM and must exit 0. Requests are Open Inference Protocol infer
calls with one real Fashion-MNIST image as a binary tensor. Reported per mode: throughput
(answered 200/s), p50/p99 latency of answered requests, errors (anything but 200 and 503), the
share of 503 (a refused client waits as ``Retry-After`` says before its next request), mean rows per model call and batch release reasons (from ``/v1/stats``).

The reference is ``torchslim bench ARTIFACT --batch 1,32`` of the same artifact, run in the same
script right before the server runs: the server's throughput is given as a share of the model's
own batch-32 throughput.

    .venv/bin/python benchmarks/bench_serve.py                     # fashion_resnet, OpenVINO
    .venv/bin/python benchmarks/bench_serve.py --artifact out/cnn-ov --clients 16 --duration 5

Bounded: at most 512 clients and 120 s per mode, loopback only; it stops by itself.
Results: ``benchmarks/results/serve.json`` and the ``serve`` section of ``BENCHMARKS.md``
(``--md``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import fmt, replace_section, save_json

HOST = "127.0.0.1"
MAX_CLIENTS = 512
MAX_DURATION_S = 120.0
CLI = [sys.executable, "-m", "torchslim.cli.main"]


# ------------------------------------------------------------------------------------------------
# Server process
# ------------------------------------------------------------------------------------------------


def start_server(artifact: Path, extra: list[str]) -> tuple[subprocess.Popen[str], str, str]:
    """``torchslim serve`` on a free loopback port; returns (process, url, model name)."""
    cmd = [*CLI, "serve", str(artifact), "--host", HOST, "--port", "0", "--json", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    lines = [proc.stdout.readline()]
    while lines[-1] not in ("}\n", ""):
        lines.append(proc.stdout.readline())
    try:
        info = json.loads("".join(lines))
    except ValueError:
        proc.kill()
        raise RuntimeError(
            f"server did not start: {proc.stderr.read() if proc.stderr else ''}"
        ) from None
    url = info["url"]
    end = time.monotonic() + 120
    while time.monotonic() < end:
        if http_get(url, "/v2/health/ready")[0] == 200:
            return proc, url, info["model"]
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not become ready")


def stop_server(proc: subprocess.Popen[str]) -> int:
    """SIGTERM, then the exit code (graceful drain must end in 0)."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        return -9


def http_get(url: str, path: str) -> tuple[int, bytes]:
    import http.client

    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read()
    except OSError:
        return 0, b""
    finally:
        conn.close()


# ------------------------------------------------------------------------------------------------
# Load generator: asyncio, raw HTTP/1.1 keep-alive (the cheapest client: the machine is shared
# with the server)
# ------------------------------------------------------------------------------------------------


def infer_body(model: str, x: np.ndarray) -> bytes:
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": list(x.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ],
            "outputs": [{"name": "output", "parameters": {"binary_data": True}}],
        }
    ).encode()
    raw = np.ascontiguousarray(x, dtype="<f4").tobytes()
    request = (
        f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: {HOST}\r\n"
        f"Content-Type: application/octet-stream\r\nInference-Header-Content-Length: {len(head)}\r\n"
        f"Content-Length: {len(head) + len(raw)}\r\n\r\n"
    ).encode()
    return request + head + raw


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, float]:
    """``(status, Retry-After seconds or 0)``."""
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("closed")
    status = int(status_line.split()[1])
    length = 0
    retry = 0.0
    close = False
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        k, _, v = line.decode("latin-1").partition(":")
        k = k.strip().lower()
        if k == "content-length":
            length = int(v)
        elif k == "retry-after":
            retry = float(v)
        elif k == "connection" and "close" in v.lower():
            close = True
    if length:
        await reader.readexactly(length)
    if close:
        raise ConnectionResetError("server closed")
    return status, retry


async def drive(
    url: str, bodies: list[bytes], clients: int, warmup_s: float, duration_s: float
) -> dict[str, Any]:
    """Closed-loop clients; statistics over the measured window only."""
    port = int(url.rsplit(":", 1)[1])
    t_start = time.perf_counter()
    t_measure = t_start + warmup_s
    t_end = t_measure + duration_s
    lat_ms: list[float] = []
    statuses: dict[int, int] = {}
    conn_errors = 0

    async def client(i: int) -> None:
        nonlocal conn_errors
        reader = writer = None
        k = i
        while time.perf_counter() < t_end:
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(HOST, port)
                assert reader is not None
                t0 = time.perf_counter()
                writer.write(bodies[k % len(bodies)])
                status, retry = await _read_response(reader)
                t1 = time.perf_counter()
            except (OSError, ConnectionError, asyncio.IncompleteReadError):
                if t_measure <= time.perf_counter() < t_end:
                    conn_errors += 1
                if writer is not None:
                    writer.close()
                reader = writer = None
                await asyncio.sleep(0.01)
                continue
            k += clients
            if t0 >= t_measure and t1 <= t_end:
                statuses[status] = statuses.get(status, 0) + 1
                if status == 200:
                    lat_ms.append((t1 - t0) * 1e3)
            if status == 503:  # as a well-behaved client does: wait as Retry-After says
                await asyncio.sleep(min(retry, max(0.0, t_end - time.perf_counter())))
        if writer is not None:
            writer.close()

    await asyncio.gather(*(client(i) for i in range(clients)))
    lat = sorted(lat_ms)
    total = sum(statuses.values())
    ok = statuses.get(200, 0)
    rejected = statuses.get(503, 0)

    def pct(q: float) -> float | None:
        return lat[min(len(lat) - 1, round(q * (len(lat) - 1)))] if lat else None

    return {
        "requests": total,
        "ok": ok,
        "throughput_per_s": ok / duration_s,
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
        "max_ms": lat[-1] if lat else None,
        "share_503": rejected / total if total else 0.0,
        "errors": total - ok - rejected + conn_errors,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
    }


# ------------------------------------------------------------------------------------------------
# Reference: the model's own throughput
# ------------------------------------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def _metrics(url: str) -> dict[str, float]:
    """Sums from /metrics: answered requests, model seconds, seconds in the server."""
    text = http_get(url, "/metrics")[1].decode()
    out = {"requests": 0.0, "service": 0.0, "latency": 0.0}
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        key = {
            "torchslim_request_latency_seconds_count": "requests",
            "torchslim_service_seconds_sum": "service",
            "torchslim_request_latency_seconds_sum": "latency",
        }.get(name)
        if key and 'variant="primary"' in line:
            out[key] += float(line.rsplit(" ", 1)[1])
    return out


def model_throughput(artifact: Path) -> dict[str, float]:
    """``torchslim bench ARTIFACT --batch 1,32 --json`` → items/s and p50 per batch size."""
    cmd = [
        *CLI,
        "bench",
        str(artifact),
        "--batch",
        "1,32",
        "--json",
        "--no-peak",
        "--min-time",
        "3",
        "--max-time",
        "6",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    data = json.loads(out)
    m = next(iter(data["models"].values()))
    return {
        f"b{b}_{k}": v
        for b in ("1", "32")
        for k, v in (
            ("items_per_s", m["batches"][b]["throughput_per_s"]),
            ("p50_ms", m["batches"][b]["latency_ms"]["p50"]),
        )
    }


# ------------------------------------------------------------------------------------------------


def export_default(out: Path) -> Path:
    cmd = [
        *CLI,
        "export",
        "torchslim:fashion_resnet",
        "--runtime",
        "openvino",
        "--out",
        str(out),
        "--force",
    ]
    subprocess.run(cmd, check=True, capture_output=True)
    return out


def real_images(n: int = 256) -> np.ndarray:
    from torchslim.data import load_data

    return load_data("torchslim:fashion_mnist", limit=n).inputs[0].numpy().astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--artifact", type=Path, help="artifact dir (default: export fashion_resnet to OpenVINO)"
    )
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--duration", type=float, default=10.0, help="measured seconds per mode")
    ap.add_argument("--warmup", type=float, default=2.0, help="client warm-up seconds per mode")
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--fixed-wait-ms", type=float, default=5.0)
    ap.add_argument("--p99-target-ms", type=float, default=50.0)
    ap.add_argument("--overload-clients", type=int, default=256, help="0: skip the overload run")
    ap.add_argument("--rounds", type=int, default=1, help="repeat the modes in turn (interleaved)")
    ap.add_argument("--md", action="store_true", help="write the serve section of BENCHMARKS.md")
    args = ap.parse_args(argv)
    if not (1 <= args.clients <= MAX_CLIENTS and 0 <= args.overload_clients <= MAX_CLIENTS):
        ap.error(f"clients must be 1..{MAX_CLIENTS}")
    if not (0 < args.duration <= MAX_DURATION_S):
        ap.error(f"duration must be 0..{MAX_DURATION_S} s")

    from torchslim.machine import machine_info

    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    artifact = args.artifact or export_default(tmp / "fashion_resnet-ov")
    images = real_images()
    mb = str(args.max_batch)
    modes: list[tuple[str, list[str], int]] = [
        ("batching off", ["--max-batch", "1"], args.clients),
        (
            f"fixed window {args.fixed_wait_ms:g} ms",
            ["--max-batch", mb, "--max-wait-ms", str(args.fixed_wait_ms)],
            args.clients,
        ),
        (
            f"adaptive, p99 target {args.p99_target_ms:g} ms",
            ["--max-batch", mb, "--p99-target-ms", str(args.p99_target_ms)],
            args.clients,
        ),
    ]
    if args.overload_clients:
        modes.append(
            (
                f"adaptive, above capacity ({args.overload_clients} clients, queue 64, timeout 250 ms)",
                [
                    "--max-batch",
                    mb,
                    "--p99-target-ms",
                    str(args.p99_target_ms),
                    "--queue-size",
                    "64",
                    "--timeout-ms",
                    "250",
                ],
                args.overload_clients,
            )
        )
    t0 = time.time()
    print("measuring the model alone (torchslim bench --batch 1,32)…", file=sys.stderr)
    reference = model_throughput(artifact)
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in modes}
    load: list[float] = []
    for rnd in range(args.rounds):
        for name, extra, clients in modes:
            print(f"round {rnd + 1}: {name}…", file=sys.stderr)
            proc, url, model = start_server(artifact, extra)
            bodies = [infer_body(model, images[i : i + 1]) for i in range(len(images))]
            try:
                before = _cpu_seconds(proc.pid), time.process_time(), _metrics(url)
                res = asyncio.run(drive(url, bodies, clients, args.warmup, args.duration))
                after = _cpu_seconds(proc.pid), time.process_time(), _metrics(url)
                stats = json.loads(http_get(url, "/v1/stats")[1] or b"{}")
            finally:
                res_exit = stop_server(proc)
            wall = args.warmup + args.duration
            answered = max(1.0, after[2]["requests"] - before[2]["requests"])
            res.update(
                server_cpu_ms_per_req=1e3 * (after[0] - before[0]) / answered,
                client_cpu_ms_per_req=1e3 * (after[1] - before[1]) / answered,
                model_ms_per_req=1e3 * (after[2]["service"] - before[2]["service"]) / answered,
                server_ms_per_req=1e3 * (after[2]["latency"] - before[2]["latency"]) / answered,
                model_busy_share=(after[2]["service"] - before[2]["service"]) / wall,
            )
            prim = stats.get("variants", {}).get("primary", {})
            res.update(
                clients=clients,
                exit_code=res_exit,
                mean_batch_rows=prim.get("mean_batch_rows"),
                release_reasons=prim.get("release_reasons"),
                service_ms_by_batch=prim.get("service_ms_by_batch"),
            )
            rows[name].append(res)
            load.append(os.getloadavg()[0])
    reference_after = model_throughput(artifact)
    ref32 = (reference["b32_items_per_s"] + reference_after["b32_items_per_s"]) / 2
    ref1 = (reference["b1_items_per_s"] + reference_after["b1_items_per_s"]) / 2
    summary = {name: _median_row(rs) for name, rs in rows.items()}
    off = summary[modes[0][0]]["throughput_per_s"]
    report = {
        "artifact": str(artifact),
        "machine": machine_info(include_gpu=False).to_dict(),
        "clients": args.clients,
        "duration_s": args.duration,
        "rounds": args.rounds,
        "reference": {
            "before": reference,
            "after": reference_after,
            "b32_items_per_s": ref32,
            "b1_items_per_s": ref1,
        },
        "modes": summary,
        "raw": rows,
        "load_avg_1min": load,
        "wall_s": round(time.time() - t0, 1),
    }
    for s in summary.values():
        s["x_vs_off"] = s["throughput_per_s"] / off if off else None
        s["share_of_bench_b32"] = s["throughput_per_s"] / ref32 if ref32 else None
    save_json("serve", report)
    md = render(report, modes)
    print(md)
    if args.md:
        replace_section("serve", md)
    return 0


def _median_row(rs: list[dict[str, Any]]) -> dict[str, Any]:
    if len(rs) == 1:
        return dict(rs[0])
    by = sorted(rs, key=lambda r: r["throughput_per_s"])
    return dict(by[len(by) // 2])


def _source(artifact: str) -> str:
    try:
        manifest = json.loads((Path(artifact) / "manifest.json").read_text())
        return f"`{manifest['source']['source']}`, runtime `{manifest['runtime']}`"
    except (OSError, ValueError, KeyError, TypeError):
        return "unknown"


def render(report: dict[str, Any], modes: list[tuple[str, list[str], int]]) -> str:
    m = report["machine"]
    ref = report["reference"]
    lines = [
        "## serve",
        "",
        f"`benchmarks/bench_serve.py` on {m.get('cpu_model')} · {m.get('usable_cores')} cores · python "
        f"{m.get('python')}; artifact `{Path(report['artifact']).name}` (source {_source(report['artifact'])}); "
        f"{report['clients']} closed-loop "
        f"clients on 127.0.0.1, {report['duration_s']:g} s measured per mode after a warm-up, "
        f"{report['rounds']} round(s); each mode a fresh `torchslim serve` process (SIGTERM at the end). "
        "Requests: Open Inference Protocol infer, one real Fashion-MNIST image each as a binary tensor.",
        "",
        f"Reference, the model alone (`torchslim bench --batch 1,32`, before and after the server runs): "
        f"batch 1 {ref['b1_items_per_s']:,.0f} items/s, batch 32 {ref['b32_items_per_s']:,.0f} items/s.",
        "",
        "| mode | clients | req/s (200) | × off | % of bench b=32 | p50 ms | p99 ms | 503 share | errors | rows/call | releases full/window/idle | exit |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for name, _, _ in modes:
        s = report["modes"][name]
        rr = s.get("release_reasons") or {}
        lines.append(
            f"| {name} | {s['clients']} | {s['throughput_per_s']:,.0f} | {fmt(s.get('x_vs_off'))} | "
            f"{fmt(100 * s['share_of_bench_b32'] if s.get('share_of_bench_b32') else None, 0)}% | "
            f"{fmt(s['p50_ms'])} | {fmt(s['p99_ms'])} | {100 * s['share_503']:.1f}% | {s['errors']} | "
            f"{fmt(s.get('mean_batch_rows'), 1)} | {rr.get('full', 0)}/{rr.get('window', 0)}/{rr.get('idle', 0)} | "
            f"{s['exit_code']} |"
        )
    lines += [
        "",
        "Where the time goes (per answered request, same runs): CPU ms of the server process, of "
        "the load generator, model-call ms per request (a batch's time shared by its rows), ms in "
        "the server (request read → response ready), and the share of wall time the model was running.",
        "",
        "| mode | server CPU ms/req | client CPU ms/req | model ms/req | in-server ms/req | model busy |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, _, _ in modes:
        s = report["modes"][name]
        lines.append(
            f"| {name} | {fmt(s.get('server_cpu_ms_per_req'), 3)} | {fmt(s.get('client_cpu_ms_per_req'), 3)} | "
            f"{fmt(s.get('model_ms_per_req'), 3)} | {fmt(s.get('server_ms_per_req'), 2)} | "
            f"{fmt(100 * s['model_busy_share'] if s.get('model_busy_share') is not None else None, 0)}% |"
        )
    lines += [
        "",
        f"Load average (1 min) during the runs: {', '.join(f'{v:.1f}' for v in report['load_avg_1min'])}.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
