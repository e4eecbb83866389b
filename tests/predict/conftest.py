"""Fixtures for ``torchslim predict`` tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from predict_helpers import write_jpegs


@pytest.fixture(autouse=True)
def _restore_threads():
    """predict sets torch's intra-op threads for its split; give the next test the old value."""
    import torch

    old = torch.get_num_threads()
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def jpeg_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """48 real Fashion-MNIST test images as JPEG files, one sub-folder per class."""
    root = tmp_path_factory.mktemp("jpegs")
    return root, write_jpegs(root, 48)
