"""Pieces shared by the runtime backends: atomic saving, thread control, I/O conversion.

Every backend's deployed object derives from :class:`BaseDeployed`, which writes a
``runtime.json`` manifest next to the backend's files so :func:`load_deployed` can rebuild the
right runtime from a directory alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from torchslim._json import to_jsonable
from torchslim.compare import flatten_outputs, pack_outputs
from torchslim.config import config_from_dict, config_to_dict
from torchslim.errors import SourceError, TorchslimError
from torchslim.lowering import export_error, input_names_for, quiet, trace_guard

if TYPE_CHECKING:
    pass

__all__ = [
    "MANIFEST",
    "BaseDeployed",
    "atomic_directory",
    "export_error",
    "flatten_outputs",
    "input_names_for",
    "pack_outputs",
    "quiet",
    "torch_threads",
    "trace_guard",
]

MANIFEST = "runtime.json"
"""Name of the manifest every saved runtime directory holds."""

FORMAT_VERSION = 1


@contextlib.contextmanager
def atomic_directory(directory: str | Path) -> Iterator[Path]:
    """Yield a temporary directory whose files land in ``directory`` only if the block succeeds.

    A new ``directory`` appears in one ``os.replace``; into an existing one each file is moved
    with ``os.replace`` (so a reader never sees a half-written file). On error nothing is left.
    """
    target = Path(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        if not target.exists():
            os.replace(tmp, target)
        else:
            if not target.is_dir():
                raise TorchslimError(
                    f"'{target}' exists and is not a directory.", "Give a directory path for --out."
                )
            for item in sorted(tmp.rglob("*")):
                rel = item.relative_to(tmp)
                dest = target / rel
                if item.is_dir():
                    dest.mkdir(parents=True, exist_ok=True)
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                if dest.is_dir():
                    shutil.rmtree(dest)
                os.replace(item, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``torch.get_num_threads() == threads``, restoring the old value after.

    ``None`` (or the current value) changes nothing and costs nothing.
    """
    import torch

    old = torch.get_num_threads()
    if not threads or threads == old:
        yield
        return
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def resolve_threads(threads: int | None) -> int:
    """``threads`` or, when ``None``/``0``, the process's torch intra-op thread count."""
    import torch

    return int(threads) if threads else int(torch.get_num_threads())


class BaseDeployed:
    """Shared behaviour of deployed runtimes: build timing, manifest, atomic save, load.

    Subclasses set :attr:`runtime`, implement ``__call__``, ``_write(tmpdir) -> main file name``
    and the classmethod ``_read(directory, config, meta)``.

    Attributes:
        runtime: Backend name.
        config: The runtime config it was built with.
        build_seconds: Export/compile time (first-call compile for lazy backends).
        input_names: Names of the inputs, in call order.
        info: Facts about the build (precision actually used, providers, threads, ...).
    """

    runtime: ClassVar[str] = "?"

    def __init__(self, config: Any, input_names: Sequence[str], build_seconds: float = 0.0) -> None:
        self.config = config
        self.input_names = list(input_names)
        self.build_seconds = float(build_seconds)
        self.info: dict[str, Any] = {}

    def __call__(self, *inputs: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(runtime={self.runtime!r}, config={self.config!r})"

    # ---- saving -------------------------------------------------------------------------------
    def _write(self, directory: Path) -> str:  # pragma: no cover - abstract
        """Write the backend files into ``directory`` (a fresh temp dir); return the main name."""
        raise NotImplementedError

    def save(self, directory: str | Path) -> Path:
        """Write the model file(s) and ``runtime.json`` into ``directory`` atomically.

        Returns:
            The path of the main model file.
        """
        directory = Path(directory)
        with atomic_directory(directory) as tmp:
            main = self._write(tmp)
            manifest = {
                "format_version": FORMAT_VERSION,
                "runtime": self.runtime,
                "config": config_to_dict(self.config),
                "input_names": self.input_names,
                "main_file": main,
                "info": to_jsonable(self.info),
            }
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str) + "\n")
        return directory / main

    @classmethod
    def load(cls, directory: str | Path) -> BaseDeployed:
        """Rebuild a runtime saved by :meth:`save` (it must be this class's runtime)."""
        directory = Path(directory)
        meta = read_manifest(directory)
        if meta["runtime"] != cls.runtime:
            raise SourceError(
                f"'{directory}' holds a '{meta['runtime']}' runtime, not '{cls.runtime}'.",
                "Use torchslim.runtimes.load_deployed(directory) to load any runtime.",
            )
        config = config_from_dict(meta["config"])
        start = time.perf_counter()
        obj = cls._read(directory, config, meta)
        obj.build_seconds = time.perf_counter() - start
        obj.info.setdefault("loaded_from", str(directory))
        return obj

    @classmethod
    def _read(
        cls, directory: Path, config: Any, meta: dict[str, Any]
    ) -> BaseDeployed:  # pragma: no cover - abstract
        raise NotImplementedError


def read_manifest(directory: Path) -> dict[str, Any]:
    """The ``runtime.json`` of a saved runtime directory, or a clear :class:`SourceError`."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise SourceError(
            f"'{directory}' is not a saved torchslim runtime (no {MANIFEST}).",
            "Save one with deployed.save(DIR) or `torchslim export MODEL --out DIR`.",
        )
    try:
        meta: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SourceError(f"'{path}' is not valid JSON: {exc}.", "Re-export the model.") from exc
    if int(meta.get("format_version", 1)) > FORMAT_VERSION:
        raise SourceError(
            f"'{directory}' was saved by a newer torchslim (format {meta['format_version']}).",
            "Upgrade torchslim.",
        )
    return meta


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """Run ``fn`` and return ``(result, seconds)``."""
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start
