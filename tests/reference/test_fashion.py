"""Bundled Fashion-MNIST reference models and data (torchslim:fashion_cnn / fashion_resnet)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from torchslim.data import DataSet, load_data
from torchslim.errors import DataError, SourceError
from torchslim.models import LoadedModel, load_model
from torchslim.reference import fashion

ASSETS = fashion.asset_dir()  # tracked in git: a missing asset is a failure, never a skip

# name -> (minimum accuracy on the packaged 2k test subset, exact parameter count)
EXPECTED = {
    "fashion_cnn": (0.89, 421_642),
    "fashion_resnet": (0.915, 696_042),
}


@pytest.fixture(scope="module")
def test_set() -> DataSet:
    return load_data("torchslim:fashion_mnist")


@pytest.fixture(scope="module", params=sorted(EXPECTED))
def loaded(request: pytest.FixtureRequest) -> LoadedModel:
    torch.manual_seed(0)
    return load_model(f"torchslim:{request.param}")


def _name(model: LoadedModel) -> str:
    return model.source.partition(":")[2]


def test_loaded_model_describes_itself(loaded: LoadedModel) -> None:
    name = _name(loaded)
    assert loaded.kind == "reference"
    assert loaded.task == "classification"
    assert loaded.path == ASSETS / f"{name}.safetensors"
    assert loaded.path.exists()
    spec = loaded.input_spec
    assert spec is not None
    assert spec.names == ("input",)
    assert spec.inputs[0].shape == (1, 1, 28, 28)
    assert spec.inputs[0].dtype == "float32"
    assert loaded.metadata["class_names"] == list(fashion.CLASS_NAMES)
    # The metadata comes from reference.json; check it against the other record written at
    # training time, the safetensors header of the weights file itself.
    from safetensors import safe_open

    recorded = json.loads((ASSETS / "reference.json").read_text())["models"][name]
    with safe_open(str(loaded.path), framework="pt") as fh:
        header = fh.metadata()
    for key in ("test_accuracy", "subset_accuracy"):
        assert float(header[key]) == pytest.approx(recorded[key], abs=5e-5), key
        assert loaded.metadata[key] == pytest.approx(float(header[key]), abs=5e-5), key
    assert int(header["epochs"]) == recorded["epochs"] == loaded.metadata["epochs"]
    assert recorded["params"] == EXPECTED[name][1]


def test_model_is_in_eval_mode_and_outputs_logits(loaded: LoadedModel) -> None:
    module = loaded.require_module()
    assert not module.training
    assert all(not m.training for m in module.modules())
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        out = module(x)
        again = module(x)
    assert out.shape == (3, 10)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, again)  # eval mode: dropout off, BN uses running stats


def test_param_count_is_exact(loaded: LoadedModel) -> None:
    params = sum(p.numel() for p in loaded.require_module().parameters())
    assert params == EXPECTED[_name(loaded)][1]
    assert loaded.metadata["params"] == params


def test_accuracy_on_packaged_test_subset(loaded: LoadedModel, test_set: DataSet) -> None:
    name = _name(loaded)
    module = loaded.require_module()
    assert test_set.labels is not None
    with torch.no_grad():
        preds = torch.cat([module(x).argmax(1) for x in test_set.inputs[0].split(500)])
    acc = float((preds == test_set.labels).float().mean())
    assert acc >= EXPECTED[name][0]
    # Same number as recorded at training time (up to a few samples: other device/kernels).
    recorded = json.loads((ASSETS / "reference.json").read_text())["models"][name]
    assert acc == pytest.approx(recorded["subset_accuracy"], abs=0.005)


def test_every_relu_module_is_used_once(loaded: LoadedModel) -> None:
    module = loaded.require_module()
    calls: dict[int, int] = {}
    relus = [m for m in module.modules() if isinstance(m, nn.ReLU)]
    hooks = [
        m.register_forward_hook(
            lambda mod, _i, _o: calls.__setitem__(id(mod), calls.get(id(mod), 0) + 1)
        )
        for m in relus
    ]
    try:
        with torch.no_grad():
            module(torch.rand(1, 1, 28, 28))
    finally:
        for h in hooks:
            h.remove()
    assert relus
    assert all(calls.get(id(m)) == 1 for m in relus)


def test_cnn_has_dropout_and_resnet_has_batchnorm() -> None:
    cnn = fashion.build_model("fashion_cnn")
    resnet = fashion.build_model("fashion_resnet")
    assert any(isinstance(m, nn.Dropout) for m in cnn.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in resnet.modules()) >= 10


def test_unknown_reference_model_raises() -> None:
    with pytest.raises(SourceError):
        fashion.build_model("fashion_vit")
    with pytest.raises(SourceError):
        load_model("torchslim:fashion_vit")


def test_test_split_is_packaged_stratified_subset(test_set: DataSet) -> None:
    x = test_set.inputs[0]
    assert x.shape == (2000, 1, 28, 28)
    assert x.dtype == torch.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert test_set.labels is not None and test_set.labels.dtype == torch.int64
    assert torch.bincount(test_set.labels).tolist() == [200] * 10
    assert test_set.num_classes == 10
    assert test_set.class_names == list(fashion.CLASS_NAMES)
    assert test_set.has_labels


def test_train_split_is_packaged_stratified_subset() -> None:
    ds = load_data("torchslim:fashion_mnist?split=train")
    assert ds.inputs[0].shape == (10_000, 1, 28, 28)
    assert ds.labels is not None
    assert torch.bincount(ds.labels).tolist() == [1000] * 10
    # Same samples on every call (packaged, not re-sampled).
    again = fashion.load_data("train")
    assert torch.equal(again.inputs[0][:50], ds.inputs[0][:50])


def test_bad_split_raises_data_error_with_hint() -> None:
    with pytest.raises(DataError) as info:
        load_data("torchslim:fashion_mnist?split=validation")
    assert info.value.hint and "split=test" in info.value.hint


def test_bad_full_value_raises_data_error() -> None:
    with pytest.raises(DataError):
        fashion.load_data("test", full="maybe")


def test_full_without_files_raises_data_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fashion, "_KNOWN_DIRS", ())
    monkeypatch.setenv(fashion.ENV_DIR, str(tmp_path))
    assert fashion.find_full_dir() is None
    with pytest.raises(DataError) as info:
        fashion.load_data("test", full="1")
    assert info.value.hint and fashion.ENV_DIR in info.value.hint
    # Without full=1 the packaged subset still loads.
    assert len(fashion.load_data("test", full="0")) == 2000


@pytest.mark.skipif(fashion.find_full_dir() is None, reason="dataset-fashion-mnist not installed")
def test_full_test_set_from_debian_package() -> None:
    ds = load_data("torchslim:fashion_mnist?full=1")
    assert ds.inputs[0].shape == (10_000, 1, 28, 28)
    assert ds.labels is not None and torch.bincount(ds.labels).tolist() == [1000] * 10
    assert ds.name.endswith("full=1")


def test_full_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = fashion.find_full_dir()
    if src is None:
        pytest.skip("dataset-fashion-mnist not installed")
    for f in src.glob("t10k-*"):
        (tmp_path / f.name).symlink_to(f)
    for f in src.glob("train-*"):
        (tmp_path / f.name).symlink_to(f)
    monkeypatch.setattr(fashion, "_KNOWN_DIRS", ())
    monkeypatch.setenv(fashion.ENV_DIR, str(tmp_path))
    assert fashion.find_full_dir() == tmp_path
