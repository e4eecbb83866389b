"""Running the model on batches: one replica per device, output heads, bad-sample isolation,
and the CUDA path (pinned inputs copied ``non_blocking`` on a side stream while the previous
batch computes)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torchslim.errors import BackendUnavailableError, TorchslimError

if TYPE_CHECKING:
    from torch import Tensor

    from torchslim.models import LoadedModel
    from torchslim.predict._sources import Batch

__all__ = ["Head", "Replica", "Result", "cuda_prefetch", "make_replicas", "parse_devices"]


def parse_devices(device: str) -> list[str]:
    """``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"cuda:0,1"`` → torch device strings.

    Raises:
        TorchslimError: Unknown device, or CUDA asked for where torch sees no GPU.
        BackendUnavailableError: No CUDA GPU (or not that many).
    """
    text = device.strip().lower()
    if text == "cpu":
        return ["cpu"]
    if not text.startswith("cuda"):
        raise TorchslimError(
            f"Unknown device '{device}'.", "Use --device cpu, cuda, cuda:0 or cuda:0,1."
        )
    import torch

    if not torch.cuda.is_available():
        raise BackendUnavailableError("cuda", reason="no CUDA GPU is visible to torch")
    count = torch.cuda.device_count()
    _, _, rest = text.partition(":")
    try:
        ids = [int(v) for v in rest.split(",") if v.strip()] if rest else [0]
    except ValueError:
        ids = []
    if not ids or len(set(ids)) != len(ids) or any(not 0 <= i < count for i in ids):
        raise TorchslimError(
            f"Invalid device '{device}' ({count} GPU(s) visible).",
            f"Use cuda:0 … cuda:{count - 1}, comma-separated for several.",
        )
    return [f"cuda:{i}" for i in ids]


@dataclass
class Result:
    """The model's answer for the good samples of one batch (on the CPU).

    Attributes:
        index: Input positions (int64 array).
        ids: Sample ids/paths.
        label_ids: ``(N, K)`` int64 top-k class indices (classifiers), else ``None``.
        scores: ``(N, K)`` float32 softmax probabilities of those classes, else ``None``.
        output: ``(N, ...)`` raw outputs / embeddings (non-classifiers), else ``None``.
        skipped: Samples left out of this batch, with their reason.
    """

    index: Any
    ids: list[str]
    label_ids: Any = None
    scores: Any = None
    output: Any = None
    skipped: list[Any] | None = None
    span: tuple[int, int] = (0, 0)
    labels: Any = None

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class Head:
    """What is kept from the model's output.

    Attributes:
        topk: Top-k classes for a classifier (``0``: raw outputs).
        classify: Whether outputs are class logits.
    """

    topk: int
    classify: bool

    def apply(self, out: Tensor) -> dict[str, Any]:
        """Reduce a batch of outputs on its device, then bring the result to the CPU."""
        import torch

        if self.classify and self.topk > 0 and out.dim() == 2:
            k = min(self.topk, out.shape[1])
            probs = torch.softmax(out.float(), dim=1)
            scores, ids = torch.topk(probs, k, dim=1)
            return {"label_ids": ids.cpu().numpy(), "scores": scores.cpu().numpy()}
        return {"output": out.detach().cpu().numpy()}


def first_output(out: Any) -> Tensor:
    """The tensor a model call returned (the first of a tuple/list, ``logits`` of a dict)."""
    import numpy as np
    import torch

    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, np.ndarray):
        return torch.from_numpy(out)
    if isinstance(out, dict) or hasattr(out, "keys"):
        for key in ("logits", "embeddings", "last_hidden_state"):
            if key in out:
                return first_output(out[key])
        return first_output(next(iter(out.values())))
    if isinstance(out, (tuple, list)) and out:
        return first_output(out[0])
    raise TorchslimError(
        f"The model returned {type(out).__name__}, not a tensor.",
        "Predict needs a model that returns a tensor (or a tuple whose first item is one).",
    )


class Replica:
    """One copy of the model on one device.

    Args:
        fn: Calls the model on torch tensors already on ``device``.
        device: Torch device string.
        head: What to keep of the outputs.
    """

    def __init__(self, fn: Callable[..., Any], device: str, head: Head) -> None:
        self.fn = fn
        self.device = device
        self.head = head

    def raw(self, *inputs: Tensor) -> Tensor:
        """The model's first output for ``inputs``."""
        import torch

        with torch.inference_mode():
            return first_output(self.fn(*inputs))

    def run(self, batch: Batch, inputs: tuple[Tensor, ...] | None = None) -> Result:
        """Predict one batch; a failing batch is re-run sample by sample so that only the
        samples the model refuses are skipped (with the model's error as reason)."""
        from torchslim.predict._sources import Skipped

        skipped = list(batch.skipped)
        if not len(batch):
            return Result(batch.index, [], skipped=skipped, span=batch.span)
        xs = inputs if inputs is not None else self._to_device(batch.inputs)
        try:
            out = self.raw(*xs)
            _check_rows(out, len(batch))
            cols = self.head.apply(out)
            return Result(batch.index, list(batch.ids), skipped=skipped, span=batch.span, **cols)
        except Exception as exc:
            if _is_oom(exc) or len(batch) == 1:
                if _is_oom(exc):
                    raise
                skipped.append(Skipped(int(batch.index[0]), batch.ids[0], _reason(exc)))
                return Result(
                    batch.index[:0], [], skipped=sorted(skipped, key=_by_index), span=batch.span
                )
        return self._one_by_one(batch, xs, skipped)

    def _one_by_one(self, batch: Batch, xs: tuple[Tensor, ...], skipped: list[Any]) -> Result:
        import numpy as np

        from torchslim.predict._sources import Skipped

        keep: list[int] = []
        parts: list[dict[str, Any]] = []
        for j in range(len(batch)):
            try:
                out = self.raw(*(x[j : j + 1] for x in xs))
                _check_rows(out, 1)
                parts.append(self.head.apply(out))
                keep.append(j)
            except Exception as exc:
                if _is_oom(exc):
                    raise
                skipped.append(Skipped(int(batch.index[j]), batch.ids[j], _reason(exc)))
        cols = {k: np.concatenate([p[k] for p in parts]) for k in (parts[0] if parts else {})}
        return Result(
            batch.index[keep],
            [batch.ids[j] for j in keep],
            skipped=sorted(skipped, key=_by_index),
            span=batch.span,
            **cols,
        )

    def _to_device(self, inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        if self.device == "cpu":
            return inputs
        return tuple(x.to(self.device, non_blocking=True) for x in inputs)


def _by_index(s: Any) -> int:
    return int(s.index)


def _check_rows(out: Tensor, n: int) -> None:
    if out.dim() == 0 or out.shape[0] != n:
        raise TorchslimError(
            f"The model returned {tuple(out.shape)} for a batch of {n}: no batch dimension.",
            "Predict needs outputs with the batch first.",
        )


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc)
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    return f"the model failed on it: {type(exc).__name__}: {lines[0] if lines else ''}"[:300]


