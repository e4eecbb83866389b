"""``torchslim.predict``: input order kept, ids carried, predictions equal the model's own,
every output format round-trips, bad samples skipped and listed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from predict_helpers import DATA, MODEL, write_jpegs

import torchslim
from torchslim.errors import TorchslimError
from torchslim.predict import read_predictions


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    """The model's own top-5 on the first 300 packaged test images, in one batched call."""
    model = torchslim.load_model(MODEL).module
    x = torchslim.load_data(DATA).inputs[0][:300]
    with torch.inference_mode():
        probs = torch.softmax(model(x), dim=1)
    scores, ids = torch.topk(probs, 5, dim=1)
    return {"label_ids": ids.numpy(), "scores": scores.numpy()}


def test_iterator_keeps_input_order_with_workers(reference: dict[str, np.ndarray]) -> None:
    # 37 does not divide 300; two loader workers deliver batches concurrently.
    batches = list(torchslim.predict(MODEL, DATA, limit=300, batch_size=37, workers=2, threads=1))
    index = np.concatenate([b.index for b in batches])
    assert index.tolist() == list(range(300))
    assert [i for b in batches for i in b.ids] == [str(i) for i in range(300)]
    label_ids = np.concatenate([b.label_ids for b in batches])
    scores = np.concatenate([b.scores for b in batches])
    assert (label_ids[:, 0] == reference["label_ids"][:, 0]).all()
    np.testing.assert_allclose(scores, reference["scores"], atol=1e-5)
    names = torchslim.load_model(MODEL).metadata["class_names"]
    assert batches[0].labels[0, 0] == names[label_ids[0, 0]]
    assert all(not b.skipped for b in batches)


def test_module_and_function_are_one_callable() -> None:
    import torchslim.predict as mod

    first = next(iter(mod(MODEL, DATA, limit=8, batch_size=8, workers=0)))
    assert first.index.tolist() == list(range(8))


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "npy"])
def test_every_format_round_trips(
    fmt: str, tmp_path: Path, reference: dict[str, np.ndarray]
) -> None:
    out = tmp_path / f"preds.{fmt}"
    summary = torchslim.predict(MODEL, DATA, out=out, limit=300, batch_size=64, workers=0)
    assert summary.items == 300 and summary.ok and summary.format == fmt
    cols = read_predictions(out)
    assert cols["index"].tolist() == list(range(300))
    assert cols["id"].tolist() == [str(i) for i in range(300)]
    assert cols["label_ids"].dtype == np.int64
    assert (cols["label_ids"][:, 0] == reference["label_ids"][:, 0]).all()
    np.testing.assert_allclose(cols["scores"], reference["scores"], atol=1e-5)
    names = np.asarray(torchslim.load_model(MODEL).metadata["class_names"])
    assert (cols["labels"] == names[cols["label_ids"]]).all()
    # the same rows as the iterator gives, exactly (same batch boundaries)
    batches = list(torchslim.predict(MODEL, DATA, limit=300, batch_size=64, workers=0))
    assert np.array_equal(cols["scores"], np.concatenate([b.scores for b in batches]))
    assert not list(tmp_path.glob(".*")), "temporary files or checkpoints left behind"


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "npy"])
def test_raw_outputs_round_trip(fmt: str, tmp_path: Path) -> None:
    out = tmp_path / f"logits.{fmt}"
    torchslim.predict(MODEL, DATA, out=out, limit=40, batch_size=16, topk=0, workers=0)
    cols = read_predictions(out)
    model = torchslim.load_model(MODEL).module
    with torch.inference_mode():
        logits = model(torchslim.load_data(DATA).inputs[0][:40]).numpy()
    assert cols["output"].shape == (40, 10) and "label_ids" not in cols
    np.testing.assert_allclose(cols["output"], logits, atol=1e-4)


