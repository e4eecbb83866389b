"""Errors a user can act on.

Every error torchslim raises on purpose derives from :class:`TorchslimError`. It carries a one-line
message saying what is wrong and a ``hint`` saying what to do next; the CLI prints both on one line
each and exits with its ``exit_code`` (2; 3 for :class:`AccuracyBudgetError`, an accuracy budget not
met), without a traceback unless ``--debug`` is given.
"""

from __future__ import annotations

__all__ = [
    "AccuracyBudgetError",
    "BackendUnavailableError",
    "DataError",
    "ExportError",
    "ParityError",
    "ShapeError",
    "SourceError",
    "TorchslimError",
    "UntrustedPickleError",
]


class TorchslimError(Exception):
    """Base class for errors caused by input or environment that the user can fix.

    Args:
        message: What is wrong, in one sentence.
        hint: What to do next, in one sentence (optional).
    """

    exit_code: int = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} Hint: {self.hint}"


class SourceError(TorchslimError):
    """A model source string could not be resolved or loaded (missing, corrupt, wrong format)."""


class UntrustedPickleError(SourceError):
    """A file holds pickled Python objects, which are only loaded with explicit trust."""


class DataError(TorchslimError):
    """A data source could not be loaded or holds invalid values (NaN, wrong labels, ...)."""


class ShapeError(TorchslimError):
    """Inputs do not match the model's expected shapes or dtypes."""


class BackendUnavailableError(TorchslimError):
    """An optional backend is not installed or cannot run on this machine.

    Args:
        backend: Name of the backend (e.g. ``"openvino"``).
        extra: The pip extra that installs it, if any.
        reason: Why it is unavailable, when known.
    """

    def __init__(self, backend: str, extra: str | None = None, reason: str | None = None) -> None:
        msg = f"Backend '{backend}' is not available" + (f": {reason}." if reason else ".")
        hint = f"Install it with: pip install 'torchslim[{extra}]'" if extra else None
        super().__init__(msg, hint)
        self.backend = backend
        self.extra = extra


class ExportError(TorchslimError):
    """A model could not be exported or compiled for a runtime."""


class ParityError(TorchslimError):
    """A transformed or exported model does not compute what the original computed."""


class AccuracyBudgetError(TorchslimError):
    """No configuration met the accuracy budget (or the time to search for one ran out);
    carries the best result reached.

    The CLI exits with code 3 for it (as ``torchslim optimize`` does when nothing met its
    constraints), so scripts can tell "budget not met" from bad input (2).
    """

    exit_code: int = 3

    def __init__(self, message: str, hint: str | None = None, best: object | None = None) -> None:
        super().__init__(message, hint)
        self.best = best
