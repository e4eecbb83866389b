"""Task metrics and output fidelity against a baseline.

Every transformed model is judged twice on the same inputs: by the task metric when real labels
exist (top-1 accuracy by default, or any callable), and always by fidelity to the baseline's
outputs (top-1 agreement, cosine similarity, max absolute error, SQNR). Synthetic data yields
fidelity only — never an accuracy number.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import Tensor

    from torchslim.data import DataSet

__all__ = [
    "EvalResult",
    "Evaluator",
    "Fidelity",
    "embedding_polarity_metric",
    "fidelity",
    "item_scores",
    "metric_for",
    "paired_bootstrap_drop",
    "polarity_item_scores",
    "predict",
    "top1_accuracy",
    "top1_correct",
]

Predict = Callable[..., Any]
Metric = Callable[["Tensor", "DataSet"], float]


@dataclass(frozen=True)
class Fidelity:
    """How closely outputs follow the baseline's on the same inputs.

    Attributes:
        agreement: Fraction of samples whose arg-max matches the baseline's (classification).
        cosine: Mean per-sample cosine similarity of the output vectors.
        max_abs_error: Largest absolute difference of any output element.
        mean_abs_error: Mean absolute difference.
        sqnr_db: Signal-to-quantisation-noise ratio in dB (higher is better; ∞ when identical).
        samples: Number of samples compared.
    """

    agreement: float
    cosine: float
    max_abs_error: float
    mean_abs_error: float
    sqnr_db: float
    samples: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly values (∞ SQNR written as null by the CLI)."""
        return asdict(self)


def _as_tensor(out: Any) -> Tensor:
    import torch

    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out:
        return _as_tensor(out[0])
    if isinstance(out, dict) and out:
        for key in ("logits", "last_hidden_state", "pooler_output"):
            if key in out:
                return _as_tensor(out[key])
        return _as_tensor(next(iter(out.values())))
    if hasattr(out, "logits"):
        return _as_tensor(out.logits)
    if hasattr(out, "__array__"):
        return torch.as_tensor(out)
    raise TypeError(f"Cannot read model output of type {type(out).__name__}")


def predict(fn: Predict, data: DataSet, batch_size: int = 64) -> Tensor:
    """Run ``fn`` over ``data`` in batches and concatenate the outputs (float32, CPU).

    Args:
        fn: A callable taking the data's inputs positionally (a module or a deployed runtime).
        data: The samples.
        batch_size: Batch size to run at.
    """
    import torch

    outs = []
    with torch.inference_mode():
        for inputs, _ in data.batches(batch_size):
            out = _as_tensor(fn(*inputs))
            outs.append(out.detach().float().cpu().reshape(len(inputs[0]), -1))
    return torch.cat(outs) if outs else torch.zeros(0)


def top1_correct(outputs: Tensor, data: DataSet) -> Tensor:
    """Per-sample 1.0/0.0: does the arg-max equal the label (the items of top-1 accuracy)."""
    if data.labels is None:
        raise ValueError("top-1 accuracy needs labels")
    return (outputs.argmax(dim=1) == data.labels).double()


def top1_accuracy(outputs: Tensor, data: DataSet) -> float:
    """Fraction of samples whose arg-max equals the label."""
    return float(top1_correct(outputs, data).mean())


def fidelity(reference: Tensor, outputs: Tensor) -> Fidelity:
    """Compare outputs with the reference outputs on the same inputs.

    Args:
        reference: Baseline outputs, shape ``(N, ...)``.
        outputs: Outputs of the transformed model, same shape.
    """
    import torch

    ref = reference.float().reshape(len(reference), -1)
    out = outputs.float().reshape(len(outputs), -1)
    if ref.shape != out.shape:
        raise ValueError(f"output shapes differ: {tuple(ref.shape)} vs {tuple(out.shape)}")
    diff = out - ref
    noise = float(diff.pow(2).sum())
    signal = float(ref.pow(2).sum())
    sqnr = math.inf if noise == 0 else 10 * math.log10(max(signal, 1e-30) / noise)
    cos = torch.nn.functional.cosine_similarity(ref, out, dim=1, eps=1e-12)
    agree = float((ref.argmax(1) == out.argmax(1)).float().mean()) if ref.shape[1] > 1 else 1.0
    return Fidelity(
        agreement=agree,
        cosine=float(cos.mean()),
        max_abs_error=float(diff.abs().max()) if diff.numel() else 0.0,
        mean_abs_error=float(diff.abs().mean()) if diff.numel() else 0.0,
        sqnr_db=sqnr,
        samples=len(ref),
    )


