"""``torchslim serve ARTIFACT_DIR``: an HTTP inference server for an artifact (thin over
:mod:`torchslim.serve`; FastAPI and uvicorn are imported only when the command runs)."""

from __future__ import annotations

import os
import sys
from typing import Any

import typer

from torchslim.cli._common import (
    DEBUG_OPTION,
    JSON_OPTION,
    Command,
    emit_json,
    handle_errors,
    stderr_console,
    stdout_console,
)
from torchslim.cli._run import NO_VERIFY_OPTION
from torchslim.errors import TorchslimError

__all__ = ["register", "serve_command"]

HELP = """\
Serve an artifact over HTTP: the Open Inference Protocol (KServe v2, what Triton and KServe clients speak), a simple /v1/predict route, Prometheus metrics, and a dynamic batcher held to a latency target.

ARTIFACT_DIR is what export, quantize, prune or optimize wrote (any runtime: eager, onnxruntime, openvino ...); its hashes are checked before it loads. The server warms up first (it measures how long each batch size takes) and reports ready only after that.

\b
Batching: concurrent requests are stacked into one model call and each caller gets its own rows back; the model runs in a worker thread, so the server keeps answering.
  --p99-target-ms 50 (default: adaptive): from the measured time per batch size and the arrival rate, the batcher waits only as long as the target allows and only when the load needs bigger batches; at low load a request waits for nothing.
  --max-wait-ms 5 alone: a fixed window (wait up to 5 ms for the batch to fill).
  --max-batch 1: batching off.

\b
Backpressure: at most --queue-size requests wait; a request that cannot be answered within --timeout-ms is refused at once with 503 and Retry-After, never left hanging. Bodies over --max-body-mb get 413; wrong input names, shapes, dtypes or NaN get 422 with what was expected. SIGTERM or Ctrl-C stops accepting, finishes every accepted request, then exits.

\b
Endpoints:
  GET  /v2/health/live, /v2/health/ready      probes (no token needed)
  GET  /v2/models/NAME                        inputs, outputs, dtypes, shapes (NAME: the directory's name)
  POST /v2/models/NAME/infer                  KServe v2 JSON or binary tensors (tritonclient.http works)
  POST /v1/predict                            a JSON array, a .npy body (never unpickled) or an image upload
  GET  /v1/compare   GET /v1/stats   GET /metrics

\b
Processes: --workers N starts N server processes on one port (the kernel hands each connection to one of them); each loads the model, batches and counts on its own, so /metrics, /v1/stats and /v1/compare describe the process that answered (the X-Torchslim-Worker header names it). One process usually keeps 2 cores busy with a batched model; add workers when HTTP work (parsing, encoding) is the bottleneck.

\b
Ray Serve: --ray runs the same server as a Ray Serve application: --replicas N replicas, each the same app with its own batcher (same batching semantics), placed by Ray on the cluster at --address (local: a private cluster on this machine; auto, host:port or ray://host:port for a running one), behind Ray's HTTP proxy on --host/--port. A replica takes traffic only once it is warm; the proxy refuses with 503 what it cannot queue. The artifact directory must exist at the same path on every node. Needs pip install 'torchslim[ray]' (ray[serve]).

\b
Examples:
  torchslim export torchslim:fashion_cnn --runtime openvino --out out/cnn-ov
  torchslim serve out/cnn-ov --port 8000
  torchslim serve out/cnn-ov --workers 2 --host 0.0.0.0 --api-key $TOKEN
  torchslim serve out/cnn-ov --ray --replicas 2                (a private local Ray cluster)
  curl -s localhost:8000/v1/predict -H 'Content-Type: application/json' -d @image.json
  curl -s localhost:8000/v1/predict -F file=@shoe.png
  torchslim serve out/cnn-ov --find-batch-size --p99-target-ms 20
  torchslim serve out/cnn-fp32 --shadow out/cnn-int8        (compare on live traffic, GET /v1/compare)
  torchslim serve out/cnn-fp32 --canary out/cnn-int8 --split 90:10
  TORCHSLIM_API_KEY=secret torchslim serve out/cnn-ov --host 0.0.0.0

Binds 127.0.0.1 (this machine only) unless --host says otherwise; with --api-key (or TORCHSLIM_API_KEY) every request but the probes needs 'Authorization: Bearer KEY' (else 401).
"""


