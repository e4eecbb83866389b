"""Tests for torchslim.doctor: model checklist, environment checklist, score."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from torchslim import doctor
from torchslim.data import DataSet
from torchslim.doctor import Finding, check_environment, diagnose, inspect_model, score
from torchslim.models import InputSpec, LoadedModel, TensorSpec, load_model, parse_input_spec

torch.set_num_threads(2)


def _ids(findings: tuple[Finding, ...] | list[Finding]) -> dict[str, Finding]:
    return {f.id: f for f in findings}


class ConvBnRelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(8)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 4)
        self.drop = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn(self.conv(x)))
        x = self.bn2(self.conv2(x)) + x
        return self.fc(self.drop(self.pool(x).flatten(1)))


class Branchy(ConvBnRelu):
    """Data-dependent control flow: fx cannot trace it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn(self.conv(x)))
        if y.sum() > 0:
            y = y * 2
        return self.fc(self.pool(y).flatten(1))


class LinearHeavy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, 256)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)).sin())


class Twice(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):  # type: ignore[no-untyped-def, override]
        return x * 2

    @staticmethod
    def backward(ctx, g):  # type: ignore[no-untyped-def, override]
        return g * 2


class Risky(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x.mul_(0.5)
        return Twice.apply(self.fc(x))


IMG = parse_input_spec("1x3x16x16")
VEC64 = parse_input_spec("1x64")


def test_conv_bn_relu_patterns_found_by_fx() -> None:
    res = inspect_model(ConvBnRelu().eval(), IMG)
    s = res.summary
    assert s["pattern_method"] == "fx" and s["fx_traceable"]
    pats = {p["pattern"]: p["modules"] for p in s["fusable_patterns"]}
    assert pats["Conv-BN-ReLU"] == ["conv", "bn", "relu"]
    assert pats["Conv-BN"] == ["conv2", "bn2"]
    assert len(s["fusable_patterns"]) == 2
    assert "fusable-patterns" in _ids(res.findings)
    assert "FuseConfig" in _ids(res.findings)["fusable-patterns"].recommendation


def test_summary_numbers() -> None:
    model = ConvBnRelu().eval()
    s = inspect_model(model, IMG).summary
    n = sum(p.numel() for p in model.parameters())
    assert s["params_total"] == s["params_trainable"] == n
    assert s["size_fp32_bytes"] >= 4 * n
    conv = s["layers"]["Conv2d"]
    assert conv["count"] == 2
    assert conv["params"] == 3 * 8 * 9 + 8 + 8 * 8 * 9 + 8
    # FLOPs from FlopCounterMode: 2 * MACs per conv at 16x16 output.
    assert conv["flops"] == 2 * 16 * 16 * (8 * 3 * 9 + 8 * 8 * 9)
    assert s["layers"]["Linear"]["flops"] == 2 * 8 * 4
    assert s["flops"] == conv["flops"] + 2 * 8 * 4


def test_train_mode_finding_and_flags_restored() -> None:
    model = ConvBnRelu().train()
    stats = model.bn.running_mean.clone()
    res = inspect_model(model, IMG)
    f = _ids(res.findings)["train-mode"]
    assert f.severity == "fail"
    assert "model.eval()" in f.recommendation
    assert set(res.summary["training_modules"]) == {"bn", "bn2", "drop"}
    # The probe ran in eval mode and restored every flag: no running-stat update, still training.
    assert model.training and model.bn.training and model.drop.training
    assert torch.equal(model.bn.running_mean, stats)
    assert "train-mode" not in _ids(inspect_model(model.eval(), IMG).findings)
    assert "train-mode" not in _ids(
        inspect_model(model.train(), IMG, check_training=False).findings
    )


def test_linear_heavy_quantizable_share() -> None:
    res = inspect_model(LinearHeavy(), VEC64)
    q = res.summary["quantizable"]
    assert q["params_share"] == pytest.approx(1.0)
    assert q["flops_share"] == pytest.approx(1.0)
    f = _ids(res.findings)["quantizable"]
    assert "100% of FLOPs" in f.title
    assert "dynamic INT8" in f.recommendation
    pats = [p["pattern"] for p in res.summary["fusable_patterns"]]
    assert pats == ["Linear-ReLU"]
    assert "channels-last" not in _ids(res.findings)


def test_data_dependent_control_flow_export_risk() -> None:
    res = inspect_model(Branchy().eval(), IMG)
    s = res.summary
    assert not s["fx_traceable"] and s["pattern_method"] == "module_order"
    f = _ids(res.findings)["fx-trace-failed"]
    assert f.severity == "warn"
    assert "control flow" in f.detail
    assert "torch.cond" in f.recommendation
    # Fallback by module order still finds the patterns.
    assert [p["pattern"] for p in s["fusable_patterns"]] == ["Conv-BN-ReLU", "Conv-BN"]
    assert s["flops"] is not None and s["flops"] > 0


def test_inplace_input_and_custom_function() -> None:
    res = inspect_model(Risky(), parse_input_spec("1x16"))
    ids = _ids(res.findings)
    assert ids["inplace-input"].severity == "warn"
    assert "input 0" in ids["inplace-input"].detail
    assert "Twice" in ids["custom-autograd"].detail


def test_lstm_and_reused_module() -> None:
    class Rnn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(100, 16)
            self.lstm = nn.LSTM(16, 32, batch_first=True)
            self.act = nn.ReLU()
            self.fc = nn.Linear(32, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out, _ = self.lstm(self.act(self.emb(x)))
            return self.fc(self.act(out[:, -1]))

    spec = InputSpec((TensorSpec("ids", (1, 8), "int64", (0, 1), 0.0, 100.0),))
    res = inspect_model(Rnn(), spec)
    ids = _ids(res.findings)
    assert "recurrent-layers" in ids
    assert "LSTM not counted" in res.summary["flops_note"]
    assert res.summary["reused_modules"] == {"act": 2}
    assert "reused-modules" in ids


def test_no_spec_and_failing_forward() -> None:
    res = inspect_model(LinearHeavy(), None)
    assert res.summary["flops"] is None
    assert _ids(res.findings)["no-input-spec"].severity == "warn"
    res = inspect_model(LinearHeavy(), parse_input_spec("1x63"))
    f = _ids(res.findings)["forward-fails"]
    assert f.severity == "fail" and "RuntimeError" in f.detail


CPUINFO_SPR = """processor\t: 0
vendor_id\t: GenuineIntel
flags\t\t: fpu sse2 avx avx2 fma f16c avx512f avx512_vnni avx512_bf16 amx_tile amx_int8 amx_bf16
"""
CPUINFO_OLD = "processor\t: 0\nflags\t\t: fpu sse sse2 sse4_2 avx\n"
CPUINFO_HSW = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n"
CPUINFO_ARM = "processor\t: 0\nFeatures\t: fp asimd asimddp bf16 i8mm\nCPU implementer\t: 0x41\n"


def test_parse_cpu_flags() -> None:
    assert {"avx2", "amx_int8", "avx512_bf16"} <= doctor.parse_cpu_flags(CPUINFO_SPR)
    assert doctor.parse_cpu_flags("no flags here") == frozenset()
    assert "asimddp" in doctor.parse_cpu_flags(CPUINFO_ARM)


def test_environment_isa_from_cpuinfo_text() -> None:
    spr = check_environment(cpuinfo=CPUINFO_SPR, environ={})
    assert spr.summary["isa"]["amx"] and spr.summary["isa"]["vnni"] and spr.summary["isa"]["bf16"]
    ids = _ids(spr.findings)
    assert ids["int8-native"].severity == "info" and ids["bf16-native"].severity == "info"
    assert ids["omp-num-threads"].severity == "info"

    hsw = _ids(check_environment(cpuinfo=CPUINFO_HSW, environ={}).findings)
    assert hsw["int8-native"].severity == "warn"
    assert hsw["cpu-isa"].severity == "info"
    assert "No native BF16" in hsw["bf16-native"].title

    old = _ids(check_environment(cpuinfo=CPUINFO_OLD, environ={}).findings)
    assert old["cpu-isa"].severity == "warn" and "AVX2" in old["cpu-isa"].title

    arm = check_environment(cpuinfo=CPUINFO_ARM, environ={})
    assert arm.summary["isa"]["int8_dot"] and arm.summary["isa"]["bf16"]
    assert _ids(arm.findings)["int8-native"].severity == "info"

    unknown = _ids(check_environment(cpuinfo="", environ={}).findings)
    assert "unknown" in unknown["cpu-isa"].title


def test_environment_summary_keys_and_env_vars() -> None:
    res = check_environment(environ={"OMP_NUM_THREADS": "4", "MKL_NUM_THREADS": "2"})
    s = res.summary
    assert s["threads"] == torch.get_num_threads()
    assert s["omp_num_threads"] == "4"
    assert set(s["backends"]) == {"onnxruntime", "openvino", "nncf", "tensorrt"}
    assert isinstance(s["mkldnn"], bool) and "available" in s["cuda"]
    assert _ids(res.findings)["omp-num-threads"].severity == "warn"
    json.dumps(res.to_dict())


def test_thread_findings() -> None:
    over = doctor.environment._thread_findings(8, 8, 4, 8, {"OMP_NUM_THREADS": "8"})
    assert over[0].severity == "warn" and "set_num_threads(4)" in over[0].recommendation
    assert len(over) == 1
    under = doctor.environment._thread_findings(1, 8, 4, 8, {})
    assert under[0].severity == "info" and "set_num_threads(4)" in under[0].recommendation
    # A container limit (affinity) below the physical cores counts.
    assert doctor.environment._thread_findings(4, 16, 8, 2, {})[0].severity == "warn"


def test_dataloader_advice_and_synthetic() -> None:
    ds = DataSet("synthetic:1x3x8x8", (torch.rand(10, 3, 8, 8),), None, synthetic=True)
    res = check_environment(ds, environ={})
    d = res.summary["data"]
    assert d["sample_bytes"] == 3 * 8 * 8 * 4 and d["samples"] == 10 and d["synthetic"]
    assert d["suggested_loader"]["pin_memory"] == torch.cuda.is_available()
    ids = _ids(res.findings)
    assert ids["synthetic-data"].severity == "warn"
    assert "num_workers" in ids["dataloader"].recommendation
    real = DataSet("x", (torch.rand(4, 2),), torch.tensor([0, 1, 0, 1]))
    assert "synthetic-data" not in _ids(check_environment(real, environ={}).findings)


def test_score_arithmetic_and_grade() -> None:
    info = Finding("a", "info", "t")
    warn = Finding("b", "warn", "t")
    fail = Finding("c", "fail", "t")
    assert score([]) == 100
    assert score([info, info]) == 100
    assert score([warn, fail, info]) == 100 - 8 - 25
    assert score([fail] * 5) == 0
    assert [doctor.grade(v) for v in (100, 90, 89, 75, 60, 40, 39)] == list("AABBCDF")


def test_diagnose_uses_training_at_load_and_serialises() -> None:
    model = ConvBnRelu().eval()
    loaded = LoadedModel(
        "test:convbn", "factory", model, IMG, metadata={"training_at_load": ["bn", "drop"]}
    )
    report = diagnose(loaded)
    f = _ids(report.findings)["train-mode"]
    assert "when loaded" in f.detail and "bn, drop" in f.detail
    d = report.to_dict()
    assert d["model"]["training_mode_at_load"] == ["bn", "drop"]
    assert d["score"] == score([*report.findings, *report.environment])
    assert d["grade"] == report.grade
    assert set(d) >= {"model", "findings", "environment", "environment_findings", "score", "grade"}
    json.loads(json.dumps(d))

    plain = diagnose(LoadedModel("t", "factory", model, IMG))
    assert plain.model_summary["training_mode_at_load"] is None
    assert "train-mode" not in _ids(plain.findings)


def test_diagnose_data_shape_mismatch() -> None:
    loaded = LoadedModel("t", "factory", LinearHeavy(), VEC64)
    bad = DataSet("x", (torch.rand(4, 32),), torch.tensor([0, 1, 0, 1]))
    assert _ids(diagnose(loaded, bad).findings)["data-shape"].severity == "fail"
    good = DataSet("x", (torch.rand(4, 64),), torch.tensor([0, 1, 0, 1]))
    assert "data-shape" not in _ids(diagnose(loaded, good).findings)


def test_diagnose_onnx_source(tmp_path: Path) -> None:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((4, 3), dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        [w],
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    report = diagnose(load_model(str(path)))
    assert report.model_summary["params_total"] == 12
    assert report.model_summary["file_bytes"] == path.stat().st_size
    assert "onnx-source" in _ids(report.findings)


def test_torchvision_resnet18_patterns() -> None:
    report = diagnose(load_model("torchvision:resnet18"))
    s = report.model_summary
    counts: dict[str, int] = {}
    for p in s["fusable_patterns"]:
        counts[p["pattern"]] = counts.get(p["pattern"], 0) + 1
    assert counts == {"Conv-BN-ReLU": 9, "Conv-BN": 11}
    assert s["params_total"] == 11_689_512
    assert s["flops"] == pytest.approx(3.63e9, rel=0.01)
    assert "channels-last" in _ids(report.findings)


def test_channels_last_advice_goes_away_when_applied() -> None:
    model = ConvBnRelu().eval()
    assert "channels-last" in _ids(inspect_model(model, IMG).findings)
    model = model.to(memory_format=torch.channels_last)
    assert "channels-last" not in _ids(inspect_model(model, IMG).findings)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_environment_cuda_settings() -> None:
    res = check_environment(environ={})
    cuda = res.summary["cuda"]
    assert cuda["available"] and cuda["capability"]
    assert set(cuda) >= {"cudnn_benchmark", "tf32_matmul", "tf32_cudnn", "device"}
    ids = _ids(res.findings)
    assert "gpu" in ids and "compute capability" in ids["gpu"].title
    torch.backends.cudnn.benchmark = False
    assert "cudnn-benchmark" in _ids(check_environment(environ={}).findings)
