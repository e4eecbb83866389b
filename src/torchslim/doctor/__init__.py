"""The optimisation checklist behind ``torchslim inspect``: model summary and environment check.

Three entry points, all returning plain data:

- :func:`inspect_model` looks at an ``nn.Module`` as given: parameters, size, FLOPs at batch 1
  (counted by :class:`torch.utils.flop_counter.FlopCounterMode`), a per-type layer breakdown,
  fusable patterns (found on the :func:`torch.fx.symbolic_trace` graph, or in module order when
  tracing fails), the share of quantizable layers, Dropout/BatchNorm left in training mode and what
  commonly breaks export (data-dependent control flow, in-place writes to inputs, custom autograd
  Functions, recurrent layers, modules called more than once).
- :func:`check_environment` looks at the machine: threads against physical cores, CPU instruction
  sets (read from ``/proc/cpuinfo`` by a small private reader), oneDNN/MKL, CUDA settings,
  torch.compile prerequisites, optional backends, and DataLoader advice for a data set.
- :func:`diagnose` does both for a :class:`~torchslim.models.LoadedModel` and scores the result.

Nothing here modifies the model: training flags are restored after the probe forward pass.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torchslim.doctor.environment import check_environment, parse_cpu_flags
from torchslim.doctor.findings import CheckResult, Finding, Severity
from torchslim.doctor.model import inspect_model, training_finding

if TYPE_CHECKING:
    from torchslim.data import DataSet
    from torchslim.models import InputSpec, LoadedModel

__all__ = [
    "SEVERITY_WEIGHTS",
    "CheckResult",
    "Finding",
    "Report",
    "Severity",
    "check_environment",
    "diagnose",
    "grade",
    "inspect_model",
    "parse_cpu_flags",
    "score",
]

#: Points subtracted from 100 per finding of each severity (see :func:`score`).
SEVERITY_WEIGHTS: Mapping[str, int] = {"info": 0, "warn": 8, "fail": 25}


@dataclass(frozen=True)
class Report:
    """The full checklist for one model on this machine.

    Attributes:
        model_summary: Facts about the model (see :func:`inspect_model`).
        findings: Model checklist items.
        environment: Environment checklist items.
        environment_summary: Facts about the machine (see :func:`check_environment`).
        score: 0-100, see :func:`score`.
    """

    model_summary: dict[str, Any]
    findings: tuple[Finding, ...]
    environment: tuple[Finding, ...]
    environment_summary: dict[str, Any]
    score: int

    @property
    def grade(self) -> str:
        """Letter grade of :attr:`score` (see :func:`grade`)."""
        return grade(self.score)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly copy (what ``torchslim inspect --json`` prints)."""
        return {
            "model": self.model_summary,
            "findings": [f.to_dict() for f in self.findings],
            "environment": self.environment_summary,
            "environment_findings": [f.to_dict() for f in self.environment],
            "score": self.score,
            "grade": self.grade,
            "score_rule": (
                "100 minus "
                + ", ".join(f"{w} per {s}" for s, w in SEVERITY_WEIGHTS.items() if w)
                + ", floored at 0"
            ),
        }


def score(findings: Sequence[Finding]) -> int:
    """Score a checklist from 0 to 100.

    Start at 100 and subtract :data:`SEVERITY_WEIGHTS` per finding: 0 per ``info`` (opportunities
    torchslim can take for you, such as fusion or INT8), 8 per ``warn`` (slower or riskier than it
    needs to be), 25 per ``fail`` (wrong results or a broken step). Each finding groups all the
    places it applies to, so one problem costs once. The result is floored at 0.

    Args:
        findings: Model and environment findings together.

    Returns:
        The score, an integer in ``[0, 100]``.
    """
    return max(0, 100 - sum(SEVERITY_WEIGHTS[f.severity] for f in findings))


def grade(value: int) -> str:
    """Letter grade: A >= 90, B >= 75, C >= 60, D >= 40, else F."""
    for threshold, letter in ((90, "A"), (75, "B"), (60, "C"), (40, "D")):
        if value >= threshold:
            return letter
    return "F"


def diagnose(loaded_model: LoadedModel, data: DataSet | None = None) -> Report:
    """Run the model and environment checklists on a loaded model and score them.

    :func:`torchslim.models.load_model` puts modules in eval mode, so training flags are taken from
    ``loaded_model.metadata["training_at_load"]`` when the loader recorded them (a bool or a list
    of module names); otherwise ``training_mode_at_load`` is ``None`` (unknown) in the summary.

    Args:
        loaded_model: From :func:`torchslim.models.load_model`.
        data: Optional data set for DataLoader advice and a shape check.

    Returns:
        The report; ``report.score`` is computed by :func:`score` over all findings.
    """
    at_load = loaded_model.metadata.get("training_at_load")
    if loaded_model.module is None:
        model = _inspect_onnx(loaded_model)
    else:
        model = inspect_model(
            loaded_model.module,
            loaded_model.input_spec,
            source=loaded_model.source,
            path=loaded_model.path,
            check_training=False,
        )
    summary = dict(model.summary)
    summary["kind"] = loaded_model.kind
    summary["task"] = loaded_model.task
    summary["training_mode_at_load"] = at_load
    summary["note"] = "loaded sources are put in eval mode before inspection"
    findings = list(model.findings)
    if at_load:
        findings.insert(0, training_finding(at_load, "when loaded"))
    if data is not None and loaded_model.input_spec is not None:
        findings += _data_shape_findings(data, loaded_model.input_spec)
    env = check_environment(data)
    return Report(
        summary, tuple(findings), env.findings, env.summary, score([*findings, *env.findings])
    )


def _data_shape_findings(data: DataSet, spec: InputSpec) -> list[Finding]:
    got = [tuple(x.shape[1:]) for x in data.inputs]
    want = [tuple(t.shape[1:]) for t in spec.inputs]
    if got == want:
        return []
    return [
        Finding(
            "data-shape",
            "fail",
            "Data does not match the model's inputs",
            f"Data samples have shapes {got}; the model expects {want} (batch dimension left out).",
            "Give --input-shape matching the data, or resize the data (image folders: ?size=N).",
        )
    ]


def _inspect_onnx(loaded: LoadedModel) -> CheckResult:
    import math

    n = None
    if loaded.onnx_path is not None:
        import onnx

        proto = onnx.load(str(loaded.onnx_path), load_external_data=False)
        n = sum(math.prod(t.dims) for t in proto.graph.initializer)
    path = loaded.path
    summary = {
        "source": loaded.source,
        "type": "onnx",
        "params_total": n,
        "file_bytes": path.stat().st_size if path and path.is_file() else None,
        "input_spec": loaded.input_spec.to_dict() if loaded.input_spec else None,
    }
    finding = Finding(
        "onnx-source",
        "info",
        "ONNX graph: module checks skipped",
        "Parameters come from the graph initializers; FLOPs, fusion and training-mode checks "
        "need the PyTorch module.",
        "Inspect the PyTorch model (checkpoint, .pt2 or factory) for the full checklist.",
    )
    return CheckResult(summary, (finding,))
