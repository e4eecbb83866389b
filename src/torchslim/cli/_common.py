"""Helpers shared by every CLI command: error handling, option checks, JSON output, consoles.

Every command is wrapped by :func:`handle_errors`, which gives the CLI one contract for failures:
a user's mistake (any :class:`TorchslimError`, a bad option value) prints one ``error:`` line and
one ``hint:`` line on stderr and exits with code 2 (3 when an accuracy budget was not met:
:class:`~torchslim.errors.AccuracyBudgetError`); under ``--json`` the same error is also one JSON
object on stdout. A bug (any other exception) prints ``error: internal error: ...`` and exits with
code 1. No traceback is shown unless ``--debug``. Third-party warnings, loggers and progress bars are
silenced while the command runs (:func:`quiet_third_party`), so stderr carries only torchslim's own
progress and errors.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import typer
from typer.core import TyperCommand

from torchslim._json import to_jsonable
from torchslim.errors import TorchslimError

F = TypeVar("F", bound=Callable[..., Any])

# Every command accepts these two options with the same meaning.
JSON_OPTION = typer.Option(False, "--json", help="Print one JSON object on stdout, nothing else.")
DEBUG_OPTION = typer.Option(False, "--debug", help="Show full tracebacks on errors.")

_GENERIC_HINT = "See the command's --help for what each option accepts."
_INTERNAL_HINT = "rerun with --debug for the full traceback and report it"
_OOM_HINT = "Use a smaller --batch or --input-shape, or fewer samples."

# Loggers of libraries torchslim drives; their warnings are not the user's business on a normal run.
_THIRD_PARTY_LOGGERS = (
    "torch",
    "torchvision",
    "torchao",
    "torch_pruning",
    "onnx",
    "onnxruntime",
    "onnxscript",
    "onnx_ir",
    "openvino",
    "nncf",
    "transformers",
    "huggingface_hub",
    "safetensors",
    "PIL",
    "urllib3",
    "filelock",
    "numexpr",
    "py.warnings",
)


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


# ------------------------------------------------------------------------------------------------
# Quiet third parties
# ------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def quiet_third_party() -> Iterator[None]:
    """Silence other libraries' warnings, log messages and progress bars for the block.

    Everything is scoped and restored afterwards (nothing is changed at import time):

    * Python warnings are ignored except those torchslim itself issues (shown as one
      ``warning:`` line);
    * the named third-party loggers are raised to ERROR, and log records below ERROR are dropped
      for the block (``logging.disable``), which also covers loggers a library (re)configures when
      it is first imported inside the block (torch resets its levels on import, NNCF its own);
    * NNCF's log level is set to ERROR through its API when NNCF is loaded;
    * NNCF draws its progress bars ("Statistics collection", ...) on rich's global console: that
      console is made quiet. torchslim's own progress uses its own consoles and still shows.
    """
    saved_disable = logging.root.manager.disable
    loggers = [
        logging.getLogger(name)
        for name in _THIRD_PARTY_LOGGERS
        if name in logging.Logger.manager.loggerDict  # never create a library's logger early
    ]
    saved_levels = [(lg, lg.level) for lg in loggers]
    nncf_level = _nncf_log_level(logging.ERROR)
    console = _global_rich_console()
    saved_quiet = console.quiet if console is not None else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            warnings.filterwarnings("default", module=r"torchslim(\..*)?$")
            warnings.showwarning = _show_warning
            for lg in loggers:
                lg.setLevel(max(lg.getEffectiveLevel(), logging.ERROR))
            logging.disable(max(saved_disable, logging.WARNING))
            if console is not None:
                console.quiet = True
            yield
    finally:
        if console is not None and saved_quiet is not None:
            console.quiet = saved_quiet
        logging.disable(saved_disable)
        for lg, level in saved_levels:
            lg.setLevel(level)
        _nncf_log_level(nncf_level)


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    """torchslim's own warnings as one ``warning:`` line on stderr, like every other message."""
    sys.stderr.write(f"warning: {_one_line(str(message))}\n")


def _nncf_log_level(level: int | None) -> int | None:
    """Set NNCF's log level if NNCF is loaded; returns the level it had (``None``: not loaded)."""
    mod = sys.modules.get("nncf.common.logging.logger")
    if mod is None or level is None:
        return None
    old = int(mod.nncf_logger.level)
    mod.set_log_level(level)
    return old


def _global_rich_console() -> Any:
    try:
        import rich
    except ImportError:  # pragma: no cover - rich is a dependency of typer
        return None
    return rich.get_console()


# ------------------------------------------------------------------------------------------------
# Option checks
# ------------------------------------------------------------------------------------------------


def check_options(
    *,
    threads: int | None = None,
    batch_size: int | None = None,
    batch: str | None = None,
    max_drop: float | None = None,
) -> None:
    """Check the options several commands share, the same way everywhere.

    Args:
        threads: ``--threads``: at least 1; more than this machine's cores is a warning.
        batch_size: ``--batch-size``: at least 1.
        batch: ``--batch``: positive integers, comma-separated.
        max_drop: ``--max-drop``: a number of accuracy points, not negative, not NaN.

    Raises:
        TorchslimError: A value that cannot work.
    """
    if threads is not None:
        if threads < 1:
            raise TorchslimError(
                f"--threads must be at least 1, got {threads}.",
                "Give a positive number of threads, e.g. --threads 2.",
            )
        cores = os.cpu_count() or 1
        if threads > cores:
            sys.stderr.write(
                f"warning: --threads {threads} is more than the {cores} "
                f"core{'s' if cores != 1 else ''} here: expect it to run much slower\n"
            )
    if batch_size is not None and batch_size < 1:
        raise TorchslimError(
            f"--batch-size must be at least 1, got {batch_size}.",
            "Give a positive batch size, e.g. --batch-size 64.",
        )
    if batch is not None:
        parse_int_list(batch, "--batch")
    if max_drop is not None and not (math.isfinite(max_drop) and max_drop >= 0):
        raise TorchslimError(
            f"--max-drop must be a number of accuracy points, 0 or more, got {max_drop:g}.",
            "Give e.g. --max-drop 1.0 (at most one point lower than the original).",
        )


