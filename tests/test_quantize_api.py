"""Public API ``torchslim.quantize``: validation report, save → load round trip, refusals."""

from __future__ import annotations

import json

import pytest
import torch

import torchslim
from _deps import need
from torchslim.artifact import ArtifactError, load_artifact
from torchslim.errors import AccuracyBudgetError, TorchslimError
from torchslim.quantization import QuantizeConfig

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def data():
    from torchslim.data import load_data

    return (
        load_data("torchslim:fashion_mnist?split=train").take(200, seed=1),
        load_data("torchslim:fashion_mnist").take(400, seed=2),
    )


def _roundtrip(q, tmp_path, x):
    path = q.save(tmp_path / "q")
    assert (path / "manifest.json").is_file() and (path / "recipe.yaml").is_file()
    art = load_artifact(path)
    if art.capabilities.dynamic_batch:
        x = x[:8]
    else:  # some programs (torchao tensors, bf16) export only at a fixed batch: recorded
        program = json.loads((path / "module" / "program.json").read_text())
        x = x[: program["static_shapes"][0][0]]
    torch.testing.assert_close(art(x), q(x), rtol=1e-5, atol=1e-5)
    assert art.recipe.steps == q.recipe.steps
    meta = json.loads((path / "manifest.json").read_text())
    assert meta["metrics"]["drop_points"] == pytest.approx(q.drop_points)
    assert meta["metrics"]["size_mb"] == pytest.approx(art.size_mb)


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
    if backend == "openvino":
        need("openvino", "nncf")
    calib, ev = data
    q = torchslim.quantize(
        "torchslim:fashion_cnn",
        QuantizeConfig(method=method, backend=backend, num_calibration_samples=128, compile=False),
        calib=calib,
        eval=ev,
    )
    assert q.ok, q.reason
    assert q.baseline_accuracy > 0.85
    assert q.drop_points <= 1.5  # points
    assert q.drop_points == pytest.approx(100 * (q.baseline_accuracy - q.accuracy))
    assert q.evaluation.fidelity.cosine > 0.99
    rep = q.reports[0]
    assert "quantized_layers" in rep and "float_layers" in rep
    if method in ("dynamic", "weight_only") or backend != "torch":
        assert q.size_mb < q.baseline_size_mb  # MB of the deployment files
    _roundtrip(q, tmp_path, ev.inputs[0])


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
    assert err.value.best is not None


def test_budget_needs_eval_data(data):
    with pytest.raises(TorchslimError, match="evaluation data"):
        torchslim.quantize("torchslim:fashion_cnn", QuantizeConfig(max_drop=1.0), calib=data[0])


def test_fidelity_only_without_labels(data):
    from torchslim.data import DataSet

    calib, _ = data
    unlabeled = DataSet("u", calib.inputs)
    q = torchslim.quantize("torchslim:fashion_cnn", method="dynamic", calib=unlabeled)
    assert q.baseline_accuracy is None and q.fidelity_only is True
    assert q.evaluation.fidelity.agreement > 0.95


def test_load_rejects_other_directories(tmp_path):
    with pytest.raises(ArtifactError):
        load_artifact(tmp_path)


def test_latency_is_measured_interleaved(data):
    calib, ev = data
    q = torchslim.quantize(
        "torchslim:fashion_cnn",
        method="static",
        backend="onnxruntime",
        calib=calib,
        eval=ev,
        measure_latency=True,
    )
    s = q.speedup(1)
    assert s is not None and s.ratio == pytest.approx(s.baseline_ms / s.candidate_ms)
    # one run: the baseline and the result were measured round-robin in the same schedule
    names = {name for _, name, _ in q.measurement.schedule}
    assert names == {"baseline", "candidate"}


@pytest.mark.slow
def test_torch_static_compiled_with_inductor(data, tmp_path):
    calib, ev = data
    from torchslim.runtimes.configs import InductorConfig

    q = torchslim.quantize(
        "torchslim:fashion_cnn",
        QuantizeConfig(method="static", num_calibration_samples=64),
        calib=calib,
        eval=ev,
        runtime=InductorConfig(),
    )
    assert q.runtime == "inductor"
    assert q.drop_points <= 1.5
    _roundtrip(q, tmp_path, ev.inputs[0][:4])
