"""Layers without circles: no import cycle inside torchslim, and each floor imports only floors
below it (imports inside functions count; ``TYPE_CHECKING`` blocks do not). Floors as in
DESIGN.md: 0 values and mechanisms, 1 sources, 2 judging, 3 the work (passes ⟂ runtimes, both may
use lowering), 4 composition and conveniences, 5 entry points."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = "torchslim"

FLOORS: dict[str, int] = {
    "errors": 0,
    "config": 0,
    "_registry": 0,
    "specs": 0,
    "_io": 0,
    "machine": 0,
    "_json": 0,
    "_version": 0,
    "_scoped": 0,
    "_safe_load": 0,
    "_ray": 0,
    "models": 1,
    "data": 1,
    "reference": 1,
    "doctor": 2,
    "evaluate": 2,
    "parity": 2,
    "measure": 2,
    "timing": 2,
    "_memory": 2,
    "lowering": 3,
    "compare": 2,
    "passes": 3,
    "runtimes": 3,
    "train": 3,
    "recipe": 4,
    "candidate": 4,
    "pipeline": 4,
    "artifact": 4,
    "slim": 4,
    "quantization": 4,
    "demo": 4,
    "search": 4,
    "report": 4,
    "serve": 4,
    "predict": 4,
    "profile": 4,
    "cli": 5,
}
# Within floor 1, reference models/data are above the loaders (models/data reach them through
# the registry hooks wired in torchslim/__init__.py).
SUBFLOOR = {"models": 0, "data": 0, "reference": 1}


def _modules() -> dict[str, Path]:
    mods = {}
    for p in (SRC / PKG).rglob("*.py"):
        parts = list(p.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = p
    return mods


def _edges() -> dict[str, set[str]]:
    mods = _modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rsplit(".", 1)[0] if "." in name else ""
        return name or None

    edges: dict[str, set[str]] = {m: set() for m in mods}
    for m, p in mods.items():
        tree = ast.parse(p.read_text(encoding="utf-8"))
        skip: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                for n in node.body:
                    skip.update(id(x) for x in ast.walk(n))
        is_pkg = p.name == "__init__.py"
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = m.split(".") if is_pkg else m.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
            for t in targets:
                if t.split(".")[0] != PKG:
                    continue
                r = resolve(t)
                if r and r != m and r != PKG:
                    edges[m].add(r)
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in edges:
        if v not in index:
            strong(v)
    return out


def _top(module: str) -> str:
    return module.split(".")[1] if "." in module else module


def test_no_import_cycles() -> None:
    assert _cycles(_edges()) == []


def test_every_module_has_a_floor() -> None:
    missing = sorted({_top(m) for m in _modules() if m != PKG} - set(FLOORS))
    assert missing == [], f"add these to FLOORS (and DESIGN.md): {missing}"


def test_each_floor_imports_only_floors_below() -> None:
    bad = []
    for m, targets in _edges().items():
        if m == PKG:
            continue
        fm = _top(m)
        for t in targets:
            ft = _top(t)
            if ft == fm:
                continue
            if FLOORS[ft] > FLOORS[fm] or (
                FLOORS[ft] == FLOORS[fm] and SUBFLOOR.get(ft, 0) > SUBFLOOR.get(fm, 0)
            ):
                bad.append(f"{m} -> {t}")
    assert bad == []


@pytest.mark.parametrize(
    ("a", "b"),
    [("passes", "runtimes"), ("runtimes", "passes")],
)
def test_passes_and_runtimes_never_import_each_other(a: str, b: str) -> None:
    bad = [
        f"{m} -> {t}"
        for m, targets in _edges().items()
        if _top(m) == a
        for t in targets
        if _top(t) == b
    ]
    assert bad == []
