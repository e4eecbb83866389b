"""Knowledge distillation and fine-tuning: the trainer that wins accuracy back after pruning.

One loop, four ways to teach a student (``DistillConfig.method``):

* ``kd`` — logit distillation from a teacher: ``(1 - alpha) · CE(student, labels) +
  alpha · T² · KL(softmax(teacher / T) ‖ softmax(student / T))`` (only the soft term without
  labels), plus optional **feature distillation** on intermediate layers (forward hooks, MSE,
  learnable 1x1 adapters when channel counts differ). For an embedding model (a sentence
  encoder, whose outputs are unit-length vectors rather than logits) the target is the
  teacher's embedding itself: ``1 - cos(student, teacher)`` (``loss="cosine"``, what ``auto``
  picks) or ``MSE`` (``loss="mse"``), so unlabelled text is enough to train on;
* ``finetune`` — labels only (cross-entropy), no teacher;
* ``self`` — self-distillation from an exponential moving average (EMA) of the student.

The loop has AdamW or SGD, a cosine/linear/constant LR schedule with warm-up (driven by steps or
by a wall-clock budget), bf16 autocast where the CPU/GPU supports it, a rich progress bar,
evaluation with early stopping (restoring the best weights), atomic checkpoints that let an
interrupted run resume with the same result (written every ``checkpoint_every`` steps, every
``checkpoint_every_s`` seconds, and on SIGINT/SIGTERM, which stop training at the end of the
current step), and DDP through ``torch.distributed`` when launched
with ``torchrun`` (gloo on CPU, NCCL on GPU): every rank sees its share of the same global batch,
so the result matches a single-process run.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torchslim.config import config_to_dict, config_type
from torchslim.errors import DataError, TorchslimError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from torchslim.data import DataSet

__all__ = ["DistillConfig", "DistillMethod", "TrainResult", "fit"]

_CKPT = "checkpoint.pt"
_LOSSES = ("auto", "kl", "cosine", "mse")


class DistillMethod(str, Enum):
    """How the student is taught."""

    KD = "kd"
    FINETUNE = "finetune"
    SELF = "self"


@config_type("DistillConfig")
@dataclass(frozen=True)
class DistillConfig:
    """How to distil or fine-tune a student.

    Attributes:
        method: ``kd`` (teacher logits, + features), ``finetune`` (labels only) or ``self``
            (EMA of the student as teacher).
        temperature: Softmax temperature of the soft targets.
        alpha: Weight of the soft (distillation) loss; ``1 - alpha`` goes to the label loss.
        features: Feature-distillation pairs, ``"student.layer"`` (same name in the teacher) or
            ``"student.layer=teacher.layer"``.
        feature_weight: Weight of the feature (MSE) loss.
        loss: The distillation loss on the outputs: ``kl`` (softened logits, above), ``cosine``
            (``1 - cos`` between student and teacher outputs, for embedding models), ``mse``, or
            ``auto`` (default): ``cosine`` when the teacher is an embedding model (it has an
            ``embedding_dim`` or returns unit-length rows), else ``kl``. With ``cosine`` and
            ``mse`` labels are not used (embeddings have no classes) and the evaluation data
            gives no top-1 metric, so the last weights are kept.
        ema_decay: EMA decay for ``method="self"``.
        epochs: Passes over the training data (fractions allowed).
        max_steps: Stop after this many optimiser steps (overrides ``epochs``).
        time_budget_s: Stop after this many seconds; the LR schedule follows elapsed time.
        batch_size: Global batch size (split across DDP ranks).
        lr: Peak learning rate.
        optimizer: ``adamw`` or ``sgd``.
        weight_decay: Weight decay.
        momentum: SGD momentum.
        schedule: ``cosine``, ``linear`` or ``constant``.
        warmup_steps: Linear warm-up steps.
        amp: ``off`` (default), ``bf16`` (autocast; error if unsupported) or ``auto`` (bf16 where
            the hardware has native bf16).
        eval_every: Evaluate every N steps (0: at the end of each epoch and at the end).
        patience: Early stopping: stop after this many evaluations without improvement (0: off).
        restore_best: Return the best evaluated weights rather than the last ones.
        checkpoint_dir: Write resumable checkpoints here (atomically); an existing checkpoint
            there is resumed. SIGINT (Ctrl-C) and SIGTERM stop training at the end of the
            current step and save a checkpoint first (a second signal stops at once).
        checkpoint_every: Steps between checkpoints.
        checkpoint_every_s: Also checkpoint when this many seconds passed since the last one
            (``None``: by steps only). Neither interval changes the result.
        seed: Seed for data order, dropout and adapters.
    """

    method: DistillMethod = DistillMethod.KD
    temperature: float = 4.0
    alpha: float = 0.7
    features: tuple[str, ...] = ()
    feature_weight: float = 1.0
    loss: str = "auto"
    ema_decay: float = 0.99
    epochs: float = 1.0
    max_steps: int | None = None
    time_budget_s: float | None = None
    batch_size: int = 128
    lr: float = 1e-3
    optimizer: str = "adamw"
    weight_decay: float = 1e-4
    momentum: float = 0.9
    schedule: str = "cosine"
    warmup_steps: int = 0
    amp: str = "off"
    eval_every: int = 0
    patience: int = 0
    restore_best: bool = True
    checkpoint_dir: str | None = None
    checkpoint_every: int = 50
    seed: int = 0
    checkpoint_every_s: float | None = 60.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "method", DistillMethod(self.method))
        checks = [
            (self.temperature > 0, "temperature must be > 0"),
            (0.0 <= self.alpha <= 1.0, "alpha must be in [0, 1]"),
            (self.epochs > 0, "epochs must be > 0"),
            (self.max_steps is None or self.max_steps > 0, "max_steps must be > 0"),
            (self.time_budget_s is None or self.time_budget_s > 0, "time_budget_s must be > 0"),
            (self.batch_size > 0, "batch_size must be > 0"),
            (self.lr > 0, "lr must be > 0"),
            (self.optimizer in ("adamw", "sgd"), "optimizer must be adamw or sgd"),
            (
                self.schedule in ("cosine", "linear", "constant"),
                "schedule must be cosine, linear or constant",
            ),
            (self.amp in ("off", "bf16", "auto"), "amp must be off, bf16 or auto"),
            (
                self.loss in _LOSSES,
                f"loss must be one of {', '.join(_LOSSES)}",
            ),
            (0.0 <= self.ema_decay < 1.0, "ema_decay must be in [0, 1)"),
            (self.checkpoint_every > 0, "checkpoint_every must be > 0"),
            (
                self.checkpoint_every_s is None or self.checkpoint_every_s > 0,
                "checkpoint_every_s must be > 0",
            ),
        ]
        for ok, msg in checks:
            if not ok:
                raise TorchslimError(f"Invalid DistillConfig: {msg}.", "Fix the value and retry.")


@dataclass
class TrainResult:
    """What :func:`fit` did.

    Attributes:
        module: The trained student (the same object that was passed in).
        steps: Optimiser steps taken in total (including those before a resume).
        epochs: Epochs completed (fractional).
        seconds: Wall-clock time of this call.
        history: One entry per evaluation / log point: step, loss, metric.
        best_metric: Best evaluation metric seen (``None`` without evaluation data).
        stopped_early: True when early stopping ended the run.
        resumed_from: Step the run resumed from (``None`` for a fresh run).
        amp: The autocast dtype used (``"bf16"``) or ``None``.
        loss: The distillation loss used on the outputs (``kl``, ``cosine``, ``mse``), or
            ``None`` without a teacher.
    """

    module: Any
    steps: int
    epochs: float
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)
    best_metric: float | None = None
    stopped_early: bool = False
    resumed_from: int | None = None
    amp: str | None = None
    loss: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly summary (without the module)."""
        return {
            "steps": self.steps,
            "epochs": round(self.epochs, 4),
            "seconds": round(self.seconds, 3),
            "best_metric": self.best_metric,
            "stopped_early": self.stopped_early,
            "resumed_from": self.resumed_from,
            "amp": self.amp,
            "loss": self.loss,
            "history": self.history,
        }


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def bf16_supported(device: str = "cpu") -> bool:
    """True when this machine has native bf16 compute (AVX-512 BF16 / AMX on CPU, sm80+ GPU)."""
    import torch

    if device.startswith("cuda"):
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _logits(out: Any) -> torch.Tensor:
    from torchslim.evaluate import _as_tensor

    return _as_tensor(out)


