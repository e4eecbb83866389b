"""Connecting to a Ray cluster, once, the same way for every command that scales out.

``optimize --executor ray``, ``predict --ray`` and ``serve --ray`` all take an ``--address``:
``local`` (a private cluster on this machine, stopped when the command ends), ``auto`` (the
cluster ``ray start`` runs here), ``host:6379`` or ``ray://host:10001``. Ray is imported only
here and only when asked for, so ``import torchslim`` stays light.
"""

from __future__ import annotations

import logging
from typing import Any

from torchslim.errors import BackendUnavailableError, TorchslimError

__all__ = ["connect"]


def connect(address: str | None = "local", *, extra: str = "ray") -> tuple[Any, bool]:
    """Import Ray and connect to the cluster at ``address`` (or start a private one).

    Args:
        address: ``local`` or ``None`` (start a private cluster, unless this process is
            already connected or ``RAY_ADDRESS`` names one), ``auto``, ``host:port`` or
            ``ray://host:port``.
        extra: The torchslim extra that installs what the caller needs (``ray`` or ``serve``),
            for the error message when Ray is missing.

    Returns:
        ``(ray, started_here)``: the module, and whether this call connected (the caller then
        calls ``ray.shutdown()`` when done; a connection made by someone else is left alone).

    Raises:
        BackendUnavailableError: Ray is not installed.
        TorchslimError: No cluster answers at ``address``.
    """
    try:
        import ray
    except ImportError as exc:
        raise BackendUnavailableError("ray", extra, "the ray package is not installed") from exc
    if ray.is_initialized():
        return ray, False
    try:
        ray.init(
            address=None if address in (None, "local") else address,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.ERROR,
            configure_logging=False,
        )
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise TorchslimError(
            f"Could not connect to the Ray cluster at '{address}': {exc}",
            "Start one (ray start --head) and pass --address auto or host:port, or use "
            "--address local for a private cluster on this machine.",
        ) from None
    return ray, True
