"""Load ``.pt2`` exported programs and TorchScript files without running code from the file.

This module imports nothing from torchslim but :mod:`torchslim.errors`, and imports torch only
inside the functions that need it, so any module may use it.

What ``torch.export.load`` (torch 2.14) runs from a file
--------------------------------------------------------
Read in ``torch/export/__init__.py``, ``torch/export/pt2_archive/_package.py``,
``torch/_export/serde/serialize.py`` and ``torch/utils/_pytree.py``. A ``.pt2`` is a zip read with
``torch._C.PyTorchFileReader`` (record names lose the archive's top folder); for each record
``models/<m>.json`` it reads:

* ``data/sample_inputs/<m>.pt`` (the example inputs) and the legacy ``data/weights/<m>.pt`` and
  ``data/constants/<m>.pt`` through ``deserialize_torch_artifact``: ``torch.load`` with
  ``weights_only=True`` and, on *any* failure, again with ``weights_only=False`` — a full unpickle,
  so an object's ``__reduce__`` runs (the reviewer's ``os.system`` marker).
* weights and tensor constants whose payload config (``data/weights/<m>_weights_config.json``,
  ``data/constants/<m>_constants_config.json``) says ``use_pickle``: ``torch.load`` with
  ``weights_only=False``.
* ``data/constants/opaque_obj_*``: ``pickle.loads``.
* ``data/constants/custom_obj_*`` (torchbind objects): ``torch._C._pickle_load_obj``, TorchScript's
  C++ unpickler, which refuses Python globals (a pickle calling ``os.system`` fails with
  ``Unknown type name 'posix.system'``); allowed.
* every ``"expr_str"`` in ``models/<m>.json`` (symbolic shapes): ``sympy.sympify``, which is
  ``eval`` — ``"__import__('os').system(...)"`` runs with no pickle at all.
* every ``"in_spec"``/``"out_spec"`` (pytree specs): an enum in a context (``"__enum__"``) or a
  ``collections.defaultdict`` factory makes ``importlib.import_module`` import a module the file
  names (an import runs that module's code).
* ``data/aotinductor/``: a compiled shared library that ``load_pt2`` loads (native code).
* when any of that raises ``RuntimeError``, ``torch.export.load`` logs a traceback and reads the
  *same* file again as the pre-2.7 format with :mod:`zipfile`: ``serialized_state_dict.pt``,
  ``serialized_constants.pt``, ``serialized_example_inputs.pt`` (and the ``.json`` state-dict and
  constants names) through ``deserialize_torch_artifact``, ``serialized_exported_program.json``
  like ``models/<m>.json``.

Graph nodes are limited by torch's verifier (run when the program is built) to ``OpOverload``,
higher-order operators and a list of builtins; it does not look at arguments, and an argument of
type ``as_operator`` may name any function reachable from ``torch``, ``math`` or ``operator``
(``torch.os.system``) that a higher-order operator then calls when the module runs.

:func:`load_exported_program` reads the file once, checks every one of those members in both
views (with the reader torch itself uses), loads the checked bytes — not the path, so the file
cannot change in between — under a scoped patch that forces ``weights_only=True`` on ``torch.load``
and refuses ``pickle.loads`` (a backstop for any path missed above), and then checks every callable
the graph holds.

TorchScript (``torch.jit.load``)
--------------------------------
Loading runs in C++. ``data.pkl``, ``constants.pkl`` and the ``*.debug_pkl`` records are read by
TorchScript's own unpickler, which builds only tensors, containers and classes compiled from the
archive: replacing ``data.pkl`` or ``constants.pkl`` with a pickle that calls ``os.system`` fails
with ``Unknown type name 'posix.system'`` and runs nothing. ``code/`` is TorchScript source,
compiled by the TorchScript compiler, which has no ``import``, ``eval``, attribute access on Python
modules or calls into Python functions. Trusted is only what a TorchScript program can do when it
is *called*: run registered operators (including custom operators that installed packages
register). So :func:`load_torchscript` has no ``trust_pickle``: there is no pickle it would allow.
"""

from __future__ import annotations

import ast
import contextlib
import enum
import io
import json
import logging
import os
import pickletools
import re
import sys
import threading
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from torchslim.errors import SourceError, UntrustedPickleError

