"""Task metrics and fidelity."""

from __future__ import annotations

import math

import pytest
import torch

from torchslim.data import DataSet
from torchslim.evaluate import Evaluator, fidelity, predict, top1_accuracy


def test_fidelity_identical_and_perturbed() -> None:
    ref = torch.tensor([[1.0, 2.0, 3.0], [3.0, 1.0, 0.0]])
    same = fidelity(ref, ref.clone())
    assert same.agreement == 1.0 and same.max_abs_error == 0.0 and math.isinf(same.sqnr_db)
    assert same.cosine == pytest.approx(1.0)
    noisy = ref + torch.tensor([[0.0, 0.0, 0.1], [0.0, 0.0, 0.0]])
    f = fidelity(ref, noisy)
    assert f.max_abs_error == pytest.approx(0.1)
    # SQNR = 10 log10(sum ref^2 / sum noise^2) = 10 log10(24 / 0.01)
    assert f.sqnr_db == pytest.approx(10 * math.log10(24 / 0.01), rel=1e-4)
    flipped = fidelity(ref, torch.tensor([[3.0, 2.0, 1.0], [3.0, 1.0, 0.0]]))
    assert flipped.agreement == 0.5
    with pytest.raises(ValueError):
        fidelity(ref, ref[:, :2])


def test_top1_and_predict_batches() -> None:
    x = torch.eye(5)
    ds = DataSet("eye", (x,), torch.tensor([0, 1, 2, 3, 0]), num_classes=5)
    out = predict(lambda t: t * 2, ds, batch_size=2)
    assert out.shape == (5, 5)
    assert top1_accuracy(out, ds) == pytest.approx(0.8)


def test_evaluator_reports_metric_fidelity_and_drop() -> None:
    x = torch.randn(40, 4, generator=torch.Generator().manual_seed(0))
    y = x.argmax(1)
    ds = DataSet("toy", (x,), y, num_classes=4)
    ev = Evaluator(ds, batch_size=16)
    base = ev.set_baseline(lambda t: t)
    assert base.value == 1.0 and base.fidelity is None
    worse = ev.evaluate(lambda t: t + torch.tensor([0.5, 0.0, 0.0, 0.0]))
    assert worse.value is not None and worse.value < 1.0
    assert worse.fidelity is not None and worse.fidelity.agreement == worse.value
    assert ev.drop(worse) == pytest.approx(1.0 - worse.value)


def test_synthetic_data_never_gives_accuracy() -> None:
    ds = DataSet("synthetic", (torch.rand(8, 3),), torch.zeros(8, dtype=torch.long), synthetic=True)
    ev = Evaluator(ds)
    base = ev.set_baseline(lambda t: t)
    assert base.value is None and base.fidelity_only
    res = ev.evaluate(lambda t: t * 1.01)
    assert res.value is None and res.fidelity is not None and ev.drop(res) is None
