"""Shared runtime machinery: atomic saving, thread control, manifests, registry probes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from torchslim.errors import SourceError
from torchslim.runtimes import load_deployed
from torchslim.runtimes._common import atomic_directory, input_names_for, torch_threads


def test_atomic_directory_new_and_existing(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with atomic_directory(target) as tmp:
        (tmp / "a.txt").write_text("1")
        assert not target.exists()
    assert (target / "a.txt").read_text() == "1"
    (target / "keep.txt").write_text("k")
    with atomic_directory(target) as tmp:
        (tmp / "a.txt").write_text("2")
    assert (target / "a.txt").read_text() == "2" and (target / "keep.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temp dirs left


def test_atomic_directory_failure_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), atomic_directory(tmp_path / "out") as tmp:
        (tmp / "half.bin").write_bytes(b"x")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_torch_threads_sets_and_restores() -> None:
    old = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == old
    with pytest.raises(ValueError), torch_threads(1):
        raise ValueError
    assert torch.get_num_threads() == old
    with torch_threads(None):
        assert torch.get_num_threads() == old


def test_input_names_from_forward_signature() -> None:
    class Two(torch.nn.Module):
        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return input_ids + attention_mask

    xs = (torch.zeros(1, 2), torch.zeros(1, 2))
    assert input_names_for(xs, module=Two()) == ["input_ids", "attention_mask"]
    assert input_names_for(xs[:1], module=Two()) == ["input"]
    assert input_names_for(xs) == ["input0", "input1"]


def test_load_deployed_refuses_non_runtime_dirs(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="not a saved torchslim runtime"):
        load_deployed(tmp_path)
    (tmp_path / "runtime.json").write_text("{not json")
    with pytest.raises(SourceError, match="not valid JSON"):
        load_deployed(tmp_path)
    (tmp_path / "runtime.json").write_text('{"format_version": 99, "runtime": "eager"}')
    with pytest.raises(SourceError, match="newer torchslim"):
        load_deployed(tmp_path)


def test_loading_a_runtime_with_the_wrong_class(tmp_path: Path) -> None:
    from rt_helpers import cnn_inputs, small_cnn

    from torchslim.runtimes import build
    from torchslim.runtimes.configs import EagerConfig
    from torchslim.runtimes.torchscript import TorchScriptDeployed

    build(small_cnn(), EagerConfig(), cnn_inputs()).save(tmp_path / "e")
    with pytest.raises(SourceError, match="holds a 'eager' runtime"):
        TorchScriptDeployed.load(tmp_path / "e")