if TYPE_CHECKING:
    from torch import nn
    from torch.export import ExportedProgram
    from torch.jit import ScriptModule

__all__ = [
    "eval_mode",
    "is_exported_program_archive",
    "load_exported_program",
    "load_torchscript",
    "pickle_stream_problem",
]

ModuleT = TypeVar("ModuleT", bound="nn.Module")

TRUST_HINT = (
    "Pass --trust-pickle (trust_pickle=True) only if this file is your own: a file from anyone "
    "else can run any code on this machine."
)
_PT2_HINT = "Save it with torch.export.save(torch.export.export(model, args), 'model.pt2')."
_CORRUPT_HINT = "The file may be truncated or corrupt; re-export it."
_REFUSED = "can run arbitrary code, so torchslim refuses it by default."

# The pre-2.7 archive: members torch.export.load reads with zipfile when the PT2 path fails.
_LEGACY_VERSION = "version"
_LEGACY_PROGRAM = "serialized_exported_program.json"
_LEGACY_UNPICKLED = (
    "serialized_state_dict.pt",
    "serialized_constants.pt",
    "serialized_example_inputs.pt",
    "serialized_state_dict.json",
    "serialized_constants.json",
)

# Functions a graph may call besides operators: torch's verifier allowlist
# (torch/_export/verifier.py, _check_valid_op), as dotted names under ``torch``.
_TORCH_FUNCTIONS = (
    "autograd.grad_mode.set_grad_enabled",
    "sym_int",
    "sym_float",
    "sym_ite",
    "sym_max",
    "sym_min",
    "sym_not",
    "sym_sqrt",
    "sym_sum",
    "export.custom_ops._call_custom_autograd_function_in_pre_dispatch",
    "_C._set_grad_enabled",
    "amp.autocast_mode._enter_autocast",
    "amp.autocast_mode._exit_autocast",
    "fx.experimental.symbolic_shapes.cast_symbool_to_symint_guardless",
    "_functorch.predispatch._add_batch_dim",
    "_functorch.predispatch._remove_batch_dim",
    "_functorch.predispatch._vmap_increment_nesting",
    "_functorch.predispatch._vmap_decrement_nesting",
    "_functorch.predispatch.lazy_load_decompositions",
    "_functorch.predispatch._make_dual",
    "_functorch.predispatch._unpack_dual",
    "_functorch.predispatch._jvp_increment_nesting",
    "_functorch.predispatch._jvp_decrement_nesting",
    "_functorch.predispatch._unwrap_for_grad",
    "_functorch.predispatch._enter_dual_level",
    "_functorch.predispatch._exit_dual_level",
)

# Calls a symbolic-shape expression may make: what sympy's srepr() prints for torch's shape
# expressions, and the torch.utils._sympy.functions torch's deserializer gives sympify.
_SYMPY_CALLS = frozenset(
    {
        "Symbol",
        "Integer",
        "Rational",
        "Float",
        "Add",
        "Mul",
        "Pow",
        "Mod",
        "Max",
        "Min",
        "Abs",
        "floor",
        "ceiling",
        "Eq",
        "Ne",
        "Lt",
        "Le",
        "Gt",
        "Ge",
        "Equality",
        "Unequality",
        "StrictLessThan",
        "StrictGreaterThan",
        "LessThan",
        "GreaterThan",
        "And",
        "Or",
        "Not",
        "Piecewise",
        "ExprCondPair",
        "FloorDiv",
        "ModularIndexing",
        "Where",
        "PythonMod",
        "CleanDiv",
        "CeilToInt",
        "FloorToInt",
        "CeilDiv",
        "LShift",
        "RShift",
        "PowByNatural",
        "FloatPow",
        "FloatTrueDiv",
        "IntTrueDiv",
        "IsNonOverlappingAndDenseIndicator",
        "TruncToFloat",
        "TruncToInt",
        "RoundToInt",
        "RoundDecimal",
        "ToFloat",
        "Identity",
    }
)
# The only calls that may take a string (sympify would eval a string passed to any other one).
_STRING_ARG_PATTERNS = {
    "Symbol": re.compile(r"[A-Za-z][A-Za-z0-9_]*"),
    "Float": re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:inf|nan)"),
}
_SYMPY_NODES = (
    ast.Expression,
    ast.Call,
    ast.Name,
    ast.Load,
    ast.Constant,
    ast.keyword,
    ast.Tuple,
    ast.BinOp,
    ast.UnaryOp,
    ast.BoolOp,
    ast.Compare,
    ast.operator,
    ast.unaryop,
    ast.boolop,
    ast.cmpop,
)
_DEFAULTDICT_FACTORIES = frozenset(
    {"list", "dict", "set", "frozenset", "tuple", "int", "float", "complex", "str", "bytes", "bool"}
)

