"""Running the server: in the foreground (the CLI, SIGTERM drains) or in a background thread.

Graceful shutdown (SIGTERM or Ctrl-C in the foreground, :meth:`ServerThread.stop` in a thread):
uvicorn stops accepting connections and waits for every request in flight; then the lifespan
hook finishes mirrored shadow requests and every request still queued in the batchers, and the
workers stop. No accepted request is dropped; the wait is bounded by the request timeout.
"""

from __future__ import annotations

import threading
import time
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


def serve(config: ServeConfig, *, on_started: Any = None) -> None:
    """Serve ``config.artifact`` in the foreground until SIGTERM/SIGINT, then drain and return.

    Args:
        config: The settings.
        on_started: Called with the :class:`InferenceServer` and the bound port once listening.

    Raises:
        TorchslimError: An artifact cannot be loaded, or the port cannot be bound.
    """
    server = InferenceServer(config)
    uv = _drain_then_exit_server()(_uvicorn_config(server, config.host, config.port))
    if on_started is not None:
        _notify_when_started(uv, server, on_started)
    uv.run()
    if not uv.started:
        raise TorchslimError(
            f"Could not listen on {config.host}:{config.port}.",
            "Is another process using the port? Give another --port.",
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


def _notify_when_started(uv: Any, server: InferenceServer, callback: Any) -> None:
    def watch() -> None:
        while not uv.started and not uv.should_exit:
            time.sleep(0.02)
        if uv.started:
            callback(server, _bound_port(uv))

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
