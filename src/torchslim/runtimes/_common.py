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
from torchslim.config import config_from_dict, config_to_dict
from torchslim.errors import SourceError, TorchslimError

if TYPE_CHECKING:
    import torch

__all__ = [
    "MANIFEST",
    "BaseDeployed",
    "atomic_directory",
    "export_error",
    "flatten_outputs",
    "input_names_for",
    "load_deployed",
    "torch_threads",
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


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence exporter chatter (warnings, graph dumps printed to stdout/stderr) in the block."""
    import io
    import warnings

    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        warnings.simplefilter("ignore")
        yield


@contextlib.contextmanager
def trace_guard(what: str, others: str) -> Iterator[list[str]]:
    """Catch TorchScript tracer warnings about Python control flow on tensor values.

    Such a branch in the user's own code (outside installed packages) means the trace bakes in
    one path: raise :class:`~torchslim.errors.ExportError` naming the line. The same warning from
    library code (e.g. ``transformers`` mask shortcuts) is recorded in the yielded list and left
    to the parity check, which feeds padded masks and varied inputs.
    """
    import warnings

    from torchslim.errors import ExportError

    found: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield found
    for w in caught:
        msg = str(w.message)
        if "Python boolean" not in msg and "Python number" not in msg and "Python index" not in msg:
            continue
        where = f"{Path(w.filename).name}:{w.lineno}"
        fn = w.filename.replace("\\", "/")
        if "site-packages" in fn or "dist-packages" in fn or "/torch/" in fn:
            found.append(where)
            continue
        raise ExportError(
            f"{what} found data-dependent control flow at {where}: a Python branch on a tensor "
            "value, which a trace records as one fixed path.",
            f"Try another runtime ({others}), or rewrite that code with torch.where/torch.cond.",
        )


def resolve_threads(threads: int | None) -> int:
    """``threads`` or, when ``None``/``0``, the process's torch intra-op thread count."""
    import torch

    return int(threads) if threads else int(torch.get_num_threads())


def flatten_outputs(out: Any) -> list[torch.Tensor]:
    """All tensors in a (possibly nested) model output, in order (dicts by insertion order)."""
    import torch

    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict) or hasattr(out, "to_tuple"):
        values = list(out.values()) if isinstance(out, dict) else list(out.to_tuple())
        return [t for v in values for t in flatten_outputs(v)]
    if isinstance(out, (list, tuple)):
        return [t for v in out for t in flatten_outputs(v)]
    return []


def pack_outputs(tensors: Sequence[torch.Tensor]) -> Any:
    """One tensor when there is one output, else a tuple (the contract of every runtime)."""
    return tensors[0] if len(tensors) == 1 else tuple(tensors)


def input_names_for(
    example_inputs: Sequence[Any], names: Sequence[str] | None = None, module: Any = None
) -> list[str]:
    """Graph input names: ``names`` if given, else the parameter names of ``module.forward``
    (for several inputs, e.g. ``input_ids``/``attention_mask``), else ``input`` / ``input0..``.
    """
    import inspect

    n = len(example_inputs)
    if names:
        return list(names)
    if module is not None and n > 1:
        try:
            params = [
                p.name
                for p in inspect.signature(module.forward).parameters.values()
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
            ]
        except (TypeError, ValueError):
            params = []
        if len(params) >= n:
            return params[:n]
    return ["input"] if n == 1 else [f"input{i}" for i in range(n)]


def export_error(what: str, exc: BaseException, others: str) -> TorchslimError:
    """A short :class:`~torchslim.errors.ExportError` naming the failing op/module.

    Args:
        what: The export step (``"torch.export"``, ``"TorchScript trace"``).
        exc: The original exception (kept as ``__cause__`` for ``--debug``).
        others: Runtimes to suggest instead.
    """
    from torchslim.errors import ExportError

    text = str(exc)
    chain: BaseException | None = exc.__cause__ or exc.__context__
    depth = 0
    while chain is not None and depth < 5:
        text += "\n" + str(chain)
        chain = chain.__cause__ or chain.__context__
        depth += 1
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    keys = (
        "data-dependent",
        "Data-dependent",
        "Unsupported",
        "not supported",
        "Could not guard",
        "Dynamic control flow",
        "unsupported",
    )
    reason = next((ln for ln in lines if any(k in ln for k in keys)), lines[0] if lines else "")
    import re

    reason = re.sub(r"<class '[\w.]+'>:\s*", "", reason) or type(exc).__name__
    where = _user_frame(exc)
    kind = (
        "data-dependent control flow"
        if "data-dependent" in text.lower()
        or ("guard" in text.lower() and "symbol" in text.lower())
        else None
    )
    msg = f"{what} failed"
    if kind:
        msg += f" on {kind}"
    if where:
        msg += f" at {where}"
    msg += f": {reason[:240]}"
    return ExportError(
        msg,
        f"Try another runtime ({others}), rewrite that code to avoid it, or rerun with --debug "
        "for the full trace.",
    )


def _user_frame(exc: BaseException) -> str | None:
    """``file:line (function)`` of the deepest traceback frame outside torch/torchslim."""
    import traceback

    best = None
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        for fr in traceback.extract_tb(cur.__traceback__):
            fn = fr.filename.replace("\\", "/")
            if "/torch/" in fn or "/torchslim/" in fn or "/onnx" in fn or "/transformers/" in fn:
                continue
            if fn.startswith("<"):
                continue
            best = f"{Path(fn).name}:{fr.lineno} ({fr.name})"
        cur = cur.__cause__ or cur.__context__
    # dynamo reports user code in the message instead of the traceback
    if best is None:
        import re

        m = re.search(r'File "([^"]+)", line (\d+), in (\w+)', str(exc))
        if m and "/torch/" not in m.group(1):
            best = f"{Path(m.group(1)).name}:{m.group(2)} ({m.group(3)})"
    return best


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


def load_deployed(directory: str | Path) -> Any:
    """Load any runtime saved with ``deployed.save(directory)``.

    Raises:
        SourceError: Not a saved runtime directory, or saved by a newer torchslim.
        BackendUnavailableError: The runtime's backend is not installed here.
    """
    from torchslim.errors import BackendUnavailableError
    from torchslim.runtimes.base import RUNTIMES, list_runtimes

    list_runtimes()
    meta = read_manifest(Path(directory))
    entry = RUNTIMES.get(meta["runtime"])
    if not entry.available():
        raise BackendUnavailableError(
            entry.name, entry.extra, getattr(entry, "reason", lambda: None)()
        )
    mod_name = entry.target.partition(":")[0]
    import importlib

    module = importlib.import_module(mod_name)
    loader: Callable[[str | Path], Any] = module.load
    return loader(directory)


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """Run ``fn`` and return ``(result, seconds)``."""
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start
