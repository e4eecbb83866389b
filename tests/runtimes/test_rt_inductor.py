"""Inductor: compile time reported, freezing without global state, AOTInductor save (slow)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from rt_helpers import cnn_inputs, small_cnn

from torchslim.parity import check_parity
from torchslim.runtimes import build, load_deployed
from torchslim.runtimes.configs import CompileMode, InductorConfig
from torchslim.runtimes.inductor import inductor_options, inductor_patch


def test_options_carry_mode_and_freezing() -> None:
    assert inductor_options(InductorConfig()) == {"freezing": True}
    opts = inductor_options(InductorConfig(mode=CompileMode.MAX_AUTOTUNE, freezing=False))
    assert opts["max_autotune"] is True and opts["freezing"] is False
    if not torch.cuda.is_available():
        assert not any(k.startswith("triton.") for k in opts)


def test_inductor_patch_restores() -> None:
    import torch._inductor.config as cfg

    before = cfg.freezing
    with inductor_patch(freezing=not before):
        assert cfg.freezing is (not before)
    assert cfg.freezing is before


@pytest.mark.slow
def test_compiles_with_freezing_and_leaves_globals(tmp_path: Path) -> None:
    import torch._inductor.config as cfg

    before = cfg.freezing
    model = small_cnn()
    d = build(model, InductorConfig(dynamic=True), cnn_inputs())
    assert cfg.freezing is before
    assert d.build_seconds > 0 and d.info["freezing"] is True
    assert check_parity(d, model, cnn_inputs(), batch_sizes=(1, 4)).passed
    d.save(tmp_path / "ind")
    assert (tmp_path / "ind" / "model.pt2").exists()
    again = load_deployed(tmp_path / "ind")
    assert again.info["aot_inductor"] is True
    torch.testing.assert_close(again(*cnn_inputs(3)), d(*cnn_inputs(3)), rtol=1e-5, atol=1e-5)
