"""torch.export runtime: dynamic batch, clear errors, AOTInductor packages (slow)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from rt_helpers import DataDependent, cnn_inputs, small_cnn

from torchslim.errors import ExportError
from torchslim.parity import check_parity
from torchslim.runtimes import build, load_deployed
from torchslim.runtimes.configs import ExportConfig


def test_data_dependent_control_flow_names_the_line() -> None:
    with pytest.raises(ExportError) as info:
        build(DataDependent().eval(), ExportConfig(), (torch.rand(2, 4),))
    msg = info.value.message
    assert "torch.export failed on data-dependent control flow at rt_helpers.py" in msg
    assert "Try another runtime" in (info.value.hint or "")


def test_batch_one_example_still_exports_dynamic() -> None:
    d = build(small_cnn(), ExportConfig(), cnn_inputs(1))
    assert d(*cnn_inputs(6)).shape == (6, 5)


@pytest.mark.slow
def test_aot_inductor_package_round_trips(tmp_path: Path) -> None:
    model = small_cnn()
    d = build(model, ExportConfig(aot_inductor=True), cnn_inputs())
    assert check_parity(d, model, cnn_inputs()).passed
    d.save(tmp_path / "aoti")
    again = load_deployed(tmp_path / "aoti")
    torch.testing.assert_close(again(*cnn_inputs(3)), d(*cnn_inputs(3)))