_PATCH_LOCK = threading.RLock()


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def load_exported_program(
    path: str | os.PathLike[str], *, trust_pickle: bool = False
) -> ExportedProgram:
    """Load a ``torch.export`` program (``.pt2``) without running code from the file.

    Every member ``torch.export.load`` would unpickle must unpickle weights-only (tensors and
    plain containers); symbolic-shape expressions must be plain arithmetic; pytree specs may only
    name modules already imported; AOTInductor code is refused; every callable in the graph must
    be a torch operator or one of the builtins torch's verifier allows (see the module docstring
    for what each of these guards against). The file is read once and never written.

    Args:
        path: The ``.pt2`` file (or a zip of that format under another name).
        trust_pickle: The file is the user's own: load it with plain ``torch.export.load``, which
            fully unpickles members and evaluates its expressions (it can run any code).

    Returns:
        The exported program.

    Raises:
        UntrustedPickleError: A member needs full unpickling (or holds code) and ``trust_pickle``
            is false; the message names the file and the member.
        SourceError: Not a readable torch.export archive (one line; torch's traceback logging
            is silenced).
    """
    p = Path(path)
    data = _read_file(p)
    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise SourceError(f"'{p}' is not a torch.export program (not a zip archive).", _PT2_HINT)
    import torch

    refusals: list[str] = []
    with _quiet_torch_export(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if not trust_pickle:
            _check_archive(p, data)
        try:
            with contextlib.nullcontext() if trust_pickle else _no_code_from_file(refusals):
                ep = torch.export.load(io.BytesIO(data))
        except MemoryError:
            raise
        except Exception as exc:
            if refusals:
                raise UntrustedPickleError(
                    f"'{p}' holds {refusals[0]}; running it {_REFUSED}", TRUST_HINT
                ) from exc
            reason = _first_line(exc)
            if "warnings above" in reason:  # torch's legacy fallback; its log is silenced
                reason = "a zip archive, but neither a PT2 archive nor the pre-2.7 format"
            raise SourceError(
                f"'{p}' is not a loadable torch.export program: {reason}.", _PT2_HINT
            ) from exc
        if not trust_pickle:
            _check_graph_callables(p, ep)
    return ep


def load_torchscript(path: str | os.PathLike[str], *, map_location: str = "cpu") -> ScriptModule:
    """Load a TorchScript file (``torch.jit.save`` output) onto ``map_location``.

    No ``trust_pickle`` switch: TorchScript's C++ loader unpickles only tensors, containers and
    classes compiled from the archive's TorchScript code, and that code cannot import or call
    Python (see the module docstring). What the loaded module may do when called is run
    registered torch operators.

    Args:
        path: The TorchScript file.
        map_location: Where to put its tensors.

    Returns:
        The ``ScriptModule`` (training flags as saved).

    Raises:
        SourceError: Missing, or not a loadable TorchScript archive (one line, no warnings).
    """
    p = Path(path)
    if not p.is_file():
        raise SourceError(f"TorchScript file '{p}' does not exist.", "Check the path.")
    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit.load's deprecation notice
            module: ScriptModule = torch.jit.load(str(p), map_location=map_location)
    except MemoryError:
        raise
    except Exception as exc:
        raise SourceError(
            f"'{p}' is not a loadable TorchScript file: {_first_line(exc)}.",
            "Re-save it with torch.jit.save(torch.jit.script(model), path).",
        ) from exc
    return module


def is_exported_program_archive(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a zip that claims to be a ``torch.export`` program, whatever its name.

    Reads the zip's directory only: nothing is unpickled and torch is not imported. True when a
    record, below the archive's top folder (which torch's reader drops), is ``archive_format`` or
    lies in ``models/``, or when the zip holds the pre-2.7 ``serialized_exported_program.json``.
    TorchScript archives (``code/``, ``constants.pkl``) and ``torch.save`` zips do not match.
    """
    try:
        if not zipfile.is_zipfile(path):
            return False
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (OSError, zipfile.BadZipFile):
        return False
    for name in names:
        inner = name.split("/", 1)[1] if "/" in name else ""
        if inner == "archive_format" or inner.startswith("models/"):
            return True
        if name.endswith(_LEGACY_PROGRAM):
            return True
    return False


def pickle_stream_problem(source: bytes | str | os.PathLike[str]) -> str | None:
    """Why ``source`` is not a ``torch.save`` payload at all, or ``None`` when it could be one.

    A ``torch.save`` payload is a zip holding a ``data.pkl`` pickle, or (the legacy format) a
    pickle stream. This walks the pickle's opcodes with :func:`pickletools.genops`, which parses
    and runs nothing, so it tells random bytes ("not a checkpoint") from a well-formed pickle
    that merely needs more than weights-only unpickling ("needs trust").

    Args:
        source: The bytes, or a file path.

    Returns:
        A short reason (for an error message), or ``None``.
    """
    with contextlib.ExitStack() as stack:
        f: Any = (
            io.BytesIO(source)
            if isinstance(source, bytes)
            else stack.enter_context(Path(source).open("rb"))
        )
        if zipfile.is_zipfile(f):
            with zipfile.ZipFile(f) as zf:
                pkl = [n for n in zf.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
                if not pkl:
                    return "a zip archive without a data.pkl record"
                stream: Any = io.BytesIO(zf.read(pkl[0]))
        else:
            f.seek(0)
            stream = f
        try:
            for _ in pickletools.genops(stream):
                pass
        except Exception as exc:
            return f"not a pickle stream: {_first_line(exc)}"
    return None


def eval_mode(module: ModuleT) -> ModuleT:
    """Put ``module`` and every submodule in eval mode; return it. Works for every module type.

    ``nn.Module.eval()`` raises ``NotImplementedError`` for a module made by
    ``ExportedProgram.module()`` (torch binds a ``train``/``eval`` that refuse, since the graph's
    Dropout/BatchNorm behaviour was fixed at export), and for any module containing one. Such
    trees get every ``training`` flag cleared directly (what ``nn.Module.train(False)`` does,
    without calling the refusing methods); other modules get their own ``eval()``.

    Args:
        module: Any ``nn.Module`` (eager, scripted, or from an exported program).

    Returns:
        ``module`` itself.
    """
    modules = list(module.modules())
    if not any("train" in vars(m) or "eval" in vars(m) for m in modules):
        module.eval()
        return module
    for m in modules:
        m.training = False
    return module


# --------------------------------------------------------------------------------------------
# Archive checks (nothing here executes code from the file)
# --------------------------------------------------------------------------------------------


def _read_file(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SourceError(f"Model file '{path}' does not exist.", "Check the path.") from None
    except OSError as exc:
        raise SourceError(f"Cannot read '{path}': {exc.strerror or exc}.") from exc
    if not data:
        raise SourceError(f"Model file '{path}' is empty.", "Re-save the model.")
    return data


def _check_archive(path: Path, data: bytes) -> None:
    """Check both views torch.export.load may read (PT2 records, then the legacy zip members)."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        seen: set[str] = set()
        for name in zf.namelist():
            if name.lower() in seen:  # two readers could pick different copies
                raise SourceError(
                    f"'{path}' has two members named '{name}'; torchslim does not load it.",
                    _PT2_HINT,
                )
            seen.add(name.lower())
        names = zf.namelist()
        if _LEGACY_VERSION in names:
            for name in names:
                if name == _LEGACY_PROGRAM:
                    _check_program_json(path, name, zf.read(name))
                elif name in _LEGACY_UNPICKLED:
                    _check_weights_only(path, name, zf.read(name))
    _check_pt2_records(path, data)


def _check_pt2_records(path: Path, data: bytes) -> None:
    import torch
    from torch._C._export import pt2_archive_constants as c

    try:
        reader = torch._C.PyTorchFileReader(io.BytesIO(data))
        records = list(reader.get_all_records())
    except RuntimeError:
        return  # torch cannot read it this way either; it goes to the legacy view
    names = set(records)
    for rec in records:
        if rec.startswith(c.AOTINDUCTOR_DIR):
            raise UntrustedPickleError(
                f"'{path}' holds AOTInductor compiled code ('{rec}'); loading it runs native code "
                f"from the file, which {_REFUSED}",
                TRUST_HINT,
            )
    prefix, suffix = c.MODELS_FILENAME_FORMAT.split("{}")
    for rec in records:
        if not rec.startswith(prefix):
            continue
        model = rec[len(prefix) : -len(suffix)]  # exactly how torch derives the name
        _check_program_json(path, rec, reader.get_record(rec))
        sample = c.SAMPLE_INPUTS_FILENAME_FORMAT.format(model)
        if sample in names:
            _check_weights_only(path, sample, reader.get_record(sample))
        for folder, config_format in (
            (c.WEIGHTS_DIR, c.WEIGHTS_CONFIG_FILENAME_FORMAT),
            (c.CONSTANTS_DIR, c.CONSTANTS_CONFIG_FILENAME_FORMAT),
        ):
            legacy = f"{folder}{model}.pt"
            config = config_format.format(model)
            if legacy in names:  # torch prefers the legacy file when both exist
                _check_weights_only(path, legacy, reader.get_record(legacy))
            elif config in names:
                for path_name, use_pickle in _payload_entries(
                    path, config, reader.get_record(config)
                ):
                    member = os.path.join(folder, path_name)  # as torch joins it
                    if folder == c.CONSTANTS_DIR and path_name.startswith(
                        c.OPAQUE_OBJ_FILENAME_PREFIX
                    ):
                        raise UntrustedPickleError(
                            f"'{path}' member '{member}' is a pickled Python object (an opaque "
                            f"constant), read with pickle.loads, which {_REFUSED}",
                            TRUST_HINT,
                        )
                    if folder == c.CONSTANTS_DIR and path_name.startswith(
                        c.CUSTOM_OBJ_FILENAME_PREFIX
                    ):
                        continue  # TorchScript's C++ unpickler: no Python globals
                    if use_pickle and member in names:
                        _check_weights_only(path, member, reader.get_record(member))


def _payload_entries(path: Path, member: str, raw: bytes) -> list[tuple[str, bool]]:
    """``(path_name, use_pickle)`` of a weights/constants payload config, read as torch reads it."""
    try:
        doc = json.loads(raw.decode("utf-8"))
        entries = doc["config"].values()
        out = []
        for entry in entries:
            name = entry["path_name"]
            if not isinstance(name, str):
                raise TypeError("path_name is not a string")
            out.append((name, bool(entry.get("use_pickle"))))
        return out
    except Exception as exc:
        raise SourceError(
            f"'{path}' member '{member}' is not a valid payload config: {_first_line(exc)}.",
            _CORRUPT_HINT,
        ) from exc


def _check_weights_only(path: Path, member: str, blob: bytes) -> None:
    """A member torch would ``torch.load`` must load weights-only (tensors, plain containers)."""
    if not blob:
        return  # torch reads an empty artifact as {} without unpickling
    import pickle

    import torch

    try:
        try:
            torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            if "torchao" not in str(exc) or not _import_torchao():
                raise
            torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        problem = pickle_stream_problem(blob)
        if problem is not None:
            raise SourceError(
                f"'{path}' member '{member}' is corrupt ({problem}).", _CORRUPT_HINT
            ) from exc
        raise UntrustedPickleError(
            f"'{path}' member '{member}' holds pickled Python objects, not just tensors "
            f"({_unpickling_reason(exc)}); unpickling {_REFUSED}",
            TRUST_HINT,
        ) from exc
    except MemoryError:
        raise
    except Exception as exc:
        raise SourceError(
            f"'{path}' member '{member}' is not a readable tensor payload: {_first_line(exc)}.",
            _CORRUPT_HINT,
        ) from exc


def _import_torchao() -> bool:
    """Import torchao (a torchslim dependency) if it is installed and not imported yet.

    Its import registers its tensor subclasses (the quantized weights of a torchao-quantized
    program, pickled by ``torch.export.save``) with ``torch.serialization.add_safe_globals``, so
    weights-only unpickling accepts them. The module name is fixed here, never taken from the file.

    Returns:
        Whether it was imported now (so a retry can succeed).
    """
    if "torchao" in sys.modules:
        return False
    import importlib

    try:
        with _quiet_loggers("torchao", "torch.utils._pytree", "torch.utils.cpp_extension"):
            importlib.import_module("torchao")
    except ImportError:
        return False
    return True


def _check_program_json(path: Path, member: str, raw: bytes) -> None:
    """Check the strings torch evaluates (sympy expressions) or imports from (pytree specs)."""
    try:
        doc = json.loads(raw.decode("utf-8"))
    except Exception as exc:
        raise SourceError(
            f"'{path}' member '{member}' is not valid JSON: {_first_line(exc)}.", _CORRUPT_HINT
        ) from exc
    stack: list[Any] = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "expr_str":
                    _check_sym_expr(path, member, value)
                elif key in ("in_spec", "out_spec"):
                    _check_treespec(path, member, value)
                else:
                    stack.append(value)
        elif isinstance(node, list):
            stack.extend(node)


def _refuse_code(path: Path, member: str | None, what: str) -> UntrustedPickleError:
    where = f"'{path}' member '{member}'" if member else f"'{path}'"
    return UntrustedPickleError(
        f"{where} holds {what}; torch would run it while loading or calling the model, which "
        f"{_REFUSED}",
        TRUST_HINT,
    )


def _check_sym_expr(path: Path, member: str, expr: Any) -> None:
    """A shape expression must be arithmetic over symbols: sympify() evals the string."""
    if not _is_plain_arithmetic(expr):
        shown = repr(expr)[:120]
        raise _refuse_code(
            path, member, f"a shape expression that is not plain arithmetic ({shown})"
        )


def _is_plain_arithmetic(expr: Any) -> bool:
    """Whether ``sympy.sympify(expr)`` can only build a sympy expression.

    Allowed: numbers, bare names (sympify turns unknown ones into Symbols), arithmetic, comparison
    and boolean operators, and calls to :data:`_SYMPY_CALLS` with constant keyword values. Strings
    only as a Symbol's name or a Float's digits: most sympy classes sympify a string argument,
    which evals it. No attributes, subscripts, lambdas or comprehensions.
    """
    if not isinstance(expr, str):
        return False
    try:
        tree = ast.parse(expr, mode="eval")
    except (SyntaxError, ValueError):
        return False
    allowed_strings: set[int] = set()
    for node in ast.walk(tree):
        if not isinstance(node, _SYMPY_NODES):
            return False
        if isinstance(node, ast.Name) and node.id.startswith("_"):
            return False
        if isinstance(node, ast.Constant) and not isinstance(node.value, (bool, int, float, str)):
            return False
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in _SYMPY_CALLS:
                return False
            for kw in node.keywords:
                if kw.arg is None or not (
                    isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, (bool, int))
                ):
                    return False
            pattern = _STRING_ARG_PATTERNS.get(node.func.id)
            first = node.args[0] if node.args else None
            if (
                pattern is not None
                and isinstance(first, ast.Constant)
                and isinstance(first.value, str)
                and pattern.fullmatch(first.value)
            ):
                allowed_strings.add(id(first))
    return all(
        id(node) in allowed_strings
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    )