class _FeatureTap:
    """Forward hooks that keep the output of named sub-modules."""

    def __init__(self, module: nn.Module, names: list[str], role: str) -> None:
        mods = dict(module.named_modules())
        self.outputs: dict[str, torch.Tensor] = {}
        self.handles = []
        for n in names:
            if n not in mods:
                raise TorchslimError(
                    f"Feature layer '{n}' does not exist in the {role}.",
                    "Name a sub-module as printed by print(model), e.g. layer2.1.",
                )
            self.handles.append(mods[n].register_forward_hook(self._hook(n)))

    def _hook(self, name: str) -> Callable[..., None]:
        def hook(_mod: Any, _inp: Any, out: Any) -> None:
            self.outputs[name] = _logits(out)

        return hook

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def _adapter(s_shape: torch.Size, t_shape: torch.Size) -> nn.Module:
    """A learnable map from the student's feature shape to the teacher's (1x1 conv / linear)."""
    from torch import nn

    if s_shape[1:] == t_shape[1:]:
        return nn.Identity()
    if len(s_shape) == 4:
        return nn.Conv2d(s_shape[1], t_shape[1], 1, bias=False)
    return nn.Linear(s_shape[-1], t_shape[-1], bias=False)


def _feature_loss(s: torch.Tensor, t: torch.Tensor, adapter: nn.Module) -> torch.Tensor:
    import torch.nn.functional as F

    s = adapter(s.float())
    if s.dim() == 4 and s.shape[-2:] != t.shape[-2:]:
        s = F.adaptive_avg_pool2d(s, (int(t.shape[-2]), int(t.shape[-1])))
    return F.mse_loss(s, t.float())


