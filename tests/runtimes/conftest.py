"""Fixtures for runtime tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def _two_threads():
    """Keep torch at ≤ 2 threads (shared CI machines) and restore the setting after."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(min(2, old))
    yield
    torch.set_num_threads(old)