def _check_treespec(path: Path, member: str, text: Any) -> None:
    """A pytree spec may not make torch import a module (enum contexts, defaultdict factories)."""
    if not isinstance(text, str):
        raise _refuse_code(path, member, "an input/output spec that is not a string")
    try:
        _protocol, schema = json.loads(text)
    except Exception as exc:
        raise SourceError(
            f"'{path}' member '{member}' has an unreadable input/output spec: {_first_line(exc)}.",
            _CORRUPT_HINT,
        ) from exc
    stack: list[Any] = [schema]
    while stack:
        node = stack.pop()
        if not isinstance(node, dict):
            continue
        context = node.get("context")
        if node.get("type") == "collections.defaultdict":
            ok = (
                isinstance(context, dict)
                and context.get("default_factory_module") == "builtins"
                and context.get("default_factory_name") in _DEFAULTDICT_FACTORIES
            )
            if not ok:
                raise _refuse_code(path, member, "a defaultdict spec naming a non-builtin factory")
        if isinstance(context, str):
            try:
                decoded = json.loads(context)
            except ValueError:
                decoded = None  # torch fails on it too, before importing anything
            for fqn in _enum_names(decoded):
                _check_enum(path, member, fqn)
        children = node.get("children_spec")
        if isinstance(children, list):
            stack.extend(children)


