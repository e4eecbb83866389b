"""Tests for torchslim.machine: /proc/cpuinfo parsing, fingerprint, GEMM peak and its cache."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from torchslim import machine
from torchslim.machine import PeakFlops, machine_info, machine_peak, measure_peak, parse_cpuinfo

X86_CPUINFO = """\
processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu vme sse sse2 fma avx avx2 avx512f avx512_vnni avx512_bf16 amx_tile amx_bf16 \
amx_int8 avx512_fp16

processor\t: 1
model name\t: Some Other Name
flags\t\t: fpu
"""

ARM_CPUINFO = """\
processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics asimddp sve i8mm bf16
CPU implementer\t: 0x41
"""


def test_parse_x86_cpuinfo_reads_first_block() -> None:
    model, flags = parse_cpuinfo(X86_CPUINFO)
    assert model == "Intel(R) Xeon(R) Platinum 8480+"
    assert {"avx2", "avx512_vnni", "amx_int8"} <= flags
    assert "fpu" in flags and len(flags) > 5


def test_parse_arm_cpuinfo() -> None:
    model, flags = parse_cpuinfo(ARM_CPUINFO)
    assert model is None
    assert {"asimd", "asimddp", "sve", "i8mm", "bf16"} <= flags


def test_machine_info_from_sample_text() -> None:
    info = machine_info(cpuinfo=X86_CPUINFO, include_gpu=False)
    assert info.cpu_model == "Intel(R) Xeon(R) Platinum 8480+"
    assert info.isa == (
        "amx_bf16",
        "amx_int8",
        "amx_tile",
        "avx2",
        "avx512_bf16",
        "avx512_fp16",
        "avx512_vnni",
        "avx512f",
        "fma",
    )
    assert info.logical_cores >= 1 and 1 <= info.usable_cores <= info.logical_cores
    assert info.versions["torch"] is not None
    assert info.gpu is None
    fp = info.fingerprint
    assert len(fp) == 12 and int(fp, 16) >= 0
    assert fp == machine_info(cpuinfo=X86_CPUINFO, include_gpu=False).fingerprint
    assert fp != machine_info(cpuinfo=ARM_CPUINFO, include_gpu=False).fingerprint
    d = info.to_dict()
    assert d["fingerprint"] == fp and d["isa"] == list(info.isa)
    json.dumps(d)
    assert "Platinum" in info.summary() and fp in info.summary()


def test_measure_peak_tiny_gemm_restores_threads() -> None:
    before = torch.get_num_threads()
    peak = measure_peak(threads=1, size=64, min_time_s=0.0, fingerprint="abc")
    assert torch.get_num_threads() == before
    assert peak.threads == 1 and peak.fingerprint == "abc" and peak.device == "cpu"
    assert peak.gflops["fp32"] > 0 and peak.sizes["fp32"] == 64
    assert set(peak.gflops) <= {"fp32", "bf16", "int8"}
    assert peak.for_dtype("int8") is not None
    assert peak.for_dtype("fp16") == ("fp32", peak.gflops["fp32"])


@pytest.fixture
def quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend the machine is idle, so measured peaks are cached."""
    monkeypatch.setattr(machine, "_loadavg", lambda: 0.5)


def _fake_measure(calls: list[dict[str, Any]], gflops: dict[str, float]):
    def measure(**kw: Any) -> PeakFlops:
        calls.append(kw)
        return PeakFlops(
            dict(gflops),
            {k: 64 for k in gflops},
            kw["threads"],
            kw["device"],
            kw["fingerprint"],
            0.5,
        )

    return measure


def test_peak_cache_written_atomically_and_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, quiet: None
) -> None:
    monkeypatch.setenv("TORCHSLIM_CACHE_DIR", str(tmp_path / "cache"))
    assert machine.cache_dir() == tmp_path / "cache"
    info = machine_info(cpuinfo=X86_CPUINFO, include_gpu=False)
    replaced: list[tuple[str, str]] = []
    real_replace = os.replace

    def spy_replace(src: str, dst: str) -> None:
        replaced.append((str(src), str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(machine.os, "replace", spy_replace)
    calls: list[dict[str, Any]] = []
    first = machine_peak(threads=3, info=info, measure=_fake_measure(calls, {"fp32": 100.0}))
    assert len(calls) == 1 and calls[0]["threads"] == 3 and not first.cached

    path = tmp_path / "cache" / f"peak-{info.fingerprint}-cpu-t3.json"
    assert path.exists()
    ((tmp, dst),) = replaced
    assert dst == str(path) and Path(tmp).parent == path.parent and tmp != dst
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp left
    data = json.loads(path.read_text())
    assert data["peak"]["gflops"] == {"fp32": 100.0}
    assert data["machine"]["fingerprint"] == info.fingerprint

    again = machine_peak(threads=3, info=info, measure=_fake_measure(calls, {"fp32": 1.0}))
    assert len(calls) == 1 and again.cached and again.gflops == {"fp32": 100.0}

    # Another thread count is another entry.
    machine_peak(threads=1, info=info, measure=_fake_measure(calls, {"fp32": 50.0}))
    assert len(calls) == 2


def test_peak_cache_refresh_keeps_maximum_and_survives_corruption(
    tmp_path: Path, quiet: None
) -> None:
    info = machine_info(cpuinfo=X86_CPUINFO, include_gpu=False)
    calls: list[dict[str, Any]] = []
    machine_peak(
        threads=2,
        info=info,
        directory=tmp_path,
        measure=_fake_measure(calls, {"fp32": 100.0, "int8": 10.0}),
    )
    busy = machine_peak(
        threads=2,
        info=info,
        directory=tmp_path,
        refresh=True,
        measure=_fake_measure(calls, {"fp32": 40.0, "int8": 30.0}),
    )
    assert busy.gflops == {"fp32": 100.0, "int8": 30.0}

    path = tmp_path / f"peak-{info.fingerprint}-cpu-t2.json"
    path.write_text("{not json")
    fixed = machine_peak(
        threads=2, info=info, directory=tmp_path, measure=_fake_measure(calls, {"fp32": 70.0})
    )
    assert len(calls) == 3 and fixed.gflops == {"fp32": 70.0}
    assert json.loads(path.read_text())["peak"]["gflops"] == {"fp32": 70.0}


def test_peak_measured_on_a_busy_machine_is_not_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    info = machine_info(cpuinfo=X86_CPUINFO, include_gpu=False)
    monkeypatch.setattr(machine, "_loadavg", lambda: info.usable_cores + 5.0)
    calls: list[dict[str, Any]] = []
    peak = machine_peak(
        threads=2, info=info, directory=tmp_path, measure=_fake_measure(calls, {"fp32": 5.0})
    )
    assert peak.gflops == {"fp32": 5.0} and peak.busy(info.usable_cores)
    assert list(tmp_path.iterdir()) == []


def test_peak_flops_round_trip() -> None:
    peak = PeakFlops({"fp32": 1.5, "bf16": 3.0}, {"fp32": 64, "bf16": 64}, 2, "cpu", "f", 0.1)
    assert PeakFlops.from_dict(json.loads(json.dumps(peak.to_dict()))) == peak
    assert "fp32" in peak.summary() and "2 threads" in peak.summary()
