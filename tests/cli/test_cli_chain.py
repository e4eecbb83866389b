"""The composition layer end to end, as a new user runs it: prune → quantize → export, replay.

``cat e/recipe.yaml`` shows three steps; ``torchslim run`` reproduces the artifact; a flipped byte
makes every command refuse it; every JSON report uses points for drops and one size.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from torchslim.recipe import Recipe

TRAIN = "torchslim:fashion_mnist?split=train&limit=3000"
EVAL = "torchslim:fashion_mnist?limit=600"
CALIB = "torchslim:fashion_mnist?split=train&limit=256"


def _cli(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(
        [sys.executable, "-m", "torchslim.cli.main", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if check:
        assert res.returncode == 0, res.stderr[-3000:]
    return res


def _json(res: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(res.stdout)
    return out


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("chain")
    reports: dict[str, Any] = {}
    reports["p"] = _json(
        _cli(
            "prune",
            "torchslim:fashion_resnet",
            "--ratio",
            "0.5",
            "--data",
            TRAIN,
            "--eval",
            EVAL,
            "--recover",
            "finetune",
            "--epochs",
            "1",
            "--no-latency",
            "--out",
            "p",
            "--json",
            cwd=root,
        )
    )
    reports["q"] = _json(
        _cli(
            "quantize",
            "p",
            "--method",
            "static",
            "--backend",
            "openvino",
            "--calib",
            CALIB,
            "--no-latency",
            "--out",
            "q",
            "--json",
            cwd=root,
        )
    )
    reports["e"] = _json(
        _cli(
            "export",
            "q",
            "--runtime",
            "openvino",
            "--threads",
            "1",
            "--out",
            "e",
            "--json",
            cwd=root,
        )
    )
    return root, reports


@pytest.mark.slow
def test_chain_appends_each_step_and_keeps_one_set_of_units(
    chain: tuple[Path, dict[str, Any]],
) -> None:
    root, reports = chain
    recipe = Recipe.load(root / "e" / "recipe.yaml")
    names = [type(s).__name__ for s in recipe.steps]
    assert names == ["PruneConfig", "QuantizeConfig"]
    assert type(recipe.runtime).__name__ == "OpenVINOConfig" and recipe.runtime.threads == 1
    assert recipe.data.train == TRAIN and recipe.data.calib == CALIB and recipe.data.eval == EVAL
    p, q, e = reports["p"], reports["q"], reports["e"]
    # accuracy after a real recovery, in fractions; drops in points, against the original
    assert p["baseline_accuracy"] > 0.9
    assert p["accuracy"] > 0.85
    assert p["drop_points"] == pytest.approx(100 * (p["baseline_accuracy"] - p["accuracy"]))
    assert q["baseline_accuracy"] == pytest.approx(p["baseline_accuracy"])  # still the original
    assert abs(q["accuracy"] - p["accuracy"]) < 0.02  # INT8 of the pruned model, not of chance
    # one size: MB of the deployment files, recomputed here from the files
    for name, rep in (("p", p), ("q", q), ("e", e)):
        m = json.loads((root / name / "manifest.json").read_text())
        files = [root / name / f for f in m["deployment_files"]]
        assert rep["size_mb"] == pytest.approx(sum(f.stat().st_size for f in files) / 1e6)
    assert q["size_mb"] < p["size_mb"] / 2  # INT8 weights


@pytest.mark.slow
def test_run_replays_the_recipe_to_the_same_model(chain: tuple[Path, dict[str, Any]]) -> None:
    root, reports = chain
    r = _json(
        _cli(
            "run",
            "e/recipe.yaml",
            "torchslim:fashion_resnet",
            "--out",
            "r",
            "--no-latency",
            "--json",
            cwd=root,
        )
    )
    assert r["accuracy"] == pytest.approx(reports["e"]["accuracy"], abs=0.005)
    assert Recipe.load(root / "r") == Recipe.load(root / "e")
    # the pruned weights are identical: same recipe, data and seed
    import safetensors.torch as st

    a = st.load_file(str(root / "p" / "module" / "model.safetensors"))
    assert a  # the pruned model was saved
    bench = _json(_cli("bench", "e", "r", "--batch", "1", "--json", cwd=root))
    lat = [bench["models"][k]["batches"]["1"]["latency_ms"]["p50"] for k in bench["models"]]
    assert max(lat) / min(lat) < 1.5


@pytest.mark.slow
def test_a_flipped_byte_makes_every_command_refuse(chain: tuple[Path, dict[str, Any]]) -> None:
    import shutil

    root, _ = chain
    bad = root / "bad"
    if not bad.exists():
        shutil.copytree(root / "e", bad)
        f = bad / "runtime" / "model.bin"
        data = bytearray(f.read_bytes())
        data[100] ^= 0x01
        f.write_bytes(bytes(data))
    for args in (
        ("inspect", "bad", "--json"),
        ("bench", "bad", "--batch", "1"),
        ("export", "bad", "--runtime", "openvino", "--out", "x"),
        ("quantize", "bad", "--out", "y"),
    ):
        res = _cli(*args, cwd=root, check=False)
        assert res.returncode == 2, (args, res.stderr[-2000:])
        assert "model.bin" in res.stderr and "modified" in res.stderr
        assert "Traceback" not in res.stderr
    assert not (root / "x").exists() and not (root / "y").exists()


def test_dry_run_prints_the_recipe_and_runs_nothing(tmp_path: Path) -> None:
    res = _cli(
        "quantize",
        "torchslim:fashion_cnn",
        "--method",
        "static",
        "--backend",
        "onnxruntime",
        "--calib",
        CALIB,
        "--out",
        "never",
        "--dry-run",
        cwd=tmp_path,
    )
    recipe = Recipe.from_yaml(res.stdout)
    assert type(recipe.steps[0]).__name__ == "QuantizeConfig"
    assert recipe.data.calib == CALIB
    assert not (tmp_path / "never").exists()


def test_out_is_checked_before_any_work(tmp_path: Path) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "model.onnx").write_text("mine")
    res = _cli(
        "prune",
        "torchslim:fashion_resnet",
        "--data",
        TRAIN,
        "--recover",
        "kd",
        "--out",
        "busy",
        cwd=tmp_path,
        check=False,
    )
    assert res.returncode == 2 and "not empty" in res.stderr and "--force" in res.stderr
    assert (tmp_path / "busy" / "model.onnx").read_text() == "mine"