def _enum_names(decoded: Any) -> Iterator[Any]:
    stack = [decoded]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "__enum__" in node:
                yield node.get("fqn")
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def _check_enum(path: Path, member: str, fqn: Any) -> None:
    """An enum torch would import: its module must already be imported (importing runs nothing)."""
    bad = _refuse_code(path, member, f"an input/output spec that imports {str(fqn)[:80]!r}")
    if not isinstance(fqn, str):
        raise bad
    modname, _, qualname = fqn.partition(":")
    obj: Any = sys.modules.get(modname)
    if obj is None:
        raise bad
    for attr in qualname.split("."):
        if not attr.isidentifier() or attr.startswith("_"):
            raise bad
        obj = getattr(obj, attr, None)
    if not (isinstance(obj, type) and issubclass(obj, enum.Enum)):
        raise bad


def _check_graph_callables(path: Path, ep: ExportedProgram) -> None:
    """Every function the graph calls or passes along must be a torch operator or allowlisted."""
    import torch

    allowed_types, allowed_ids = _allowed_graph_callables()
    for gm in ep.graph_module.modules():
        if not isinstance(gm, torch.fx.GraphModule):
            continue
        for node in gm.graph.nodes:
            if node.op in ("call_module", "call_method"):
                raise _refuse_code(path, None, f"a graph {node.op} node ({node.target!r})")
            values: list[Any] = [node.target] if node.op == "call_function" else []
            torch.fx.node.map_aggregate((node.args, node.kwargs), values.append)
            for v in values:
                if isinstance(v, (torch.fx.Node, torch.fx.GraphModule)) or not callable(v):
                    continue
                if isinstance(v, allowed_types) or id(v) in allowed_ids:
                    continue
                name = f"{getattr(v, '__module__', '?')}.{getattr(v, '__qualname__', repr(v))}"
                raise _refuse_code(
                    path, None, f"a graph that calls {name[:100]!r}, not a torch operator"
                )