_CHECKED = ("threads", "batch_size", "batch", "max_drop")


def parse_duration(text: str) -> float:
    """``"20m"``, ``"90s"``, ``"1h"`` or plain seconds → seconds (``--time-budget``)."""
    t = text.strip().lower()
    scale = {"s": 1.0, "m": 60.0, "h": 3600.0}.get(t[-1:])
    try:
        value = float(t[:-1]) * scale if scale else float(t)
    except ValueError:
        value = -1.0
    if not value > 0:  # also NaN
        raise TorchslimError(f"Invalid --time-budget '{text}'.", "Give e.g. 20m, 90s or 1h.")
    return value


def parse_int_list(text: str, what: str) -> list[int]:
    """Parse ``"1,8,32"`` into ``[1, 8, 32]`` or raise a clear error."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or any(v <= 0 for v in values):
        raise TorchslimError(f"Invalid {what} '{text}'.", "Give positive integers, e.g. 1,8,32.")
    return values


# ------------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------------


def handle_errors(fn: F) -> F:
    """Run a command with one failure contract (see the module docstring).

    The wrapped command takes ``debug`` (``--debug``: let the traceback through) and ``json_out``
    (``--json``: also print the error as one JSON object on stdout) keywords. Options named
    ``threads``, ``batch_size``, ``batch`` and ``max_drop`` are checked by :func:`check_options`
    before the command runs.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = bool(kwargs.get("debug", False))
        as_json = bool(kwargs.get("json_out", False))
        try:
            check_options(**{k: kwargs[k] for k in _CHECKED if k in kwargs})
            with quiet_third_party():
                return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except TorchslimError as exc:
            if debug:
                raise
            _fail(exc.message, exc.hint, exc.exit_code, as_json)
        except KeyboardInterrupt:
            _fail("Interrupted.", "Nothing was saved; run the command again.", 130, as_json)
        except MemoryError:
            if debug:
                raise
            _fail("Out of memory.", _OOM_HINT, 2, as_json)
        except Exception as exc:
            if debug:
                raise
            if _is_out_of_memory(exc):
                _fail(f"Out of memory: {_first_line(exc)}", _OOM_HINT, 2, as_json)
            _fail(
                f"internal error: {type(exc).__name__}: {_first_line(exc)}",
                _INTERNAL_HINT,
                1,
                as_json,
            )

    return wrapper  # type: ignore[return-value]


def _is_out_of_memory(exc: BaseException) -> bool:
    """torch reports a failed allocation as a RuntimeError (CPU) or OutOfMemoryError (CUDA)."""
    if type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and (
        "can't allocate memory" in text or "out of memory" in text.lower()
    )


def _first_line(exc: BaseException) -> str:
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return "(no message)"


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def _fail(message: str, hint: str | None, code: int, as_json: bool) -> None:
    """Print the error (stderr, and stdout as JSON when asked) and exit with ``code``."""
    message, hint = _one_line(message), _one_line(hint or _GENERIC_HINT)
    _print_error(message, hint)
    if as_json:
        sys.stdout.write(json.dumps({"error": message, "hint": hint, "exit_code": code}) + "\n")
        sys.stdout.flush()
    raise typer.Exit(code)


def _print_error(message: str, hint: str | None) -> None:
    sys.stderr.write(f"error: {message}\n")
    if hint:
        sys.stderr.write(f"hint: {hint}\n")
    sys.stderr.flush()


class Command(TyperCommand):
    """A typer command whose usage errors (a bad value for a typed option, a missing argument, an
    unknown option) follow the same contract as every other mistake: one ``error:`` line, one
    ``hint:`` line, exit code 2, and one JSON object on stdout under ``--json``."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        NoArgsIsHelpError, UsageError = _usage_errors()
        as_json = "--json" in args
        try:
            return super().parse_args(ctx, args)
        except NoArgsIsHelpError:
            raise
        except UsageError as exc:
            path = ctx.command_path if ctx is not None else "torchslim"
            fmt = getattr(exc, "format_message", None)
            message = fmt() if callable(fmt) else str(exc)
            _fail(message, f"Run '{path} --help' for the options.", 2, as_json)
            raise  # pragma: no cover - _fail always raises


def _usage_errors() -> tuple[type[Exception], type[Exception]]:
    """Click's ``NoArgsIsHelpError`` and ``UsageError`` (typer vendors click from 0.25 on)."""
    try:
        from typer._click.exceptions import NoArgsIsHelpError, UsageError
    except ImportError:  # pragma: no cover - older typer on upstream click
        from click.exceptions import (  # type: ignore[no-redef,assignment]
            NoArgsIsHelpError,
            UsageError,
        )
    return NoArgsIsHelpError, UsageError
