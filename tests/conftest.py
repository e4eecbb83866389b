"""Shared fixtures."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Keep caches (machine peak, compiled models) out of the user's home."""
    if "TORCHSLIM_CACHE_DIR" not in os.environ:
        monkeypatch.setenv("TORCHSLIM_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
    yield


@pytest.fixture
def tiny_model():
    """A seeded tiny CNN in eval mode."""
    from support_models import tiny

    return tiny().eval()


# Tests that load native runtimes which do not share a process well with the rest of the suite:
# ExecuTorch ships its own XNNPACK/pthreadpool/cpuinfo beside torch's, and Ray leaves threads and
# handlers behind after ray.shutdown(). After them, unrelated later tests (AOT Inductor, forking
# loaders) segfaulted the whole pytest process. `make test` runs each group in its own process.
_EXECUTORCH_FILES = ("test_executorch.py", "test_cli_bench_runtime.py", "test_rt_auto.py")
_RAY_TESTS = (
    "test_predict_ray.py",
    "test_serve_ray.py",
    "test_multi_fidelity_on_a_local_ray_cluster",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        nodeid = item.nodeid
        if nodeid.split("::")[0].endswith(_EXECUTORCH_FILES) or "[executorch" in nodeid:
            item.add_marker(pytest.mark.executorch)
        if any(name in nodeid for name in _RAY_TESTS):
            item.add_marker(pytest.mark.ray)
        elif nodeid.startswith("tests/predict/"):
            # segfaulted the shared process twice after hundreds of other tests (never alone):
            # kept apart until the cause in the loader/replica threads is found
            item.add_marker(pytest.mark.predict)
