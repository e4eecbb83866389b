"""Fixtures for the server tests: two artifacts of ``torchslim:fashion_cnn`` (ONNX Runtime and
eager, built once per session), real Fashion-MNIST images, and servers on free loopback ports."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``{"ort": DIR, "eager": DIR}``: the same trained CNN for two runtimes."""
    from torchslim.artifact import save_artifact
    from torchslim.models import load_model
    from torchslim.pipeline import run_recipe
    from torchslim.recipe import Recipe
    from torchslim.runtimes.configs import EagerConfig, OrtConfig

    loaded = load_model("torchslim:fashion_cnn")
    root = tmp_path_factory.mktemp("serve-artifacts")
    out = {}
    for key, cfg in (("ort", OrtConfig(intra_op_threads=1)), ("eager", EagerConfig())):
        cand = run_recipe(Recipe((), cfg), loaded, measure=False, raise_errors=True)
        out[key] = save_artifact(cand, root / f"cnn-{key}")
    return out


@pytest.fixture(scope="session")
def images() -> np.ndarray:
    """64 real Fashion-MNIST test images, float32 (64, 1, 28, 28) in [0, 1]."""
    from torchslim.data import load_data

    ds = load_data("torchslim:fashion_mnist", limit=64)
    return ds.inputs[0].numpy().astype(np.float32)


@pytest.fixture(scope="session")
def direct(artifacts: dict[str, Path]) -> Callable[[np.ndarray], np.ndarray]:
    """The ONNX Runtime artifact called directly (no server): logits for a batch."""
    import torch

    from torchslim.artifact import load_artifact

    art = load_artifact(artifacts["ort"])

    def run(x: np.ndarray) -> np.ndarray:
        out: Any = art(torch.from_numpy(x))
        return np.asarray(out.numpy())

    return run


@pytest.fixture
def start_server() -> Iterator[Callable[..., Any]]:
    """``start_server(config, patch=None, ready=True)`` → a started ServerThread (stopped after)."""
    from torchslim.serve.app import InferenceServer
    from torchslim.serve.server import ServerThread

    started: list[Any] = []

    def start(
        config: Any, *, patch: Callable[[Any], None] | None = None, ready: bool = True, **kw: Any
    ) -> Any:
        server = InferenceServer(config, **kw)
        if patch is not None:
            patch(server)
        thread = ServerThread(server).start()
        started.append(thread)
        if ready:
            thread.wait_ready()
        return thread

    yield start
    for t in started:
        t.stop(timeout=30)
