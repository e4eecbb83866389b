"""Quantization pass: config round trip, registry-generated contract tests on the reference CNN,
accuracy-aware fallback and refusals."""

from __future__ import annotations

import copy
import importlib.util

import pytest
import torch
from torch import nn

from support_models import requires_reference
from torchslim.config import config_from_dict, config_to_dict
from torchslim.data import DataSet
from torchslim.errors import AccuracyBudgetError, BackendUnavailableError, DataError, TorchslimError
from torchslim.lowering import OnnxModel, OpenVINOModel, reference_runner
from torchslim.passes import PassContext, apply_pass, list_passes
from torchslim.passes.quantize import (
    QuantBackend,
    QuantizeConfig,
    QuantMethod,
    list_quant_methods,
    quantize_once,
)
from torchslim.runtimes.configs import OpenVINOConfig, OrtConfig

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def fashion():
    from torchslim.data import load_data
    from torchslim.models import load_model

    model = load_model("torchslim:fashion_cnn").module
    calib = load_data("torchslim:fashion_mnist?split=train").take(256, seed=1)
    ev = load_data("torchslim:fashion_mnist").take(600, seed=2)
    return model, calib, ev


# ---- config ------------------------------------------------------------------------------------


def test_config_round_trip_and_aliases():
    cfg = QuantizeConfig(
        method="weight-only",
        backend="ort",
        calibration="kl",
        weight_bits=4,
        ignored_layers=["fc1"],
        max_drop=0.5,
    )
    assert cfg.method is QuantMethod.WEIGHT_ONLY
    assert cfg.backend is QuantBackend.ONNXRUNTIME
    assert cfg.ignored_layers == ("fc1",)
    assert config_from_dict(config_to_dict(cfg)) == cfg


@pytest.mark.parametrize(
    "kwargs",
    [
        {"method": "int3"},
        {"backend": "tensorrt-llm"},
        {"weight_bits": 4, "method": "static"},
        {"weight_bits": 6},
        {"max_drop": -1.0},
        {"percentile": 20.0},
    ],
)
def test_config_rejects_bad_values(kwargs):
    with pytest.raises(TorchslimError):
        QuantizeConfig(**kwargs)


def test_registered_once_and_listed():
    names = {e.name for e in list_passes()}
    assert "quantize" in names
    combos = {e.name for e in list_quant_methods()}
    for m in QuantMethod:
        assert any(c.startswith(m.value + "/") for c in combos), m
    for b in QuantBackend:
        assert any(c.endswith("/" + b.value) for c in combos), b


def test_unsupported_combination_names_alternatives():
    cfg = QuantizeConfig(method="dynamic", backend="openvino")
    with pytest.raises(TorchslimError, match=r"runs on: onnxruntime, torch"):
        quantize_once(nn.Linear(4, 2), cfg, PassContext())


# ---- refusals ----------------------------------------------------------------------------------


def test_static_without_calibration_suggests_dynamic():
    with pytest.raises(TorchslimError) as err:
        apply_pass(nn.Sequential(nn.Linear(4, 2)), QuantizeConfig(method="static"), PassContext())
    text = str(err.value)
    assert "calibration" in text and "dynamic" in text and "synthetic" in text


def test_nan_calibration_data_is_refused():
    x = torch.rand(8, 4)
    x[3, 1] = float("nan")
    ctx = PassContext(calib=DataSet("bad", (x,)))
    with pytest.raises(DataError, match="NaN"):
        apply_pass(
            nn.Sequential(nn.Linear(4, 2)),
            QuantizeConfig(method="static", backend="onnxruntime"),
            ctx,
        )


def test_missing_backend_names_the_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "nncf" else real(name, *a)
    )
    ctx = PassContext(calib=DataSet("x", (torch.rand(8, 4),)))
    with pytest.raises(BackendUnavailableError) as err:
        quantize_once(
            nn.Sequential(nn.Linear(4, 2)), QuantizeConfig(method="static", backend="openvino"), ctx
        )
    assert "torchslim[openvino]" in str(err.value)


