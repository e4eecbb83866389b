"""Compression: low-rank SVD, k-means weight sharing, depthwise-separable swap."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from slim_models import digits, small_resnet
from torchslim.config import config_from_dict, config_to_dict
from torchslim.errors import TorchslimError
from torchslim.passes import PassContext, apply_pass
from torchslim.passes.compress import (
    ClusterConfig,
    DepthwiseConfig,
    LowRankConfig,
    factorize,
    kmeans_1d,
)
from torchslim.train import DistillConfig

X = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def _ctx(**kw):
    return PassContext(example_inputs=(X,), **kw)


def test_full_rank_reproduces_linear_and_conv():
    torch.manual_seed(0)
    lin = nn.Linear(12, 7)
    x = torch.randn(5, 12)
    torch.testing.assert_close(factorize(lin, 7)(x), lin(x), atol=1e-5, rtol=1e-5)
    conv = nn.Conv2d(6, 5, 3, stride=2, padding=1)
    xc = torch.randn(2, 6, 9, 9)
    torch.testing.assert_close(factorize(conv, 5)(xc), conv(xc), atol=1e-5, rtol=1e-5)


def test_lowrank_only_where_flops_drop():
    from torchslim.measure import count_flops

    model = small_resnet()
    res = apply_pass(model, LowRankConfig(rank_ratio=0.25), _ctx())
    assert res.report["factorized"] > 0
    assert count_flops(res.module, (X,)) < count_flops(model, (X,))
    for info in res.report["layers"].values():
        assert info["flops_fraction"] <= 0.9
    # At full rank nothing saves FLOPs, so nothing is replaced.
    full = apply_pass(model, LowRankConfig(rank_ratio=1.0), _ctx())
    assert full.report["factorized"] == 0
    torch.testing.assert_close(full.module(X), model(X))


def test_lowrank_energy_and_reload(tmp_path):
    from torchslim.artifact import load_artifact
    from torchslim.slim import lowrank

    res = lowrank(small_resnet(), LowRankConfig(energy=0.6, min_saving=0.0), X, measure=False)
    assert all(info["energy"] >= 0.6 for info in res.reports[0]["layers"].values())
    out = res.save(tmp_path / "lr", source="slim_models:small_resnet")
    art = load_artifact(out, trust_code=True)
    torch.testing.assert_close(art.module()(X), res.model(X))
    torch.testing.assert_close(art(X), res.model(X), rtol=1e-5, atol=1e-5)  # the saved program


def test_kmeans_leaves_at_most_k_values_per_layer():
    torch.manual_seed(0)
    values, idx = kmeans_1d(torch.randn(1000), 8)
    assert len(values) <= 8 and int(idx.max()) < len(values)
    res = apply_pass(small_resnet(), ClusterConfig(clusters=4, min_params=0), _ctx())
    for name, mod in res.module.named_modules():
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            assert mod.weight.unique().numel() <= 4, name
    rep = res.report
    assert rep["index_bits"] == 2
    assert rep["size_bytes_compressed"] < rep["size_bytes_dense"] / 4


def test_cluster_keeps_outputs_close():
    model = small_resnet()
    res = apply_pass(model, ClusterConfig(clusters=64, min_params=0), _ctx())
    with torch.no_grad():
        cos = torch.nn.functional.cosine_similarity(res.module(X), model(X)).min()
    assert float(cos) > 0.99


def test_depthwise_swap_and_recovery():
    from torchslim.measure import count_flops

    model = small_resnet()
    res = apply_pass(model, DepthwiseConfig(), _ctx())
    assert "c1" in res.report["swapped"] and "stem.0" not in res.report["swapped"]
    assert isinstance(res.module.c1[0], nn.Conv2d) and res.module.c1[0].groups == 16
    assert count_flops(res.module, (X,)) < count_flops(model, (X,))
    rec = apply_pass(
        model,
        DepthwiseConfig(recover=DistillConfig(max_steps=2, batch_size=32)),
        _ctx(train=digits("train")),
    )
    assert rec.report["recovery"]["steps"] == 2


@pytest.mark.parametrize("bad", [dict(energy=0.0), dict(energy=1.5), dict(rank_ratio=0.0)])
def test_lowrank_bad_values(bad):
    with pytest.raises(TorchslimError):
        LowRankConfig(**bad)


def test_cluster_bad_values():
    with pytest.raises(TorchslimError, match="clusters"):
        ClusterConfig(clusters=1)


@pytest.mark.parametrize(
    "cfg",
    [
        LowRankConfig(energy=0.8, exclude=("fc",)),
        ClusterConfig(clusters=32),
        DepthwiseConfig(recover=DistillConfig(epochs=2)),
    ],
)
def test_config_round_trip(cfg):
    assert config_from_dict(config_to_dict(cfg)) == cfg
