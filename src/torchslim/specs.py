"""Input specifications: names, shapes, dtypes and dynamic axes of a model's inputs.

Values only: importing this module imports no torch (tensors are made lazily by
:meth:`InputSpec.example_inputs`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from torchslim.errors import ShapeError

if TYPE_CHECKING:
    import torch

__all__ = ["InputSpec", "TensorSpec", "parse_input_spec", "text_spec"]

_DTYPES = {
    "float32": "float32",
    "float": "float32",
    "fp32": "float32",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "int64": "int64",
    "long": "int64",
    "int32": "int32",
    "int": "int32",
    "uint8": "uint8",
    "bool": "bool",
}

# Inputs are synthesised as real tensors: refuse shapes no machine could hold (2**31 values is
# 8 GiB of float32) with a clear error instead of an allocator failure.
_MAX_ELEMENTS = 2**31


@dataclass(frozen=True)
class TensorSpec:
    """Shape and dtype of one model input.

    Attributes:
        name: Input name (``"input"`` for single-input vision models).
        shape: Example shape, batch dimension first.
        dtype: Torch dtype name (``"float32"``, ``"int64"``, ...).
        dynamic_axes: Axes that may vary between calls (batch is axis 0).
        low: Lower bound used to synthesise values (inclusive).
        high: Upper bound used to synthesise values (exclusive for integer inputs).
    """

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    dynamic_axes: tuple[int, ...] = (0,)
    low: float = 0.0
    high: float = 1.0

    def __post_init__(self) -> None:
        if not self.shape or any(int(d) <= 0 for d in self.shape):
            raise ShapeError(
                f"Input '{self.name}' has invalid shape {self.shape}.",
                "Give positive dimensions, batch first, e.g. 1x3x224x224.",
            )
        if math.prod(int(d) for d in self.shape) > _MAX_ELEMENTS:
            raise ShapeError(
                f"Input '{self.name}' of shape {'x'.join(map(str, self.shape))} is too large "
                f"(more than {_MAX_ELEMENTS:,} values in one tensor).",
                "Give the shape of one real input batch, e.g. 1x3x224x224.",
            )
        if self.dtype not in _DTYPES.values():
            raise ShapeError(
                f"Input '{self.name}' has unknown dtype '{self.dtype}'.",
                f"Use one of: {', '.join(sorted(set(_DTYPES.values())))}.",
            )

    @property
    def torch_dtype(self) -> torch.dtype:
        """The dtype as a ``torch.dtype``."""
        import torch

        return getattr(torch, self.dtype)  # type: ignore[no-any-return]

    def with_batch(self, batch_size: int) -> TensorSpec:
        """Return a copy whose first dimension is ``batch_size``."""
        return replace(self, shape=(int(batch_size), *self.shape[1:]))


@dataclass(frozen=True)
class InputSpec:
    """Names, shapes, dtypes and dynamic axes of all inputs of a model.

    Attributes:
        inputs: One :class:`TensorSpec` per positional input, in call order.
    """

    inputs: tuple[TensorSpec, ...]

    @property
    def names(self) -> tuple[str, ...]:
        """Input names in call order."""
        return tuple(t.name for t in self.inputs)

    @property
    def batch_size(self) -> int:
        """Batch size of the example shapes."""
        return self.inputs[0].shape[0]

    def with_batch(self, batch_size: int) -> InputSpec:
        """Return a copy with every input's batch dimension set to ``batch_size``."""
        return InputSpec(tuple(t.with_batch(batch_size) for t in self.inputs))

    def example_inputs(self, batch_size: int | None = None, seed: int = 0) -> tuple[Any, ...]:
        """Synthesise deterministic example inputs (for fidelity and speed, never accuracy).

        Args:
            batch_size: Override the batch dimension.
            seed: Random seed; the same seed gives the same tensors.

        Returns:
            A tuple of tensors, one per input, in call order.
        """
        import torch

        gen = torch.Generator().manual_seed(seed)
        spec = self.with_batch(batch_size) if batch_size else self
        out = []
        for t in spec.inputs:
            if t.dtype in ("int64", "int32", "uint8"):
                x = torch.randint(
                    int(t.low), int(t.high), t.shape, generator=gen, dtype=torch.int64
                )
                out.append(x.to(t.torch_dtype))
            elif t.dtype == "bool":
                out.append(torch.ones(t.shape, dtype=torch.bool))
            else:
                x = torch.rand(t.shape, generator=gen) * (t.high - t.low) + t.low
                out.append(x.to(t.torch_dtype))
        return tuple(out)

    def check(self, inputs: Sequence[Any]) -> None:
        """Raise :class:`ShapeError` if ``inputs`` do not match this spec (dynamic axes may vary)."""
        if len(inputs) != len(self.inputs):
            raise ShapeError(
                f"Model expects {len(self.inputs)} input(s) {list(self.names)}, got {len(inputs)}.",
                "Pass one tensor per input, in this order.",
            )
        for t, x in zip(self.inputs, inputs, strict=True):
            shape = tuple(getattr(x, "shape", ()))
            if len(shape) != len(t.shape) or any(
                a != b
                for i, (a, b) in enumerate(zip(shape, t.shape, strict=True))
                if i not in t.dynamic_axes
            ):
                raise ShapeError(
                    f"Input '{t.name}' has shape {list(shape)}, expected {list(t.shape)} "
                    f"(dynamic axes {list(t.dynamic_axes)}).",
                    "Resize or reshape the data, or give --input-shape to match the model.",
                )
            dtype = str(getattr(x, "dtype", "")).replace("torch.", "")
            if dtype and dtype != t.dtype:
                raise ShapeError(
                    f"Input '{t.name}' has dtype {dtype}, expected {t.dtype}.",
                    f"Convert the data to {t.dtype}.",
                )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly description."""
        return {
            t.name: {"shape": list(t.shape), "dtype": t.dtype, "dynamic_axes": list(t.dynamic_axes)}
            for t in self.inputs
        }

    def __str__(self) -> str:
        return ", ".join(f"{t.name}:{'x'.join(map(str, t.shape))}:{t.dtype}" for t in self.inputs)


def parse_input_spec(text: str) -> InputSpec:
    """Parse a user-typed input spec.

    Accepted forms: ``1x3x224x224`` (one float input), ``1x3x224x224:float16``, and several named
    inputs separated by commas, e.g. ``input_ids:1x128:int64,attention_mask:1x128:int64``.

    Raises:
        ShapeError: The text cannot be parsed.
    """
    specs = []
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise ShapeError("Empty input shape.", "Write it like 1x3x224x224.")
    for i, part in enumerate(parts):
        fields = part.split(":")
        name = f"input{i}" if len(parts) > 1 else "input"
        if fields and not re.fullmatch(r"[0-9]+(x[0-9]+)*", fields[0]):
            name, fields = fields[0], fields[1:]
        if not fields or not re.fullmatch(r"[0-9]+(x[0-9]+)*", fields[0]):
            raise ShapeError(
                f"Cannot parse input shape '{part}'.",
                "Write it like 1x3x224x224 or input_ids:1x128:int64,attention_mask:1x128:int64.",
            )
        shape = tuple(int(d) for d in fields[0].split("x"))
        dtype = "float32"
        if len(fields) > 1:
            if fields[1].lower() not in _DTYPES:
                raise ShapeError(
                    f"Unknown dtype '{fields[1]}' in '{part}'.",
                    f"Use one of: {', '.join(sorted(set(_DTYPES.values())))}.",
                )
            dtype = _DTYPES[fields[1].lower()]
        high = 1000.0 if dtype in ("int64", "int32") else 1.0
        if "mask" in name and dtype in ("int64", "int32"):
            high = 2.0
        dyn = (0, 1) if dtype in ("int64", "int32") and len(shape) == 2 else (0,)
        specs.append(TensorSpec(name, shape, dtype, dyn, 0.0, high))
    return InputSpec(tuple(specs))


def text_spec(seq_len: int = 128, vocab: int = 30522) -> InputSpec:
    return InputSpec(
        (
            TensorSpec("input_ids", (1, seq_len), "int64", (0, 1), 0.0, float(vocab)),
            TensorSpec("attention_mask", (1, seq_len), "int64", (0, 1), 1.0, 2.0),
        )
    )