def test_user_model_is_not_modified():
    model = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2)).eval()
    before = copy.deepcopy(model.state_dict())
    apply_pass(model, QuantizeConfig(method="dynamic"), PassContext())
    assert all(type(m) in (nn.Sequential, nn.Linear, nn.ReLU) for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


# ---- contract: every registered method/backend on the reference CNN ------------------------------


def assert_representation(model: object, backend: QuantBackend) -> None:
    """A quantization pass returns a model representation for its backend, never a runtime."""
    expected = {
        QuantBackend.TORCH: nn.Module,
        QuantBackend.ONNXRUNTIME: OnnxModel,
        QuantBackend.OPENVINO: OpenVINOModel,
    }[backend]
    assert isinstance(model, expected), (backend, type(model))
    assert not hasattr(model, "save") and not hasattr(model, "build_seconds"), type(model)
    assert "torchslim.runtimes" not in type(model).__module__


# (max accuracy drop in points on 600 test images, min cosine to FP32 logits)
_THRESHOLDS = {
    "dynamic": (1.0, 0.999),
    "static": (1.5, 0.99),
    "weight_only": (1.0, 0.995),
    "fp16": (0.5, 0.9999),
    "bf16": (0.5, 0.999),
    "qat": (2.0, 0.98),
}


def _config(name: str) -> QuantizeConfig:
    method, backend = name.split("/")
    return QuantizeConfig(
        method=method, backend=backend, num_calibration_samples=128, qat_steps=30, compile=False
    )


@requires_reference
@pytest.mark.parametrize("name", [e.name for e in list_quant_methods()])
def test_contract_every_method(name, fashion):
    from torchslim.evaluate import Evaluator

    entry = next(e for e in list_quant_methods() if e.name == name)
    if not entry.available():
        pytest.skip(f"{name} needs {entry.requires}")
    model, calib, ev = fashion
    cfg = _config(name)
    ctx = PassContext(calib=calib, train=calib, eval=ev)
    result = apply_pass(model, cfg, ctx)
    assert_representation(result.module, cfg.backend)
    run = reference_runner(result.module)
    evaluator = Evaluator(ev)
    base = evaluator.set_baseline(model)
    out = evaluator.evaluate(run)
    max_drop, min_cos = _THRESHOLDS[cfg.method.value]
    assert base.value is not None and out.value is not None and out.fidelity is not None
    assert (base.value - out.value) * 100 <= max_drop, (name, base.value, out.value)
    assert out.fidelity.cosine >= min_cos, (name, out.fidelity)
    assert result.report["quantized_layers"], name
    assert set(result.report["quantized_layers"]).isdisjoint(result.report["float_layers"])


# ---- accuracy-aware mode -----------------------------------------------------------------------


class _Outlier(nn.Module):
    """fc_b's input has one channel 10^4 times larger than the others: per-tensor activation
    quantization of fc_b's input destroys the small channels, so fc_b must stay float."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc_a = nn.Linear(32, 32)
        self.fc_b = nn.Linear(32, 10)
        scale = torch.ones(32)
        scale[0] = 1e4
        self.register_buffer("scale", scale)
        with torch.no_grad():
            self.fc_b.weight[:, 0] = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_b(self.fc_a(x) * self.scale)


def _outlier_data(model: nn.Module, n: int = 400) -> DataSet:
    x = torch.randn(n, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(1)
    return DataSet("outlier", (x,), y, num_classes=10)


def test_accuracy_aware_keeps_sensitive_layer_in_float():
    model = _Outlier().eval()
    data = _outlier_data(model)
    full = quantize_once(copy.deepcopy(model), QuantizeConfig(method="dynamic"), PassContext())
    with torch.no_grad():
        acc_full = float((full.module(data.inputs[0]).argmax(1) == data.labels).float().mean())
    assert acc_full < 0.9  # the plain quantization really is over budget

    # random-weight logits have tiny margins: fc_b in float leaves ~2 points, all-int8 ~88
    cfg = QuantizeConfig(method="dynamic", max_drop=5.0)
    result = apply_pass(model, cfg, PassContext(eval=data))
    info = result.report["accuracy_aware"]
    assert info["met"] is True
    assert list(info["kept_float"]) == ["fc_b"]
    assert info["sensitivity"][0]["layer"] == "fc_b"
    assert type(result.module.fc_b) is nn.Linear  # really float
    assert type(result.module.fc_a) is not nn.Linear  # still quantized
    assert "accuracy-aware" in result.report["float_layers"]["fc_b"]
    assert "fc_b" not in result.report["quantized_layers"]


def test_accuracy_aware_raises_with_best_result_when_budget_unreachable():
    model = _Outlier().eval()
    data = _outlier_data(model)
    cfg = QuantizeConfig(method="dynamic", max_drop=0.5, max_float_layers=0)
    with pytest.raises(AccuracyBudgetError) as err:
        apply_pass(model, cfg, PassContext(eval=data))
    assert "best drop" in str(err.value)
    best = err.value.best
    assert isinstance(best, dict) and best["drop"] > 0.5
    assert best["report"]["all_quantized"]["drop"] > 0.5


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="no onnxruntime")
def test_ignored_layer_stays_float_in_onnx_graph():
    import onnx

    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).eval()
    calib = DataSet("c", (torch.randn(32, 16),))
    cfg = QuantizeConfig(method="static", backend="onnxruntime", ignored_layers=("2",))
    res = apply_pass(model, cfg, PassContext(calib=calib))
    assert res.report["quantized_layers"] == ["0"]
    assert res.report["float_layers"] == {"2": "ignored by request"}
    assert isinstance(res.module, OnnxModel)
    graph = onnx.load(str(res.module.path)).graph
    produced_by_dq = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    inits = {i.name for i in graph.initializer}
    gemms = [n for n in graph.node if n.op_type in ("Gemm", "MatMul")]
    float_w = [n for n in gemms if n.input[1] in inits and n.input[1] not in produced_by_dq]
    int8_w = [n for n in gemms if n.input[1] in produced_by_dq]
    assert len(float_w) == 1 and len(int8_w) == 1


def test_unshare_modules_lets_pt2e_quantize_resnet_style_blocks():
    from torchslim.passes.quant_torch import unshare_modules

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1 = nn.Conv2d(4, 4, 3, padding=1)
            self.c2 = nn.Conv2d(4, 4, 3, padding=1)
            self.relu = nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.relu(self.c2(self.relu(self.c1(x))) + x)

    model = Block().eval()
    x = torch.randn(2, 4, 8, 8)
    ref = model(x)
    work = copy.deepcopy(model)
    assert unshare_modules(work, (x,)) == ["relu"]
    assert torch.equal(work(x), ref)
    calib = DataSet("c", (torch.randn(16, 4, 8, 8),))
    res = apply_pass(
        model, QuantizeConfig(method="static", compile=False), PassContext(calib=calib)
    )
    assert res.report["unshared_modules"] == ["relu"]
    cos = torch.nn.functional.cosine_similarity(res.module(x).flatten(), ref.flatten(), dim=0)
    assert cos > 0.99


# ---- explicit lowering: passes return representations, runtimes build from them ---------------

_HAS_ORT = importlib.util.find_spec("onnxruntime") is not None
_HAS_OV = (
    importlib.util.find_spec("openvino") is not None
    and importlib.util.find_spec("nncf") is not None
)


def _small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10)
    ).eval()


@pytest.mark.parametrize(
    ("backend", "method", "precision"),
    [
        pytest.param(
            "onnxruntime",
            "static",
            None,
            marks=pytest.mark.skipif(not _HAS_ORT, reason="no onnxruntime"),
        ),
        pytest.param(
            "onnxruntime",
            "dynamic",
            None,
            marks=pytest.mark.skipif(not _HAS_ORT, reason="no onnxruntime"),
        ),
        pytest.param(
            "openvino",
            "static",
            "default",
            marks=pytest.mark.skipif(not _HAS_OV, reason="no openvino/nncf"),
        ),
        pytest.param(
            "openvino",
            "weight_only",
            "f32",
            marks=pytest.mark.skipif(not _HAS_OV, reason="no openvino/nncf"),
        ),
        pytest.param(
            "openvino",
            "bf16",
            "bf16",
            marks=pytest.mark.skipif(not _HAS_OV, reason="no openvino/nncf"),
        ),
    ],
)
def test_lowering_pass_returns_a_representation_its_runtime_builds_exactly(
    backend, method, precision
):
    from torchslim.runtimes import build, default_config

    model = _small_cnn()
    calib = DataSet("c", (torch.randn(32, 1, 8, 8, generator=torch.Generator().manual_seed(3)),))
    cfg = QuantizeConfig(method=method, backend=backend)
    result = apply_pass(model, cfg, PassContext(calib=calib))
    rep = result.module
    assert_representation(rep, cfg.backend)
    assert rep.runtime == backend
    runtime_config = default_config(rep)
    if precision is not None:  # NNCF INT8 keeps OpenVINO's default precision for the float rest
        assert getattr(runtime_config.precision, "value", None) == precision
    x = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    deployed = build(rep, runtime_config, (x[:2],))
    assert deployed.runtime == backend
    ref = rep.run(x)
    assert torch.equal(deployed(x), ref)  # the runtime computes what the pass evaluated
    with torch.no_grad():
        cos = torch.nn.functional.cosine_similarity(ref.flatten(), model(x).flatten(), dim=0)
    assert cos > 0.99


@pytest.mark.skipif(not (_HAS_ORT and _HAS_OV), reason="needs onnxruntime and openvino/nncf")
def test_representation_given_to_the_wrong_runtime_is_a_clear_error():
    from torchslim.runtimes import build
    from torchslim.runtimes.configs import EagerConfig

    model = _small_cnn()
    calib = DataSet("c", (torch.randn(16, 1, 8, 8),))
    x = torch.randn(2, 1, 8, 8)
    onnx_model = apply_pass(
        model, QuantizeConfig(method="dynamic", backend="onnxruntime"), PassContext(calib=calib)
    ).module
    ov_model = apply_pass(
        model, QuantizeConfig(method="static", backend="openvino"), PassContext(calib=calib)
    ).module
    for rep, config, have, want in [
        (onnx_model, OpenVINOConfig(), "onnxruntime", "openvino"),
        (ov_model, OrtConfig(), "openvino", "onnxruntime"),
        (onnx_model, EagerConfig(), "onnxruntime", "eager"),
    ]:
        with pytest.raises(TorchslimError) as err:
            build(rep, config, (x,))
        text = str(err.value)
        assert have in text and want in text and type(rep).__name__ in text, text


@pytest.mark.skipif(not _HAS_ORT, reason="no onnxruntime")
def test_accuracy_aware_onnxruntime_evaluates_the_graph_and_keeps_layer_in_float():
    import onnx

    model = _Outlier().eval()
    data = _outlier_data(model)
    full = quantize_once(
        copy.deepcopy(model),
        QuantizeConfig(method="dynamic", backend="onnxruntime"),
        PassContext(eval=data),
    )
    acc_full = float((full.module.run(data.inputs[0]).argmax(1) == data.labels).float().mean())
    assert acc_full < 0.9  # the plain quantization really is over budget

    cfg = QuantizeConfig(method="dynamic", backend="onnxruntime", max_drop=5.0)
    result = apply_pass(model, cfg, PassContext(eval=data))
    info = result.report["accuracy_aware"]
    assert info["met"] is True
    assert list(info["kept_float"]) == ["fc_b"]
    assert "fc_b" not in result.report["quantized_layers"]
    assert isinstance(result.module, OnnxModel)
    acc = float((result.module.run(data.inputs[0]).argmax(1) == data.labels).float().mean())
    assert (1.0 - acc) * 100 <= 5.0
    graph = onnx.load(str(result.module.path)).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("MatMulInteger") == 1  # fc_a in INT8
    assert "Gemm" in ops or "MatMul" in ops  # fc_b in float


# ---- through the pipeline: the recipe's runtime builds from what the pass produced -------------


def _run(steps, runtime=None, **kw):
    from torchslim.pipeline import RunData, run_recipe
    from torchslim.recipe import Recipe

    calib = DataSet("c", (torch.randn(64, 1, 8, 8, generator=torch.Generator().manual_seed(5)),))
    return run_recipe(
        Recipe(tuple(steps), runtime),
        _small_cnn(),
        data=RunData(calib=calib),
        measure=False,
        raise_errors=True,
        **kw,
    )


@pytest.mark.skipif(importlib.util.find_spec("torchao") is None, reason="no torchao")
@pytest.mark.parametrize(("compile_", "runtime"), [(True, "inductor"), (False, "eager")])
def test_pipeline_runs_torch_int8_on_inductor_unless_compile_is_off(compile_, runtime):
    cand = _run([QuantizeConfig(method="static", compile=compile_)])
    assert cand.runtime == runtime
    assert cand.built is not None and isinstance(cand.built.module, nn.Module)
    assert cand.evaluation is not None and cand.evaluation.fidelity.cosine > 0.99
    if compile_:
        from torchslim.runtimes.inductor import Int8Inductor

        assert isinstance(cand.built.deployed, Int8Inductor)
    else:
        assert cand.built.deployed is None


@pytest.mark.parametrize(
    ("backend", "runtime", "expect"),
    [
        pytest.param(
            "onnxruntime",
            None,
            {"intra_op_threads": None},
            marks=pytest.mark.skipif(not _HAS_ORT, reason="no onnxruntime"),
        ),
        pytest.param(
            "onnxruntime",
            OrtConfig(intra_op_threads=1),
            {"intra_op_threads": 1},
            marks=pytest.mark.skipif(not _HAS_ORT, reason="no onnxruntime"),
        ),
        pytest.param(
            "openvino",
            None,
            {"precision": "default"},
            marks=pytest.mark.skipif(not _HAS_OV, reason="no openvino/nncf"),
        ),
        pytest.param(
            "openvino",
            OpenVINOConfig(threads=1),
            {"precision": "f32", "threads": 1},
            marks=pytest.mark.skipif(not _HAS_OV, reason="no openvino/nncf"),
        ),
    ],
)
def test_pipeline_builds_the_runtime_from_the_lowered_model(backend, runtime, expect):
    cand = _run([QuantizeConfig(method="static", backend=backend)], runtime)
    assert cand.runtime == backend
    assert cand.built is not None and cand.built.module is None
    cfg = cand.built.deployed.config
    for key, value in expect.items():
        assert getattr(getattr(cfg, key), "value", getattr(cfg, key)) == value, (key, cfg)
    assert cand.evaluation is not None and cand.evaluation.fidelity.cosine > 0.99
    assert (cand.built.files / "runtime" / "runtime.json").is_file()


@pytest.mark.skipif(not _HAS_ORT, reason="no onnxruntime")
def test_pipeline_continues_from_an_onnx_artifact_with_new_runtime_settings(tmp_path):
    from torchslim.artifact import load_artifact, save_artifact

    first = _run([QuantizeConfig(method="static", backend="onnxruntime")])
    art = load_artifact(save_artifact(first, tmp_path / "art"))
    recipe_steps = list(art.recipe.steps)
    again = _run(recipe_steps, OrtConfig(intra_op_threads=1), start=art)
    assert again.runtime == "onnxruntime"
    assert again.built is not None and again.built.deployed.config.intra_op_threads == 1
    x = torch.randn(3, 1, 8, 8)
    assert torch.equal(again.built(x), art(x))  # the artifact's graph, new session settings