def _is_embedding_model(teacher: nn.Module, probe: tuple[torch.Tensor, ...]) -> bool:
    """True for a model whose outputs are embeddings (unit-length rows), not class logits."""
    import torch

    if getattr(teacher, "embedding_dim", None) is not None:
        return True
    with torch.no_grad():
        out = _logits(teacher(*probe)).float()
    if out.dim() != 2 or out.shape[-1] < 2:
        return False
    return bool(torch.allclose(out.norm(dim=-1), torch.ones(out.shape[0]), atol=1e-3))


def _output_loss(kind: str, out: torch.Tensor, t_out: torch.Tensor, temp: float) -> torch.Tensor:
    """The distillation loss between student and teacher outputs (see ``DistillConfig.loss``)."""
    import torch.nn.functional as F

    if kind == "cosine":
        return (1 - F.cosine_similarity(out, t_out, dim=-1)).mean()
    if kind == "mse":
        return F.mse_loss(out, t_out)
    return (
        F.kl_div(
            F.log_softmax(out / temp, dim=-1),
            F.log_softmax(t_out / temp, dim=-1),
            reduction="batchmean",
            log_target=True,
        )
        * temp
        * temp
    )


def _dist() -> tuple[int, int]:
    """(rank, world size); initialises the process group when launched by torchrun."""
    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or not dist.is_available():
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


def _lr_factor(cfg: DistillConfig, progress: float, step: int) -> float:
    warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
    p = min(max(progress, 0.0), 1.0)
    if cfg.schedule == "cosine":
        return warm * 0.5 * (1 + math.cos(math.pi * p))
    if cfg.schedule == "linear":
        return warm * (1 - p)
    return warm


