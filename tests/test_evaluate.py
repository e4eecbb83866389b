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


def _polar(n: int = 200, seed: int = 0) -> tuple[torch.Tensor, DataSet]:
    """Embeddings whose first dimension carries the label, and a last dimension so large that
    the arg-max of every row is the same index (what an encoder's embeddings look like to a
    top-1 scorer: meaningless)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    emb = torch.randn(n, 8, generator=g)
    emb[:, 0] += 3.0 * (2 * y - 1)
    emb[:, -1] = 50.0
    ds = DataSet("torchslim:text_polarity", (emb, emb), y, num_classes=2, input_names=("a", "b"))
    return emb, ds


def test_polarity_items_average_to_the_cross_validated_accuracy() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import RepeatedStratifiedKFold, cross_val_score

    from torchslim.evaluate import embedding_polarity_metric, item_scores, polarity_item_scores

    emb, ds = _polar()
    emb = emb + 2.5 * torch.randn(emb.shape, generator=torch.Generator().manual_seed(1))
    items = polarity_item_scores(emb, ds)
    assert items.shape == (200,) and set(items.unique().tolist()) <= {0, 0.2, 0.4, 0.6, 0.8, 1}
    cv = RepeatedStratifiedKFold(n_splits=5, n_repeats=5, random_state=0)
    ref = cross_val_score(LogisticRegression(max_iter=2000), emb.double().numpy(), ds.labels, cv=cv)
    assert embedding_polarity_metric(emb, ds) == pytest.approx(float(ref.mean()), abs=1e-12)
    assert 0.6 < float(items.mean()) < 0.95  # noisy enough that items differ
    same = item_scores(embedding_polarity_metric, emb, ds)
    assert same is not None and torch.equal(same, items)
    assert item_scores(lambda o, d: 0.5, emb, ds) is None  # a user's metric cannot be resampled


def test_metric_for_scores_encoders_by_their_embeddings_not_argmax() -> None:
    from torchslim.evaluate import embedding_polarity_metric, metric_for

    emb, ds = _polar()
    assert metric_for(ds, "embedding") is embedding_polarity_metric
    assert metric_for(ds, "unknown") is embedding_polarity_metric  # text_polarity: an encoder
    assert metric_for(ds, "classification") is top1_accuracy  # a classifier's own logits
    assert metric_for(DataSet("x", (emb,)), "embedding") is None  # no labels: fidelity only
    assert top1_accuracy(emb, ds) == 0.0  # what arg-max says about these embeddings
    assert embedding_polarity_metric(emb, ds) > 0.95  # what they are worth
    assert Evaluator(ds, top1_accuracy).metric_name == "top1"