def test_jpeg_folder_matches_image_folder_data(jpeg_dir: tuple[Path, list[str]]) -> None:
    root, names = jpeg_dir
    batches = list(torchslim.predict(MODEL, str(root), batch_size=16, workers=2, threads=1))
    assert [i for b in batches for i in b.ids] == names  # ids are the paths, in sorted order
    # data.py's image-folder loader decodes the same files the same way
    spec = torchslim.load_model(MODEL).input_spec
    x = torchslim.load_data(str(root), input_spec=spec).inputs[0]
    with torch.inference_mode():
        direct = torchslim.load_model(MODEL).module(x).argmax(1).numpy()
    assert (np.concatenate([b.label_ids[:, 0] for b in batches]) == direct).all()


def test_bad_samples_are_skipped_and_listed(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    names = write_jpegs(root, 12, per_class_dirs=False)
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    np.save(root / "small.npy", np.zeros((1, 20, 20), np.float32))
    nan = np.full((1, 28, 28), 0.5, np.float32)
    nan[0, 3, 4] = np.nan
    np.save(root / "nan.npy", nan)
    np.save(root / "good.npy", np.full((1, 28, 28), 0.2, np.float32))
    out = tmp_path / "p.jsonl"
    summary = torchslim.predict(MODEL, str(root), out=out, batch_size=4, workers=2, threads=1)
    reasons = {s["id"]: s["reason"] for s in summary.skipped}
    assert set(reasons) == {"broken.jpg", "small.npy", "nan.npy"}
    assert reasons["broken.jpg"].startswith("unreadable")
    assert "wrong shape 1x20x20" in reasons["small.npy"] and "1x28x28" in reasons["small.npy"]
    assert "NaN" in reasons["nan.npy"]
    cols = read_predictions(out)
    assert cols["id"].tolist() == sorted([*names, "good.npy"])
    assert summary.items == 13 and not summary.ok
    side = [
        json.loads(line) for line in (tmp_path / "p.jsonl.skipped.jsonl").read_text().splitlines()
    ]
    assert [s["id"] for s in side] == [s["id"] for s in summary.skipped]
    # indices are input positions: the skipped ones are the gaps in the file's index column
    assert sorted([*cols["index"].tolist(), *(s["index"] for s in side)]) == list(range(16))


def test_nan_rows_of_an_array_file_are_skipped(tmp_path: Path) -> None:
    x = torchslim.load_data(DATA).inputs[0][:20].numpy().copy()
    x[7, 0, 1, 1] = np.nan
    path = tmp_path / "x.npz"
    np.savez(path, x=x)
    batches = list(torchslim.predict(MODEL, str(path), batch_size=8, workers=0))
    assert [s.index for b in batches for s in b.skipped] == [7]
    assert np.concatenate([b.index for b in batches]).tolist() == [i for i in range(20) if i != 7]


def test_existing_output_and_checkpoint_are_refused(tmp_path: Path) -> None:
    out = tmp_path / "p.jsonl"
    torchslim.predict(MODEL, DATA, out=out, limit=16, batch_size=8, workers=0)
    with pytest.raises(TorchslimError, match="already exists"):
        torchslim.predict(MODEL, DATA, out=out, limit=16, batch_size=8, workers=0)
    with pytest.raises(TorchslimError, match="Nothing to resume"):
        torchslim.predict(MODEL, DATA, out=out, limit=16, resume=True)
    again = torchslim.predict(MODEL, DATA, out=out, limit=16, batch_size=8, workers=0, force=True)
    assert again.items == 16
    with pytest.raises(TorchslimError, match="output format"):
        torchslim.predict(MODEL, DATA, out=tmp_path / "p.txt", limit=4)


def test_resume_refuses_a_different_job(tmp_path: Path) -> None:
    from torchslim.predict._output import PartStore

    out = tmp_path / "p.jsonl"
    torchslim.predict(MODEL, DATA, out=out, limit=16, batch_size=8, workers=0)
    store = PartStore(out)
    store.start(
        {
            "version": 1,
            "model": MODEL,
            "data": DATA,
            "format": "jsonl",
            "topk": 3,
            "limit": 16,
            "preprocess": None,
            "total": 16,
            "batch_size": 8,
            "threads": 1,
        }
    )
    with pytest.raises(TorchslimError, match="different job"):
        torchslim.predict(MODEL, DATA, out=out, limit=16, resume=True)
    shutil.rmtree(store.dir)
