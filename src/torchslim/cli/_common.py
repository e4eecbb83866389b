"""Helpers shared by every CLI command: error handling, JSON output, consoles."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from torchslim._json import to_jsonable
from torchslim.errors import TorchslimError

F = TypeVar("F", bound=Callable[..., Any])

# Every command accepts these two options with the same meaning.
JSON_OPTION = typer.Option(False, "--json", help="Print one JSON object on stdout, nothing else.")
DEBUG_OPTION = typer.Option(False, "--debug", help="Show full tracebacks on errors.")


def stderr_console() -> Any:
    """A rich console on stderr (progress, tables meant for people)."""
    from rich.console import Console

    return Console(stderr=True)


def stdout_console() -> Any:
    """A rich console on stdout (human-readable results).

    When stdout is not a terminal (piped, CI logs) tables get 140 columns instead of rich's
    80-column default, so they stay readable.
    """
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 140)


def emit_json(obj: Any) -> None:
    """Write ``obj`` as JSON to stdout (NaN/Inf become null so the output is strict JSON)."""
    sys.stdout.write(json.dumps(to_jsonable(obj), indent=2, default=str) + "\n")
    sys.stdout.flush()


def handle_errors(fn: F) -> F:
    """Turn :class:`TorchslimError` into a one-line message and exit code 2.

    The wrapped command must take a ``debug`` keyword; with ``--debug`` the traceback is shown.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = bool(kwargs.get("debug", False))
        try:
            return fn(*args, **kwargs)
        except TorchslimError as exc:
            if debug:
                raise
            _print_error(exc.message, exc.hint)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            _print_error("Interrupted.", None)
            raise typer.Exit(130) from None
        except MemoryError:
            if debug:
                raise
            _print_error("Out of memory.", "Use a smaller --batch or fewer samples.")
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def _print_error(message: str, hint: str | None) -> None:
    sys.stderr.write(f"error: {message}\n")
    if hint:
        sys.stderr.write(f"hint: {hint}\n")


def parse_int_list(text: str, what: str) -> list[int]:
    """Parse ``"1,8,32"`` into ``[1, 8, 32]`` or raise a clear error."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or any(v <= 0 for v in values):
        raise TorchslimError(f"Invalid {what} '{text}'.", "Give positive integers, e.g. 1,8,32.")
    return values