def _allowed_graph_callables() -> tuple[tuple[type, ...], set[int]]:
    import torch
    from torch._export.serde import serialize
    from torch._export.verifier import Verifier

    types_ = (torch._ops.OpOverload, torch._ops.OpOverloadPacket, torch._ops.HigherOrderOperator)
    fns: list[Any] = [*Verifier().allowed_builtin_ops(), *getattr(serialize, "_SYM_OPS", ())]
    for dotted in _TORCH_FUNCTIONS:
        obj: Any = torch
        for attr in dotted.split("."):
            obj = getattr(obj, attr, None)
        if obj is not None:
            fns.append(obj)
    return types_, {id(f) for f in fns}


# --------------------------------------------------------------------------------------------
# Scoped process state: patches and loggers, always restored
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _no_code_from_file(refusals: list[str]) -> Iterator[None]:
    """For the block, inside torch's loader: ``torch.load`` is weights-only whatever the caller
    asks, the PT2 reader's ``pickle.loads`` refuses, the deserializer's ``sympy.sympify`` refuses
    strings that are not plain arithmetic, and pytree's ``importlib.import_module`` returns only
    modules already imported. Each refusal is described in ``refusals``.

    This is the backstop behind the member checks. It is process-wide while it lasts (a lock keeps
    two loads from interleaving their restores); another thread's ``torch.load`` in that window is
    weights-only too, the safe direction. Everything is restored on exit, also on errors.
    """
    import pickle

    import torch
    import torch.utils._pytree as pytree
    from torch._export.serde import serialize
    from torch.export.pt2_archive import _package

    real_load = torch.load

    def forced_load(
        f: Any,
        map_location: Any = None,
        pickle_module: Any = None,
        *,
        weights_only: bool | None = None,
        mmap: bool | None = None,
        **kwargs: Any,
    ) -> Any:
        try:
            return real_load(f, map_location, weights_only=True, mmap=mmap, **kwargs)
        except pickle.UnpicklingError as exc:
            refusals.append(f"a pickle that needs full unpickling ({_unpickling_reason(exc)})")
            raise

    class _Guarded:
        """Stands in for a module inside torch's loader; only the named functions change."""

        def __init__(self, real: Any, **overrides: Any) -> None:
            self._real = real
            self.__dict__.update(overrides)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._real, name)

    def refusing_loads(*args: Any, **kwargs: Any) -> Any:
        refusals.append("a pickled Python object read with pickle.loads")
        raise pickle.UnpicklingError("torchslim refuses pickle.loads on an untrusted file")

    def checked_sympify(expr: Any, *args: Any, **kwargs: Any) -> Any:
        # numbers and sympy objects convert without eval; strings (and containers, whose
        # items sympify would convert one by one) must be plain arithmetic
        safe = isinstance(expr, (int, float, real_sympy.Basic))
        if not safe and not _is_plain_arithmetic(expr):
            refusals.append(f"a shape expression that is not plain arithmetic ({repr(expr)[:120]})")
            raise ValueError("torchslim refuses to evaluate this shape expression")
        return real_sympy.sympify(expr, *args, **kwargs)

    def imported_only(name: str, package: str | None = None) -> Any:
        if name in sys.modules and sys.modules[name] is not None:
            return sys.modules[name]
        refusals.append(f"an input/output spec that imports {name[:80]!r}")
        raise ImportError(f"torchslim refuses to import {name!r} for an untrusted file")

    real_pickle, real_sympy, real_importlib = _package.pickle, serialize.sympy, pytree.importlib
    with _PATCH_LOCK:
        torch.load = forced_load  # type: ignore[assignment]
        _package.pickle = _Guarded(real_pickle, loads=refusing_loads)  # type: ignore[assignment]
        serialize.sympy = _Guarded(real_sympy, sympify=checked_sympify)  # type: ignore[assignment]
        pytree.importlib = _Guarded(real_importlib, import_module=imported_only)  # type: ignore[assignment]
        try:
            yield
        finally:
            torch.load = real_load
            _package.pickle = real_pickle
            serialize.sympy = real_sympy
            pytree.importlib = real_importlib


