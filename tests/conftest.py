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
