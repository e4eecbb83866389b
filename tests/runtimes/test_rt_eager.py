"""Eager runtime: threads per call (restored), channels-last, save as torch.export program."""

from __future__ import annotations

from pathlib import Path

import torch
from rt_helpers import cnn_inputs, small_cnn

from torchslim.runtimes import build, load_deployed
from torchslim.runtimes.configs import EagerConfig


def test_threads_apply_inside_the_call_only() -> None:
    seen: list[int] = []

    class Probe(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(torch.get_num_threads())
            return x + 1

    before = torch.get_num_threads()
    d = build(Probe(), EagerConfig(threads=1), (torch.zeros(2, 3),))
    d(torch.zeros(2, 3))
    assert seen[-1] == 1 and torch.get_num_threads() == before


def test_channels_last_matches_and_round_trips(tmp_path: Path) -> None:
    model = small_cnn()
    d = build(model, EagerConfig(channels_last=True), cnn_inputs())
    torch.testing.assert_close(d(*cnn_inputs(3)), model(*cnn_inputs(3)), rtol=1e-5, atol=1e-6)
    conv = d.module.features[0]
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    d.save(tmp_path / "e")
    assert (tmp_path / "e" / "model.pt2").exists()
    torch.testing.assert_close(load_deployed(tmp_path / "e")(*cnn_inputs(2)), d(*cnn_inputs(2)))