@contextlib.contextmanager
def _quiet_torch_export() -> Iterator[None]:
    """Silence torch.export's loggers for the block (it logs a traceback for corrupt archives)."""
    import torch._export.serde.serialize
    import torch.export.pt2_archive._package  # noqa: F401  (its logger must exist to be silenced)

    with _quiet_loggers("torch.export", "torch._export"):
        yield


@contextlib.contextmanager
def _quiet_loggers(*prefixes: str) -> Iterator[None]:
    """Disable the named loggers and their existing children for the block; restore them after.

    The named ones also get a level above CRITICAL, which children created inside the block
    inherit.
    """
    names = {
        n
        for n in list(logging.Logger.manager.loggerDict)
        if any(n == p or n.startswith(p + ".") for p in prefixes)
    }
    loggers = [logging.getLogger(n) for n in sorted(names | set(prefixes))]
    saved = [(lg, lg.disabled, lg.level) for lg in loggers]
    try:
        for lg in loggers:
            lg.disabled = True
            if lg.name in prefixes:
                lg.setLevel(logging.CRITICAL + 1)
        yield
    finally:
        for lg, disabled, level in saved:
            lg.disabled = disabled
            lg.setLevel(level)


# --------------------------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------------------------


def _first_line(exc: BaseException) -> str:
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip().rstrip(".")[:300]
    return type(exc).__name__


def _unpickling_reason(exc: BaseException) -> str:
    """The informative line of torch's long weights-only message (the blocked global)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for line in lines:
        if "GLOBAL" in line or "global" in line:
            return line.rstrip(".")[:200]
    return (lines[0] if lines else type(exc).__name__).rstrip(".")[:200]