def register(app: typer.Typer) -> None:
    """Add the ``serve`` command to ``app``."""
    app.command(
        "serve",
        help=HELP,
        short_help="Serve an artifact over HTTP (KServe v2, dynamic batching).",
        no_args_is_help=True,
        cls=Command,
    )(handle_errors(serve_command))


def serve_command(
    artifact: str = typer.Argument(..., metavar="ARTIFACT_DIR", help="The artifact to serve."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind (0.0.0.0: all)."),
    port: int = typer.Option(8000, "--port", "-p", help="TCP port (0: any free port)."),
    name: str | None = typer.Option(
        None, "--name", help="Model name in URLs (default: the directory's name)."
    ),
    max_batch: int = typer.Option(
        32, "--max-batch", help="Rows per model call at most (1: batching off)."
    ),
    p99_target_ms: float | None = typer.Option(
        None,
        "--p99-target-ms",
        help="Adaptive batching held to this p99 latency (default 50 unless --max-wait-ms is given).",
    ),
    max_wait_ms: float | None = typer.Option(
        None,
        "--max-wait-ms",
        help="Fixed batching window; with --p99-target-ms, the cap on its window.",
    ),
    queue_size: int = typer.Option(
        256, "--queue-size", help="Requests waiting at most; more get 503."
    ),
    timeout_ms: float = typer.Option(
        2000.0, "--timeout-ms", help="Each request's deadline (503 when it cannot be met)."
    ),
    max_body_mb: float = typer.Option(
        16.0, "--max-body-mb", help="Largest request body (MB); larger get 413."
    ),
    cache_size: int = typer.Option(
        0, "--cache-size", help="Response cache entries, keyed by input bytes (0: off)."
    ),
    cache_mb: float = typer.Option(64.0, "--cache-mb", help="Response cache MB at most."),
    api_key: str | None = typer.Option(
        None,
        "--api-key",
        help="Bearer token requests must carry (default: $TORCHSLIM_API_KEY; none: open).",
    ),
    canary: str | None = typer.Option(
        None, "--canary", help="A second artifact that gets --split of the traffic."
    ),
    split: str = typer.Option("90:10", "--split", help="primary:canary traffic weights."),
    shadow: str | None = typer.Option(
        None, "--shadow", help="A second artifact mirrored every request; compared, never returned."
    ),
    workers: int = typer.Option(
        1,
        "--workers",
        "-w",
        help="Server processes sharing the port, each with its own model, batcher and metrics.",
    ),
    ray: bool = typer.Option(
        False, "--ray", help="Serve with Ray Serve (replicas on a Ray cluster; see above)."
    ),
    address: str = typer.Option(
        "local", "--address", help="With --ray: local, auto, host:port or ray://host:port."
    ),
    replicas: int = typer.Option(1, "--replicas", help="With --ray: replicas to place."),
    replica_cpus: float = typer.Option(
        1.0, "--replica-cpus", help="With --ray: CPUs Ray reserves per replica."
    ),
    find_batch: bool = typer.Option(
        False,
        "--find-batch-size",
        help="Measure throughput and latency per batch size, suggest settings, exit.",
    ),
    no_verify: bool = NO_VERIFY_OPTION,
    json_out: bool = JSON_OPTION,
    debug: bool = DEBUG_OPTION,
) -> None:
    """Serve an artifact over HTTP."""
    from torchslim.serve.config import API_KEY_ENV, ServeConfig
    from torchslim.serve.variants import parse_split

    target = p99_target_ms if p99_target_ms is not None or max_wait_ms is not None else 50.0
    key = api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None
    config = ServeConfig(
        artifact,
        host=host,
        port=port,
        name=name,
        max_batch=max_batch,
        p99_target_ms=target,
        max_wait_ms=max_wait_ms,
        queue_size=queue_size,
        timeout_ms=timeout_ms,
        max_body_mb=max_body_mb,
        cache_size=cache_size,
        cache_mb=cache_mb,
        api_key=key,
        canary=canary,
        split=parse_split(split),
        shadow=shadow,
        verify=not no_verify,
        workers=workers,
    )
    from torchslim.serve.batcher import BatchPolicy

    BatchPolicy(max_batch, max_wait_ms, target, queue_size)  # option errors before loading anything
    if find_batch:
        _find(config, json_out)
        return
    if ray:
        if workers > 1:
            raise TorchslimError(
                "--workers and --ray cannot be used together.",
                "With --ray give --replicas N: Ray places the server processes.",
            )
        _serve_ray(config, address, replicas, replica_cpus, json_out)
        return
    _serve(config, json_out)


def _serve_ray(
    config: Any, address: str, replicas: int, replica_cpus: float, json_out: bool
) -> None:
    from torchslim.serve.ray_serve import serve_ray

    err = stderr_console()

    def started(info: dict[str, Any]) -> None:
        if json_out:
            emit_json(info)
            return
        err.print(
            f"[bold]Serving[/bold] {info['model']} with Ray Serve at {info['url']} — "
            f"{replicas} replica(s) on the Ray cluster '{info['ray']}', each warm and batching "
            f"(max batch {config.max_batch}). Ctrl-C drains and stops.",
            highlight=False,
        )
        sys.stderr.flush()

    if not json_out:
        err.print("Starting Ray Serve and warming up the replicas…", style="dim")
    serve_ray(
        config, address=address, replicas=replicas, replica_cpus=replica_cpus, on_started=started
    )


def _find(config: Any, json_out: bool) -> None:
    from torchslim.serve.findbatch import find_batch_size
    from torchslim.serve.model import ServedModel

    err = stderr_console()
    model = ServedModel(config.artifact, verify=config.verify)
    with err.status("Measuring batch sizes…") as status:
        report = find_batch_size(
            model,
            p99_target_ms=config.p99_target_ms or 50.0,
            max_batch=max(config.max_batch, 1),
            progress=lambda m: status.update(f"Measuring {m}…"),
        )
    if json_out:
        emit_json(report.to_dict())
        return
    from rich.table import Table

    out = stdout_console()
    table = Table(
        header_style="bold", title=f"{model.name} ({model.runtime})", title_justify="left"
    )
    for col in ("batch", "p50 ms", "p99 ms", "items/s"):
        table.add_column(col, justify="right")
    for r in report.rows:
        table.add_row(
            str(int(r["batch"])),
            f"{r['p50_ms']:.3f}",
            f"{r['p99_ms']:.3f}",
            f"{r['items_per_s']:,.0f}",
        )
    out.print(table)
    out.print(
        f"[bold]Suggested[/bold] for p99 ≤ {report.p99_target_ms:g} ms: --max-batch {report.max_batch} "
        f"(adaptive: --p99-target-ms {report.p99_target_ms:g}; fixed window: --max-wait-ms "
        f"{report.max_wait_ms:g}). Most items/s at batch {report.best_throughput_batch}.",
        highlight=False,
    )
    out.print(
        "Rule: the largest batch whose p99 leaves room for one batch ahead plus its own "
        "(2·p99 ≤ 80% of the target); the window is what is left.",
        style="dim",
    )


def _serve(config: Any, json_out: bool) -> None:
    from torchslim.serve.server import serve

    err = stderr_console()
    if config.host not in ("127.0.0.1", "localhost", "::1") and config.api_key is None:
        err.print(
            f"[yellow]warning:[/yellow] listening on {config.host} without --api-key: anyone who "
            "can reach this port can use the model.",
            highlight=False,
        )

    def started(info: dict[str, Any]) -> None:
        if json_out:
            emit_json(info)
            return
        url = info["url"]
        workers = f", {config.workers} worker processes" if config.workers > 1 else ""
        err.print(
            f"[bold]Serving[/bold] {info['model']} ({info['runtime']}) at {url} — "
            f"batching {info['batching']}, max batch {config.max_batch}{workers}; warming up, "
            f"then {url}/v2/health/ready answers 200. Ctrl-C drains and stops.",
            highlight=False,
        )
        sys.stderr.flush()

    serve(config, on_started=started)