def _is_oom(exc: BaseException) -> bool:
    text = str(exc).lower()
    return (
        type(exc).__name__ == "OutOfMemoryError"
        or isinstance(exc, MemoryError)
        or (isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate" in text))
    )


def _onnx_fn(path: Any, threads: int | None) -> Callable[..., Any]:
    import torch

    from torchslim.measure import _onnx_predictor

    predict = _onnx_predictor(path, threads=threads)

    def fn(*xs: Tensor) -> Tensor:
        out = predict(*(x.numpy() for x in xs))
        first = out[0] if isinstance(out, (list, tuple)) else out
        return torch.from_numpy(first)

    return fn


def make_replicas(
    loaded: LoadedModel, devices: list[str], head: Head, *, threads: int | None = None
) -> list[Replica]:
    """One replica per device: the module moved there (a deep copy for every extra GPU), a
    runtime artifact (ONNX Runtime, OpenVINO: CPU only) called as it is.

    Raises:
        TorchslimError: A CPU-only runtime asked to run on a GPU, or a model with nothing to run.
    """
    deployed = getattr(loaded, "deployed", None)
    if deployed is not None:
        dev = str(getattr(deployed, "info", {}).get("device", "cpu"))
        if any(d.startswith("cuda") for d in devices) and dev == "cpu":
            raise TorchslimError(
                f"'{loaded.source}' runs in {getattr(deployed, 'runtime', 'a CPU runtime')}, "
                "which was built for the CPU.",
                "Use --device cpu, or export the model for a GPU runtime (tensorrt).",
            )
        return [Replica(deployed, devices[0], head)]
    if loaded.module is None:
        if loaded.onnx_path is None:
            raise TorchslimError(f"'{loaded.source}' has nothing to run.")
        if devices != ["cpu"]:
            raise TorchslimError(
                "ONNX files run on the CPU in predict.", "Use --device cpu for an .onnx model."
            )
        return [Replica(_onnx_fn(loaded.onnx_path, threads), "cpu", head)]
    from torchslim._safe_load import eval_mode

    module = eval_mode(loaded.module)
    replicas = []
    for n, dev in enumerate(devices):
        m = module if n == 0 else copy.deepcopy(module)
        replicas.append(Replica(eval_mode(m.to(dev)), dev, head))
    return replicas


def cuda_prefetch(
    batches: Iterable[Batch], device: str, *, overlap: bool = True
) -> Iterator[tuple[Batch, tuple[Tensor, ...]]]:
    """Yield ``(batch, inputs on device)``; with ``overlap`` the next batch's (pinned) inputs
    are already being copied on a side stream while the caller computes on the current one.

    The compute stream waits on the copy's event before using the inputs, and each input is
    marked as used by the compute stream (``record_stream``) so the caching allocator does not
    hand its memory to the next copy too early.
    """
    import torch

    dev = torch.device(device)
    compute = torch.cuda.current_stream(dev)
    if not overlap:
        for b in batches:
            yield b, tuple(x.to(dev) for x in b.inputs)
        return
    side = torch.cuda.Stream(dev)
    pending: tuple[Batch, tuple[Tensor, ...], Any] | None = None
    for b in batches:
        with torch.cuda.stream(side):
            xs = tuple(x.to(dev, non_blocking=True) for x in b.inputs)
            event = torch.cuda.Event()
            event.record(side)
        if pending is not None:
            yield _ready(pending, compute)
        pending = (b, xs, event)
    if pending is not None:
        yield _ready(pending, compute)


def _ready(
    pending: tuple[Batch, tuple[Tensor, ...], Any], compute: Any
) -> tuple[Batch, tuple[Tensor, ...]]:
    b, xs, event = pending
    compute.wait_event(event)
    for x in xs:
        x.record_stream(compute)
    return b, xs
