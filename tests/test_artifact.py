"""Artifacts: one format, written atomically, loaded hash-verified, replayable."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from torchslim._io import atomic_directory, check_out_dir
from torchslim.artifact import ArtifactError, load_artifact, save_artifact
from torchslim.data import load_data
from torchslim.errors import TorchslimError
from torchslim.measure import deployment_size_mb
from torchslim.models import load_model
from torchslim.passes.graph import FuseConfig
from torchslim.passes.quantize import QuantizeConfig
from torchslim.pipeline import RunData, run_recipe
from torchslim.recipe import Recipe
from torchslim.runtimes.configs import OrtConfig


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    loaded = load_model("torchslim:fashion_cnn")
    ev = load_data("torchslim:fashion_mnist?limit=300", input_spec=loaded.input_spec)
    cand = run_recipe(
        Recipe((FuseConfig(),), OrtConfig(intra_op_threads=1)),
        loaded,
        data=RunData(eval=ev),
        measure=False,
        raise_errors=True,
    )
    out = tmp_path_factory.mktemp("art") / "cnn-ort"
    save_artifact(cand, out)
    return out, cand


def test_artifact_layout_manifest_and_units(cnn_run: tuple[Path, object]) -> None:
    out, _ = cnn_run
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert "manifest.json" in names and "recipe.yaml" in names
    assert "runtime/model.onnx" in names and "runtime/runtime.json" in names
    assert not any("optimized" in n for n in names)  # the ORT cache is not a deployment file
    m = json.loads((out / "manifest.json").read_text())
    assert m["runtime"] == "onnxruntime"
    assert m["deployment_files"] == ["runtime/model.onnx", "runtime/runtime.json"]
    assert set(m["files"]) == set(names) - {"manifest.json"}
    assert m["source"]["source"] == "torchslim:fashion_cnn"
    assert m["input_spec"][0]["shape"] == [1, 1, 28, 28]
    assert m["versions"]["torch"] == torch.__version__.split("+")[0] or m["versions"]["torch"]
    # one size: MB (1e6) of the deployment files, and a fused FP32 graph is about its weights
    size = deployment_size_mb(*(out / f for f in m["deployment_files"]))
    assert m["metrics"]["size_mb"] == pytest.approx(size)
    assert 1.6 < size < 1.8  # 421,642 float32 params = 1.69 MB, counted once
    assert m["metrics"]["drop_points"] == pytest.approx(0.0, abs=0.35)
    assert 0.85 < m["metrics"]["accuracy"] < 0.97


def test_load_artifact_runs_like_the_original(cnn_run: tuple[Path, object]) -> None:
    out, _ = cnn_run
    art = load_artifact(out)
    x = load_data("torchslim:fashion_mnist?limit=8").inputs[0]
    ref = load_model("torchslim:fashion_cnn").require_module()(x)
    torch.testing.assert_close(art(x), ref, atol=1e-4, rtol=1e-4)
    assert art.capabilities.runtime == "onnxruntime"
    assert art.capabilities.precision == "fp32"
    assert art.recipe.steps == (FuseConfig(),)


def test_a_flipped_byte_is_refused_naming_the_file(
    cnn_run: tuple[Path, object], tmp_path: Path
) -> None:
    import shutil

    out, _ = cnn_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    target = copy / "runtime" / "model.onnx"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"model\.onnx.*modified"):
        load_artifact(copy)
    with pytest.warns(UserWarning, match="WITHOUT verifying"):
        load_artifact(copy, verify=False)


def test_the_no_verify_hint_names_a_real_option(
    cnn_run: tuple[Path, object], tmp_path: Path
) -> None:
    import shutil

    from typer.testing import CliRunner

    from torchslim.cli.main import app

    out, _ = cnn_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    target = copy / "runtime" / "model.onnx"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    fast = ["--repeats", "3", "--min-time", "0", "--max-time", "0.2", "--no-peak"]
    refused = CliRunner().invoke(app, ["bench", str(copy), *fast])
    assert refused.exit_code == 2 and "--no-verify" in refused.stderr
    followed = CliRunner().invoke(app, ["bench", str(copy), *fast, "--no-verify"])
    assert "No such option" not in followed.output, followed.output
    assert "--no-verify" in CliRunner().invoke(app, ["export", "--help"]).output


def test_missing_and_unexpected_files_are_refused(
    cnn_run: tuple[Path, object], tmp_path: Path
) -> None:
    import shutil

    out, _ = cnn_run
    a = tmp_path / "a"
    shutil.copytree(out, a)
    (a / "runtime" / "model.onnx").unlink()
    with pytest.raises(ArtifactError, match="missing"):
        load_artifact(a)
    b = tmp_path / "b"
    shutil.copytree(out, b)
    (b / "runtime" / "evil.onnx").write_bytes(b"x")
    with pytest.raises(ArtifactError, match="unexpected"):
        load_artifact(b)


def test_existing_out_is_refused_without_force_and_replaced_with_it(
    cnn_run: tuple[Path, object], tmp_path: Path
) -> None:
    _, cand = cnn_run
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(TorchslimError, match="not empty"):
        check_out_dir(out)
    with pytest.raises(TorchslimError, match="not empty"):
        save_artifact(cand, out)  # type: ignore[arg-type]
    assert (out / "keep.txt").read_text() == "mine"
    save_artifact(cand, out, force=True)  # type: ignore[arg-type]
    assert not (out / "keep.txt").exists() and load_artifact(out) is not None


def test_out_checks_refuse_inputs_and_unwritable_places(tmp_path: Path) -> None:
    model = tmp_path / "m" / "model.safetensors"
    model.parent.mkdir()
    model.write_bytes(b"x")
    with pytest.raises(TorchslimError, match="input"):
        check_out_dir(model.parent, force=True, inputs=[str(model)])
    with pytest.raises(TorchslimError, match="empty"):
        check_out_dir("")
    with pytest.raises(TorchslimError, match="Cannot create"):
        check_out_dir("/proc/torchslim-x")


def test_a_killed_writer_leaves_no_target(tmp_path: Path) -> None:
    target = tmp_path / "out"
    code = (
        "import time, sys\n"
        "from torchslim._io import atomic_directory\n"
        f"with atomic_directory({str(target)!r}) as tmp:\n"
        "    (tmp / 'half.bin').write_bytes(b'x' * 1000)\n"
        "    print('writing', flush=True)\n"
        "    time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    time.sleep(0.1)
    assert not target.exists()


def test_atomic_directory_cleans_up_on_error(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with pytest.raises(RuntimeError), atomic_directory(target) as tmp:
        (tmp / "a").write_text("x")
        raise RuntimeError("boom")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_old_output_directories_get_a_regenerate_message(tmp_path: Path) -> None:
    (tmp_path / "slim.json").write_text("{}")
    with pytest.raises(ArtifactError, match="older torchslim"):
        load_artifact(tmp_path)


def test_an_artifact_naming_untrusted_code_never_imports_it(tmp_path: Path) -> None:
    """A manifest naming ``pkg.module:factory`` is not imported without trust_code."""
    loaded = load_model("torchslim:fashion_cnn")
    cand = run_recipe(Recipe(), loaded, measure=False, raise_errors=True)
    out = tmp_path / "eager"
    save_artifact(cand, out, source="tests_marker_factory:make")
    art = load_artifact(out)
    with pytest.raises(ArtifactError, match="--trust-code"):
        art.module()
    assert "tests_marker_factory" not in sys.modules
    # the runtime files still load without any architecture
    x = torch.rand(2, 1, 28, 28)
    torch.testing.assert_close(art(x), loaded.require_module()(x), atol=1e-5, rtol=1e-5)
    assert art.manifest["deployment_files"] == ["module/model.pt2"]


def test_torch_quantized_artifact_round_trips(tmp_path: Path) -> None:
    loaded = load_model("torchslim:fashion_cnn")
    ev = load_data("torchslim:fashion_mnist?limit=200", input_spec=loaded.input_spec)
    cand = run_recipe(
        Recipe((QuantizeConfig(method="dynamic", backend="torch"),)),
        loaded,
        data=RunData(eval=ev),
        measure=False,
        raise_errors=True,
    )
    save_artifact(cand, tmp_path / "q")
    art = load_artifact(tmp_path / "q")
    assert art.manifest["deployment_files"] == ["module/model.ts"]
    assert art.capabilities.precision == "int8"
    x = ev.inputs[0][:4]
    torch.testing.assert_close(art(x), cand.built(x))
    assert cand.drop_points is not None and abs(cand.drop_points) < 1.5


_MARKER_MOD = """
from pathlib import Path
import torch
from torchslim.data import DataSet

