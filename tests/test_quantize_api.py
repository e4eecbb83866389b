"""Public API ``torchslim.quantize``: validation report, save → load round trip, refusals."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

import torchslim
from support_models import requires_reference
from torchslim.errors import AccuracyBudgetError, SourceError, TorchslimError
from torchslim.quantization import QuantizeConfig, load_quantized

torch.set_num_threads(2)

pytestmark = requires_reference

_KEYS = (
    "accuracy_before",
    "accuracy_after",
    "accuracy_drop",
    "fidelity",
    "size_mb_before",
    "size_mb_after",
    "quantized_layers",
    "float_layers",
)


@pytest.fixture(scope="module")
def data():
    from torchslim.data import load_data

    return (
        load_data("torchslim:fashion_mnist?split=train").take(200, seed=1),
        load_data("torchslim:fashion_mnist").take(400, seed=2),
    )


def _roundtrip(q, tmp_path, x):
    path = q.save(tmp_path / "q")
    assert (path / "quantization.json").is_file()
    loaded = load_quantized(path)
    ref = q.module(x) if q.module is not None and q.deployed is None else q(x)
    if q.module is not None and q.deployed is not None:  # compiled torch INT8: compare graphs
        ref = q.module(x)
    out = loaded(x)
    assert torch.equal(out, ref)
    meta = json.loads((path / "quantization.json").read_text())
    assert meta["config"]["fields"]["method"] == q.config.method.value


@pytest.mark.parametrize(
    "method,backend",
    [
        ("dynamic", "torch"),
        ("static", "onnxruntime"),
        ("static", "openvino"),
        ("weight_only", "torch"),
        ("bf16", "torch"),
        ("static", "torch"),
    ],
)
def test_quantize_reports_and_round_trips(method, backend, data, tmp_path):
    if backend == "openvino" and importlib.util.find_spec("nncf") is None:
        pytest.skip("openvino extra not installed")
    calib, ev = data
    q = torchslim.quantize(
        "torchslim:fashion_cnn",
        QuantizeConfig(method=method, backend=backend, num_calibration_samples=128, compile=False),
        calib=calib,
        eval=ev,
    )
    for key in _KEYS:
        assert key in q.report, key
    assert q.report["accuracy_before"] > 0.85
    assert q.report["accuracy_drop"] <= 1.5
    assert q.report["fidelity"]["cosine"] > 0.99
    if method in ("dynamic", "weight_only") or backend != "torch":
        assert q.report["size_mb_after"] < q.report["size_mb_before"]
    # some programs (torchao tensors, bf16) export only with a fixed batch; the report says so
    batch = 1 if "saved_static_shapes" in q.report or method in ("weight_only", "bf16") else 8
    _roundtrip(q, tmp_path, ev.inputs[0][:batch])


def test_budget_is_enforced_by_the_api():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent / "passes"))
    from test_quantize import _Outlier, _outlier_data

    model = _Outlier().eval()
    with pytest.raises(AccuracyBudgetError) as err:
        torchslim.quantize(
            model,
            QuantizeConfig(method="dynamic", max_drop=1.0, max_float_layers=0),
            eval=_outlier_data(model),
        )
    assert err.value.best["drop"] > 1.0


def test_budget_needs_eval_data(data):
    with pytest.raises(TorchslimError, match="evaluation data"):
        torchslim.quantize("torchslim:fashion_cnn", QuantizeConfig(max_drop=1.0), calib=data[0])


def test_fidelity_only_without_labels(data):
    from torchslim.data import DataSet

    calib, _ = data
    unlabeled = DataSet("u", calib.inputs)
    q = torchslim.quantize("torchslim:fashion_cnn", method="dynamic", calib=unlabeled)
    assert q.report["accuracy_before"] is None and q.report["fidelity_only"] is True
    assert q.report["fidelity"]["agreement"] > 0.95


def test_load_rejects_other_directories(tmp_path):
    with pytest.raises(SourceError):
        load_quantized(tmp_path)


@pytest.mark.slow
def test_torch_static_compiled_with_inductor(data, tmp_path):
    calib, ev = data
    q = torchslim.quantize(
        "torchslim:fashion_cnn",
        QuantizeConfig(method="static", num_calibration_samples=64),
        calib=calib,
        eval=ev,
    )
    assert q.runtime == "inductor"
    assert q.report["accuracy_drop"] <= 1.5
    _roundtrip(q, tmp_path, ev.inputs[0][:4])
