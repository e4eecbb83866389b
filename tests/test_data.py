"""Data sources: every source type, splits, and the refusals."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from torchslim.data import DataSet, load_data, read_idx
from torchslim.errors import DataError, UntrustedPickleError
from torchslim.specs import parse_input_spec


def _labelled(n: int = 100, classes: int = 4) -> DataSet:
    x = torch.arange(n, dtype=torch.float32).reshape(n, 1)
    y = torch.arange(n) % classes
    return DataSet("t", (x,), y, num_classes=classes)


def test_npz_source(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(
        path,
        x=np.random.default_rng(0).integers(0, 255, (10, 1, 4, 4), dtype=np.uint8),
        y=np.arange(10) % 2,
    )
    ds = load_data(str(path))
    assert len(ds) == 10 and ds.inputs[0].dtype == torch.float32
    assert float(ds.inputs[0].max()) <= 1.0  # uint8 scaled to [0, 1]
    assert ds.has_labels and ds.num_classes == 2


def test_npz_without_x_and_pickled_npz(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, images=np.zeros((2, 2)))
    with pytest.raises(DataError, match="no 'x'"):
        load_data(str(path))
    obj = tmp_path / "o.npz"
    np.savez(obj, x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(DataError, match="pickled"):
        load_data(str(obj))


def test_pt_source_and_pickle_refusal(tmp_path: Path) -> None:
    path = tmp_path / "d.pt"
    torch.save({"x": torch.rand(6, 3), "y": torch.tensor([0, 1, 0, 1, 0, 1])}, path)
    ds = load_data(str(path))
    assert ds.inputs[0].shape == (6, 3) and ds.labels is not None
    multi = tmp_path / "m.pt"
    torch.save(
        {
            "x": {
                "input_ids": torch.ones(4, 8, dtype=torch.long),
                "attention_mask": torch.ones(4, 8, dtype=torch.long),
            }
        },
        multi,
    )
    ds = load_data(str(multi))
    assert ds.input_names == ("input_ids", "attention_mask")

    bad = tmp_path / "bad.pt"
    torch.save({"x": torch.rand(2), "note": Path("x")}, bad)  # a pickled non-tensor object
    with pytest.raises(UntrustedPickleError):
        load_data(str(bad))


def _write_idx(path: Path, arr: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 8, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + arr.astype(np.uint8).tobytes())


def test_idx_source(tmp_path: Path) -> None:
    images = np.random.default_rng(0).integers(0, 255, (20, 28, 28))
    labels = np.arange(20) % 10
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels)
    ds = load_data(str(tmp_path / "t10k-images-idx3-ubyte.gz"))
    assert ds.inputs[0].shape == (20, 1, 28, 28)
    assert torch.equal(ds.labels, torch.from_numpy(labels))
    np.testing.assert_array_equal(read_idx(tmp_path / "t10k-images-idx3-ubyte.gz"), images)


def test_idx_truncated(tmp_path: Path) -> None:
    path = tmp_path / "x-images-idx3-ubyte"
    path.write_bytes(struct.pack(">BBBBIII", 0, 0, 8, 3, 10, 28, 28) + b"\x00" * 100)
    with pytest.raises(DataError, match="truncated"):
        load_data(str(path))


def test_image_folder(tmp_path: Path) -> None:
    from PIL import Image

    for ci, cls in enumerate(("cat", "dog")):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.new("RGB", (40, 30), (ci * 200, i * 50, 10)).save(tmp_path / cls / f"{i}.png")
    ds = load_data(f"{tmp_path}?size=16")
    assert ds.inputs[0].shape == (6, 3, 16, 16)
    assert ds.class_names == ["cat", "dog"] and ds.labels.tolist() == [0, 0, 0, 1, 1, 1]
    raw = load_data(f"{tmp_path}?size=16&normalize=none")
    assert float(raw.inputs[0].min()) >= 0.0 and float(raw.inputs[0].max()) <= 1.0
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no class sub-folders"):
        load_data(str(empty))


def test_factory_source() -> None:
    ds = load_data("support_models:tiny_dataset")
    assert len(ds) == 12 and ds.inputs[0].shape == (12, 1, 8, 8)
    assert ds.labels is not None and ds.num_classes == 3


def test_synthetic_is_fidelity_only() -> None:
    ds = load_data("synthetic:1x3x8x8?n=10")
    assert len(ds) == 10 and ds.synthetic and not ds.has_labels
    assert ds.describe()["use"] == "fidelity only"
    spec = parse_input_spec("input_ids:1x16:int64,attention_mask:1x16:int64")
    ds = load_data("synthetic", input_spec=spec)
    assert ds.input_names == ("input_ids", "attention_mask")
    with pytest.raises(DataError, match="needs input shapes"):
        load_data("synthetic")


def test_unknown_and_missing_sources(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_data(str(tmp_path / "nope.npz"))
    with pytest.raises(DataError, match="Unknown data source"):
        load_data("what is this")
    with pytest.raises(DataError, match="limit"):
        load_data("synthetic:1x4?n=4", limit=0)


def test_split_is_seeded_disjoint_and_stratified() -> None:
    ds = _labelled(100, 4)
    a = ds.split({"calib": 0.2, "eval": 0.8}, seed=1)
    b = ds.split({"calib": 0.2, "eval": 0.8}, seed=1)
    assert torch.equal(a["calib"].inputs[0], b["calib"].inputs[0])
    assert len(a["calib"]) == 20 and len(a["eval"]) == 80
    calib = set(a["calib"].inputs[0].flatten().tolist())
    assert not calib & set(a["eval"].inputs[0].flatten().tolist())
    assert torch.bincount(a["calib"].labels).tolist() == [5, 5, 5, 5]
    c = ds.split({"calib": 0.2, "eval": 0.8}, seed=2)
    assert not torch.equal(a["calib"].inputs[0], c["calib"].inputs[0])
    with pytest.raises(DataError):
        ds.split({"a": 0.7, "b": 0.7})


def test_take_batches_and_finite_check() -> None:
    ds = _labelled(10, 2)
    assert len(ds.take(4)) == 4
    sizes = [len(x[0]) for x, _ in ds.batches(4)]
    assert sizes == [4, 4, 2]
    bad = DataSet("nan", (torch.tensor([[1.0], [float("nan")]]),), None)
    with pytest.raises(DataError, match="NaN"):
        bad.check_finite()
    with pytest.raises(DataError, match="different lengths"):
        DataSet("x", (torch.zeros(3, 1),), torch.zeros(2))
