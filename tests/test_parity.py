"""Parity checking: tolerances per precision, batch and sequence coverage, errors."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import nn

from torchslim.errors import ParityError
from torchslim.parity import TOLERANCES, Tolerance, check_parity, compare_outputs, parity_inputs
from torchslim.specs import InputSpec, TensorSpec


class Fake:
    """A stand-in runtime that perturbs the reference output."""

    runtime = "fake"

    def __init__(
        self,
        module: nn.Module,
        noise: float = 0.0,
        precision: str | None = None,
        fail_batch: int | None = None,
    ) -> None:
        self.module, self.noise, self.fail_batch = module, noise, fail_batch
        self.info = {"precision": precision} if precision else {}

    def __call__(self, *xs: Any) -> torch.Tensor:
        if self.fail_batch is not None and xs[0].shape[0] == self.fail_batch:
            raise RuntimeError("shape not supported")
        with torch.no_grad():
            out = self.module(*xs)
        return out * (1 + self.noise)


def _lin() -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(6, 3).eval()


def test_identical_runtime_passes_at_batch_1_and_n() -> None:
    m = _lin()
    report = check_parity(Fake(m), m, (torch.rand(2, 6),), batch_sizes=(1, 8))
    assert report.passed and [c.batch for c in report.cases] == [1, 8]
    assert report.max_rel_error == 0.0 and report.min_cosine == 1.0
    assert "passed" in report.summary()


def test_outside_fp32_tolerance_raises_with_numbers() -> None:
    m = _lin()
    with pytest.raises(ParityError, match=r"fake.*batch 1.*max relative error"):
        check_parity(Fake(m, noise=0.01), m, (torch.rand(2, 6),))


def test_bf16_runtime_gets_bf16_tolerance() -> None:
    m = _lin()
    report = check_parity(Fake(m, noise=0.01, precision="bf16"), m, (torch.rand(2, 6),))
    assert report.passed and report.precision == "bf16"
    assert report.tolerance == TOLERANCES["bf16"]
    assert not check_parity(
        Fake(m, noise=0.01), m, (torch.rand(2, 6),), raise_on_failure=False
    ).passed


def test_custom_tolerance_and_no_raise() -> None:
    m = _lin()
    tol = Tolerance(max_rel_error=0.5, min_cosine=0.0)
    assert check_parity(Fake(m, noise=0.2), m, (torch.rand(2, 6),), tolerance=tol).passed


def test_runtime_failing_a_batch_size_is_a_parity_failure() -> None:
    m = _lin()
    with pytest.raises(ParityError, match=r"batch 4.*shape not supported"):
        check_parity(Fake(m, fail_batch=4), m, (torch.rand(2, 6),))


def test_nan_outputs_fail() -> None:
    assert compare_outputs(torch.ones(2, 2), torch.full((2, 2), math.nan))[1] == math.inf


def test_output_structure_mismatch() -> None:
    with pytest.raises(ValueError, match="output"):
        compare_outputs((torch.ones(2), torch.ones(2)), torch.ones(2))
    with pytest.raises(ValueError, match="shape"):
        compare_outputs(torch.ones(2, 3), torch.ones(3, 2))


def test_token_inputs_get_two_sequence_lengths_and_padded_masks() -> None:
    spec = InputSpec(
        (
            TensorSpec("input_ids", (1, 32), "int64", (0, 1), 0, 100),
            TensorSpec("attention_mask", (1, 32), "int64", (0, 1), 1, 2),
        )
    )
    sets = parity_inputs(spec, batch_sizes=(1, 4))
    assert sorted({(b, s) for b, s, _ in sets}) == [(1, 5), (1, 32), (4, 5), (4, 32)]
    _, _, (ids, mask) = next(t for t in sets if t[0] == 4 and t[1] == 32)
    assert ids.shape == mask.shape == (4, 32)
    assert mask[0].all() and not mask[3].all()  # later rows are padded
    assert len({int(r.sum()) for r in mask}) == 4  # all different lengths


def test_example_tensor_inputs_vary_rows() -> None:
    ((b, _, (x,)),) = parity_inputs((torch.rand(1, 3),), batch_sizes=(4,))
    assert b == 4 and x.shape == (4, 3) and not torch.equal(x[0], x[1])


def test_static_shape_runtime_checked_at_its_shape_only() -> None:
    m = _lin()
    fake = Fake(m)
    fake.static_shapes = True  # type: ignore[attr-defined]
    report = check_parity(fake, m, (torch.rand(3, 6),))
    assert [c.batch for c in report.cases] == [3]
