"""Accuracy-aware quantization under a time budget: one calibration per search, a sensitivity
ranking without an evaluation per layer, O(log n) evaluations, and "budget not met" (with the
best result) when the time runs out; ``--time-budget`` on the CLI."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from dataclasses import dataclass

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import torchslim.evaluate as evaluate_mod
from torchslim.cli.main import app
from torchslim.config import config_from_dict, config_to_dict
from torchslim.data import DataSet
from torchslim.errors import AccuracyBudgetError, TorchslimError
from torchslim.evaluate import EvalResult
from torchslim.passes import PassContext, PassResult, apply_pass
from torchslim.passes import quant_accuracy as qa
from torchslim.passes.quantize import QuantizeConfig

torch.set_num_threads(2)

_HAS_ORT = importlib.util.find_spec("onnxruntime") is not None
_HAS_NNCF = importlib.util.find_spec("nncf") is not None

DEPTH, OUTLIER = 16, 9


class DeepOutlier(nn.Module):
    """16 Linear layers (orthogonal weights: every layer quantizes well) where layer 8 makes
    output channel 0 10^4 times larger than the rest and layer 9 ignores that channel: per-tensor
    INT8 of layer 9's input wipes out the channels it reads, so ``layers.9`` must stay float."""

    def __init__(self, depth: int = DEPTH, outlier: int = OUTLIER, width: int = 32) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layers = nn.ModuleList(
            nn.Linear(width, width if i < depth - 1 else 10) for i in range(depth)
        )
        with torch.no_grad():
            for layer in self.layers:
                nn.init.orthogonal_(layer.weight)
                layer.bias.zero_()
            self.layers[outlier - 1].weight[0] *= 1e4
            self.layers[outlier].weight[:, 0] = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


def deep_outlier() -> nn.Module:
    """Model source for the CLI test (``test_quantize_budget:deep_outlier``)."""
    return DeepOutlier().eval()


def deep_outlier_data(n: int = 400) -> DataSet:
    model = deep_outlier()
    x = torch.randn(n, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(1)
    return DataSet("deep_outlier", (x,), y, num_classes=10)


def deep_outlier_pairs() -> list[tuple[torch.Tensor, int]]:
    """Data source for the CLI test (``test_quantize_budget:deep_outlier_pairs``)."""
    data = deep_outlier_data(200)
    assert data.labels is not None
    return [(data.inputs[0][i], int(data.labels[i])) for i in range(len(data))]


@pytest.fixture(scope="module")
def deep():
    return deep_outlier(), deep_outlier_data()


@pytest.fixture
def evaluations(monkeypatch):
    """Counts every ``Evaluator.evaluate`` call (one per candidate evaluated)."""
    calls = {"n": 0}
    original = evaluate_mod.Evaluator.evaluate

    def counting(self, fn):
        calls["n"] += 1
        return original(self, fn)

    monkeypatch.setattr(evaluate_mod.Evaluator, "evaluate", counting)
    return calls


def _counting(monkeypatch, owner, name: str) -> dict[str, int]:
    calls = {"n": 0}
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)
    return calls


def _budgeted(model, data, **kw):
    cfg = QuantizeConfig(max_drop=5.0, num_calibration_samples=128, **kw)
    return apply_pass(model, cfg, PassContext(eval=data, calib=data))


# ---- (a) one calibration per accuracy-aware quantization ---------------------------------------


def test_torch_static_calibrates_once_and_keeps_the_outlier_float(deep, monkeypatch, evaluations):
    from torchslim.passes import quant_torch

    calibrations = _counting(monkeypatch, quant_torch, "_run_batches")
    res = _budgeted(*deep, method="static", backend="torch")
    info = res.report["accuracy_aware"]
    assert calibrations["n"] == 1
    assert info["search"]["calibrations"] == 1
    assert info["met"] is True and list(info["kept_float"]) == ["layers.9"]
    assert info["all_quantized"]["drop"] > 5.0 >= info["final"]["drop"]
    assert info["search"]["evaluations"] == evaluations["n"]
    assert (
        "layers.9" in res.report["float_layers"]
        and "layers.9" not in res.report["quantized_layers"]
    )
    # the layer really is float: no quantize/dequantize op feeds its linear
    linear = [
        n
        for n in res.module.graph.nodes
        if n.op == "call_function"
        and "linear" in str(n.target)
        and n.meta.get("nn_module_stack")
        and list(n.meta["nn_module_stack"].values())[-1][0] == "layers.9"
    ]
    assert linear and not any("quantize" in str(a.target) for a in linear[0].all_input_nodes)


