"""Untrusted ``.pt2`` and TorchScript files: nothing in them runs; genuine files still load.

Each malicious file below is a genuine ``torch.export.save`` archive with one member changed the
way an attacker would. Loaded with ``trust_pickle=True`` (plain ``torch.export.load``) each one does
run its payload, which proves that the guard, not luck, is what stops it.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import logging
import os
import pickle
import subprocess
import sys
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from torchslim._safe_load import (
    _check_graph_callables,
    eval_mode,
    is_exported_program_archive,
    load_exported_program,
    load_torchscript,
    pickle_stream_problem,
)
from torchslim.errors import SourceError, UntrustedPickleError
from torchslim.models import load_model

FAST = ["--repeats", "3", "--min-time", "0", "--max-time", "0.2"]
ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}


class Small(nn.Module):
    """Linear + Dropout: eval mode matters, and the batch axis is exported dynamic."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.drop = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc(x)).relu()


class RunsShell:
    """Unpickling this runs a shell command, as a malicious checkpoint would."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (self.command,))


def _torch_saved(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _touch(marker: Path) -> str:
    return f"touch '{marker}'"


@pytest.fixture(scope="module")
def genuine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    module = Small().eval()
    x = torch.randn(3, 4)
    ep = torch.export.export(module, (x,), dynamic_shapes=({0: torch.export.Dim.DYNAMIC},))
    path = tmp_path_factory.mktemp("genuine") / "good.pt2"
    torch.export.save(ep, str(path))
    return path, module, x


def _rewrite(src: Path, dst: Path, change: Callable[[str, bytes], bytes | None]) -> Path:
    """Copy the zip ``src`` to ``dst``, replacing each member for which ``change`` returns bytes."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            new = change(info.filename.split("/", 1)[1], data)
            zout.writestr(info, data if new is None else new)
    return dst


def _root(path: Path) -> str:
    with zipfile.ZipFile(path) as zf:
        return zf.namelist()[0].split("/", 1)[0]


def _edit_json(data: bytes, edit: Callable[[Any], None]) -> bytes:
    doc = json.loads(data)
    edit(doc)
    return json.dumps(doc).encode()


