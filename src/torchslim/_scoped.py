"""Context managers that change process-wide state for one block and always restore it.

Passes, runtimes and reference helpers run many candidates in one process; a setting one of them
needs (an environment variable, torch's quantized engine) must not leak into the next. Each
manager here restores the previous value on exit, also when the block raises.

This module imports nothing from torchslim and imports torch only inside the function that needs
it, so any module may use it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

__all__ = ["quantized_engine", "scoped_env"]


@contextlib.contextmanager
def scoped_env(**variables: str | None) -> Iterator[None]:
    """Set (or, with ``None``, remove) environment variables for the block.

    Every named variable is put back as it was on exit: restored to its old value, or removed
    again when it was not set before. Variables the block changes but that are not named here are
    left alone.

    Args:
        **variables: ``NAME=value`` to set, ``NAME=None`` to unset for the block.

    Yields:
        Nothing; ``os.environ`` holds the new values inside the block.
    """
    saved = {name: os.environ.get(name) for name in variables}
    try:
        for name, value in variables.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = str(value)
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


@contextlib.contextmanager
def quantized_engine(name: str | None) -> Iterator[str]:
    """Run the block with ``torch.backends.quantized.engine == name``, restoring the old engine.

    ``None`` (or the current engine) changes nothing.

    Args:
        name: A member of ``torch.backends.quantized.supported_engines`` (``x86``, ``fbgemm``,
            ``onednn``, ``qnnpack``), or ``None``.

    Yields:
        The engine in effect inside the block.
    """
    import torch

    old = str(torch.backends.quantized.engine)
    if not name or name == old:
        yield old
        return
    torch.backends.quantized.engine = name
    try:
        yield name
    finally:
        torch.backends.quantized.engine = old
