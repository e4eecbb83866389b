"""optimize's report: self-contained HTML (parses, plot, tables, per-layer facts, checklist,
machine) and Markdown, from a search's JSON — and the HTML rendered in headless Chromium with no
console errors and a working sortable table."""

from __future__ import annotations

import html.parser
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any, ClassVar

import pytest

from torchslim.report import render_search_markdown, render_search_report, svg_pareto


def _cand(key: str, status: str, ratio1: float, ratio64: float, acc: float, **kw: Any) -> dict:
    return {
        "key": key,
        "status": status,
        "steps": [f"step {key}"],
        "accuracy": acc,
        "drop_points": 100 * (0.9 - acc),
        "drop_ci95": [0.0, 0.5],
        "cosine": 0.999,
        "latency_ms": {"1": 2.0 / ratio1, "64": 40.0 / ratio64},
        "speedup": {
            "1": {"ratio": ratio1, "ci95": [ratio1 * 0.9, ratio1 * 1.1]},
            "64": {"ratio": ratio64, "ci95": [ratio64 * 0.9, ratio64 * 1.1]},
        },
        "size_mb": 1.0 / ratio1,
        "runtime": "openvino",
        "reason": None if status == "accepted" else "accuracy drop 2.00 points is over 1",
        "percent_of_peak": {"1": 12.5},
        "details": {},
        **kw,
    }


@pytest.fixture()
def data() -> dict[str, Any]:
    chosen = _cand(
        "c1",
        "accepted",
        1.8,
        2.9,
        0.9,
        details={
            "pruned_channels": {"layer1.conv1": [64, 32], "layer2.conv1": [128, 64]},
            "kept_float": {"fc": "sensitivity rank 1 of 9"},
        },
    )
    return {
        "chosen": chosen,
        "baseline": {
            "source": "torchslim:fashion_resnet",
            "accuracy": 0.9,
            "eval_data": "fashion",
            "eval_samples": 2000,
            "latency_ms": {"1": 2.0, "64": 40.0},
            "size_mb": 2.5,
            "percent_of_peak": {"1": 5.0, "64": 40.0},
            "peak_gflops": {"fp32": 100.0},
        },
        "candidates": [
            chosen,
            _cand("c2", "rejected", 3.0, 3.5, 0.88),
            _cand("c3", "pruned", 1.0, 1.0, 0.8, latency_ms={}, speedup={}, size_mb=None),
            {"key": "c4", "status": "failed", "steps": ["boom"], "reason": "exit code -11"},
        ],
        "pareto": ["c1", "c2"],
        "artifact": "out/best",
        "out": "out",
        "seconds": 12.0,
        "stopped": "space exhausted",
        "constraints": {"max_drop_points": 1.0, "batch_size": 1, "batch_sizes": [1, 64]},
        "machine": {"cpu_model": "Test CPU", "versions": {"torch": "2.14.1"}, "fingerprint": "x"},
        "checklist": [
            {"severity": "warn", "title": "Conv-BN not fused", "recommendation": "fuse them"}
        ],
    }


class _Strict(html.parser.HTMLParser):
    VOID: ClassVar[set[str]] = {
        "meta",
        "br",
        "hr",
        "img",
        "input",
        "link",
        "line",
        "rect",
        "circle",
    }

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        self.tags.append(tag)
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in self.VOID:
            return
        assert self.stack and self.stack[-1] == tag, f"unbalanced </{tag}> (open: {self.stack})"
        self.stack.pop()


def test_html_report_parses_and_has_every_section(data: dict[str, Any]) -> None:
    page = render_search_report(data)
    p = _Strict()
    p.feed(page)
    assert p.stack == []
    assert "<svg" in page and page.count("<circle") == 2  # failed/pruned are not plotted
    assert "geometric mean over batches 1, 64" in page  # several batches: relative latency
    assert page.count('<tr class="') == 3  # chosen, rejected, pruned in the sortable table
    assert "Failed candidates" in page and "exit code -11" in page
    assert "layer1.conv1" in page and "50%" in page  # per-layer widths of the chosen
    assert "sensitivity rank 1 of 9" in page
    assert "Conv-BN not fused" in page and "Test CPU" in page and "torch 2.14.1" in page
    assert "1.80× at batch 1" in page and "2.90× at batch 64" in page
    embedded = page.split('id="search-data">', 1)[1].split("</script>", 1)[0]
    assert json.loads(embedded)["chosen"]["key"] == "c1"
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")  # opens offline


def test_nothing_chosen_says_so_and_single_batch_plots_ms(data: dict[str, Any]) -> None:
    data["chosen"] = None
    data["constraints"]["batch_sizes"] = [1]
    page = render_search_report(data)
    assert "No candidate met the constraints" in page
    assert "latency p50 at batch 1 (ms)" in svg_pareto(data)


def test_markdown_report(data: dict[str, Any]) -> None:
    md = render_search_markdown(data)
    assert md.startswith("# torchslim optimize — torchslim:fashion_resnet")
    header = next(line for line in md.splitlines() if line.startswith("| recipe"))
    assert "ms b=64" in header and "speed-up b=1" in header
    rows = [line for line in md.splitlines() if line.startswith("| ") and "step c" in line]
    assert len(rows) == 3 and rows[0].startswith("| **★** step c1")
    assert all(r.count("|") == header.count("|") for r in rows)
    assert "| layer1.conv1 | 64 | 32 |" in md and "Conv-BN not fused" in md


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _render(page: Path, tmp: Path) -> tuple[str, str]:
    exe = _chromium()
    assert exe is not None
    proc = subprocess.run(
        [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp / 'profile'}",
            "--enable-logging=stderr",
            "--v=0",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, proc.stderr


@pytest.mark.skipif(
    _chromium() is None, reason="Debian's chromium is not installed (.ci/run installs it)"
)
def test_report_renders_in_headless_chromium_without_console_errors(
    data: dict[str, Any], tmp_path: Path
) -> None:
    # click the top-1 header once (ascending) and record the first row: the sort script works
    probe = (
        "<script>document.querySelector('#candidates th:nth-child(3)').click();"
        "document.body.dataset.first = document.querySelector('#candidates tbody tr td')"
        ".textContent;</script></body>"
    )
    page = tmp_path / "report.html"
    page.write_text(render_search_report(data).replace("</body>", probe), encoding="utf-8")
    dom, log = _render(page, tmp_path)
    console = [ln for ln in log.splitlines() if "CONSOLE" in ln]
    assert console == [], console
    assert "<svg" in dom and 'id="candidates"' in dom
    assert 'data-first="step c3"' in dom  # lowest top-1 first after an ascending sort
    # the check itself catches a broken page
    broken = tmp_path / "broken.html"
    broken.write_text("<html><body><script>notDefined();</script></body></html>")
    _, log = _render(broken, tmp_path)
    assert any("notDefined" in ln for ln in log.splitlines() if "CONSOLE" in ln)
