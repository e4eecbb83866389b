"""The ``executorch`` runtime: XNNPACK ``.pte`` programs, FP32 and INT8, on the reference CNN.

Real model (``torchslim:fashion_cnn``, trained) and real data (packaged Fashion-MNIST). The FP32
artifact is exported once through the CLI and shared by the tests that read it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from _deps import need
from torchslim.cli.main import app
from torchslim.errors import BackendUnavailableError, ExportError
from torchslim.runtimes import build, list_runtimes, load_deployed
from torchslim.runtimes.configs import ExecuTorchConfig


def _need_executorch() -> None:
    """Skip without executorch locally; fail under CI (the dev extra installs torchslim[edge])."""
    need("executorch.runtime")


@pytest.fixture(scope="module")
def cnn() -> Any:
    from torchslim.models import load_model

    _need_executorch()
    return load_model("torchslim:fashion_cnn")


@pytest.fixture(scope="module")
def fashion() -> Any:
    from torchslim.data import load_data

    return load_data("torchslim:fashion_mnist")  # the packaged test split


@pytest.fixture(scope="module")
def fp32_artifact(tmp_path_factory: pytest.TempPathFactory, cnn: Any) -> tuple[Path, dict]:
    """``torchslim export torchslim:fashion_cnn --runtime executorch --out DIR --json``."""
    out = tmp_path_factory.mktemp("et") / "cnn-pte"
    res = CliRunner().invoke(
        app,
        ["export", "torchslim:fashion_cnn", "--runtime", "executorch", "--out", str(out), "--json"],
    )
    assert res.exit_code == 0, res.output
    return out, json.loads(res.stdout)


@pytest.mark.slow
def test_cli_export_fp32_parity_and_fresh_process_load(
    fp32_artifact: tuple[Path, dict], cnn: Any, tmp_path: Path
) -> None:
    out, summary = fp32_artifact
    assert summary["runtime"] == "executorch"
    assert summary["parity"]["passed"] is True and summary["parity"]["precision"] == "fp32"
    assert {c["batch"] for c in summary["parity"]["cases"]} >= {1, 4}
    assert summary["files"] == ["runtime/model.pte", "runtime/runtime.json"]
    # load_artifact in a fresh process; outputs match eager FP32 on real images
    x = torch.load(  # a few real test images
        _save_images(tmp_path), weights_only=True
    )
    code = (
        "import sys, torch, torchslim\n"
        f"a = torchslim.load_artifact({str(out)!r})\n"
        f"x = torch.load({str(tmp_path / 'x.pt')!r}, weights_only=True)\n"
        "assert a.capabilities.runtime == 'executorch'\n"
        f"torch.save(a(x), {str(tmp_path / 'y.pt')!r})\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    y = torch.load(tmp_path / "y.pt", weights_only=True)
    with torch.no_grad():
        ref = cnn.require_module().eval()(x)
    torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-5)
    assert torch.equal(y.argmax(1), ref.argmax(1))


def _save_images(tmp_path: Path) -> Path:
    from torchslim.data import load_data

    xs = load_data("torchslim:fashion_mnist").inputs[0][:6].contiguous()
    path = tmp_path / "x.pt"
    torch.save(xs, path)
    return path


def test_size_accounting_and_fallback_report(fp32_artifact: tuple[Path, dict]) -> None:
    out, summary = fp32_artifact
    pte = out / "runtime" / "model.pte"
    meta = json.loads((out / "runtime" / "runtime.json").read_text())
    info = meta["info"]
    assert info["program_mb"] == pte.stat().st_size / 1e6
    files = [out / f for f in summary["files"]]
    assert summary["size_mb"] == pytest.approx(sum(p.stat().st_size for p in files) / 1e6)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["runtime"] == "executorch"
    assert manifest["deployment_files"] == summary["files"]
    # planned memory: the arena for batch max_batch (8) of 1x28x28 floats holds at least the input
    assert info["batch"] == {"dynamic": True, "max_batch": 8}
    assert info["planned_memory_mb"] * 1e6 >= 8 * 28 * 28 * 4
    ops = info["delegated_ops"]
    assert ops["aten.convolution.default"] == 2 and ops["aten.linear.default"] == 2
    assert info["delegated_subgraphs"] >= 1
    # the flatten reshape uses the symbolic batch: it stays outside XNNPACK, and says why
    (fallback,) = info["fallback_ops"]
    assert fallback["op"] == "aten.view_copy.default" and fallback["count"] == 1
    assert fallback["modules"] == ["flatten (Flatten)"]
    assert "symbolic" in fallback["reason"]
    assert "executorch_prim::et_view.default" in info["portable_kernels"]


@pytest.mark.slow
def test_int8_build_parity_size_accuracy_and_round_trip(
    cnn: Any, fashion: Any, tmp_path: Path
) -> None:
    from torchslim.data import load_data
    from torchslim.evaluate import Evaluator
    from torchslim.parity import check_parity

    module = cnn.require_module().eval()
    examples = cnn.input_spec.example_inputs(batch_size=2)
    calib = load_data("torchslim:fashion_mnist?split=train&limit=128")
    cfg = ExecuTorchConfig(quantize="int8", calib="torchslim:fashion_mnist?split=train&limit=128")
    dep = build(module, cfg, examples)  # calibrates on cfg.calib
    assert dep.runtime == "executorch" and dep.info["precision"] == "int8"
    assert dep.info["quantization"]["calibration_samples"] == len(calib)  # all of them (< 300)
    assert "quantize_per_tensor" in " ".join(dep.info["delegated_ops"])
    report = check_parity(dep, module, cnn.input_spec, batch_sizes=(1, 4, 8))
    assert report.passed and report.precision == "int8"
    # INT8 program ≤ 30% of the FP32 checkpoint, ≤ 1 point accuracy loss on real test images
    ckpt_mb = Path(cnn.path).stat().st_size / 1e6
    assert dep.info["program_mb"] <= 0.30 * ckpt_mb
    test = fashion.take(500, seed=0)
    ev = Evaluator(test, "top1", batch_size=32)  # batch 32 > max_batch 8: successive calls
    base = ev.set_baseline(module)
    res = ev.evaluate(dep)
    assert base.value > 0.85
    assert (base.value - res.value) * 100 <= 1.0
    # saved and loaded: the same program, the same outputs
    dep.save(tmp_path / "int8")
    again = load_deployed(tmp_path / "int8")
    assert again.info["precision"] == "int8"
    assert (tmp_path / "int8" / "model.pte").read_bytes() == dep.program
    xs = test.inputs[0][:5]
    torch.testing.assert_close(again(xs), dep(xs))


class _CumsumHead(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cumsum(x, dim=1)


class _WithPortableOp(nn.Module):
    """Conv + pooling (XNNPACK) and a cumulative sum (no XNNPACK kernel: a portable kernel)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = _CumsumHead()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(torch.relu(self.conv(x))), 1))


