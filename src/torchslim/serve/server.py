"""Running the server: in the foreground (the CLI, SIGTERM drains) or in a background thread.

Graceful shutdown (SIGTERM or Ctrl-C in the foreground, :meth:`ServerThread.stop` in a thread):
uvicorn stops accepting connections and waits for every request in flight; then the lifespan
hook finishes mirrored shadow requests and every request still queued in the batchers, and the
workers stop. No accepted request is dropped; the wait is bounded by the request timeout.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from torchslim.errors import TorchslimError
from torchslim.serve.app import InferenceServer
from torchslim.serve.config import ServeConfig

__all__ = ["ServerThread", "serve"]


def _uvicorn_config(server: InferenceServer, host: str, port: int) -> Any:
    import uvicorn

    return uvicorn.Config(
        server.app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=int(server.config.timeout_ms / 1e3) + 10,
        timeout_keep_alive=30,
    )


def serve(
    config: ServeConfig, *, on_started: Callable[[dict[str, Any]], None] | None = None
) -> None:
    """Serve ``config.artifact`` in the foreground until SIGTERM/SIGINT, then drain and return.

    With ``config.workers`` above 1 this process binds the port and supervises that many server
    processes sharing it (each loads the model and batches on its own); a signal is passed on to
    every worker, each drains, and this returns once all have exited. A worker that dies is
    restarted, at most :data:`MAX_RESTARTS` times.

    Args:
        config: The settings.
        on_started: Called once listening with :meth:`InferenceServer.describe`'s dict (with
            ``workers`` > 1: the first worker's, plus ``pids``).

    Raises:
        TorchslimError: An artifact cannot be loaded, the port cannot be bound, or workers kept
            dying.
    """
    if config.workers > 1:
        _serve_workers(config, on_started)
        return
    server = InferenceServer(config)
    uv = _drain_then_exit_server()(_uvicorn_config(server, config.host, config.port))
    if on_started is not None:
        _notify_when_started(uv, server, config.host, on_started)
    uv.run()
    if not uv.started:
        raise TorchslimError(
            f"Could not listen on {config.host}:{config.port}.",
            "Is another process using the port? Give another --port.",
        )


MAX_RESTARTS = 5
"""How many times, in all, dead workers are restarted before the server gives up."""


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise TorchslimError(
            f"Could not listen on {host}:{port}: {exc.strerror or exc}.",
            "Is another process using the port? Give another --port.",
        ) from None
    sock.listen(2048)  # connections that arrive while workers warm up wait in the backlog
    sock.set_inheritable(True)
    return sock


def _worker_main(config: ServeConfig, sock: socket.socket, started: Any) -> None:
    """One server process of several: its own model and batcher on the shared socket."""
    os.setpgrp()  # a terminal's Ctrl-C reaches the supervisor only; it passes SIGTERM on once
    try:
        server = InferenceServer(config)
    except TorchslimError as exc:
        started.put({"error": str(exc), "pid": os.getpid()})
        raise SystemExit(3) from None
    uv = _drain_then_exit_server()(_uvicorn_config(server, config.host, config.port))
    _notify_when_started(uv, server, config.host, lambda info: started.put(info))
    uv.run(sockets=[sock])


def _serve_workers(
    config: ServeConfig, on_started: Callable[[dict[str, Any]], None] | None
) -> None:
    import multiprocessing as mp

    sock = _bind(config.host, config.port)
    ctx = mp.get_context("spawn")  # a clean interpreter per worker: no forked thread pools
    started = ctx.Queue()
    stopping = threading.Event()

    def start(i: int) -> Any:
        proc = ctx.Process(
            target=_worker_main, args=(config, sock, started), name=f"torchslim-serve-{i}"
        )
        proc.start()
        return proc

    procs = [start(i) for i in range(config.workers)]

    def forward(sig: int, frame: Any) -> None:
        stopping.set()
        for p in procs:
            if p.is_alive() and p.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGTERM)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    restarts = 0
    reported = False
    try:
        while True:
            with contextlib.suppress(queue.Empty):
                info = started.get(timeout=0.2)
                if "error" in info and not reported:
                    stopping.set()
                    forward(signal.SIGTERM, None)
                    raise TorchslimError(info["error"], "Fix the artifact, then start again.")
                if not reported and on_started is not None:
                    pids = [p.pid for p in procs]
                    on_started(info | {"pids": pids})
                reported = True
            if stopping.is_set() and all(not p.is_alive() for p in procs):
                break
            if stopping.is_set():
                continue
            for i, p in enumerate(procs):
                if not p.is_alive():
                    restarts += 1
                    if restarts > MAX_RESTARTS:
                        forward(signal.SIGTERM, None)
                        raise TorchslimError(
                            f"Server workers died {restarts} times (last exit code {p.exitcode}).",
                            "Run with --workers 1 to see the error.",
                        )
                    print(
                        f"warning: worker {p.pid} exited with code {p.exitcode}; restarting it",
                        file=sys.stderr,
                        flush=True,
                    )
                    procs[i] = start(i)
    finally:
        for p in procs:
            p.join(config.timeout_ms / 1e3 + 30)
            if p.is_alive():
                p.kill()
        for s, h in previous.items():
            signal.signal(s, h)
        sock.close()
    codes = [p.exitcode for p in procs]
    if any(c not in (0, None) for c in codes):
        raise TorchslimError(
            f"A server worker did not exit cleanly (exit codes {codes}).", "See the log above."
        )


def _drain_then_exit_server() -> Any:
    """uvicorn's server, except that after a signal-triggered graceful shutdown the process exits
    normally (code 0) instead of re-raising the signal: every accepted request was answered."""
    import uvicorn

    class DrainingServer(uvicorn.Server):  # type: ignore[misc]
        def handle_exit(self, sig: int, frame: Any) -> None:
            super().handle_exit(sig, frame)
            captured = getattr(self, "_captured_signals", None)
            if isinstance(captured, list):
                captured.clear()

    return DrainingServer


def _notify_when_started(
    uv: Any, server: InferenceServer, host: str, callback: Callable[[dict[str, Any]], None]
) -> None:
    def watch() -> None:
        while not uv.started and not uv.should_exit:
            time.sleep(0.02)
        if uv.started:
            callback(server.describe(host, _bound_port(uv)))

    threading.Thread(target=watch, daemon=True).start()


def _bound_port(uv: Any) -> int:
    for s in getattr(uv, "servers", []):
        for sock in s.sockets:
            return int(sock.getsockname()[1])
    return int(uv.config.port)


class ServerThread:
    """An :class:`InferenceServer` on a uvicorn server in a background thread (tests, benchmarks).

    Args:
        server: The server (or a :class:`ServeConfig` to build one).
        host: Interface (default loopback).
        port: Port (0: a free one; read :attr:`port` after :meth:`start`).
    """

    def __init__(
        self, server: InferenceServer | ServeConfig, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        import uvicorn

        self.server = server if isinstance(server, InferenceServer) else InferenceServer(server)
        self._uv = uvicorn.Server(_uvicorn_config(self.server, host, port))
        self._thread = threading.Thread(target=self._uv.run, name="torchslim-serve", daemon=True)
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        """``http://host:port``."""
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> ServerThread:
        """Start listening (warm-up continues in the background); returns self."""
        self._thread.start()
        end = time.monotonic() + timeout
        while not self._uv.started:
            if not self._thread.is_alive() or time.monotonic() > end:
                raise TorchslimError("The server did not start.", "See the log above.")
            time.sleep(0.01)
        self.port = _bound_port(self._uv)
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Block until warm-up ended."""
        end = time.monotonic() + timeout
        while not self.server.ready:
            errors = [
                v.batcher.warmup_error
                for v in self.server.variants.values()
                if v.batcher.warmup_error
            ]
            if errors:
                raise TorchslimError(f"Warm-up failed: {errors[0]}", "See the error above.")
            if time.monotonic() > end:
                raise TorchslimError("The server did not become ready in time.", "Give it longer.")
            time.sleep(0.01)

    def stop(self, timeout: float = 30.0) -> bool:
        """Graceful shutdown (drain), as SIGTERM does; True when the thread ended."""
        self._uv.should_exit = True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
