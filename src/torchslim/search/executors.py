"""Where ``optimize`` builds its candidates: each in its own process, here or on a Ray cluster.

A build is ``torchslim run RECIPE SOURCE --out DIR`` in a fresh process with a timeout and a
memory limit, so an export error, an out-of-memory or a crash comes back as ``{"error": why}``
and the search goes on. Measuring is never done by an executor: the search re-loads every built
artifact and measures it in its own process, one candidate at a time (concurrent benchmarks
contaminate each other).

* :class:`LocalExecutor` (default) runs the build on this machine.
* :class:`RayExecutor` runs it as a Ray task on any node of a cluster (``ray.init(address)``):
  the recipe and, when the build continues from a cached local artifact (a pruned + recovered
  prefix), that artifact's files travel through Ray's object store; the built artifact's files
  come back the same way and are written here atomically. Model and data sources must resolve
  on every node (``torchslim:`` references, installed ``pkg.module:factory`` code, or paths on a
  shared file system).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from torchslim.errors import TorchslimError

if TYPE_CHECKING:
    from torchslim.recipe import Recipe

__all__ = ["EXECUTORS", "Executor", "LocalExecutor", "RayExecutor", "make_executor", "run_worker"]


class Executor(Protocol):
    """Builds one recipe into an artifact directory; returns the worker's JSON summary or
    ``{"error": why}``."""

    name: str

    def build(self, recipe: Recipe, source: str, out: Path, *, timeout: float) -> dict[str, Any]:
        """Build ``recipe`` on ``source`` into ``out``."""
        ...

    def close(self) -> None:
        """Release what the executor started."""
        ...


def _memory_limit() -> Callable[[], None] | None:
    """A ``preexec_fn`` capping a worker's address space at 80% of the machine's memory."""
    try:
        import resource

        import psutil

        cap = int(psutil.virtual_memory().total * 0.8)
    except Exception:  # pragma: no cover - not on POSIX
        return None

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    return limit


def run_worker(
    recipe: Recipe,
    model: str,
    out: Path,
    *,
    timeout: float,
    threads: int | None,
    trust_code: bool,
) -> dict[str, Any]:
    """Build one candidate in its own process; its JSON summary, or ``{"error": ...}``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    recipe_file = out.parent / f"{out.name}.recipe.yaml"
    recipe.save(recipe_file)
    cmd = [
        sys.executable,
        "-m",
        "torchslim.cli.main",
        "run",
        str(recipe_file),
        model,
        "--out",
        str(out),
        "--force",
        "--no-latency",
        "--json",
    ]
    if threads:
        cmd += ["--threads", str(threads)]
    if trust_code:
        cmd.append("--trust-code")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=max(5.0, timeout),
            env=env,
            preexec_fn=_memory_limit(),
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
        if not lines and proc.stdout.strip().startswith("{"):
            with contextlib.suppress(ValueError):
                lines = [str(json.loads(proc.stdout).get("error"))]
        why = (
            lines[0].removeprefix("error: ")
            if lines
            else (
                f"exit code {proc.returncode}"
                + (" (killed: out of memory?)" if proc.returncode < 0 else "")
            )
        )
        return {"error": why}
    try:
        result: dict[str, Any] = json.loads(proc.stdout)
    except ValueError:
        return {"error": "the worker printed no JSON summary"}
    return result


class LocalExecutor:
    """Builds on this machine, one worker process per build."""

    name = "local"

    def __init__(self, *, threads: int | None = None, trust_code: bool = False) -> None:
        self.threads = threads
        self.trust_code = trust_code

    def build(self, recipe: Recipe, source: str, out: Path, *, timeout: float) -> dict[str, Any]:
        """Build in a worker process here."""
        return run_worker(
            recipe, source, out, timeout=timeout, threads=self.threads, trust_code=self.trust_code
        )

    def close(self) -> None:
        """Nothing to release."""


def _pack(directory: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for item in sorted(directory.iterdir()):
            tar.add(item, arcname=item.name)
    return buf.getvalue()


def _unpack(data: bytes, target: Path) -> None:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        tar.extractall(target, filter="data")  # refuses absolute paths, links out, devices


def _remote_build(
    recipe: Recipe,
    source: str,
    source_files: bytes | None,
    timeout: float,
    threads: int | None,
    trust_code: bool,
) -> dict[str, Any]:
    """The Ray task: build in a worker process on the node, return the summary and the files."""
    import socket

    with tempfile.TemporaryDirectory(prefix="torchslim-ray-") as tmp:
        work = Path(tmp)
        if source_files is not None:
            src_dir = work / "source"
            _unpack(source_files, src_dir)
            source = str(src_dir)
        out = work / "artifact"
        got = run_worker(
            recipe, source, out, timeout=timeout, threads=threads, trust_code=trust_code
        )
        got["node"] = socket.gethostname()
        if "error" in got:
            return {"summary": got, "files": None}
        return {"summary": got, "files": _pack(out)}


class RayExecutor:
    """Builds on the nodes of a Ray cluster; the artifacts come back to ``out`` here.

    Args:
        address: ``ray.init`` address: ``auto`` (a running cluster), ``ray://host:10001``,
            ``host:6379``, or ``local`` (start a private cluster on this machine).
        threads: Intra-op threads per build; also the CPUs each Ray task asks for.
        trust_code: Pass ``--trust-code`` to the workers.
    """

    name = "ray"

    def __init__(
        self, address: str = "auto", *, threads: int | None = None, trust_code: bool = False
    ) -> None:
        from torchslim._ray import connect

        ray, self._started = connect(address)
        self._ray = ray
        self.threads = threads
        self.trust_code = trust_code
        self._task = ray.remote(max_retries=0)(_remote_build)

    def build(self, recipe: Recipe, source: str, out: Path, *, timeout: float) -> dict[str, Any]:
        """Build as a Ray task; write the returned files into ``out`` atomically."""
        from torchslim._io import atomic_directory

        ray = self._ray
        src = Path(source)
        payload = _pack(src) if src.is_dir() else None
        ref = self._task.options(num_cpus=self.threads or 1).remote(
            recipe, source, payload, timeout, self.threads, self.trust_code
        )
        try:
            res = ray.get(ref, timeout=max(5.0, timeout) + 60.0)
        except ray.exceptions.GetTimeoutError:
            ray.cancel(ref, force=True)
            return {"error": f"timed out after {timeout:.0f} s on the Ray cluster"}
        except ray.exceptions.RayError as exc:
            return {"error": f"the Ray task failed: {type(exc).__name__}: {str(exc)[:200]}"}
        summary: dict[str, Any] = res["summary"]
        if res["files"] is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            with atomic_directory(out, force=True) as tmp:
                _unpack(res["files"], tmp)
            with contextlib.suppress(OSError):
                recipe.save(out.parent / f"{out.name}.recipe.yaml")
        return summary

    def close(self) -> None:
        """Shut down the cluster if this executor started it."""
        if self._started:
            self._ray.shutdown()
            self._started = False


EXECUTORS = ("local", "ray")


def make_executor(
    name: str, *, address: str | None = None, threads: int | None = None, trust_code: bool = False
) -> Executor:
    """The executor called ``name`` (``local`` or ``ray``)."""
    if name == "local":
        return LocalExecutor(threads=threads, trust_code=trust_code)
    if name == "ray":
        return RayExecutor(address or "auto", threads=threads, trust_code=trust_code)
    raise TorchslimError(f"Unknown executor '{name}'.", f"Use one of: {', '.join(EXECUTORS)}.")
