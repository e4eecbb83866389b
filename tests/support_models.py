"""Tiny models and datasets importable as ``support_models:NAME`` sources in tests, and markers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn

_T = TypeVar("_T", bound=Callable[..., object])


def requires_reference(test: _T) -> _T:
    """No-op, kept for test files not yet migrated: the reference assets are tracked in git
    (``src/torchslim/reference/assets``), so a test of them must fail, never skip, without them."""
    return test


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


def write_tiny_onnx(path: Path) -> None:
    """Write a 4->3 MatMul+Add ONNX graph with a dynamic batch axis."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((4, 3), dtype=np.float32), "w")
    bias = numpy_helper.from_array(np.zeros(3, dtype=np.float32), "bias")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["input", "w"], ["mm"]),
            helper.make_node("Add", ["mm", "bias"], ["output"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 3])],
        [w, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


class SizedCNN(nn.Module):
    """A small 3-channel classifier that states its input shape (``input_size``, batch first)."""

    input_size = (1, 3, 16, 16)

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(torch.relu(self.conv(x))), 1))


def sized() -> nn.Module:
    """Seeded SizedCNN (``input_size = (1, 3, 16, 16)``)."""
    torch.manual_seed(0)
    return SizedCNN()


def with_example_inputs() -> nn.Module:
    """Seeded TinyCNN with an ``example_inputs`` attribute (one 2x1x8x8 float tensor)."""
    model = tiny()
    model.example_inputs = (torch.rand(2, 1, 8, 8),)  # type: ignore[assignment]
    return model


def bad_input_size() -> nn.Module:
    """TinyCNN whose ``input_size`` attribute is not a shape."""
    model = tiny()
    model.input_size = "large"  # type: ignore[assignment]
    return model
