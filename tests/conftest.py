"""Shared fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ASSETS = Path(__file__).resolve().parents[1] / "src" / "torchslim" / "reference" / "assets"
HAVE_REFERENCE = (ASSETS / "fashion_cnn.safetensors").exists()

requires_reference = pytest.mark.skipif(
    not HAVE_REFERENCE, reason="reference model assets not generated"
)


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
