"""Small models shared by the runtime tests (imported as ``rt_helpers``)."""

from __future__ import annotations

import torch
from torch import nn


class SmallCNN(nn.Module):
    """Conv-BN-ReLU ×2 + Dropout + Linear on 1×12×12 inputs (a stand-in for the reference CNN)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
        )
        self.drop = nn.Dropout(0.2)
        self.head = nn.Linear(32, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(torch.flatten(self.features(x), 1)))


def small_cnn() -> nn.Module:
    """A seeded :class:`SmallCNN` in eval mode with non-trivial BatchNorm statistics."""
    torch.manual_seed(0)
    m = SmallCNN()
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.2, 0.2)
    return m.eval()


def cnn_inputs(batch: int = 2) -> tuple[torch.Tensor]:
    """Seeded inputs for :func:`small_cnn`."""
    g = torch.Generator().manual_seed(3)
    return (torch.rand(batch, 1, 12, 12, generator=g),)


class DataDependent(nn.Module):
    """Branches in Python on a tensor value: no exporter can capture both paths."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.lin(x)
        if y.sum() > 0:
            return y * 2
        return y - 1