@pytest.mark.skipif(not _HAS_ORT, reason="no onnxruntime")
def test_onnxruntime_static_calibrates_once_and_keeps_the_outlier_float(deep, monkeypatch):
    import onnx
    import onnxruntime.quantization  # noqa: F401  (loads the module patched below)

    ort_quantize = sys.modules["onnxruntime.quantization.quantize"]
    calibrations = _counting(monkeypatch, ort_quantize, "create_calibrator")
    res = _budgeted(*deep, method="static", backend="onnxruntime")
    info = res.report["accuracy_aware"]
    assert calibrations["n"] == 1
    assert info["search"]["calibrations"] == 1
    assert info["met"] is True and list(info["kept_float"]) == ["layers.9"]
    # kept in float means a float input too: no DequantizeLinear feeds layers.9's Gemm
    graph = onnx.load(str(res.module.path)).graph
    produced = {o: n for n in graph.node for o in n.output}
    from torchslim.passes.quant_ort import layer_nodes

    node = next(n for n in graph.node if n.name == layer_nodes(res.module.path)["layers.9"][0])
    assert all(i not in produced or produced[i].op_type != "DequantizeLinear" for i in node.input)


@pytest.mark.skipif(not _HAS_NNCF, reason="openvino extra missing")
def test_openvino_static_calibrates_once_and_prints_nothing(deep, monkeypatch, capfd):
    import nncf

    calibrations = _counting(monkeypatch, nncf, "quantize")
    res = _budgeted(*deep, method="static", backend="openvino", calibration="minmax")
    info = res.report["accuracy_aware"]
    assert calibrations["n"] == 1
    assert info["search"]["calibrations"] == 1
    assert info["met"] is True and "layers.9" in info["kept_float"]
    assert info["final"]["drop"] <= 5.0
    assert info["sensitivity"][0]["layer"] == "layers.9"
    out, err = capfd.readouterr()
    for text in ("Statistics collection", "Applying Fast Bias correction", "━"):
        assert text not in out and text not in err  # no NNCF progress bars, from Python either


# ---- (b) sensitivity without an evaluation per layer; O(log n) evaluations ----------------------


def test_evaluations_grow_logarithmically_with_the_layers(deep, evaluations):
    res = _budgeted(*deep, method="static", backend="torch")
    info = res.report["accuracy_aware"]
    n = len(info["sensitivity"])
    assert n == DEPTH
    assert info["sensitivity"][0]["layer"] == "layers.9"  # ranked first without trying it
    assert info["search"]["ranking"].startswith("per-layer error")
    # all-quantized + exponential search + bisection; a one-layer-at-a-time scheme needs > n
    assert evaluations["n"] <= 1 + 2 * (math.ceil(math.log2(n)) + 1) < n
    assert evaluations["n"] == len(info["attempts"]) == info["search"]["evaluations"]


@dataclass
class _Marker:
    """What a fake build returns: which layers it keeps in float."""

    float_layers: frozenset[str]


class _FakeSession:
    """A session whose builds are free: the drop is 1 point per 'bad' layer left quantized."""

    def __init__(self, layers: list[str], bad: list[str]) -> None:
        self.layers, self.bad, self.calibrations, self.builds = layers, bad, 1, 0

    def build(self, float_layers=()):
        self.builds += 1
        kept = frozenset(float_layers)
        report = {
            "quantized_layers": [n for n in self.layers if n not in kept],
            "float_layers": {},
        }
        return PassResult(_Marker(kept), report)

    def layer_errors(self, data, layers, result=None):
        # bad layers stand out (in a shuffled order), the rest add little
        return {
            n: {
                "input_error": 0.0,
                "output_error": 0.5,
                "added_error": 0.5 + (hash(n) % 97) * 1e-4 if n in self.bad else 1e-4,
            }
            for n in layers
        }

    def close(self) -> None:
        pass


class _FakeEvaluator:
    def __init__(self, bad: list[str]) -> None:
        self.bad = set(bad)
        self.calls = 0
        self.data = DataSet("probe", (torch.zeros(4, 1),))
        self.baseline = self._result(1.0)

    @staticmethod
    def _result(value: float) -> EvalResult:
        return EvalResult("top1", value, None, 100, "fake", False)

    def evaluate(self, fn):
        self.calls += 1
        return self._result(1.0 - len(self.bad - fn.float_layers) / 100.0)


@pytest.mark.parametrize(("n", "needed"), [(16, 1), (64, 40), (256, 100)])
def test_bisection_needs_log_n_evaluations(monkeypatch, n, needed):
    layers = [f"l{i}" for i in range(n)]
    bad = layers[::-1][:needed]  # the last layers are the sensitive ones
    session = _FakeSession(layers, bad)
    monkeypatch.setattr("torchslim.passes.quantize.open_session", lambda *a: session)
    ev = _FakeEvaluator(bad)
    cfg = QuantizeConfig(max_drop=0.0)
    res = qa.quantize_within_budget(nn.Identity(), cfg, PassContext(), ev)
    info = res.report["accuracy_aware"]
    assert set(info["kept_float"]) == set(bad)  # the fewest layers that meet the budget
    assert ev.calls == session.builds == info["search"]["evaluations"]
    assert ev.calls <= 1 + 2 * (math.ceil(math.log2(n)) + 1)


