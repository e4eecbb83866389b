"""The one atomic writer, file hashes and output-directory checks (no torch at import).

Every directory torchslim writes (artifacts, runtime exports, reports) goes through
:func:`atomic_directory`: files are written into a temporary sibling directory, flushed to disk
and renamed into place in one step, so a reader never sees a half-written result and an
interrupted command leaves nothing behind. :func:`check_out_dir` runs *before* any work, so a bad
``--out`` is refused in milliseconds, not after a long calibration or training run.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from torchslim.errors import TorchslimError

__all__ = [
    "MB",
    "atomic_directory",
    "check_out_dir",
    "file_table",
    "sha256_file",
    "tree_bytes",
]

MB = 1_000_000
"""Bytes in a megabyte: every size torchslim reports is in MB of 10⁶ bytes."""


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_table(directory: str | Path, *, skip: Iterable[str] = ()) -> dict[str, dict[str, object]]:
    """``{relative/path: {"sha256": ..., "bytes": ...}}`` for every file under ``directory``.

    Args:
        directory: The directory to describe.
        skip: Relative paths to leave out (e.g. the manifest that holds this table).
    """
    root = Path(directory)
    skipped = set(skip)
    table: dict[str, dict[str, object]] = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and rel not in skipped:
            table[rel] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
    return table


def tree_bytes(path: str | Path) -> int:
    """Bytes of a file, or of every file under a directory."""
    p = Path(path)
    if p.is_dir():
        return sum(q.stat().st_size for q in p.rglob("*") if q.is_file())
    return p.stat().st_size


def _is_within(child: Path, parent: Path) -> bool:
    try:
        child.relative_to(parent)
    except ValueError:
        return False
    return True


def check_out_dir(
    out: str | Path | None, *, force: bool = False, inputs: Iterable[str | Path | None] = ()
) -> Path:
    """Validate an output directory before any work is done.

    Args:
        out: The directory the user asked for.
        force: Allow replacing an existing non-empty directory (atomically, at the end).
        inputs: Paths the command reads (model files, data); the output may not be one of them,
            inside one, or contain one.

    Returns:
        The output path, resolved.

    Raises:
        TorchslimError: Empty path, an existing non-empty directory without ``force``, a file
            in the way, the input itself, or a location that cannot be written.
    """
    if out is None or not str(out).strip():
        raise TorchslimError("The output directory is empty.", "Give --out DIR, e.g. --out out/q.")
    target = Path(out).expanduser().resolve()
    for given in inputs:
        if given is None or not str(given) or (":" in str(given) and not Path(given).exists()):
            continue
        src = Path(given).expanduser().resolve()
        if not src.exists():
            continue
        if target == src or _is_within(src, target) or (src.is_dir() and _is_within(target, src)):
            raise TorchslimError(
                f"--out '{out}' would write into, over or around the input '{given}'.",
                "Choose an output directory outside the input model's folder.",
            )
    if target.exists():
        if not target.is_dir():
            raise TorchslimError(
                f"--out '{out}' exists and is a file.", "Give a directory path for --out."
            )
        if any(target.iterdir()) and not force:
            raise TorchslimError(
                f"--out '{out}' already exists and is not empty.",
                "Choose a new directory, or add --force to replace it (atomically, at the end).",
            )
    ancestor = target.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise TorchslimError(
            f"Cannot create --out '{out}': '{ancestor}' is not a writable directory.",
            "Choose a location you can write to.",
        )
    # /proc, /sys and similar report writable to root but refuse new entries: try for real, in
    # the deepest existing ancestor (creating the missing parents now would leave them behind
    # when the command then fails; the atomic writer creates them at the end).
    try:
        probe = tempfile.mkdtemp(prefix=".torchslim-probe-", dir=ancestor)
        os.rmdir(probe)
    except OSError as exc:
        raise TorchslimError(
            f"Cannot create --out '{out}': {exc.strerror or exc}.",
            "Choose a location you can write to.",
        ) from None
    return target


def _fsync_tree(root: Path) -> None:
    for p in sorted(root.rglob("*"), reverse=True):
        with contextlib.suppress(OSError):
            if p.is_file():
                with open(p, "rb") as f:
                    os.fsync(f.fileno())
    for d in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        with contextlib.suppress(OSError):
            fd = os.open(d, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_directory(directory: str | Path, *, force: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``directory`` only if the block succeeds.

    The temporary directory is a sibling of the target (same file system), so the final step is
    one ``rename``. Files are fsynced before it. An existing non-empty target is refused unless
    ``force``, in which case the old directory is moved aside, the new one renamed in and the old
    one deleted — a reader sees either the old or the new directory, never a mix. On any error
    (or ``KeyboardInterrupt``) the temporary directory is removed and the target is untouched.
    Permissions follow the umask (``mkdtemp``'s private 0700 is widened to the usual 0777&~umask).

    Raises:
        TorchslimError: The target exists and is not empty (without ``force``) or is a file.
    """
    target = Path(directory)
    if target.exists() and not target.is_dir():
        raise TorchslimError(f"'{target}' exists and is a file.", "Give a directory path.")
    if target.is_dir() and any(target.iterdir()) and not force:
        raise TorchslimError(
            f"'{target}' already exists and is not empty.",
            "Choose a new directory, or use --force to replace it.",
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        yield tmp
        _fsync_tree(tmp)
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