def _save_atomic(obj: Any, path: Path) -> None:
    """Write ``obj`` to a temporary file, flush it to disk, then rename it over ``path``."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


# Fields that only say when checkpoints are written: they never change the result, so a run may
# resume with other values (checkpoint_every stays in the key, as in checkpoints already written).
_NOT_IN_CKPT_KEY = frozenset({"checkpoint_dir", "checkpoint_every_s"})


class _Interrupts:
    """SIGINT/SIGTERM handling while training: a signal asks to stop at the end of the step.

    The first signal sets :attr:`pending` (the loop then saves a checkpoint and raises
    ``KeyboardInterrupt``); a second one raises ``KeyboardInterrupt`` at once. Installed only in
    the main thread; SIGINT only while it has Python's default handler. Old handlers come back
    on exit.
    """

    def __init__(self) -> None:
        self.pending: int | None = None

    def _handler(self, signum: int, _frame: Any) -> None:
        if self.pending is not None:
            raise KeyboardInterrupt
        self.pending = signum

    @contextlib.contextmanager
    def installed(self) -> Iterator[_Interrupts]:
        old: dict[signal.Signals, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                current = signal.getsignal(sig)
                if current is None or (
                    sig == signal.SIGINT and current is not signal.default_int_handler
                ):
                    continue  # a handler set outside Python, or the program's own Ctrl-C handling
                with contextlib.suppress(ValueError, OSError):
                    signal.signal(sig, self._handler)
                    old[sig] = current
        try:
            yield self
        finally:
            for signum, handler in old.items():
                signal.signal(signum, handler)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


def _check_state_dict(module: nn.Module, saved: Any, what: str) -> None:
    """Raise ValueError unless ``saved`` has exactly ``module``'s tensor names and shapes."""
    import torch

    if not isinstance(saved, dict):
        raise ValueError(f"the {what} state is not a dict")
    own = module.state_dict()
    missing, extra = sorted(set(own) - set(saved)), sorted(set(saved) - set(own))
    if missing or extra:
        raise ValueError(
            f"the {what} does not match the checkpoint (missing {missing[:3]}, extra {extra[:3]})"
        )
    for k, v in own.items():
        other = saved[k]
        if not isinstance(other, torch.Tensor) or other.shape != v.shape:
            got = tuple(other.shape) if isinstance(other, torch.Tensor) else type(other).__name__
            raise ValueError(
                f"the {what} does not match the checkpoint ('{k}': {tuple(v.shape)} vs {got})"
            )


def _evaluate(module: nn.Module, data: DataSet, batch_size: int) -> float:
    from torchslim.evaluate import predict, top1_accuracy

    was = module.training
    module.eval()
    try:
        return top1_accuracy(predict(module, data, batch_size), data)
    finally:
        module.train(was)


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


