"""``torchslim serve --ray``: the same server as a Ray Serve application, for many machines.

Each Ray Serve replica builds the very app ``torchslim serve`` runs: the same routes, the same
adaptive batcher, cache, metrics and auth. So batching is the same, and a replica batches the
requests the Ray proxy routes to it. Ray adds the placement of replicas on the cluster's nodes,
an HTTP proxy on every node, and routing between replicas.

What the Ray deployment is told:

* ``max_ongoing_requests``: the server's queue plus one batch. Ray's default (5) would starve
  the batcher. Overload is still refused by the replica's own bounded queue (503 with
  ``Retry-After``).
* ``max_queued_requests``: the server's queue size. A request the proxy cannot place goes back
  as 503 at once instead of waiting without bound.
* ``request_timeout_s`` and ``graceful_shutdown_timeout_s``: derived from ``--timeout-ms``.
* A replica's startup returns only after warm-up (``ready_before_serving``), so the proxy never
  routes to a cold replica. The deployment is running only when every replica is warm.

Stopping (SIGTERM, Ctrl-C, or the ``stop`` event) deletes the application: Ray stops routing to
it, and each replica finishes what it accepted (its lifespan shutdown drains its batcher). The
proxy and the cluster are shut down when this process started them.
"""

from __future__ import annotations

import signal
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torchslim.errors import TorchslimError
from torchslim.serve.config import ServeConfig

__all__ = ["APP_NAME", "serve_ray"]

APP_NAME = "torchslim"
"""The Ray Serve application (and deployment) name."""


def _app_builder(config: ServeConfig) -> Callable[[], Any]:
    """What each replica calls to build its ASGI app (runs on the replica, not here)."""

    def build() -> Any:
        from torchslim.serve.app import InferenceServer

        return InferenceServer(config, ready_before_serving=True).app

    return build


def _free_port(host: str, port: int) -> int:
    """``port`` if it can be bound here (0: a free one), else a clear error before Ray starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise TorchslimError(
                f"Could not listen on {host}:{port}: {exc.strerror or exc}.",
                "Is another process using the port? Give another --port.",
            ) from None
        return int(s.getsockname()[1])


def serve_ray(
    config: ServeConfig,
    *,
    address: str | None = "local",
    replicas: int = 1,
    replica_cpus: float = 1.0,
    on_started: Callable[[dict[str, Any]], None] | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Serve ``config.artifact`` with Ray Serve until SIGTERM/SIGINT (or ``stop``), then drain.

    Args:
        config: The server's settings (``workers`` is ignored: Ray places ``replicas``).
        address: The Ray cluster (``local``: a private one on this machine; ``auto``,
            ``host:port``, ``ray://host:port``). The artifact's directory must be readable at
            the same path on every node that runs a replica.
        replicas: Replicas (each its own model and batcher) placed on the cluster.
        replica_cpus: CPUs Ray reserves for each replica.
        on_started: Called once every replica is warm, with the server's description (``url``,
            ``infer``, ``metrics``, ``replicas``, ``ray``).
        stop: When given, set it to stop (a Python caller, a test); signals always stop.

    Raises:
        TorchslimError: Bad settings, Ray missing or unreachable, the port taken, or the
            replicas failed to start (their error is in the message).
    """
    from torchslim._ray import connect
    from torchslim.serve.model import model_name_for

    if not 1 <= replicas <= 1024:
        raise TorchslimError(f"--replicas must be 1 or more, got {replicas}.", "E.g. --replicas 2.")
    if not replica_cpus > 0:
        raise TorchslimError("--replica-cpus must be above 0.", "E.g. --replica-cpus 1.")
    port = _free_port(config.host, config.port)
    ray, started_here = connect(address)
    try:
        from ray import serve
    except ImportError as exc:
        if started_here:
            ray.shutdown()
        from torchslim.errors import BackendUnavailableError

        raise BackendUnavailableError("ray serve", "ray", "ray[serve] is not installed") from exc
    done = stop or threading.Event()
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        previous = {
            s: signal.signal(s, lambda *_: done.set()) for s in (signal.SIGTERM, signal.SIGINT)
        }
    grace = config.timeout_ms / 1e3 + 10
    try:
        serve.start(
            http_options={
                "host": config.host,
                "port": port,
                "request_timeout_s": config.timeout_ms / 1e3 + 5,
            }
        )

        @serve.ingress(_app_builder(config))
        class TorchslimReplica:
            """One replica: the torchslim server app, built on the replica."""

        deployment = serve.deployment(
            name=APP_NAME,
            num_replicas=replicas,
            max_ongoing_requests=config.queue_size + config.max_batch,
            max_queued_requests=config.queue_size,
            graceful_shutdown_timeout_s=grace,
            graceful_shutdown_wait_loop_s=0.5,
            ray_actor_options={"num_cpus": replica_cpus},
        )(TorchslimReplica)
        try:
            serve.run(deployment.bind(), name=APP_NAME, route_prefix="/")
        except Exception as exc:  # a replica's constructor or warm-up failed
            raise TorchslimError(
                f"The Ray Serve replicas did not start: {str(exc).strip()[-600:]}",
                "Serve the artifact without --ray to see the error in full.",
            ) from None
        url = f"http://{config.host}:{port}"
        name = model_name_for(Path(config.artifact)) if config.name is None else config.name
        if on_started is not None:
            on_started(
                {
                    "url": url,
                    "model": name,
                    "infer": f"{url}/v2/models/{name}/infer",
                    "predict": f"{url}/v1/predict",
                    "metrics": f"{url}/metrics",
                    "max_batch": config.max_batch,
                    "auth": config.api_key is not None,
                    "replicas": replicas,
                    "ray": "local" if started_here and address in (None, "local") else address,
                }
            )
        while not done.wait(0.2):
            pass
        serve.delete(APP_NAME)  # stop routing; each replica drains what it accepted
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        if started_here:
            try:
                serve.shutdown()
            finally:
                ray.shutdown()
