"""Fixtures for the profile tests: a small model with one deliberately slow module, and an INT8
OpenVINO artifact of the reference CNN with one layer kept in float."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn


class Heavy(nn.Module):
    """Slow by work: eight 512×512 matmuls on a 64×512 activation (~270 MFLOPs)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(512, 512) / 512**0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(8):
            x = torch.relu(x @ self.w)
        return x


class KnownNet(nn.Module):
    """``stem`` (Linear 32→512) → ``heavy`` (the slow one) → ``act`` used twice → ``head``."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(32, 512)
        self.heavy = Heavy()
        self.act = nn.ReLU()
        self.head = nn.Sequential(nn.Linear(512, 16), nn.Linear(16, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.stem(x))
        x = self.act(self.heavy(x))
        return self.head(x)


@pytest.fixture(scope="session")
def known_net() -> KnownNet:
    torch.manual_seed(0)
    return KnownNet().eval()


@pytest.fixture(scope="session")
def int8_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``torchslim:fashion_cnn`` quantized to INT8 by the OpenVINO (NNCF) pass with ``fc2`` kept
    in float, saved as an artifact (what ``torchslim quantize ... --ignore fc2 --out`` writes)."""
    from _deps import need

    need("openvino", "nncf")
    import torchslim
    from torchslim.passes.quantize import QuantizeConfig

    cand = torchslim.quantize(
        "torchslim:fashion_cnn",
        QuantizeConfig(
            method="static",
            backend="openvino",
            ignored_layers=("fc2",),
            num_calibration_samples=64,
        ),
        calib="torchslim:fashion_mnist?split=train",
    )
    out = tmp_path_factory.mktemp("profile") / "cnn_int8"
    cand.save(out)
    return out
