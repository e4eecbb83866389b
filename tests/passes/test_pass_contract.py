"""The same contract for every registered pass, generated from the pass registry.

Each pass: is described, declares known needs, its default config round-trips, it never modifies
the caller's model, and on a small trained model its result runs at several batch sizes with the
original output shape and a numeric fidelity threshold (exact for lossless passes). A pass
registered without a case here fails the suite: every pass gets the contract.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from slim_models import digits, small_resnet
from torchslim.config import config_from_dict, config_to_dict, known_config_types
from torchslim.evaluate import fidelity
from torchslim.passes import PassContext, apply_pass, list_passes
from torchslim.passes.compress import ClusterConfig, DepthwiseConfig, LowRankConfig
from torchslim.passes.graph import (
    ChannelsLastConfig,
    EvalModeConfig,
    FuseConfig,
    RemoveDropoutConfig,
)
from torchslim.passes.prune import PruneConfig
from torchslim.passes.quantize import QuantizeConfig
from torchslim.train import DistillConfig, DistillMethod

KNOWN_NEEDS = {"calibration_data", "training_data", "teacher", "example_inputs", "evaluation_data"}

# pass name -> (config, minimum mean cosine to the original on held-out inputs)
CASES: dict[str, tuple[Any, float]] = {
    "graph.fuse": (FuseConfig(), 0.99999),
    "graph.remove_dropout": (RemoveDropoutConfig(), 0.99999),
    "graph.eval_mode": (EvalModeConfig(), 0.99999),
    "graph.channels_last": (ChannelsLastConfig(), 0.99999),
    "quantize": (QuantizeConfig(method="dynamic", backend="torch"), 0.99),
    "prune": (PruneConfig(ratio=0.25, method="unstructured"), 0.9),
    "distill": (DistillConfig(method=DistillMethod.KD, epochs=1.0, max_steps=5), 0.8),
    "compress.lowrank": (LowRankConfig(energy=0.999, min_saving=0.0), 0.99),
    "compress.cluster": (ClusterConfig(clusters=64, min_params=0), 0.99),
    "compress.depthwise": (DepthwiseConfig(min_in_channels=1), -1.0),  # a new block: shape only
}

ENTRIES = list_passes()


@pytest.fixture(scope="module")
def trained() -> torch.nn.Module:
    from torchslim.train import fit

    model = small_resnet()
    fit(model, digits("train"), DistillConfig(method=DistillMethod.FINETUNE, epochs=1.0))
    return model.eval()


def test_every_registered_pass_has_a_contract_case() -> None:
    assert {e.name for e in ENTRIES} == set(CASES)


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_registration_is_complete(entry: Any) -> None:
    assert entry.description and entry.key in known_config_types()
    assert set(entry.needs) <= KNOWN_NEEDS
    config = known_config_types()[entry.key]()
    assert config_from_dict(config_to_dict(config)) == config


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_pass_contract(entry: Any, trained: torch.nn.Module) -> None:
    config, min_cosine = CASES[entry.name]
    train, test = digits("train"), digits("test")
    x = test.inputs[0][:2]
    ctx = PassContext(
        calib=train.take(64), train=train, eval=test, teacher=trained, example_inputs=(x,)
    )
    before = copy.deepcopy(trained.state_dict())
    result = apply_pass(trained, config, ctx)
    after = trained.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before), "the caller's model changed"
    assert result.report.get("pass") == entry.name and result.seconds >= 0
    new = result.module
    held_out = test.inputs[0][:64]
    with torch.inference_mode():
        ref = trained(held_out)
        for b in (1, 5):
            assert new(held_out[:b]).shape == ref[:b].shape
        out = new(held_out)
    fid = fidelity(ref, out.float())
    assert fid.cosine >= min_cosine, (entry.name, fid)