def fit(
    student: nn.Module,
    train: DataSet | None,
    config: DistillConfig | None = None,
    *,
    teacher: nn.Module | None = None,
    eval_data: DataSet | None = None,
    progress: bool = False,
    callback: Callable[[int, dict[str, Any]], None] | None = None,
    device: str | None = None,
) -> TrainResult:
    """Train ``student`` in place by distillation or fine-tuning.

    Args:
        student: The model to train (modified in place and returned in the result).
        train: Training samples; labels are needed for ``finetune`` and used by ``kd``.
        config: How to train (default :class:`DistillConfig`).
        teacher: The teacher for ``method="kd"`` (frozen, eval mode).
        eval_data: Labelled samples for the eval metric (top-1), early stopping and
            ``restore_best``.
        progress: Show a progress bar on stderr (rank 0 only).
        callback: Called as ``callback(step, info)`` after every optimiser step.
        device: ``"cpu"``/``"cuda"``; default: CUDA when available (the rank's GPU under DDP).

    Returns:
        A :class:`TrainResult`.

    Raises:
        DataError: No (or unusable) training data.
        TorchslimError: A teacher is missing for ``kd``, labels are missing for ``finetune``,
            or bf16 was asked for on hardware without it.
    """
    import torch
    import torch.nn.functional as F

    cfg = config or DistillConfig()
    if train is None or len(train) == 0:
        raise DataError(
            "Distillation and fine-tuning need training data, and none was given.",
            "Give training samples, e.g. --data torchslim:fashion_mnist?split=train.",
        )
    if train.synthetic and cfg.method == DistillMethod.FINETUNE:
        raise DataError(
            "Fine-tuning on synthetic data would teach the model random labels.",
            "Give real labelled data, or use --recover kd with a teacher.",
        )
    has_labels = train.has_labels
    if cfg.method == DistillMethod.FINETUNE and not has_labels:
        raise DataError(
            f"Label-only fine-tuning needs labels, and '{train.name}' has none.",
            "Give labelled data, or distil from a teacher (method kd).",
        )
    if cfg.method == DistillMethod.KD and teacher is None:
        raise TorchslimError(
            "Knowledge distillation (method kd) needs a teacher model.",
            "Give --teacher MODEL, or use method finetune (labels) or self (EMA teacher).",
        )
    if eval_data is not None and not eval_data.has_labels:
        eval_data = None
    rank, world = _dist()
    if device is None:
        device = (
            f"cuda:{rank % max(torch.cuda.device_count(), 1)}"
            if torch.cuda.is_available()
            else "cpu"
        )
    dev_type = "cuda" if device.startswith("cuda") else "cpu"
    amp_dtype = None
    if cfg.amp == "bf16" or (cfg.amp == "auto" and bf16_supported(dev_type)):
        if not bf16_supported(dev_type):
            raise TorchslimError(
                "bf16 mixed precision was asked for, but this hardware has no native bf16.",
                "Use amp off (default) or auto.",
            )
        amp_dtype = torch.bfloat16

    torch.manual_seed(cfg.seed)
    student.to(device).train()
    tchr: nn.Module | None = None
    if cfg.method == DistillMethod.KD:
        assert teacher is not None
        tchr = teacher.to(device).eval()
    elif cfg.method == DistillMethod.SELF:
        tchr = copy.deepcopy(student).eval()
    if cfg.method == DistillMethod.SELF and tchr is not None:
        for p in tchr.parameters():  # our own EMA copy; the caller's teacher is left as given
            p.requires_grad_(False)
    loss_kind = None
    if tchr is not None:
        loss_kind = cfg.loss
        if loss_kind == "auto":
            probe_in = tuple(x[:2].to(device) for x in train.inputs)
            loss_kind = "cosine" if _is_embedding_model(tchr, probe_in) else "kl"
    embedding_loss = loss_kind in ("cosine", "mse")
    if embedding_loss:
        eval_data = None  # top-1 of an embedding means nothing; keep the last weights

    # Feature distillation: hooks and adapters (shapes found with one probe batch).
    pairs = [(f.split("=", 1)[0], f.split("=", 1)[-1]) for f in cfg.features]
    s_tap = t_tap = None
    adapters = torch.nn.ModuleList()
    if pairs:
        if tchr is None:
            raise TorchslimError("Feature distillation needs a teacher (method kd or self).")
        s_tap = _FeatureTap(student, [s for s, _ in pairs], "student")
        t_tap = _FeatureTap(tchr, [t for _, t in pairs], "teacher")
        probe = tuple(x[:2].to(device) for x in train.inputs)
        with torch.no_grad():
            was = student.training
            student.eval()
            student(*probe)
            student.train(was)
            tchr(*probe)
        for s, t in pairs:
            adapters.append(_adapter(s_tap.outputs[s].shape, t_tap.outputs[t].shape))
        adapters.to(device)

    model: nn.Module = student
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(student)
    params = [p for p in student.parameters() if p.requires_grad] + list(adapters.parameters())
    if cfg.optimizer == "adamw":
        opt: torch.optim.Optimizer = torch.optim.AdamW(
            params, lr=cfg.lr, weight_decay=cfg.weight_decay
        )
    else:
        opt = torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=True
        )

    n = len(train)
    bs = min(cfg.batch_size, n)
    if bs % world:
        raise TorchslimError(
            f"Batch size {bs} does not split evenly over {world} processes.",
            f"Use a batch size that is a multiple of {world}.",
        )
    steps_per_epoch = max(1, n // bs)
    total_steps = cfg.max_steps or max(1, round(cfg.epochs * steps_per_epoch))

    step, best, bad_evals, resumed_from = 0, None, 0, None
    best_state: dict[str, torch.Tensor] | None = None
    history: list[dict[str, Any]] = []
    elapsed_before = 0.0
    ckpt_path = Path(cfg.checkpoint_dir) / _CKPT if cfg.checkpoint_dir else None
    cfg_fields = {
        k: v for k, v in config_to_dict(cfg)["fields"].items() if k not in _NOT_IN_CKPT_KEY
    }
    cfg_key = json.dumps(cfg_fields, sort_keys=True)
    if ckpt_path is not None and ckpt_path.exists():
        start_over = f"Delete '{ckpt_path}' (or give another --checkpoint-dir) to start over."
        try:
            state = torch.load(str(ckpt_path), map_location=device, weights_only=True)
            if not isinstance(state, dict) or "config" not in state:
                raise ValueError("not a torchslim training checkpoint")
        except Exception as exc:
            raise TorchslimError(
                f"Cannot resume from checkpoint '{ckpt_path}': it is unreadable or corrupt "
                f"({_one_line(exc)}).",
                start_over,
            ) from None
        if state["config"] != cfg_key:
            try:
                saved = json.loads(state["config"])
                diff = sorted(k for k in {*saved, *cfg_fields} if saved.get(k) != cfg_fields.get(k))
            except (TypeError, ValueError, AttributeError):
                diff = []
            which = f" ({', '.join(diff)})" if diff else ""
            raise TorchslimError(
                f"The checkpoint '{ckpt_path}' was written with different settings{which}.",
                f"Resume with the same settings, or: {start_over}",
            )
        try:
            _check_state_dict(student, state["model"], "student model")
            student.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            if adapters and "adapters" in state:
                adapters.load_state_dict(state["adapters"])
            if cfg.method == DistillMethod.SELF and tchr is not None:
                _check_state_dict(tchr, state["ema"], "EMA teacher")
                tchr.load_state_dict(state["ema"])
            step = resumed_from = int(state["step"])
            best = state.get("best")
            best_state = state.get("best_state")
            bad_evals = int(state.get("bad_evals", 0))
            history = json.loads(state.get("history", "[]"))
            elapsed_before = float(state.get("elapsed", 0.0))
            torch.set_rng_state(state["rng"])
        except Exception as exc:
            raise TorchslimError(
                f"Cannot resume from checkpoint '{ckpt_path}': it does not fit this run "
                f"({_one_line(exc)}).",
                start_over,
            ) from None

    last_ckpt = time.monotonic()

    def checkpoint() -> None:
        nonlocal last_ckpt
        if ckpt_path is None or rank != 0:
            return
        state = {
            "config": cfg_key,
            "model": student.state_dict(),
            "optimizer": opt.state_dict(),
            "step": step,
            "best": best,
            "bad_evals": bad_evals,
            "history": json.dumps(history),
            "elapsed": elapsed_before + time.perf_counter() - start,
            "rng": torch.get_rng_state(),
        }
        if best_state is not None:
            state["best_state"] = best_state
        if adapters:
            state["adapters"] = adapters.state_dict()
        if cfg.method == DistillMethod.SELF and tchr is not None:
            state["ema"] = tchr.state_dict()
        _save_atomic(state, ckpt_path)
        last_ckpt = time.monotonic()

    def do_eval() -> bool:
        """Evaluate; True when early stopping says stop."""
        nonlocal best, best_state, bad_evals
        if eval_data is None:
            return False
        metric = _evaluate(student, eval_data, 256)
        history.append({"step": step, "loss": last_loss, "metric": metric})
        if best is None or metric > best:
            best, bad_evals = metric, 0
            if cfg.restore_best:
                best_state = {k: v.detach().clone() for k, v in student.state_dict().items()}
        else:
            bad_evals += 1
        return bool(cfg.patience and bad_evals >= cfg.patience)

    bar = None
    if progress and rank == 0:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TextColumn("{task.fields[info]}"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        task = bar.add_task(cfg.method.value, total=total_steps, completed=step, info="")
        bar.start()

    start = time.perf_counter()
    last_loss = float("nan")
    stopped_early = False
    gen = torch.Generator()
    # A signal only sets interrupts.pending; the loop acts on it between steps, where the state
    # is whole (``consistent``), so the checkpoint it writes resumes to the same result.
    interrupts = _Interrupts()
    consistent = True
    scope = contextlib.ExitStack()
    if ckpt_path is not None:
        scope.enter_context(interrupts.installed())
    try:
        while step < total_steps:
            if interrupts.pending is not None:
                raise KeyboardInterrupt
            consistent = False
            epoch, offset = divmod(step, steps_per_epoch)
            gen.manual_seed(cfg.seed * 100_003 + epoch)
            perm = torch.randperm(n, generator=gen)
            idx = perm[offset * bs : (offset + 1) * bs][rank::world]
            inputs = tuple(x[idx].to(device) for x in train.inputs)
            labels = (
                train.labels[idx].to(device)
                if has_labels and train.labels is not None and not embedding_loss
                else None
            )
            elapsed = elapsed_before + time.perf_counter() - start
            frac = step / total_steps
            if cfg.time_budget_s:
                frac = max(frac, elapsed / cfg.time_budget_s)
                if frac >= 1.0:
                    consistent = True
                    break
            for g in opt.param_groups:
                g["lr"] = cfg.lr * _lr_factor(cfg, frac, step)
            with torch.autocast(
                dev_type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None
            ):
                out = _logits(model(*inputs)).float()
                loss = out.new_zeros(())
                if tchr is not None:
                    with torch.no_grad():
                        t_out = _logits(tchr(*inputs)).float()
                    soft = _output_loss(loss_kind or "kl", out, t_out, cfg.temperature)
                    a = cfg.alpha if labels is not None else 1.0
                    loss = loss + a * soft
                    if labels is not None and a < 1.0:
                        loss = loss + (1 - a) * F.cross_entropy(out, labels)
                    if s_tap is not None and t_tap is not None:
                        for (s, t), ad in zip(pairs, adapters, strict=True):
                            loss = loss + cfg.feature_weight * _feature_loss(
                                s_tap.outputs[s], t_tap.outputs[t], ad
                            )
                else:
                    assert labels is not None
                    loss = F.cross_entropy(out, labels)
            if not torch.isfinite(loss):
                raise TorchslimError(
                    f"Training diverged at step {step} (loss is {float(loss)}).",
                    "Lower the learning rate (--lr).",
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if cfg.method == DistillMethod.SELF and tchr is not None:
                with torch.no_grad():
                    for pt, ps in zip(tchr.parameters(), student.parameters(), strict=True):
                        pt.mul_(cfg.ema_decay).add_(ps.detach(), alpha=1 - cfg.ema_decay)
                    for bt, bs_ in zip(tchr.buffers(), student.buffers(), strict=True):
                        bt.copy_(bs_)
            step += 1
            last_loss = float(loss.detach())
            end_epoch = step % steps_per_epoch == 0
            if (cfg.eval_every and step % cfg.eval_every == 0) or (
                not cfg.eval_every and end_epoch and step < total_steps
            ):
                if do_eval():
                    stopped_early = True
                    consistent = True
                    break
            elif eval_data is None and (end_epoch or step == total_steps):
                history.append({"step": step, "loss": last_loss})
            consistent = True
            if step % cfg.checkpoint_every == 0 or (
                cfg.checkpoint_every_s is not None
                and time.monotonic() - last_ckpt >= cfg.checkpoint_every_s
            ):
                checkpoint()
            if bar is not None:
                info = f"loss {last_loss:.4f}" + (f" · acc {best:.4f}" if best is not None else "")
                bar.update(task, completed=step, info=info)
            if callback is not None:
                callback(step, {"loss": last_loss, "lr": opt.param_groups[0]["lr"]})
        if (
            not stopped_early
            and eval_data is not None
            and (not history or history[-1].get("step") != step)
        ):
            consistent = False  # a checkpoint from before this evaluation would repeat it
            do_eval()
            consistent = True
        checkpoint()
        if interrupts.pending is not None:  # asked to stop during the last step: all is saved
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        if consistent and ckpt_path is not None and rank == 0:
            checkpoint()
            sys.stderr.write(
                f"Training interrupted at step {step}/{total_steps}; checkpoint saved to "
                f"'{ckpt_path}'. Run the same command again to resume.\n"
            )
        raise
    finally:
        scope.close()
        if bar is not None:
            bar.stop()
        if s_tap is not None and t_tap is not None:
            s_tap.close()
            t_tap.close()
    if cfg.restore_best and best_state is not None:
        student.load_state_dict(best_state)
    student.eval()
    return TrainResult(
        module=student,
        steps=step,
        epochs=step / steps_per_epoch,
        seconds=time.perf_counter() - start,
        history=history,
        best_metric=best,
        stopped_early=stopped_early,
        resumed_from=resumed_from,
        amp="bf16" if amp_dtype is not None else None,
        loss=loss_kind,
    )


def apply_distill(module: nn.Module, config: DistillConfig, ctx: Any) -> Any:
    """Pass handler: distil/fine-tune ``module`` (a private copy) with the context's data."""
    from torchslim.passes.base import PassResult

    res = fit(
        module, ctx.train, config, teacher=ctx.teacher, eval_data=ctx.eval, progress=ctx.progress
    )
    return PassResult(res.module, {"train": res.to_dict()})
