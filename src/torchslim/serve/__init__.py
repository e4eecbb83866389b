"""``torchslim serve``: an inference server for artifacts.

Open Inference Protocol (KServe v2) REST endpoints that Triton/KServe clients use unchanged, a
simple ``/v1/predict`` route, an adaptive dynamic batcher held to a p99 target, backpressure (a
bounded queue answering 503 with ``Retry-After``), Prometheus metrics, a response cache, bearer
auth, and canary/shadow variants with ``/v1/compare``. FastAPI and uvicorn are imported only when
a server is built.

Example::

    from torchslim.serve import ServeConfig, ServerThread
    with ServerThread(ServeConfig("out/cnn-ort")) as srv:
        srv.wait_ready()
        print(srv.url)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torchslim.serve.app import InferenceServer
    from torchslim.serve.batcher import Batcher, BatchPolicy, Rejected
    from torchslim.serve.config import ServeConfig
    from torchslim.serve.findbatch import find_batch_size
    from torchslim.serve.model import ServedModel
    from torchslim.serve.server import ServerThread, serve

_LAZY = {
    "InferenceServer": "torchslim.serve.app",
    "Batcher": "torchslim.serve.batcher",
    "BatchPolicy": "torchslim.serve.batcher",
    "Rejected": "torchslim.serve.batcher",
    "ServeConfig": "torchslim.serve.config",
    "find_batch_size": "torchslim.serve.findbatch",
    "ServedModel": "torchslim.serve.model",
    "ServerThread": "torchslim.serve.server",
    "serve": "torchslim.serve.server",
}

__all__ = [
    "BatchPolicy",
    "Batcher",
    "InferenceServer",
    "Rejected",
    "ServeConfig",
    "ServedModel",
    "ServerThread",
    "find_batch_size",
    "serve",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'torchslim.serve' has no attribute '{name}'")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return __all__