def _walk(doc: Any) -> list[dict[str, Any]]:
    out, stack = [], [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            out.append(node)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return out


# ---- the attacks ---------------------------------------------------------------------------


def evil_sample_inputs(good: Path, dst: Path, marker: Path) -> Path:
    """The reviewer's repro: the example-inputs member is a pickle that runs a command."""
    payload = _torch_saved(RunsShell(_touch(marker)))
    return _rewrite(
        good, dst, lambda n, d: payload if n.startswith("data/sample_inputs/") else None
    )


def evil_pickled_weight(good: Path, dst: Path, marker: Path) -> Path:
    """A weight marked ``use_pickle`` (torch loads those with weights_only=False)."""
    payload = _torch_saved(RunsShell(_touch(marker)))

    def change(name: str, data: bytes) -> bytes | None:
        if name == "data/weights/model_weights_config.json":
            return _edit_json(data, lambda d: d["config"]["fc.weight"].update(use_pickle=True))
        if name == "data/weights/weight_0":
            return payload
        return None

    return _rewrite(good, dst, change)


def evil_opaque_constant(good: Path, dst: Path, marker: Path) -> Path:
    """An ``opaque_obj_`` constant, which torch reads with pickle.loads."""
    entry = {
        "path_name": "opaque_obj_0",
        "is_param": False,
        "use_pickle": True,
        "tensor_meta": None,
    }

    def change(name: str, data: bytes) -> bytes | None:
        if name == "data/constants/model_constants_config.json":
            return _edit_json(data, lambda doc: doc["config"].update(c0=entry))
        return None

    _rewrite(good, dst, change)
    with zipfile.ZipFile(dst, "a") as zf:
        payload = pickle.dumps(RunsShell(_touch(marker)))
        zf.writestr(f"{_root(dst)}/data/constants/opaque_obj_0", payload)
    return dst


def evil_shape_expression(good: Path, dst: Path, marker: Path) -> Path:
    """No pickle at all: torch hands every ``expr_str`` to sympy.sympify, which is eval."""

    def edit(doc: Any) -> None:
        node = next(n for n in _walk(doc) if "expr_str" in n)
        node["expr_str"] += f" + 0*__import__('os').system({_touch(marker)!r})"

    return _rewrite(
        good, dst, lambda n, d: _edit_json(d, edit) if n == "models/model.json" else None
    )


def evil_spec_import(good: Path, dst: Path, marker: Path) -> Path:
    """An enum in a pytree spec makes torch import the module it names (and so run it)."""
    module = f"torchslim_probe_{marker.parent.name.replace('-', '_')}"
    (marker.parent / f"{module}.py").write_text(
        f"import enum\nopen({str(marker)!r}, 'w').close()\nclass E(enum.Enum):\n    A = 1\n"
    )
    ref = [{"__enum__": True, "fqn": f"{module}:E", "name": "A"}]

    def edit(doc: Any) -> None:
        node = next(n for n in _walk(doc) if "in_spec" in n)
        spec = json.loads(node["in_spec"])
        kwargs = next(n for n in _walk(spec) if n.get("type") == "builtins.dict")
        kwargs["context"] = json.dumps(ref)
        node["in_spec"] = json.dumps(spec)

    return _rewrite(
        good, dst, lambda n, d: _edit_json(d, edit) if n == "models/model.json" else None
    )


ATTACKS = {
    "sample_inputs": evil_sample_inputs,
    "pickled_weight": evil_pickled_weight,
    "opaque_constant": evil_opaque_constant,
    "shape_expression": evil_shape_expression,
    "spec_import": evil_spec_import,
}


@pytest.fixture
def evil(
    genuine: tuple[Path, nn.Module, torch.Tensor], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[[str], tuple[Path, Path, bytes]]:
    """``make(kind) -> (file, marker, original bytes)``; the spec-import module is importable."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def make(kind: str, name: str = "evil.pt2") -> tuple[Path, Path, bytes]:
        marker = tmp_path / "MARKER"
        path = ATTACKS[kind](genuine[0], tmp_path / name, marker)
        return path, marker, path.read_bytes()

    return make


# ---- the guard stops each attack on every loader path ---------------------------------------


@pytest.mark.parametrize("kind", sorted(ATTACKS))
def test_load_model_refuses_and_runs_nothing(evil: Callable[..., Any], kind: str) -> None:
    path, marker, before = evil(kind)
    with pytest.raises(UntrustedPickleError) as info:
        load_model(str(path))
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    assert "--trust-pickle" in (info.value.hint or "") and "your own" in (info.value.hint or "")
    assert not marker.exists()
    assert path.read_bytes() == before


@pytest.mark.parametrize("kind", sorted(ATTACKS))
def test_trusted_load_does_run_the_payload(evil: Callable[..., Any], kind: str) -> None:
    """The control: plain torch.export.load runs each payload, so the guard is what stopped it."""
    path, marker, _ = evil(kind)
    with warnings.catch_warnings(), contextlib.suppress(Exception):
        warnings.simplefilter("ignore")
        load_exported_program(path, trust_pickle=True)  # may fail after the payload ran
    assert marker.exists()


def test_exported_program_zip_named_pt_goes_through_the_guard(evil: Callable[..., Any]) -> None:
    path, marker, before = evil("sample_inputs", name="evil.pt")
    assert is_exported_program_archive(path)
    with pytest.raises(UntrustedPickleError, match=r"data/sample_inputs/model\.pt"):
        load_model(str(path))
    with pytest.raises(UntrustedPickleError):  # --trust-pickle's checkpoint path is not reached
        load_model(str(path), arch="torchvision:resnet18")
    assert not marker.exists() and path.read_bytes() == before


def test_exported_runtime_directory_refuses(
    genuine: tuple[Path, nn.Module, torch.Tensor], evil: Callable[..., Any], tmp_path: Path
) -> None:
    from torchslim.runtimes import exported
    from torchslim.runtimes.configs import ExportConfig

    good, module, x = genuine
    ep = load_exported_program(good)
    directory = tmp_path / "out"
    exported.ExportedDeployed(ep.module(), ExportConfig(), ["input"], 0.0, ep).save(directory)
    loaded = exported.load(directory)  # a genuine output directory still loads and runs
    torch.testing.assert_close(loaded(x), module(x))

    path, marker, _ = evil("sample_inputs")
    (directory / "model.pt2").write_bytes(path.read_bytes())
    with pytest.raises(UntrustedPickleError, match="sample_inputs"):
        exported.load(directory)
    assert not marker.exists()


def test_legacy_format_is_checked_too(
    genuine: tuple[Path, nn.Module, torch.Tensor], tmp_path: Path
) -> None:
    """torch.export.load re-reads a zip as the pre-2.7 format when the PT2 path fails."""
    from torch._export.serde.schema import SCHEMA_VERSION
    from torch._export.serde.serialize import serialize

    good, module, x = genuine
    art = serialize(load_exported_program(good))
    marker = tmp_path / "MARKER"

    def write(path: Path, example_inputs: bytes) -> Path:
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("serialized_exported_program.json", art.exported_program)
            zf.writestr("serialized_state_dict.pt", art.state_dict)
            zf.writestr("serialized_constants.pt", art.constants)
            zf.writestr("serialized_example_inputs.pt", example_inputs)
            zf.writestr("version", ".".join(map(str, SCHEMA_VERSION)))
        return path

    legacy = write(tmp_path / "legacy.pt2", art.example_inputs)
    torch.testing.assert_close(load_exported_program(legacy).module()(x), module(x))
    bad = write(tmp_path / "bad.pt2", _torch_saved(RunsShell(_touch(marker))))
    with pytest.raises(UntrustedPickleError, match=r"serialized_example_inputs\.pt"):
        load_exported_program(bad)
    assert not marker.exists()


def test_aoti_code_is_refused(
    genuine: tuple[Path, nn.Module, torch.Tensor], tmp_path: Path
) -> None:
    path = _rewrite(genuine[0], tmp_path / "aoti.pt2", lambda n, d: None)
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr(f"{_root(path)}/data/aotinductor/model/model.so", b"\x7fELF not really")
    with pytest.raises(UntrustedPickleError, match="AOTInductor"):
        load_exported_program(path)


def test_duplicate_member_names_are_refused(
    genuine: tuple[Path, nn.Module, torch.Tensor], tmp_path: Path
) -> None:
    """zipfile and torch's reader could pick different copies of a duplicated name."""
    path = _rewrite(genuine[0], tmp_path / "dup.pt2", lambda n, d: None)
    with warnings.catch_warnings(), zipfile.ZipFile(path, "a") as zf:
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate
        zf.writestr(f"{_root(path)}/models/model.json", b"{}")
    with pytest.raises(SourceError, match="two members"):
        load_exported_program(path)


def test_callable_smuggled_into_the_graph_is_refused(
    genuine: tuple[Path, nn.Module, torch.Tensor],
) -> None:
    ep = load_exported_program(genuine[0])
    node = next(n for n in ep.graph.nodes if n.op == "call_function")
    node.args = (*node.args, os.system)  # what an 'as_operator' argument can name
    with pytest.raises(UntrustedPickleError, match="system"):
        _check_graph_callables(genuine[0], ep)


def test_patches_and_loggers_are_restored(evil: Callable[..., Any]) -> None:
    import sympy
    import torch.utils._pytree as pytree
    from torch._export.serde import serialize
    from torch.export.pt2_archive import _package

    real_load = torch.load
    path, _, _ = evil("sample_inputs")
    # skip the member checks so the load itself hits the weights-only backstop
    import torchslim._safe_load as safe_load

    checks = safe_load._check_archive
    safe_load._check_archive = lambda *a: None  # type: ignore[assignment]
    try:
        with pytest.raises(UntrustedPickleError, match="needs full unpickling"):
            load_exported_program(path)
    finally:
        safe_load._check_archive = checks
    assert torch.load is real_load and _package.pickle is pickle
    assert serialize.sympy is sympy and pytree.importlib is importlib
    assert not logging.getLogger("torch.export").disabled
    assert not logging.getLogger("torch._export.serde.serialize").disabled


# ---- genuine files, corrupt files, messages -------------------------------------------------


def test_genuine_pt2_loads_runs_and_matches(genuine: tuple[Path, nn.Module, torch.Tensor]) -> None:
    path, module, x = genuine
    before = path.read_bytes()
    loaded = load_model(str(path))
    assert loaded.kind == "exported" and loaded.input_spec is not None
    out = loaded.require_module()(x)
    torch.testing.assert_close(out, module(x))
    torch.testing.assert_close(loaded.require_module()(x[:1]), module(x[:1]))  # dynamic batch
    assert path.read_bytes() == before


def test_random_bytes_pt2_is_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "random.pt2"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(SourceError) as info:
        load_model(str(path))
    assert not isinstance(info.value, UntrustedPickleError)
    assert "not a torch.export program" in str(info.value) and "\n" not in str(info.value)


def test_zip_that_is_not_a_program_is_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt2"
    path.write_bytes(_torch_saved({"w": torch.ones(2)}))  # a torch.save zip, not a program
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("torch.export")  # torch.export.load logs a traceback here
    logger.addHandler(handler)
    try:
        with pytest.raises(SourceError, match=r"not a loadable torch\.export program") as info:
            load_model(str(path))
    finally:
        logger.removeHandler(handler)
    assert "warnings above" not in str(info.value) and "\n" not in str(info.value)
    assert records == [] and not logger.disabled


def test_random_bytes_pt_is_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "random.pt"
    path.write_bytes(b"x" + os.urandom(4095))  # 'x' is no pickle opcode
    for trust in (False, True):
        with pytest.raises(SourceError, match="is not a PyTorch checkpoint") as info:
            load_model(str(path), trust_pickle=trust)
        assert not isinstance(info.value, UntrustedPickleError)
        assert "trust" not in str(info.value).lower()
    assert pickle_stream_problem(path) is not None


def test_real_pickle_still_gets_the_trust_hint(tmp_path: Path) -> None:
    path = tmp_path / "full.pt"
    torch.save(Small(), path)
    assert pickle_stream_problem(path) is None
    with pytest.raises(UntrustedPickleError) as info:
        load_model(str(path))
    assert "--trust-pickle" in (info.value.hint or "")


def test_exported_program_detection_reads_names_only(tmp_path: Path) -> None:
    module = torch.jit.script(Small())
    scripted = tmp_path / "models.pt"  # top folder 'models/': must not look like a program
    torch.jit.save(module, str(scripted))
    ckpt = tmp_path / "weights.pt"
    torch.save(Small().state_dict(), ckpt)
    assert not is_exported_program_archive(scripted)
    assert not is_exported_program_archive(ckpt)
    assert load_model(str(scripted)).kind == "torchscript"


def test_torchscript_pickles_are_refused_by_torch_itself(tmp_path: Path) -> None:
    """Evidence for load_torchscript's docstring: its C++ unpickler takes no Python globals."""
    good = tmp_path / "good.ts"
    torch.jit.save(torch.jit.script(Small().eval()), str(good))
    marker = tmp_path / "MARKER"
    payload = pickle.dumps(RunsShell(_touch(marker)), protocol=2)
    for member in ("data.pkl", "constants.pkl"):

        def swap(name: str, data: bytes, member: str = member) -> bytes | None:
            return payload if name == member else None

        bad = _rewrite(good, tmp_path / f"bad_{member}.ts", swap)
        with pytest.raises(SourceError, match="not a loadable TorchScript") as info:
            load_torchscript(bad)
        assert "\n" not in str(info.value)
        with pytest.raises(SourceError):
            load_model(str(bad))
    assert not marker.exists()
    assert load_torchscript(good)(torch.ones(2, 4)).shape == (2, 3)  # the genuine one still loads


def test_eval_mode_handles_exported_modules(genuine: tuple[Path, nn.Module, torch.Tensor]) -> None:
    gm = load_exported_program(genuine[0]).module()
    with pytest.raises(NotImplementedError):
        gm.eval()  # what torch does, and why the helper exists
    wrapper = nn.Sequential(gm, nn.Dropout())
    for m in wrapper.modules():  # .train() raises too
        m.training = True
    with pytest.raises(NotImplementedError):
        wrapper.eval()  # a module holding one refuses as well
    assert eval_mode(wrapper) is wrapper
    assert not any(m.training for m in wrapper.modules())
    plain = Small().train()
    assert not eval_mode(plain).training and not plain.drop.training


# ---- the CLI: exit code 2, one line, no traceback -------------------------------------------


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "torchslim.cli.main", *args],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_inspect_evil_pt2(evil: Callable[..., Any], tmp_path: Path) -> None:
    path, marker, before = evil("sample_inputs")
    result = _cli("inspect", str(path), "--json", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    err = json.loads(result.stdout)  # under --json: one error object on stdout
    assert err["exit_code"] == 2 and "data/sample_inputs/model.pt" in err["error"]
    assert "error:" in result.stderr and "data/sample_inputs/model.pt" in result.stderr
    assert "--trust-pickle" in result.stderr
    assert not marker.exists() and path.read_bytes() == before


def test_cli_inspect_random_pt2(tmp_path: Path) -> None:
    path = tmp_path / "random.pt2"
    path.write_bytes(os.urandom(4096))
    result = _cli("inspect", str(path), "--json", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "not a torch.export program" in errors[0]


def test_trust_pickle_lets_the_payload_run(
    genuine: tuple[Path, nn.Module, torch.Tensor], tmp_path: Path
) -> None:
    """In a child process with cwd=tmp_path: with trust the file's code runs (marker appears)."""
    path = evil_sample_inputs(genuine[0], tmp_path / "evil.pt2", Path("MARKER"))
    code = (
        "from torchslim.models import load_model\n"
        "try:\n    load_model('evil.pt2', trust_pickle=True)\n"
        "except Exception as exc:\n    print(type(exc).__name__)\n"
    )
    subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=ENV, capture_output=True, timeout=300
    )
    assert (tmp_path / "MARKER").exists()
    assert path.exists()


@pytest.fixture
def fake_peak(monkeypatch: pytest.MonkeyPatch) -> None:
    """Skip the GEMM peak benchmark (bench needs a number, not a measurement, here)."""
    from torchslim import machine

    def measure(**kw: Any) -> machine.PeakFlops:
        return machine.PeakFlops(
            {"fp32": 10.0}, {"fp32": 64}, kw["threads"], kw["device"], kw["fingerprint"], 0.01
        )

    monkeypatch.setattr(machine, "measure_peak", measure)


def _bench(*sources: str) -> dict[str, Any]:
    from torchslim.cli.main import app

    result = CliRunner().invoke(app, ["bench", *sources, "--batch", "1,2", *FAST, "--json"])
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def test_cli_bench_pt2(genuine: tuple[Path, nn.Module, torch.Tensor], fake_peak: None) -> None:
    report = _bench(str(genuine[0]))
    rec = report["models"][str(genuine[0])]["batches"]
    assert set(rec) == {"1", "2"} and rec["1"]["latency_ms"]["n"] >= 3


@pytest.mark.slow
def test_cli_bench_on_torchslim_export_output(tmp_path: Path, fake_peak: None) -> None:
    from torchslim.cli.main import app

    out = tmp_path / "D"
    result = CliRunner().invoke(
        app, ["export", "torchslim:fashion_cnn", "--runtime", "export", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    program = next(out.rglob("*.pt2"))
    report = _bench(str(out), str(program))
    assert set(report["models"]) == {str(out), str(program)}
