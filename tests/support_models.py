"""Tiny models and datasets importable as ``support_models:NAME`` sources in tests."""

from __future__ import annotations

import torch
from torch import nn


class TinyCNN(nn.Module):
    """A small Conv-BN-ReLU + Linear classifier on 1x8x8 inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.relu(self.bn(self.conv(x)))), 1))


def tiny() -> nn.Module:
    """Seeded TinyCNN."""
    torch.manual_seed(0)
    return TinyCNN()


def not_a_model() -> object:
    """A factory that returns the wrong type."""
    return 42


def tiny_dataset() -> list[tuple[torch.Tensor, int]]:
    """A map-style dataset of 12 (x, y) pairs."""
    g = torch.Generator().manual_seed(1)
    return [(torch.rand(1, 8, 8, generator=g), i % 3) for i in range(12)]
