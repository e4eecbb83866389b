"""Pruning: structured channel removal, unstructured/global magnitude, N:M, saving/reloading."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from slim_models import SmallResNet, digits, small_resnet
from torchslim.config import config_from_dict, config_to_dict
from torchslim.errors import TorchslimError
from torchslim.passes import PassContext, apply_pass
from torchslim.passes.prune import PruneConfig, layer_sparsity
from torchslim.train import DistillConfig

X = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def _ctx(**kw):
    return PassContext(example_inputs=(X,), **kw)


def _params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _convs(m: nn.Module) -> dict[str, nn.Conv2d]:
    return {n: c for n, c in m.named_modules() if isinstance(c, nn.Conv2d)}


def test_structured_removes_channels_keeps_residuals_and_user_model():
    model = small_resnet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = apply_pass(model, PruneConfig(ratio=0.5, round_to=None, protect_first_last=False), _ctx())
    pruned = res.module
    assert _params(pruned) < _params(model) / 2
    # Residual adds stay consistent: the block input and output widths still match.
    convs = _convs(pruned)
    assert convs["stem.0"].out_channels == convs["c1"].out_channels == 8
    assert convs["c2"].out_channels == convs["proj"].out_channels == 16
    assert pruned(X).shape == (2, 10)
    # The user's model is untouched.
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert _convs(model)["c1"].out_channels == 16


def test_first_and_last_layers_protected_by_default():
    res = apply_pass(small_resnet(), PruneConfig(ratio=0.5, round_to=None), _ctx())
    convs = _convs(res.module)
    # The stem feeds the first residual add, so protecting it keeps that width whole.
    assert convs["stem.0"].out_channels == 16
    assert convs["c2"].out_channels == 16  # the second stage is pruned
    assert res.module.fc.out_features == 10
    assert set(res.report["protected"]) == {"stem.0", "fc"}
    unprotected = apply_pass(
        small_resnet(), PruneConfig(ratio=0.5, protect_first_last=False), _ctx()
    )
    assert unprotected.report["protected"] == ["fc"]  # outputs keep their width


def test_round_to_keeps_channel_counts_multiples():
    model = SmallResNet(width=24).eval()
    res = apply_pass(model, PruneConfig(ratio=0.4, round_to=8, protect_first_last=False), _ctx())
    for name, conv in _convs(res.module).items():
        if name != "stem.0" or conv.out_channels != 24:
            assert conv.out_channels % 8 == 0, (name, conv.out_channels)


def test_global_ranking_prunes_layers_unevenly_per_layer_evenly():
    torch.manual_seed(0)
    model = small_resnet()
    with torch.no_grad():  # make 24 of the second stage's 32 channels nearly useless
        for t in (model.c2.weight, model.proj.weight, model.b2.weight):
            t[:24].mul_(1e-3)
        model.fc.weight[:, :24].mul_(1e-3)
    cfg = dict(ratio=0.5, round_to=None, protect_first_last=False)
    per_layer = apply_pass(model, PruneConfig(**cfg), _ctx()).module
    glob = apply_pass(model, PruneConfig(global_ranking=True, **cfg), _ctx()).module
    pl, gl = _convs(per_layer), _convs(glob)
    # Per-layer: every group loses the same fraction.
    assert pl["c1"].out_channels / 16 == pl["c2"].out_channels / 32 == 0.5
    # Global: the weak channels go first, wherever they are; the total is still half.
    assert gl["c2"].out_channels == 8 and gl["c1"].out_channels == 16


def test_flops_target_met():
    from torchslim.measure import count_flops

    model = small_resnet()
    res = apply_pass(
        model,
        PruneConfig(ratio=0.5, target="flops", protect_first_last=False, round_to=None),
        _ctx(),
    )
    f0, f1 = count_flops(model, (X,)), count_flops(res.module, (X,))
    assert f1 <= 0.5 * f0 * 1.001
    assert res.report["target_flops_reduction"]["goal"] == 0.5


def test_taylor_importance_needs_and_uses_data():
    with pytest.raises(TorchslimError, match="Taylor"):
        apply_pass(small_resnet(), PruneConfig(importance="taylor"), _ctx())
    res = apply_pass(
        small_resnet(), PruneConfig(importance="taylor", round_to=None), _ctx(train=digits("train"))
    )
    assert _params(res.module) < _params(small_resnet())


def test_iterative_pruning_with_recovery_between_steps():
    cfg = PruneConfig(
        ratio=0.5,
        steps=2,
        round_to=None,
        protect_first_last=False,
        recover=DistillConfig(method="finetune", max_steps=3, batch_size=32),
    )
    res = apply_pass(small_resnet(), cfg, _ctx(train=digits("train")))
    assert _convs(res.module)["c1"].out_channels == 8
    assert len(res.report["recovery"]) == 2
    with pytest.raises(TorchslimError, match="training data"):
        apply_pass(small_resnet(), cfg, _ctx())


def test_pruned_model_exports_onnx_and_torchscript(tmp_path):
    import onnxruntime as ort

    from torchslim.runtimes.onnx_export import export_onnx

    pruned = apply_pass(small_resnet(), PruneConfig(ratio=0.5), _ctx()).module.eval()
    path = export_onnx(pruned, (X,), tmp_path / "p.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = sess.run(None, {sess.get_inputs()[0].name: X.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(out), pruned(X), atol=1e-4, rtol=1e-4)
    ts = torch.jit.trace(pruned, (X,))
    torch.jit.save(ts, str(tmp_path / "p.ts"))
    torch.testing.assert_close(torch.jit.load(str(tmp_path / "p.ts"))(X), pruned(X))


@pytest.mark.parametrize("method", ["unstructured", "global"])
def test_unstructured_sparsity(method):
    model = small_resnet()
    res = apply_pass(model, PruneConfig(method=method, ratio=0.6), _ctx())
    sp = layer_sparsity(res.module)
    pruned = {n: s for n, s in sp.items() if n not in ("stem.0", "fc")}
    assert sp["stem.0"] == 0 and sp["fc"] == 0  # protected
    sizes = {n: m.weight.numel() for n, m in res.module.named_modules() if n in pruned}
    total = sum(pruned[n] * sizes[n] for n in pruned) / sum(sizes.values())
    assert total == pytest.approx(0.6, abs=0.01)
    if method == "unstructured":
        assert all(s == pytest.approx(0.6, abs=0.01) for s in pruned.values())
    else:
        assert max(pruned.values()) - min(pruned.values()) > 0.02
    assert _params(res.module) == _params(model)  # dense storage, honestly reported
    assert res.report["size_bytes_sparse"] < sum(p.numel() * 4 for p in model.parameters())


def test_nm_two_four():
    res = apply_pass(small_resnet(), PruneConfig(method="nm"), _ctx())
    w = res.module.c1.weight  # (out, in, 3, 3): groups of 4 along the input channels
    groups = w.permute(0, 2, 3, 1).reshape(-1, 4)
    assert bool(((groups != 0).sum(1) <= 2).all())
    if not torch.cuda.is_available():
        assert "no speed-up on this machine" in res.report["speedup_note"]


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.1, 1.5])
def test_ratio_out_of_range(ratio):
    with pytest.raises(TorchslimError, match="between 0 and 1"):
        PruneConfig(ratio=ratio)


def test_unknown_method_and_target_mismatch():
    with pytest.raises(TorchslimError, match="Unknown prune method"):
        PruneConfig(method="magic")  # type: ignore[arg-type]
    with pytest.raises(TorchslimError, match="structured pruning only"):
        PruneConfig(method="unstructured", target="flops")  # type: ignore[arg-type]


class _Mix(nn.Module):
    """Mixes channels through a bare parameter, which the dependency graph cannot follow."""

    def __init__(self) -> None:
        super().__init__()
        self.mix = nn.Parameter(torch.randn(16, 16))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bchw,cd->bdhw", f, self.mix)


class _Unprunable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = SmallResNet()
        self.head = _Mix()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.body
        f = b.stem(x)
        f = self.head(f)
        f = b.r1(f + b.b1(b.c1(f)))
        f = b.r2(b.b2(b.c2(f)) + b.proj(f))
        return b.fc(torch.flatten(b.pool(f), 1))


def test_graph_failure_names_module_and_exclude_option():
    with pytest.raises(TorchslimError) as info:
        apply_pass(_Unprunable().eval(), PruneConfig(ratio=0.5, protect_first_last=False), _ctx())
    assert "'head'" in str(info.value) and "--exclude head" in str(info.value)


def test_exclude_gets_past_the_graph_failure_and_says_what_is_left():
    # Excluding the bare-parameter mixer gets the dependency graph built; everything else is
    # coupled to it (or is the output layer), so nothing can be pruned: said, not silently no-op.
    with pytest.raises(TorchslimError, match=r"removed no channels.*head"):
        apply_pass(
            _Unprunable().eval(),
            PruneConfig(ratio=0.5, protect_first_last=False, exclude=("head",)),
            _ctx(),
        )


def test_exclude_leaves_module_alone():
    res = apply_pass(
        small_resnet(), PruneConfig(ratio=0.5, exclude=("c1",), protect_first_last=False), _ctx()
    )
    convs = _convs(res.module)
    assert convs["c1"].out_channels == 16  # excluded, and so its residual group
    assert convs["c2"].out_channels == 16  # the other group is still pruned (32 -> 16)


def test_excluding_every_group_is_an_error_naming_the_exclusions():
    with pytest.raises(TorchslimError, match=r"removed no channels.*c2"):
        apply_pass(
            small_resnet(),
            PruneConfig(ratio=0.5, exclude=("c2",), protect_first_last=False),
            _ctx(),
        )


def test_config_round_trip():
    cfg = PruneConfig(
        ratio=0.3,
        target="flops",
        exclude=("a.*",),  # type: ignore[arg-type]
        recover=DistillConfig(method="finetune", epochs=2),
    )  # type: ignore[arg-type]
    assert config_from_dict(config_to_dict(cfg)) == cfg


def test_save_and_reload_pruned(tmp_path):
    from torchslim.artifact import load_artifact
    from torchslim.models import load_model
    from torchslim.slim import prune

    res = prune(small_resnet(), PruneConfig(ratio=0.5), X, measure=False)
    pruned = res.model
    out = res.save(tmp_path / "out", source="slim_models:small_resnet")
    assert {"model.safetensors", "model.pt2", "rebuild.json"} <= {
        p.name for p in (out / "module").iterdir()
    }
    art = load_artifact(out, trust_code=True)  # slim_models:small_resnet is a factory
    again = art.module()
    torch.testing.assert_close(again(X), pruned(X))
    assert _convs(again)["c1"].out_channels == _convs(pruned)["c1"].out_channels
    exported = load_model(str(out / "module" / "model.pt2")).require_module()
    torch.testing.assert_close(exported(X[:3]), pruned(X[:3]))  # dynamic batch
    with pytest.raises(TorchslimError, match="not empty"):
        res.save(out)


def test_public_prune_api_report():
    from torchslim.slim import prune

    test = digits("test")
    res = prune(small_resnet(), PruneConfig(ratio=0.5), X, eval=test, measure=False)
    assert res.params < res.baseline_params and res.flops < res.baseline_flops
    assert res.size_mb < res.baseline_size_mb
    assert res.drop_points == pytest.approx(100 * (res.baseline_accuracy - res.accuracy))
    assert 0.0 <= res.evaluation.fidelity.agreement <= 1.0


def test_top_level_api_names():
    import torchslim

    assert torchslim.prune.__module__ == "torchslim.slim"
    assert torchslim.PruneConfig is PruneConfig
    res = torchslim.prune(small_resnet(), torchslim.PruneConfig(ratio=0.25), X, measure=False)
    assert res.reports[0]["method"] == "structured"


def test_a_ratio_that_prunes_nothing_is_an_error_not_a_silent_no_op():
    low = apply_pass(small_resnet(), PruneConfig(ratio=0.7), _ctx())
    assert _params(low.module) < _params(small_resnet())
    # 90% of SmallResNet's 32-channel groups would round below 8 channels: nothing pruned
    with pytest.raises(TorchslimError, match="removed no channels") as info:
        apply_pass(small_resnet(), PruneConfig(ratio=0.9), _ctx())
    assert "round-to 1" in str(info.value)
