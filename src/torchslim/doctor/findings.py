"""Checklist items and their containers, shared by the model and environment checks."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

__all__ = ["CheckResult", "Finding", "Severity"]

Severity = Literal["info", "warn", "fail"]


@dataclass(frozen=True)
class Finding:
    """One checklist item.

    Attributes:
        id: Stable identifier (``"train-mode"``, ``"fusable-patterns"``, ...).
        severity: ``"info"`` (nothing wrong, maybe an opportunity), ``"warn"`` (slower or riskier
            than it needs to be) or ``"fail"`` (results will be wrong or a step will break).
        title: One line for a person.
        detail: The evidence (what was measured or found).
        recommendation: What to do about it, concretely; empty when nothing needs doing.
    """

    id: str
    severity: Severity
    title: str
    detail: str = ""
    recommendation: str = ""

    def to_dict(self) -> dict[str, str]:
        """A JSON-friendly copy."""
        return asdict(self)


@dataclass(frozen=True)
class CheckResult:
    """What :func:`inspect_model` or :func:`check_environment` found.

    Attributes:
        summary: Facts (numbers, names) as a JSON-friendly dict.
        findings: Checklist items, in the order they were checked.
    """

    summary: dict[str, Any]
    findings: tuple[Finding, ...]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly copy."""
        return {"summary": self.summary, "findings": [f.to_dict() for f in self.findings]}
