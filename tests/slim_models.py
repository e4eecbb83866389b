"""Small models and data for the pruning, compression and training tests."""

from __future__ import annotations

import torch
from torch import nn

from torchslim.data import DataSet


class SmallResNet(nn.Module):
    """A residual CNN on 1x8x8 inputs: stem, two residual blocks (one with a projection)."""

    def __init__(self, width: int = 16, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        self.c1 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.b1 = nn.BatchNorm2d(width)
        self.r1 = nn.ReLU()
        self.c2 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False)
        self.b2 = nn.BatchNorm2d(2 * width)
        self.proj = nn.Conv2d(width, 2 * width, 1, stride=2, bias=False)
        self.r2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.r1(x + self.b1(self.c1(x)))
        x = self.r2(self.b2(self.c2(x)) + self.proj(x))
        return self.fc(torch.flatten(self.pool(x), 1))


def small_resnet() -> nn.Module:
    """Seeded :class:`SmallResNet` (importable as ``slim_models:small_resnet``)."""
    torch.manual_seed(0)
    return SmallResNet().eval()


class MLP(nn.Module):
    """A dropout-free MLP on flattened 8x8 digits (for exact DDP comparisons)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def mlp() -> nn.Module:
    """Seeded :class:`MLP`."""
    torch.manual_seed(0)
    return MLP()


def digits(split: str = "all") -> DataSet:
    """scikit-learn's bundled 8x8 digits as a DataSet (``train``: 1,400, ``test``: the rest)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target, dtype=torch.long)
    sl = {"train": slice(0, 1400), "test": slice(1400, None), "all": slice(None)}[split]
    return DataSet(f"digits[{split}]", (x[sl],), y[sl], num_classes=10)


def digits_train() -> DataSet:
    """Factory for the CLI tests: ``slim_models:digits_train``."""
    return digits("train")


def digits_test() -> DataSet:
    """Factory for the CLI tests: ``slim_models:digits_test``."""
    return digits("test")


def trained_resnet() -> nn.Module:
    """A SmallResNet trained briefly on digits (seeded, ~2 s), for recovery tests."""
    from torchslim.train import DistillConfig, fit

    model = small_resnet()
    fit(model, digits("train"), DistillConfig(method="finetune", epochs=4, lr=3e-3, batch_size=64))
    return model.eval()
