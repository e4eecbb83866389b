"""Writing benchmark results into BENCHMARKS.md: each script owns one marked section."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
RESULTS = ROOT / "benchmarks" / "results"


def replace_section(key: str, markdown: str, path: Path = BENCHMARKS_MD) -> None:
    """Replace the text between ``<!-- key:start -->`` and ``<!-- key:end -->`` (or append it)."""
    start, end = f"<!-- {key}:start -->", f"<!-- {key}:end -->"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{start}\n{markdown.rstrip()}\n{end}"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    _atomic_write(path, text)


def save_json(name: str, data: Any) -> Path:
    """Write raw results to ``benchmarks/results/NAME.json`` (atomically)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    _atomic_write(path, json.dumps(data, indent=2, default=str) + "\n")
    return path


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def fmt(value: float | None, digits: int = 2) -> str:
    """Format a number for a table (``—`` for missing)."""
    return "—" if value is None else f"{value:.{digits}f}"