def test_operator_outside_xnnpack_is_reported_and_runs_on_portable_kernels() -> None:
    from torchslim.parity import check_parity

    _need_executorch()
    torch.manual_seed(0)
    model = _WithPortableOp().eval()
    x = (torch.rand(2, 1, 10, 10),)
    dep = build(model, ExecuTorchConfig(dynamic_batch=False), x)
    assert dep.info["batch"]["dynamic"] is False and dep.info["batch"]["batch"] == 1
    fallback = {f["op"]: f for f in dep.info["fallback_ops"]}
    assert "aten.cumsum.default" in fallback
    assert fallback["aten.cumsum.default"]["modules"] == ["head (_CumsumHead)"]
    assert fallback["aten.cumsum.default"]["reason"]
    assert "aten::cumsum.out" in dep.info["portable_kernels"]
    assert "aten.convolution.default" in dep.info["delegated_ops"]
    # a static batch-1 program still serves batch 3 (three calls), matching eager
    assert check_parity(dep, model, x, batch_sizes=(1, 3)).passed


@torch.library.custom_op("torchslim_test::opaque", mutates_args=())
def _opaque(x: torch.Tensor) -> torch.Tensor:
    return x * 2


@_opaque.register_fake
def _opaque_fake(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


class _Opaque(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _opaque(x)


class _WithCustomOp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.odd = _Opaque()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.odd(self.conv(x)).mean((2, 3))


def test_operator_that_cannot_be_lowered_names_it_and_its_module() -> None:
    _need_executorch()
    with pytest.raises(ExportError) as err:
        build(_WithCustomOp().eval(), ExecuTorchConfig(), (torch.rand(2, 1, 8, 8),))
    assert "torchslim_test::opaque" in err.value.message
    assert "odd (_Opaque)" in err.value.message
    assert "another runtime" in (err.value.hint or "")


@pytest.mark.slow
def test_pruned_artifact_exports(cnn: Any, fashion: Any, tmp_path: Path) -> None:
    from torchslim.artifact import load_artifact, save_artifact
    from torchslim.passes.prune import PruneConfig
    from torchslim.pipeline import RunData, run_recipe
    from torchslim.recipe import Recipe

    cand = run_recipe(
        Recipe((PruneConfig(ratio=0.5),), ExecuTorchConfig()),
        cnn,
        data=RunData(eval=fashion.take(256, seed=0)),
        measure=False,
        raise_errors=True,
    )
    assert cand.runtime == "executorch" and cand.parity is not None and cand.parity.passed
    assert cand.params is not None and cand.params < 0.5 * cand.baseline_params
    save_artifact(cand, tmp_path / "pruned-pte")
    art = load_artifact(tmp_path / "pruned-pte")
    xs = fashion.inputs[0][:4]
    with torch.no_grad():
        ref = cand.built.module(xs)
    torch.testing.assert_close(art(xs), ref, rtol=1e-4, atol=1e-5)
    pte = tmp_path / "pruned-pte" / "runtime" / "model.pte"
    assert pte.stat().st_size < 0.5 * Path(cnn.path).stat().st_size


def test_unavailable_without_the_package(
    monkeypatch: pytest.MonkeyPatch, fp32_artifact: tuple[Path, dict]
) -> None:
    from torchslim.runtimes import executorch as et_runtime

    out, _ = fp32_artifact
    for name in [m for m in sys.modules if m == "executorch" or m.startswith("executorch.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "executorch", None)  # import executorch -> ImportError
    entry = next(e for e in list_runtimes() if e.name == "executorch")
    assert not entry.available() and "executorch" in (entry.reason() or "")
    model, x = nn.Linear(4, 2).eval(), (torch.rand(2, 4),)
    for call in (
        lambda: build(model, ExecuTorchConfig(), x),
        lambda: load_deployed(out / "runtime"),
        lambda: et_runtime.build(model, ExecuTorchConfig(), x),  # called directly too
    ):
        with pytest.raises(BackendUnavailableError) as err:
            call()
        assert "executorch" in err.value.message
        assert "torchslim[edge]" in (err.value.hint or "")


def test_cli_option_checks() -> None:
    runner = CliRunner()
    res = runner.invoke(
        app,
        ["export", "torchslim:fashion_cnn", "-r", "executorch", "--quantize", "int8", "-o", "x"],
    )
    assert res.exit_code == 2 and "--quantize int8 needs calibration data" in res.stderr
    res = runner.invoke(
        app,
        ["export", "torchslim:fashion_cnn", "-r", "onnxruntime", "--quantize", "int8", "-o", "x"],
    )
    assert res.exit_code == 2 and "apply to the executorch runtime" in res.stderr


def test_config_refuses_code_as_calibration_data() -> None:
    from torchslim.errors import TorchslimError
    from torchslim.runtimes.executorch import calibration_inputs

    with pytest.raises(TorchslimError, match="names Python code"):
        calibration_inputs(
            ExecuTorchConfig(quantize="int8", calib="evil.module:factory"), (torch.rand(1, 4),)
        )
    with pytest.raises(TorchslimError, match="Unknown ExecuTorch quantization"):
        ExecuTorchConfig(quantize="int4")