@dataclass(frozen=True)
class EvalResult:
    """A model's task metric and fidelity on one data set.

    Attributes:
        metric: Name of the task metric (``"top1"``), or ``None`` for fidelity-only data.
        value: The metric's value, or ``None`` when the data has no real labels.
        fidelity: Agreement with the baseline, or ``None`` for the baseline itself.
        samples: Number of samples evaluated.
        data: Name of the data set.
        fidelity_only: True when the data is synthetic or unlabelled.
    """

    metric: str | None
    value: float | None
    fidelity: Fidelity | None
    samples: int
    data: str
    fidelity_only: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly values."""
        d = asdict(self)
        d["fidelity"] = self.fidelity.to_dict() if self.fidelity else None
        return d


class Evaluator:
    """Evaluates models on one data set against a fixed baseline.

    Example::

        ev = Evaluator(load_data("torchslim:fashion_mnist"))
        base = ev.set_baseline(model)            # metric of the original
        new = ev.evaluate(quantized)             # metric + fidelity vs the original
        drop = ev.drop(new)                      # absolute drop in metric points

    Args:
        data: Evaluation samples.
        metric: ``"top1"`` or a callable ``(outputs, data) -> float`` (higher is better).
        metric_name: Name reported for a callable metric.
        batch_size: Batch size for inference.
    """

    def __init__(
        self,
        data: DataSet,
        metric: str | Metric = "top1",
        *,
        metric_name: str | None = None,
        batch_size: int = 64,
    ) -> None:
        self.data = data
        self.batch_size = batch_size
        if metric is top1_accuracy:
            metric = "top1"
        if callable(metric):
            self._metric: Metric | None = metric
            self.metric_name: str | None = metric_name or getattr(metric, "__name__", "metric")
        elif metric == "top1":
            self._metric, self.metric_name = top1_accuracy, "top1"
        else:
            raise ValueError(f"unknown metric '{metric}'")
        if not data.has_labels and metric == "top1":
            self._metric, self.metric_name = None, None
        self._baseline_outputs: Tensor | None = None
        self.baseline: EvalResult | None = None

    def set_baseline(self, fn: Predict) -> EvalResult:
        """Evaluate the reference model and keep its outputs for fidelity."""
        outputs = predict(fn, self.data, self.batch_size)
        self._baseline_outputs = outputs
        self.baseline = self._result(outputs, None)
        return self.baseline

    def evaluate(self, fn: Predict) -> EvalResult:
        """Evaluate a model: task metric (when labels exist) and fidelity to the baseline."""
        if self._baseline_outputs is None:
            raise RuntimeError("call set_baseline() first")
        outputs = predict(fn, self.data, self.batch_size)
        return self._result(outputs, fidelity(self._baseline_outputs, outputs))

    def drop(self, result: EvalResult) -> float | None:
        """Metric drop vs the baseline in points (baseline − result), ``None`` without a metric."""
        if self.baseline is None or self.baseline.value is None or result.value is None:
            return None
        return self.baseline.value - result.value

    def _result(self, outputs: Tensor, fid: Fidelity | None) -> EvalResult:
        value = self._metric(outputs, self.data) if self._metric is not None else None
        return EvalResult(
            metric=self.metric_name,
            value=value,
            fidelity=fid,
            samples=len(self.data),
            data=self.data.name,
            fidelity_only=value is None,
        )


def polarity_item_scores(
    outputs: Any, data: DataSet, *, folds: int = 5, repeats: int = 5, seed: int = 0
) -> Tensor:
    """Per-sentence held-out correctness of a logistic-regression probe on embeddings.

    ``repeats`` differently shuffled stratified ``folds``-fold splits (seed ``seed``); the
    classifier is refit on each training fold and predicts the held-out one, so every sentence
    is predicted once per repeat by a probe that never saw it. Its score is the fraction of
    those predictions that were right; the mean over sentences is the polarity accuracy (with
    equal folds, exactly the mean of the fold scores of
    :func:`torchslim.reference.text.polarity_accuracy`). Being per item, it pairs two encoders'
    scores on the same sentences for :func:`paired_bootstrap_drop`.
    """
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import RepeatedStratifiedKFold

    if data.labels is None:
        raise ValueError("polarity accuracy needs labels")
    x = torch.as_tensor(outputs).double().numpy()
    y = data.labels.numpy()
    right = torch.zeros(len(y), dtype=torch.float64)
    cv = RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=seed)
    for train_idx, test_idx in cv.split(x, y):
        probe = LogisticRegression(max_iter=2000).fit(x[train_idx], y[train_idx])
        hit = probe.predict(x[test_idx]) == y[test_idx]
        right[torch.as_tensor(test_idx)] += torch.as_tensor(hit, dtype=torch.float64)
    return right / repeats


def embedding_polarity_metric(outputs: Any, data: DataSet) -> float:
    """Polarity accuracy of sentence embeddings (5-fold × 5 logistic regression, seed 0).

    The same recipe as :func:`torchslim.reference.text.polarity_accuracy`, computed from
    already-computed embeddings so it plugs into :class:`~torchslim.evaluate.Evaluator`:
    the mean of :func:`polarity_item_scores`.
    """
    return float(polarity_item_scores(outputs, data).mean())


embedding_polarity_metric.__name__ = "polarity_accuracy"

_ITEM_SCORES: dict[Any, Callable[[Any, DataSet], Tensor]] = {
    top1_accuracy: top1_correct,
    embedding_polarity_metric: polarity_item_scores,
}


def item_scores(metric: Metric, outputs: Any, data: DataSet) -> Tensor | None:
    """Per-item scores whose mean is ``metric``, for a paired bootstrap of the drop.

    Known for top-1 (:func:`top1_correct`) and polarity accuracy (:func:`polarity_item_scores`);
    ``None`` for a user's own callable, whose value can be compared but not resampled.
    """
    fn = _ITEM_SCORES.get(metric)
    return None if fn is None else fn(outputs, data)


def metric_for(data: DataSet, task: str = "unknown") -> Metric | None:
    """The task metric a model of ``task`` is judged by on ``data`` (``None``: no labels).

    Top-1 for classifiers; polarity accuracy of the embeddings for sentence encoders on labelled
    text. A model of unknown task on ``text_polarity`` is taken for a sentence encoder; one that
    says it is a classifier (an ``hf:`` sequence classifier) is scored on its own logits (top-1).
    Scoring an encoder's embeddings by arg-max would compare the index of its largest embedding
    value with the label: a number that means nothing.
    """
    if not data.has_labels:
        return None
    text = len(data.inputs) == 2 and data.num_classes == 2 and data.name.endswith("text_polarity")
    if task == "embedding" or (text and task == "unknown"):
        return embedding_polarity_metric
    return top1_accuracy


def paired_bootstrap_drop(
    baseline_correct: Any, candidate_correct: Any, *, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """95% paired-bootstrap interval of the accuracy drop, in points.

    The same resampled items are scored for both models (paired), so the interval reflects the
    disagreement between them, not the variance of each accuracy alone.

    Args:
        baseline_correct: Per-item 0/1 (or bool) correctness of the baseline.
        candidate_correct: The candidate's, on the same items in the same order.
        resamples: Bootstrap resamples.
        seed: Random seed.

    Returns:
        ``(low, high)`` of ``100 × (baseline − candidate)`` accuracy.
    """
    import torch

    b = torch.as_tensor(baseline_correct, dtype=torch.float64).flatten()
    c = torch.as_tensor(candidate_correct, dtype=torch.float64).flatten()
    if b.shape != c.shape or b.numel() == 0:
        raise ValueError("paired bootstrap needs two equally long, non-empty correctness vectors")
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, b.numel(), (resamples, b.numel()), generator=gen)
    drops = 100.0 * (b[idx].mean(dim=1) - c[idx].mean(dim=1))
    lo, hi = torch.quantile(drops, torch.tensor([0.025, 0.975], dtype=torch.float64))
    return float(lo), float(hi)
