"""``_deps.need``: a missing declared dependency skips locally and fails in CI, never passes."""

from __future__ import annotations

import sys

import pytest

from _deps import EXTRAS, need


def test_need_returns_the_module() -> None:
    import gensim

    assert need("gensim") is gensim
    assert need("sklearn", "gensim").__name__ == "sklearn"  # the first one asked for


@pytest.mark.parametrize("ci", ["true", ""])
def test_missing_module_fails_in_ci_and_skips_elsewhere(
    monkeypatch: pytest.MonkeyPatch, ci: str
) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    monkeypatch.setenv("CI", ci)
    expected = pytest.fail.Exception if ci else pytest.skip.Exception
    with pytest.raises(expected, match=r"torchslim\[openvino\]"):
        need("openvino")


def test_core_dependencies_are_not_guarded() -> None:
    assert "onnxruntime" not in EXTRAS and "torchvision" not in EXTRAS
    with pytest.raises(ValueError, match="import it directly"):
        need("onnxruntime")