def test_time_running_out_after_a_passing_count_returns_it(monkeypatch):
    n, needed = 64, 40
    layers = [f"l{i}" for i in range(n)]
    bad = layers[:needed]
    session = _FakeSession(layers, bad)
    monkeypatch.setattr("torchslim.passes.quantize.open_session", lambda *a: session)
    ev = _FakeEvaluator(bad)
    # the clock runs out right after the exponential search found a passing count (64)
    monkeypatch.setattr(qa._Clock, "out", lambda self: ev.calls >= 8)
    res = qa.quantize_within_budget(nn.Identity(), QuantizeConfig(max_drop=0.0), PassContext(), ev)
    info = res.report["accuracy_aware"]
    assert info["met"] is True and info["final"]["drop"] <= 0.0
    assert info["search"]["stopped"].startswith("time budget")
    assert ev.calls == 8


def test_without_layer_taps_it_falls_back_to_trying_each_layer(monkeypatch, evaluations):
    from test_quantize import _Outlier, _outlier_data  # tests/passes is on sys.path

    from torchslim.passes.quantize import QuantSession

    monkeypatch.setattr(QuantSession, "layer_errors", lambda self, *a, **k: None)
    model = _Outlier().eval()
    res = apply_pass(
        model,
        QuantizeConfig(method="dynamic", max_drop=5.0),
        PassContext(eval=_outlier_data(model)),
    )
    info = res.report["accuracy_aware"]
    assert info["met"] is True and list(info["kept_float"]) == ["fc_b"]
    assert info["search"]["ranking"].startswith("per-layer attempts")
    assert "recovered" in info["kept_float"]["fc_b"]
    assert evaluations["n"] == 1 + 2 + 1  # all quantized, each of the 2 layers, the answer


# ---- (c) the time budget ---------------------------------------------------------------------


def test_tiny_time_budget_raises_with_the_best_result(deep, evaluations):
    with pytest.raises(AccuracyBudgetError) as err:
        _budgeted(*deep, method="static", backend="torch", time_budget_s=0.001)
    text = str(err.value)
    assert "time budget" in text and "0.001 s" in text
    assert "best drop" in text and "0 layer(s) kept in float" in text
    best = err.value.best
    assert isinstance(best, dict) and best["drop"] > 5.0 and best["reason"] == "time budget"
    assert best["report"]["search"]["stopped"] == "time budget"
    assert best["report"]["search"]["calibrations"] == 1
    assert evaluations["n"] == 1  # stopped after the all-quantized attempt, nothing more
    assert err.value.exit_code == 3


def test_unreachable_budget_still_says_budget_not_met(deep):
    with pytest.raises(AccuracyBudgetError) as err:
        _budgeted(*deep, method="dynamic", backend="torch", max_float_layers=0)
    assert "time budget" not in str(err.value) and "best drop" in str(err.value)
    assert err.value.best["reason"] == "budget not met"


def test_time_budget_config_round_trips_and_old_configs_load():
    cfg = QuantizeConfig(max_drop=1.0, time_budget_s=90)
    assert cfg.time_budget_s == 90.0
    assert config_from_dict(config_to_dict(cfg)) == cfg
    assert QuantizeConfig().time_budget_s == 300.0
    old = config_to_dict(QuantizeConfig(max_drop=1.0))
    del old["fields"]["time_budget_s"]  # written before the field existed
    assert config_from_dict(old) == QuantizeConfig(max_drop=1.0)
    assert QuantizeConfig(time_budget_s=None).time_budget_s is None
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(TorchslimError, match="time_budget_s"):
            QuantizeConfig(time_budget_s=bad)


# ---- CLI -------------------------------------------------------------------------------------

runner = CliRunner()
_CLI = [
    "quantize",
    "test_quantize_budget:deep_outlier",
    "--input-shape",
    "1x32",
    "--eval",
    "test_quantize_budget:deep_outlier_pairs",
    "--no-latency",
]


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90.0), ("5m", 300.0), ("1h", 3600.0), ("none", None)]
)
def test_cli_time_budget_is_parsed_into_the_recipe(text, seconds):
    res = runner.invoke(app, [*_CLI, "--max-drop", "1", "--time-budget", text, "--dry-run"])
    assert res.exit_code == 0, res.output
    expect = "null" if seconds is None else str(seconds)
    assert f"time_budget_s: {expect}" in res.stdout


@pytest.mark.parametrize("text", ["abc", "0", "-5m", "5x", ""])
def test_cli_bad_time_budget_is_a_clear_error(text):
    res = runner.invoke(app, [*_CLI, "--time-budget", text, "--dry-run"])
    assert res.exit_code == 2
    assert "Invalid --time-budget" in res.stderr


def test_cli_time_budget_out_exits_3_with_the_best_result():
    res = runner.invoke(app, [*_CLI, "--max-drop", "1", "--time-budget", "0.001s", "--json"])
    assert res.exit_code == 3, res.output
    assert "time budget" in res.stderr and "best drop" in res.stderr
    obj = json.loads(res.stdout.strip().splitlines()[-1])
    assert obj["exit_code"] == 3 and "time budget" in obj["error"]


def test_cli_help_documents_time_budget_and_exit_code():
    res = runner.invoke(app, ["quantize", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0
    text = " ".join(res.stdout.split())
    assert "--time-budget" in text and "3 the accuracy budget was not met" in text
