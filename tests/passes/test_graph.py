"""Graph passes: BatchNorm folding, dropout/identity removal, eval mode, channels-last."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from torchslim.config import config_from_dict, config_to_dict
from torchslim.errors import ParityError, TorchslimError
from torchslim.passes import PassContext, apply_pass, list_passes
from torchslim.passes.graph import (
    ChannelsLastConfig,
    EvalModeConfig,
    FuseConfig,
    RemoveDropoutConfig,
    count_modules,
    find_fusable,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtimes"))
from rt_helpers import cnn_inputs, small_cnn


class LinearBN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 4)
        self.bn = nn.BatchNorm1d(4)
        self.act = nn.ReLU()
        self.out = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.act(self.bn(self.fc(x))))


class SharedOutput(nn.Module):
    """The conv output is used twice: folding the BN would change the residual branch."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1)
        self.bn = nn.BatchNorm2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.bn(y) + y


def _randomise_bn(m: nn.Module) -> nn.Module:
    torch.manual_seed(1)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                mod.running_mean.uniform_(-1, 1)
                mod.running_var.uniform_(0.5, 2)
    return m.eval()


@pytest.mark.parametrize(
    "cfg", [FuseConfig(), RemoveDropoutConfig(), EvalModeConfig(), ChannelsLastConfig()]
)
def test_configs_registered_and_round_trip(cfg: object) -> None:
    assert any(e.key == type(cfg).__name__ for e in list_passes())
    assert config_from_dict(config_to_dict(cfg)) == cfg


def test_conv_bn_relu_fusion_keeps_outputs_and_reduces_modules() -> None:
    model, x = small_cnn(), cnn_inputs(4)
    result = apply_pass(model, FuseConfig(), PassContext(example_inputs=x))
    rep = result.report
    assert rep["conv_bn"] == 2 and rep["with_activation"] == 2
    assert rep["modules_after"] < rep["modules_before"] == count_modules(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in result.module.modules())
    torch.testing.assert_close(result.module(*x), model(*x), rtol=1e-4, atol=1e-5)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # original untouched


def test_linear_bn_fusion() -> None:
    model, x = _randomise_bn(LinearBN()), (torch.rand(5, 6),)
    result = apply_pass(model, FuseConfig(), PassContext(example_inputs=x))
    assert result.report["linear_bn"] == 1
    assert isinstance(result.module.bn, nn.Identity)
    torch.testing.assert_close(result.module(*x), model(*x), rtol=1e-4, atol=1e-5)


def test_torchvision_resnet_fuses_every_bn() -> None:
    import torchvision as tv

    model = _randomise_bn(tv.models.resnet18(num_classes=10))
    x = (torch.rand(2, 3, 32, 32),)
    result = apply_pass(model, FuseConfig(), PassContext(example_inputs=x))
    assert result.report["conv_bn"] == 20
    assert result.report["parity"]["max_rel_error"] < 1e-4


def test_shared_output_is_caught_by_parity() -> None:
    model, x = _randomise_bn(SharedOutput()), (torch.rand(2, 2, 4, 4),)
    with pytest.raises(ParityError, match="BatchNorm folding changed"):
        apply_pass(model, FuseConfig(), PassContext(example_inputs=x))
    assert find_fusable(model, x) == [("conv", "bn", None)]


def test_fuse_needs_example_inputs() -> None:
    with pytest.raises(TorchslimError, match="example inputs"):
        apply_pass(small_cnn(), FuseConfig())


def test_remove_dropout_and_identity() -> None:
    model = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5), nn.Identity(), nn.ReLU()).eval()
    result = apply_pass(model, RemoveDropoutConfig())
    assert result.report["dropout_replaced"] == 1
    assert result.report["removed_from_sequential"] == 2
    assert [type(m).__name__ for m in result.module] == ["Linear", "ReLU"]
    x = torch.rand(4, 3)
    torch.testing.assert_close(result.module(x), model(x))
    cnn = apply_pass(small_cnn(), RemoveDropoutConfig()).module
    assert isinstance(cnn.drop, nn.Identity)  # attribute kept: forward still calls it


def test_eval_mode_reports_training_layers() -> None:
    model = small_cnn().train()
    result = apply_pass(model, EvalModeConfig())
    assert result.report["were_training"] == count_modules(model)
    assert not any(m.training for m in result.module.modules())
    assert not any(p.requires_grad for p in result.module.parameters())
    assert model.training  # the caller's model is untouched


def test_channels_last() -> None:
    model, x = small_cnn(), cnn_inputs(2)
    result = apply_pass(model, ChannelsLastConfig(), PassContext(example_inputs=x))
    conv = result.module.features[0]
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert result.report["tensors_converted"] == 2
    torch.testing.assert_close(result.module(*x), model(*x), rtol=1e-4, atol=1e-5)
