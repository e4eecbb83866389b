"""TorchScript: trace or script, freeze + optimize_for_inference, trace guard."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from rt_helpers import DataDependent, cnn_inputs, small_cnn

from torchslim.errors import ExportError
from torchslim.parity import check_parity
from torchslim.runtimes import build, load_deployed
from torchslim.runtimes.configs import TorchScriptConfig, TraceMethod


def test_script_handles_data_dependent_branches(tmp_path: Path) -> None:
    model = DataDependent().eval()
    d = build(model, TorchScriptConfig(method=TraceMethod.SCRIPT), (torch.rand(2, 4),))
    for x in (torch.rand(3, 4), -torch.rand(3, 4) * 10):
        torch.testing.assert_close(d(x), model(x))
    d.save(tmp_path / "ts")
    x = -torch.rand(2, 4) * 10
    torch.testing.assert_close(load_deployed(tmp_path / "ts")(x), model(x))


def test_trace_refuses_branch_in_user_code() -> None:
    with pytest.raises(ExportError, match="method=script"):
        build(DataDependent().eval(), TorchScriptConfig(), (torch.rand(2, 4),))


def test_unfrozen_trace_and_threads() -> None:
    cfg = TorchScriptConfig(freeze=False, optimize_for_inference=False, threads=1)
    d = build(small_cnn(), cfg, cnn_inputs())
    assert d.info["frozen"] is False
    before = torch.get_num_threads()
    assert check_parity(d, small_cnn(), cnn_inputs()).passed
    assert torch.get_num_threads() == before
