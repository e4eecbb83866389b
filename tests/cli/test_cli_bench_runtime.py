"""``torchslim bench --runtime`` and ``export --runtime auto``: parity-checked, cached choices."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from torchslim.cli.main import app

TINY = ["support_models:tiny", "--input-shape", "1x1x8x8"]
QUICK = ["--min-time", "0.05", "--max-time", "0.5", "--repeats", "5", "--no-peak"]


def _bench(*args: str) -> dict:
    res = CliRunner().invoke(app, ["bench", *TINY, *QUICK, "--json", *args])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_bench_on_one_runtime_reports_parity_and_fastest() -> None:
    out = _bench("--runtime", "onnxruntime", "--batch", "1,4")
    names = list(out["models"])
    assert names[0] == "support_models:tiny · eager"
    assert any("onnxruntime" in n for n in names[1:])
    info = out["runtime"]["models"]["support_models:tiny"]
    variant = next(iter(info["variants"].values()))
    assert variant["parity"]["passed"] is True
    fastest = out["runtime"]["fastest"]["support_models:tiny"]
    assert set(fastest) == {"1", "4"}


def test_bench_auto_caches_its_choice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCHSLIM_CACHE_DIR", str(tmp_path))
    first = _bench("--runtime", "auto")
    assert first["runtime"]["models"]["support_models:tiny"]["cached"] is False
    assert list((tmp_path / "auto").glob("*.json"))
    second = _bench("--runtime", "auto")
    info = second["runtime"]["models"]["support_models:tiny"]
    assert info["cached"] is True
    assert (
        info["choice"]["choices"]
        == first["runtime"]["models"]["support_models:tiny"]["choice"]["choices"]
    )


def test_export_auto_uses_the_cached_choice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCHSLIM_CACHE_DIR", str(tmp_path / "cache"))
    _bench("--runtime", "auto")
    res = CliRunner().invoke(
        app, ["export", *TINY, "--runtime", "auto", "--out", str(tmp_path / "o"), "--json"]
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["auto"]["cached"] is True
    assert out["parity"]["passed"] is True
    assert (tmp_path / "o" / "runtime" / "runtime.json").exists()


def test_unknown_runtime_is_a_clear_error() -> None:
    res = CliRunner().invoke(app, ["bench", *TINY, *QUICK, "--runtime", "warpdrive"])
    assert res.exit_code == 2
    assert "Unknown runtime 'warpdrive'" in res.stderr


@pytest.mark.slow
def test_bench_all_runtimes_parity_checked_and_fastest_named() -> None:
    from torchslim.runtimes import RUNTIMES, list_runtimes
    from torchslim.runtimes.auto import DEFAULT_RUNTIMES

    out = _bench("--runtime", "all", "--batch", "1", "--threads", "1")
    list_runtimes()
    expected = {n for n in DEFAULT_RUNTIMES if RUNTIMES.get(n).available()}
    # everything CI installs is available here (tensorrt needs a GPU)
    assert expected >= {"eager", "inductor", "torchscript", "onnxruntime", "openvino"}
    info = out["runtime"]["models"]["support_models:tiny"]
    assert info["failures"] == []
    variants = info["variants"]
    assert {v["runtime"] for v in variants.values()} == expected
    for label, v in variants.items():
        assert v["parity"]["passed"] is True, label
        assert label in out["models"]  # and each one was measured
        rec = out["models"][label]["batches"]["1"]
        assert rec["latency_ms"]["p50"] > 0 and rec["ratio_vs_first"]["speedup"] > 0
    assert out["runtime"]["mode"] == "all"
    fastest = out["runtime"]["fastest"]["support_models:tiny"]["1"]
    names = {label.split(" · ", 1)[1] for label in out["models"]}
    assert fastest in names
    best = min(out["models"].values(), key=lambda m: m["batches"]["1"]["latency_ms"]["p50"])
    assert out["models"][f"support_models:tiny · {fastest}"] == best