MARK = Path({mark!r})


def data():
    MARK.write_text("imported and called")
    g = torch.Generator().manual_seed(0)
    return DataSet("marker", (torch.rand(16, 1, 28, 28, generator=g),), torch.arange(16) % 10)
"""


def test_data_factories_an_artifact_names_need_trust_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from torchslim.cli.main import app
    from torchslim.recipe import DataRefs

    mark = tmp_path / "called"
    (tmp_path / "trust_marker_mod.py").write_text(_MARKER_MOD.format(mark=str(mark)))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "trust_marker_mod", raising=False)
    # Someone else's artifact: a trusted architecture, but its recipe names their data factory.
    loaded = load_model("torchslim:fashion_cnn")
    recipe = Recipe(data=DataRefs(eval="trust_marker_mod:data"))
    cand = run_recipe(recipe, loaded, measure=False, raise_errors=True)
    art = tmp_path / "theirs"
    save_artifact(cand, art, source="torchslim:fashion_cnn")
    assert load_artifact(art).recipe.data.eval == "trust_marker_mod:data"
    monkeypatch.delitem(sys.modules, "trust_marker_mod", raising=False)
    # Continuing it here without --trust-code must not import or call that factory.
    res = CliRunner().invoke(
        app,
        ["prune", str(art), "--method", "unstructured", "--ratio", "0.2", "--no-latency", "--json"],
    )
    assert not mark.exists(), res.output
    assert "trust_marker_mod" not in sys.modules
    assert res.exit_code == 2 and "--trust-code" in res.stderr
