"""The bundled Fashion-MNIST CNN through each CPU runtime, judged on real test images: FP32
runtimes must agree with eager on every prediction and keep its accuracy."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def reference():
    from torchslim.data import load_data
    from torchslim.evaluate import Evaluator
    from torchslim.models import load_model

    loaded = load_model("torchslim:fashion_cnn")
    data = load_data("torchslim:fashion_mnist").subset(list(range(400)))
    ev = Evaluator(data, batch_size=50)
    base = ev.set_baseline(loaded.module)
    return loaded, ev, base


@pytest.mark.parametrize("name", ["torchscript", "onnxruntime", "openvino"])
def test_reference_cnn_keeps_every_prediction(reference, name: str) -> None:
    from torchslim.runtimes import RUNTIMES, build, list_runtimes
    from torchslim.runtimes.configs import RUNTIME_CONFIGS

    list_runtimes()
    # every one of these is a declared dependency: unavailable here is a broken install
    assert RUNTIMES.get(name).reason() is None, RUNTIMES.get(name).reason()
    loaded, ev, base = reference
    deployed = build(loaded.module, RUNTIME_CONFIGS[name](), loaded.input_spec.example_inputs(2))
    result = ev.evaluate(deployed)
    assert result.fidelity is not None and result.fidelity.agreement == 1.0
    assert result.value == pytest.approx(base.value, abs=1e-9)
    assert base.value > 0.85
