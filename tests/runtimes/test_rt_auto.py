"""Auto-selection: parity-checked builds, interleaved timing, fastest per batch size."""

from __future__ import annotations

import pytest
import torch
from rt_helpers import cnn_inputs, small_cnn

from torchslim.errors import TorchslimError
from torchslim.measure import TimingConfig
from torchslim.runtimes.auto import autotune, candidate_variants, select_runtime

FAST = TimingConfig(
    min_samples=3,
    min_time_s=0.0,
    max_time_s=0.2,
    min_warmup_calls=1,
    max_warmup_calls=3,
    warmup_window=1,
    round_time_s=0.01,
)


def test_candidates_cover_threads_hints_and_precision() -> None:
    names = [
        v.name
        for v in candidate_variants(
            ("eager", "openvino", "tensorrt"), threads=(1, 2), allow_reduced_precision=True
        )
    ]
    assert "eager·t1" in names and "eager·t2" in names
    if any(n.startswith("openvino") for n in names):
        assert "openvino·f32·throughput·t1" in names and "openvino·default·latency·t2" in names
    assert "tensorrt" not in names or torch.cuda.is_available()
    with pytest.raises(TorchslimError, match="Unknown runtime"):
        candidate_variants(("nope",))


def test_autotune_picks_fastest_per_batch() -> None:
    model = small_cnn()
    result = autotune(
        model,
        cnn_inputs(),
        runtimes=("eager", "torchscript", "onnxruntime"),
        batch_sizes=(1, 8),
        threads=(1, 2),
        timing=FAST,
    )
    assert not result.failures
    for b in (1, 8):
        rows = [r for r in result.rows if r.batch_size == b]
        assert {r.variant for r in rows} >= {
            "eager·t1",
            "eager·t2",
            "torchscript·t1",
            "onnxruntime·t1",
            "onnxruntime·t2",
        }
        best = result.best[b]
        assert best.p50_ms == min(r.p50_ms for r in rows)
        assert all(r.parity["passed"] for r in rows)
        assert next(r for r in rows if r.variant == "eager·t2").ratio_to_eager == 1.0
    data = result.to_dict()
    assert set(data["best"]) == {"1", "8"} and data["rows"]
    deployed = result.best_deployed(1)
    assert deployed(*cnn_inputs(1)).shape == (1, 5)


def test_select_runtime_returns_a_config() -> None:
    cfg, result = select_runtime(
        small_cnn(), cnn_inputs(), runtimes=("eager", "onnxruntime"), threads=(1,), timing=FAST
    )
    assert type(cfg).__name__ in ("EagerConfig", "OrtConfig")
    assert result.best_config(1) == cfg


def test_failed_variants_are_recorded_not_fatal() -> None:
    from rt_helpers import DataDependent

    with pytest.raises(TorchslimError, match="No runtime could be built"):
        autotune(
            DataDependent().eval(),
            (torch.rand(2, 4),),
            runtimes=("onnxruntime",),
            threads=(1,),
            timing=FAST,
        )
    result = autotune(
        DataDependent().eval(),
        (torch.rand(2, 4),),
        runtimes=("eager", "onnxruntime"),
        threads=(1,),
        timing=FAST,
    )
    assert [f["runtime"] for f in result.failures] == ["onnxruntime"]
    assert result.best[1].runtime == "eager"
