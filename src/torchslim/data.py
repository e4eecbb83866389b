"""Data sources: calibration, evaluation and fine-tuning samples from the strings a user types.

Supported sources (see :func:`load_data`); any of them may carry options after ``?``, e.g.
``torchslim:fashion_mnist?split=train&limit=1000``:

===============================  ==============================================================
``DIR/``                         image folder, one sub-folder per class (``?size=224``,
                                 ``?normalize=imagenet|none``)
``file.npz``                     arrays ``x`` (and ``y`` for labels)
``file.pt``                      tensors saved as ``{"x": ..., "y": ...}`` (loaded weights-only)
``*-images-idx3-ubyte[.gz]``     IDX files (MNIST / Fashion-MNIST format); labels found beside
``pkg.module:factory``           a callable returning a map-style dataset of ``(x, y)`` pairs
``synthetic[:SHAPE]``            random inputs from an :class:`~torchslim.models.InputSpec`
                                 (``?n=64``) — fidelity only, never accuracy
``torchslim:fashion_mnist``      bundled Fashion-MNIST (``?split=test`` default, ``train``)
``torchslim:text_polarity``      bundled movie-review polarity sentences (needs the text extra)
``torchslim:text_background``    bundled unlabelled news sentences, for distillation (text extra)
===============================  ==============================================================

Every option is checked once, before anything is read (see ``_OPTIONS``): an unknown option, one
that does not apply to the source, or a value outside its range is refused with a
:class:`~torchslim.errors.DataError` naming the option, the value and the accepted range.

Whatever the source, bad data is refused at load with a one-line :class:`DataError` instead of
giving a traceback or a wrong result later: corrupt or truncated files, NaN/Inf inputs, labels
that are not one whole, non-negative class index per sample (or that reach ``num_classes`` where
the source knows it), and empty data. An image whose size trips Pillow's decompression-bomb
guard (``PIL.Image.MAX_IMAGE_PIXELS``, warning level included) is refused with its file name,
never skipped: skipping would silently change the class balance.
"""

from __future__ import annotations

import gzip
import importlib
import math
import re
import struct
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from torchslim.errors import DataError, TorchslimError, UntrustedPickleError
from torchslim.specs import InputSpec, TensorSpec, parse_input_spec

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["DataSet", "load_data", "read_idx", "split_source"]

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_MAX_IN_MEMORY_BYTES = 8 * 2**30  # synthetic data and image folders bigger than this are refused
_MAX_ASPECT = 100  # images longer than this many times their width (or height) are refused
_MAX_CLASSES = 2**31  # a label at or above this cannot be a class index
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip archive (or an empty one): .npz, torch.save
_NPY_MAGIC = b"\x93NUMPY"
_PICKLE_MAGIC = b"\x80"  # pickle protocol 2+ (legacy torch.save files start with it)
_FILE_HINT = "The file is corrupt or truncated; write it again"


@dataclass
class DataSet:
    """Samples held in memory: one tensor per model input (batch first) and optional labels.

    Attributes:
        name: Where it came from (for reports).
        inputs: One tensor per model input, all with the same first dimension.
        labels: Integer class labels, or ``None`` (then only fidelity can be measured).
        synthetic: True for generated inputs: results on them are fidelity, never accuracy.
        num_classes: Number of classes when labels exist.
        class_names: Names of the classes, when known.
        input_names: Names of the inputs, in call order.
        extra: Free-form per-source data (e.g. raw sentences for text sets).
    """

    name: str
    inputs: tuple[Tensor, ...]
    labels: Tensor | None = None
    synthetic: bool = False
    num_classes: int | None = None
    class_names: list[str] | None = None
    input_names: tuple[str, ...] = ("input",)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.inputs[0]) if self.inputs else 0
        if any(len(x) != n for x in self.inputs) or (
            self.labels is not None and len(self.labels) != n
        ):
            raise DataError(
                f"Data '{self.name}' has inputs and labels of different lengths.",
                "Give the same number of samples for every array.",
            )
        if len(self.input_names) != len(self.inputs):
            self.input_names = tuple(
                "input" if len(self.inputs) == 1 else f"input{i}" for i in range(len(self.inputs))
            )

    def __len__(self) -> int:
        return len(self.inputs[0]) if self.inputs else 0

    @property
    def has_labels(self) -> bool:
        """True when task accuracy can be measured on this data (real labels, not synthetic)."""
        return self.labels is not None and not self.synthetic

    def input_spec(self, batch_size: int = 1) -> InputSpec:
        """The :class:`InputSpec` implied by these samples."""
        specs = []
        for name, x in zip(self.input_names, self.inputs, strict=True):
            dtype = str(x.dtype).replace("torch.", "")
            dyn = (0, 1) if dtype in ("int64", "int32") and x.dim() == 2 else (0,)
            high = 2.0 if "mask" in name else (float(x.max()) + 1 if x.numel() else 1.0)
            specs.append(TensorSpec(name, (batch_size, *x.shape[1:]), dtype, dyn, 0.0, high))
        return InputSpec(tuple(specs))

    def subset(self, indices: Sequence[int] | Tensor, name: str | None = None) -> DataSet:
        """A new data set with the samples at ``indices``."""
        import torch

        idx = torch.as_tensor(indices, dtype=torch.long)
        return DataSet(
            name or self.name,
            tuple(x[idx] for x in self.inputs),
            None if self.labels is None else self.labels[idx],
            self.synthetic,
            self.num_classes,
            self.class_names,
            self.input_names,
            {k: _take(v, idx) for k, v in self.extra.items()},
        )

    def take(self, n: int, seed: int = 0) -> DataSet:
        """A seeded random sample of ``n`` items (stratified by label when labels exist)."""
        if n >= len(self):
            return self
        return self.split({"a": n / len(self), "b": 1 - n / len(self)}, seed=seed)["a"]

    def split(self, fractions: Mapping[str, float], seed: int = 0) -> dict[str, DataSet]:
        """Split into named, disjoint, seeded parts (stratified by label when labels exist).

        Args:
            fractions: Part name → fraction of the samples; fractions must sum to at most 1.
            seed: Random seed; the same seed gives the same split.

        Returns:
            Part name → :class:`DataSet`.
        """
        import torch

        if any(f < 0 for f in fractions.values()) or sum(fractions.values()) > 1 + 1e-9:
            raise DataError("Split fractions must be non-negative and sum to at most 1.")
        gen = torch.Generator().manual_seed(seed)
        groups: list[Tensor]
        if self.labels is not None and not self.synthetic:
            groups = [
                torch.nonzero(self.labels == c).flatten()[
                    torch.randperm(int((self.labels == c).sum()), generator=gen)
                ]
                for c in torch.unique(self.labels)
            ]
        else:
            groups = [torch.randperm(len(self), generator=gen)]
        parts: dict[str, list[Tensor]] = {k: [] for k in fractions}
        for g in groups:
            start = 0
            for k, frac in fractions.items():
                cnt = round(frac * len(g))
                parts[k].append(g[start : start + cnt])
                start += cnt
        out = {}
        for k, chunks in parts.items():
            idx = torch.cat(chunks) if chunks else torch.zeros(0, dtype=torch.long)
            idx = idx[torch.randperm(len(idx), generator=gen)]
            out[k] = self.subset(idx, f"{self.name}[{k}]")
        return out

    def batches(self, batch_size: int) -> Iterator[tuple[tuple[Tensor, ...], Tensor | None]]:
        """Yield ``(inputs, labels)`` batches in order; the last batch may be smaller."""
        for start in range(0, len(self), batch_size):
            sl = slice(start, start + batch_size)
            yield (
                tuple(x[sl] for x in self.inputs),
                None if self.labels is None else self.labels[sl],
            )

    def check_finite(self) -> None:
        """Raise :class:`DataError` if any floating-point input holds NaN or Inf.

        :func:`load_data` calls it on everything it loads, so every command refuses such data
        the same way; quantization calls it again on data sets built in code.
        """
        import torch

        for name, x in zip(self.input_names, self.inputs, strict=True):
            if x.is_floating_point() and not bool(torch.isfinite(x).all()):
                nonfinite = ~torch.isfinite(x)
                bad = int(nonfinite.sum())
                rows = nonfinite.reshape(len(x), -1).any(1) if x.dim() else nonfinite.reshape(1)
                first = int(torch.nonzero(rows)[0, 0])
                raise DataError(
                    f"Data '{self.name}' input '{name}' holds {bad} NaN/Inf value(s), the first "
                    f"in sample {first}.",
                    "Clean or re-normalise the data before calibrating or evaluating.",
                )

    def describe(self) -> dict[str, Any]:
        """A JSON-friendly summary."""
        return {
            "name": self.name,
            "samples": len(self),
            "inputs": {
                n: {"shape": list(x.shape[1:]), "dtype": str(x.dtype).replace("torch.", "")}
                for n, x in zip(self.input_names, self.inputs, strict=True)
            },
            "labels": self.labels is not None,
            "num_classes": self.num_classes,
            "synthetic": self.synthetic,
            "use": "fidelity only" if self.synthetic else "accuracy and fidelity",
        }


def _take(value: Any, idx: Tensor) -> Any:
    if isinstance(value, list):
        return [value[int(i)] for i in idx]
    if hasattr(value, "shape") and len(value) > 0:
        return value[idx]
    return value


def split_source(source: str) -> tuple[str, dict[str, str]]:
    """Split ``"path?k=v&k2=v2"`` into the path and its options."""
    base, _, query = source.partition("?")
    return base, dict(parse_qsl(query, keep_blank_values=True))


@dataclass(frozen=True)
class _Option:
    """One accepted ``?key=value`` option: its values and the sources it applies to.

    Attributes:
        low: Smallest accepted value of an integer option.
        high: Largest accepted value of an integer option.
        choices: Accepted values of a choice option (compared case-insensitively); empty for an
            integer option.
        sources: Kinds of source (see :func:`_source_kind`) it applies to; ``None`` for all.
    """

    low: int = 0
    high: int = 0
    choices: tuple[str, ...] = ()
    sources: frozenset[str] | None = None


_FOLDER, _NPZ, _PT, _IDX, _FACTORY, _SYNTHETIC = (
    "image folder",
    ".npz file",
    ".pt file",
    "IDX file",
    "data factory",
    "synthetic",
)
_FASHION, _POLARITY, _LEE50 = (
    "torchslim:fashion_mnist",
    "torchslim:text_polarity",
    "torchslim:text_lee50",
)
_BACKGROUND = "torchslim:text_background"
_KINDS = frozenset(
    {_FOLDER, _NPZ, _PT, _IDX, _FACTORY, _SYNTHETIC, _FASHION, _POLARITY, _LEE50, _BACKGROUND}
)
_MAX_SEED = 2**63 - 1
_YES_NO = ("1", "true", "yes", "on", "", "0", "false", "no", "off")
# The one place where query options are defined and checked (by _check_options).
_OPTIONS: dict[str, _Option] = {
    "limit": _Option(1, _MAX_SEED),
    "seed": _Option(0, _MAX_SEED),
    "n": _Option(1, 1_000_000, sources=frozenset({_SYNTHETIC})),
    "size": _Option(1, 4096, sources=frozenset({_FOLDER})),
    "normalize": _Option(choices=("imagenet", "none"), sources=frozenset({_FOLDER})),
    "split": _Option(choices=("test", "train"), sources=frozenset({_FASHION})),
    "full": _Option(choices=_YES_NO, sources=frozenset({_FASHION})),
    "seq_len": _Option(2, 512, sources=frozenset({_POLARITY, _LEE50, _BACKGROUND})),
}


def load_data(
    source: str,
    *,
    input_spec: InputSpec | None = None,
    split: str | None = None,
    limit: int | None = None,
    seed: int = 0,
) -> DataSet:
    """Load a data source into memory.

    Args:
        source: What the user typed (see the module docstring), with optional ``?k=v`` options.
        input_spec: The model's inputs; used for synthetic data and to size images.
        split: ``"train"`` or ``"test"`` for sources that have both (overrides ``?split=``);
            ignored by sources without splits.
        limit: Keep at most this many samples (a seeded, stratified sample); overrides
            ``?limit=``.
        seed: Seed for synthetic data and sub-sampling (``?seed=`` overrides it).

    Returns:
        The samples, with ``synthetic=True`` for generated data.

    Raises:
        DataError: Missing, corrupt or unsupported data, a bad option, NaN/Inf inputs, labels
            that are not valid class indices, or no samples at all.
    """
    base, pairs = _split_query(source.strip())
    kind = _source_kind(base, source)
    opts = _check_options(pairs, kind)
    if split and kind == _FASHION:
        opts["split"] = split
    if limit is None and "limit" in opts:
        limit = int(opts["limit"])
    elif limit is not None:
        limit = _check_int("limit", limit)
    seed = int(opts["seed"]) if "seed" in opts else _check_int("seed", seed)
    path = Path(base)
    if kind == _SYNTHETIC:
        ds = _synthetic(base.partition(":")[2], input_spec, opts, seed)
    elif kind.startswith("torchslim:"):
        from torchslim._registry import DATA_SOURCES, hook

        ds = hook(DATA_SOURCES, "torchslim")(kind.partition(":")[2], opts)
    elif kind == _FOLDER:
        ds = _image_folder(path, input_spec, opts)
    elif kind == _NPZ:
        ds = _npz(path)
    elif kind == _PT:
        ds = _pt(path)
    elif kind == _IDX:
        ds = _idx_pair(path)
    else:
        ds = _factory(base, limit)
    _check_loaded(ds)
    if limit is not None:
        ds = ds.take(limit, seed=seed)
    return ds


def _split_query(source: str) -> tuple[str, list[tuple[str, str]]]:
    """Split ``"path?k=v&k2=v2"`` into the path and its ``(key, value)`` pairs, in order."""
    base, _, query = source.partition("?")
    return base, parse_qsl(query, keep_blank_values=True)


def _source_kind(base: str, source: str) -> str:
    """Which kind of source ``base`` names (one of ``_KINDS``, or ``torchslim:NAME``).

    Raises:
        DataError: The source does not exist or is of no known kind.
    """
    prefix, _, rest = base.partition(":")
    path = Path(base)
    if prefix == "synthetic":
        return _SYNTHETIC
    if prefix == "torchslim" and rest:
        return base
    if path.is_dir():
        return _FOLDER
    if path.suffix == ".npz":
        return _NPZ
    if path.suffix in (".pt", ".pth"):
        return _PT
    if "idx3" in path.name or "idx1" in path.name:
        return _IDX
    if re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", base):
        return _FACTORY
    if not path.exists() and (path.suffix or "/" in base):
        raise DataError(f"Data source '{base}' does not exist.", "Check the path.")
    raise DataError(
        f"Unknown data source '{_clip(source)}'.",
        "Use an image folder, .npz, .pt, IDX file, pkg.module:factory, synthetic, or "
        "torchslim:fashion_mnist.",
    )


def _check_options(pairs: Sequence[tuple[str, str]], kind: str) -> dict[str, str]:
    """Check every ``?key=value`` option of a source of ``kind`` against ``_OPTIONS``.

    Args:
        pairs: The options in the order given.
        kind: The kind of source (see :func:`_source_kind`).

    Returns:
        Key → value, integers written in canonical form and choices in lower case.

    Raises:
        DataError: An option is unknown, given twice, does not apply to this kind of source, or
            has a value outside its accepted range.
    """
    out: dict[str, str] = {}
    for key, value in pairs:
        spec = _OPTIONS.get(key)
        if spec is None:
            raise DataError(
                f"Unknown data option {_show(key)}.",
                f"Accepted options: {', '.join(sorted(_OPTIONS))}.",
            )
        if key in out:
            raise DataError(f"Data option '{key}' is given twice.", "Give each option once.")
        if spec.sources is not None and kind in _KINDS and kind not in spec.sources:
            here = sorted(k for k, o in _OPTIONS.items() if o.sources is None or kind in o.sources)
            raise DataError(
                f"Data option '{key}' does not apply to a {kind} source.",
                f"Options for a {kind}: {', '.join(here)}.",
            )
        if spec.choices:
            text = value.strip().lower()
            if text not in spec.choices:
                shown = ", ".join(f"?{key}={c}" for c in spec.choices if c)
                raise DataError(
                    f"Data option {key}={_show(value)} is not accepted; {key} must be one of "
                    f"{', '.join(repr(c) for c in spec.choices)}.",
                    f"Use one of: {shown}.",
                )
            out[key] = text
        else:
            out[key] = str(_check_int(key, value))
    return out


def _check_int(key: str, value: object) -> int:
    """``value`` (an int or its decimal text) as an int within the range of option ``key``.

    Raises:
        DataError: Not a whole number, or outside the option's range; the message names the
            option, the value and the range.
    """
    spec = _OPTIONS[key]
    accepted = f"{key} must be a whole number from {spec.low} to {spec.high}"
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str):
        text = value.strip()
        if not re.fullmatch(r"[+-]?[0-9]{1,30}", text):
            too_big = re.fullmatch(r"[+-]?[0-9]+", text) is not None
            raise DataError(
                f"Data option {key}={_show(value)} is "
                + ("out of range" if too_big else "not a whole number")
                + f"; {accepted}.",
                f"Give e.g. ?{key}={max(spec.low, min(spec.high, 64))}.",
            )
        number = int(text)
    if number is None:
        raise DataError(f"Data option {key}={_show(value)} is not a whole number; {accepted}.")
    if not spec.low <= number <= spec.high:
        raise DataError(
            f"Data option {key}={number} is out of range; {accepted}.",
            f"Give e.g. ?{key}={max(spec.low, min(spec.high, 64))}.",
        )
    return number


def _show(value: object, width: int = 40) -> str:
    """``value`` quoted for a one-line message, cut to ``width`` characters."""
    text = value if isinstance(value, str) else str(value)
    return repr(text if len(text) <= width else text[:width] + "...")


def _clip(text: str, width: int = 120) -> str:
    """``text`` on one line, non-printable characters replaced, cut to ``width`` characters."""
    one = "".join(c if c.isprintable() else "?" for c in text)
    return one if len(one) <= width else one[: width - 3] + "..."


def _reason(exc: BaseException) -> str:
    """A short, one-line account of ``exc`` for an error message (first sentence, clipped)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if len(text) > 100 and ". " in text:
        text = text[: text.index(". ")]
    return _clip(text.rstrip(".")) if text else type(exc).__name__


def _check_loaded(ds: DataSet) -> None:
    """Refuse a freshly loaded data set that has no samples, bad labels or NaN/Inf inputs.

    Raises:
        DataError: What is wrong, naming the data set (and the first bad sample).
    """
    if len(ds) == 0:
        raise DataError(f"Data '{ds.name}' holds no samples.", "Give at least one sample.")
    if ds.labels is not None:
        ds.labels = _labels(ds.labels, ds.name, ds.num_classes)
    ds.check_finite()


def _labels(raw: Any, source: str, num_classes: int | None = None) -> Tensor:
    """Labels as a 1-D int64 tensor of class indices, or a :class:`DataError`.

    Integer and boolean arrays, tensors and lists are accepted, and so are floats that are all
    whole numbers; NaN/Inf, fractions, negative values and values at or above ``num_classes``
    (when known) are refused, naming the first bad index and its value.

    Args:
        raw: The labels as stored (tensor, numpy array, list or tuple).
        source: Where they come from (for messages).
        num_classes: Number of classes when the source knows it.

    Returns:
        The labels, int64, one per sample.

    Raises:
        DataError: The labels are not one valid class index per sample.
    """
    import numpy as np
    import torch

    what = f"Labels of '{source}'"
    hint = "Store one whole, non-negative class index per sample, e.g. y=np.array([0, 2, 1])."
    if isinstance(raw, torch.Tensor):
        t = raw.detach().cpu()
        if t.layout != torch.strided or t.is_complex():
            raise DataError(f"{what} are a {t.layout}/{t.dtype} tensor, not class indices.", hint)
        arr = (t.float() if t.dtype in (torch.bfloat16, torch.float16) else t).numpy()
    else:
        try:
            arr = np.asarray(raw)
        except (ValueError, TypeError) as exc:
            raise DataError(f"{what} are not a flat list of class indices.", hint) from exc
    if arr.ndim == 0:
        raise DataError(f"{what} are a single {arr.dtype} value, not one per sample.", hint)
    if arr.ndim != 1:
        raise DataError(
            f"{what} have shape {tuple(arr.shape)}; one class index per sample, shape (N,), "
            "is needed.",
            "For one-hot labels store y.argmax(1). " + hint,
        )
    if arr.dtype.kind == "b":
        arr = arr.astype(np.int64)
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr)
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(f"{what} hold {arr[i]} at index {i}; labels cannot be NaN/Inf.", hint)
        frac = arr != np.floor(arr)
        if frac.any():
            i = int(np.argmax(frac))
            raise DataError(
                f"{what} hold {float(arr[i])!r} at index {i}, which is not a whole class index.",
                hint,
            )
    elif arr.dtype.kind not in "iu":
        raise DataError(f"{what} have dtype {arr.dtype}; integer class indices are needed.", hint)
    neg = arr < 0
    if neg.any():
        i = int(np.argmax(neg))
        raise DataError(f"{what} hold {arr[i]} at index {i}; class indices cannot be negative.")
    top = _MAX_CLASSES if num_classes is None else max(num_classes, 0)
    over = arr >= top
    if over.any():
        i = int(np.argmax(over))
        limit = f"{num_classes} classes (0 to {num_classes - 1})" if num_classes else "a class"
        raise DataError(f"{what} hold {arr[i]} at index {i}, out of range for {limit}.", hint)
    return torch.from_numpy(np.ascontiguousarray(arr.astype(np.int64)))


def _num_classes(labels: Tensor | None) -> int | None:
    """``max + 1`` of labels (at least one), ``None`` without labels."""
    if labels is None:
        return None
    return int(labels.max()) + 1 if len(labels) else 1


def _input(raw: Any, what: str, source: str) -> Tensor:
    """An input array (tensor, numpy array or numeric list) as a tensor, batch first.

    Raises:
        DataError: Not numeric, not an array, or a single value without a batch dimension.
    """
    import numpy as np
    import torch

    hint = "Store a numeric array with the samples along the first dimension."
    if isinstance(raw, torch.Tensor):
        t = raw.detach()
        if t.layout != torch.strided:
            raise DataError(f"'{what}' of '{source}' is a {t.layout} tensor.", "Store it dense.")
    else:
        try:
            arr = raw if isinstance(raw, np.ndarray) else np.asarray(raw)
        except (ValueError, TypeError) as exc:
            raise DataError(f"'{what}' of '{source}' is not a numeric array.", hint) from exc
        if arr.dtype.kind not in "biuf":
            raise DataError(
                f"'{what}' of '{source}' has dtype {arr.dtype}; numeric arrays are needed.", hint
            )
        # (np.ascontiguousarray would silently turn a single value into a batch of one.)
        t = torch.from_numpy(np.ascontiguousarray(arr) if arr.ndim else arr.copy())
    if t.is_complex() or t.is_quantized:
        raise DataError(f"'{what}' of '{source}' has dtype {t.dtype}; real numbers are needed.")
    if t.dim() == 0:
        raise DataError(f"'{what}' of '{source}' is a single value, not a batch of samples.", hint)
    return t


def _synthetic(
    shape: str, input_spec: InputSpec | None, opts: Mapping[str, str], seed: int
) -> DataSet:
    import torch

    spec = parse_input_spec(shape) if shape else input_spec
    if spec is None:
        raise DataError(
            "Synthetic data needs input shapes.",
            "Write synthetic:1x3x224x224 or give the model's --input-shape.",
        )
    n = int(opts["n"]) if "n" in opts else 64
    per_sample = sum(
        math.prod(t.shape[1:]) * torch.empty(0, dtype=t.torch_dtype).element_size()
        for t in spec.inputs
    )
    if n * per_sample > _MAX_IN_MEMORY_BYTES:
        raise DataError(
            f"Synthetic data of {n} samples of {spec} needs {n * per_sample / 2**30:.1f} GiB, "
            f"more than the {_MAX_IN_MEMORY_BYTES // 2**30} GiB torchslim holds in memory.",
            "Give a smaller ?n= or smaller shapes.",
        )
    inputs = spec.example_inputs(batch_size=n, seed=seed)
    return DataSet(f"synthetic:{spec}", tuple(inputs), None, True, input_names=spec.names)


def read_idx(path: Path) -> Any:
    """Read an IDX file (MNIST format, optionally gzipped) into a numpy array.

    The header is checked before the data is used: the magic number must be ``0x0000 08 NN``
    (unsigned bytes, ``NN >= 1`` dimensions) and the dimensions must account for every byte.

    Raises:
        DataError: The file cannot be read, has a wrong magic number, a truncated header, or a
            size that does not match its dimensions.
    """
    import zlib

    import numpy as np

    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(
            f"Cannot read IDX file '{path}': {_reason(exc)}.", "Re-download the file."
        ) from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or raw[3] == 0:
        magic = "0x" + raw[:4].hex() if raw else "none (empty file)"
        raise DataError(
            f"'{path}' is not an unsigned-byte IDX file: magic number {magic}, expected "
            "0x000008NN with NN >= 1 dimensions.",
            "Check the file (MNIST-style *-idx3-ubyte / *-idx1-ubyte files).",
        )
    ndim = raw[3]
    offset = 4 + 4 * ndim
    if len(raw) < offset:
        raise DataError(
            f"IDX file '{path}' is truncated: its header declares {ndim} dimensions "
            f"({offset} header bytes) but the file holds {len(raw)} bytes.",
            "Re-download the file.",
        )
    dims = struct.unpack(f">{ndim}I", raw[4:offset])
    expected = math.prod(dims)
    if len(raw) - offset != expected:
        shape = "x".join(str(d) for d in dims)
        state = "truncated" if len(raw) - offset < expected else "longer than its header says"
        raise DataError(
            f"IDX file '{path}' is {state}: its header declares dimensions {shape} "
            f"({expected} data bytes) but it holds {len(raw) - offset}.",
            "Re-download the file.",
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)


def _idx_pair(path: Path) -> DataSet:
    import torch

    if not path.exists():
        raise DataError(f"IDX file '{path}' does not exist.", "Check the path.")
    if "idx1" in path.name:
        raise DataError(f"'{path}' holds labels; give the images file (…-images-idx3-ubyte).")
    images = read_idx(path)
    if images.ndim != 3:
        raise DataError(
            f"IDX images file '{path}' has {images.ndim} dimensions; images need 3 "
            "(count, rows, columns).",
            "Give the …-images-idx3-ubyte file.",
        )
    label_path = path.with_name(path.name.replace("images-idx3", "labels-idx1"))
    x = torch.from_numpy(images.astype("float32") / 255.0).unsqueeze(1)
    y = None
    if label_path.exists():
        raw = read_idx(label_path)
        if raw.ndim != 1:
            raise DataError(
                f"IDX labels file '{label_path}' has {raw.ndim} dimensions; labels need 1.",
                "Give the matching …-labels-idx1-ubyte file.",
            )
        y = _labels(raw, str(label_path))
    # MNIST-style sets have at least 10 classes; EMNIST-style ones have more.
    num_classes = max(10, _num_classes(y) or 0) if y is not None else None
    return DataSet(str(path), (x,), y, num_classes=num_classes)


def _npz(path: Path) -> DataSet:
    import numpy as np
    import torch

    hint = "Save numeric arrays with np.savez(path, x=..., y=...)."
    head = _head(path)
    if head.startswith(_NPY_MAGIC):
        raise DataError(f"'{path}' is a single .npy array, not an .npz archive.", hint)
    if not head.startswith(_ZIP_MAGIC):
        what = "a pickle" if head.startswith(_PICKLE_MAGIC) else "not a zip archive"
        raise DataError(f"'{path}' is not a valid .npz file ({what}).", f"{_FILE_HINT}: {hint}")
    key = ""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {}
            for key in z.files:
                arrays[key] = z[key]
    except ValueError as exc:
        if "allow_pickle" not in str(exc):
            raise DataError(
                f"'{path}' is not a valid .npz file: {_reason(exc)}.", f"{_FILE_HINT}: {hint}"
            ) from exc
        # A well-formed archive whose array holds Python objects: it needs unpickling.
        raise DataError(
            f"'{path}' holds pickled objects (array '{key}' has dtype object); torchslim loads "
            "plain numeric arrays only.",
            hint,
        ) from exc
    except Exception as exc:  # zipfile, zlib and numpy raise many types for a damaged archive
        raise DataError(
            f"'{path}' is not a valid .npz file: {_reason(exc)}.", f"{_FILE_HINT}: {hint}"
        ) from exc
    if "x" not in arrays:
        raise DataError(
            f"'{path}' has arrays {sorted(arrays)} but no 'x'.",
            "Save inputs as x (and labels as y): np.savez(path, x=..., y=...).",
        )
    x = _input(arrays["x"], "x", str(path))
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    elif x.dtype == torch.float64:
        x = x.float()
    y = _labels(arrays["y"], str(path)) if "y" in arrays else None
    return DataSet(str(path), (x,), y, num_classes=_num_classes(y))


def _head(path: Path, size: int = 8) -> bytes:
    """The first ``size`` bytes of an existing data file.

    Raises:
        DataError: The file does not exist, is not a regular file, cannot be read or is empty.
    """
    if not path.exists():
        raise DataError(f"Data file '{path}' does not exist.", "Check the path.")
    try:
        with path.open("rb") as fh:
            head = fh.read(size)
    except OSError as exc:
        raise DataError(f"Cannot read data file '{path}': {_reason(exc)}.") from exc
    if not head:
        raise DataError(f"Data file '{path}' is empty.", f"{_FILE_HINT}.")
    return head


def _pt(path: Path) -> DataSet:
    import pickle

    import torch

    hint = "Save plain tensors: torch.save({'x': x, 'y': y}, path)."
    head = _head(path)
    if not (head.startswith(_ZIP_MAGIC) or head.startswith(_PICKLE_MAGIC)):
        raise DataError(
            f"'{path}' is not a valid .pt file (not written by torch.save).",
            f"{_FILE_HINT}: {hint}",
        )
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+) was not an allowed global", str(exc))
        if found is None:  # not a refused object: the pickled data itself is damaged
            raise DataError(
                f"'{path}' is not a valid .pt file: its pickled data is corrupt.",
                f"{_FILE_HINT}: {hint}",
            ) from exc
        raise UntrustedPickleError(
            f"'{path}' holds pickled Python objects ({_clip(found.group(1), 60)}); torchslim "
            "loads tensors only.",
            hint,
        ) from exc
    except Exception as exc:  # torch raises many types for a damaged archive
        raise DataError(
            f"'{path}' is not a valid .pt file: {_reason(exc)}.", f"{_FILE_HINT}: {hint}"
        ) from exc
    if isinstance(obj, torch.Tensor):
        x, y = obj, None
    elif isinstance(obj, Mapping) and "x" in obj:
        x, y = obj["x"], obj.get("y")
    elif isinstance(obj, (tuple, list)) and len(obj) == 2:
        x, y = obj
    else:
        keys = f" (keys {[str(k) for k in obj][:10]})" if isinstance(obj, Mapping) else ""
        raise DataError(f"'{path}' does not hold x/y tensors{keys}.", hint)
    if isinstance(x, Mapping):
        if not x:
            raise DataError(f"'{path}' holds an empty mapping of inputs as 'x'.", hint)
        names = tuple(str(n) for n in x)
        inputs = tuple(_input(v, f"x[{str(n)!r}]", str(path)) for n, v in x.items())
    else:
        names, inputs = ("input",), (_input(x, "x", str(path)),)
    labels = _labels(y, str(path)) if y is not None else None
    return DataSet(str(path), inputs, labels, num_classes=_num_classes(labels), input_names=names)


def _factory(source: str, limit: int | None) -> DataSet:
    import torch

    mod_name, _, attr = source.partition(":")
    debug = "Fix the factory; --debug shows the traceback."
    try:
        fn = getattr(importlib.import_module(mod_name), attr)
    except Exception as exc:  # the user's module may fail in any way while importing
        raise DataError(f"Cannot import data factory '{source}': {_reason(exc)}.", debug) from exc
    try:
        obj = fn()
    except TorchslimError:
        raise
    except Exception as exc:  # the user's code: report it in one line
        raise DataError(f"Data factory '{source}' failed: {_reason(exc)}.", debug) from exc
    if isinstance(obj, DataSet):
        return obj
    if isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[0], torch.Tensor):
        y = _labels(obj[1], source) if obj[1] is not None else None
        return DataSet(source, (_input(obj[0], "x", source),), y, num_classes=_num_classes(y))
    try:
        n = len(obj)
    except TypeError as exc:
        raise DataError(
            f"Data factory '{source}' returned {type(obj).__name__}, which has no length.",
            "Return a map-style dataset of (x, y) pairs, a DataSet, or an (x, y) tuple.",
        ) from exc
    n = min(n, limit) if limit else n
    if n <= 0:
        raise DataError(f"Data factory '{source}' returned no samples.", "Return at least one.")
    xs, ys = [], []
    for i in range(n):
        try:
            item = obj[i]
            x, y = (item[0], item[1]) if isinstance(item, (tuple, list)) else (item, None)
            xs.append(torch.as_tensor(x))
        except Exception as exc:  # the user's dataset: report which item failed
            raise DataError(
                f"Data factory '{source}': item {i} cannot be read: {_reason(exc)}.", debug
            ) from exc
        if y is not None:
            ys.append(y.item() if isinstance(y, torch.Tensor) and y.numel() == 1 else y)
    labels = _labels(ys, source) if len(ys) == n and ys else None
    try:
        stacked = torch.stack(xs)
    except RuntimeError as exc:
        raise DataError(
            f"Data factory '{source}' returned items of different shapes: {_reason(exc)}.",
            "Return items of one shape.",
        ) from exc
    return DataSet(source, (stacked,), labels, num_classes=_num_classes(labels))


def _image_folder(path: Path, input_spec: InputSpec | None, opts: Mapping[str, str]) -> DataSet:
    """Load ``DIR/<class>/<image>`` files, resized and centre-cropped to ``size`` pixels.

    An image that trips Pillow's decompression-bomb guard (``PIL.Image.MAX_IMAGE_PIXELS``,
    its warning level included) is refused, naming the file; it is never silently skipped.

    Raises:
        DataError: No classes or images, an unreadable, oversized or degenerate image, or a
            model input that is not 1- or 3-channel.
    """
    import numpy as np
    import torch

    classes = sorted(p.name for p in path.iterdir() if p.is_dir())
    if not classes:
        raise DataError(
            f"Image folder '{path}' has no class sub-folders.",
            "Lay it out as DIR/<class>/<image>.jpg.",
        )
    channels, size = 3, 224
    if input_spec is not None and len(input_spec.inputs[0].shape) == 4:
        channels, size = input_spec.inputs[0].shape[1], input_spec.inputs[0].shape[-1]
    if channels not in (1, 3):
        raise DataError(
            f"The model's input has {channels} channels; image folders give 1 (grey) or 3 (RGB).",
            "Use an .npz or .pt data file for other inputs.",
        )
    size = int(opts["size"]) if "size" in opts else size
    normalize = opts.get("normalize", "imagenet" if channels == 3 else "none")
    files = [
        (ci, f)
        for ci, cls in enumerate(classes)
        for f in sorted((path / cls).iterdir())
        if f.suffix.lower() in _IMAGE_SUFFIXES
    ]
    if len(files) * size * size * channels * 4 > _MAX_IN_MEMORY_BYTES:
        raise DataError(
            f"Image folder '{path}' holds {len(files)} images, too many to hold in memory at "
            f"{size}x{size} pixels.",
            "Give a smaller ?size= or fewer images.",
        )
    xs, ys = [], []
    for ci, f in files:
        img = _resize_center_crop(_open_image(f, "RGB" if channels == 3 else "L", size), size)
        arr = np.asarray(img, dtype=np.float32) / 255.0
        xs.append(torch.from_numpy(arr).reshape(size, size, channels).permute(2, 0, 1))
        ys.append(ci)
    if not xs:
        raise DataError(f"Image folder '{path}' holds no images.", "Add .jpg/.png files.")
    x = torch.stack(xs)
    if normalize == "imagenet" and channels == 3:
        mean = torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1)
        x = (x - mean) / std
    return DataSet(str(path), (x,), torch.tensor(ys), num_classes=len(classes), class_names=classes)


def _open_image(f: Path, mode: str, size: int) -> Any:
    """Decode one image file in ``mode`` (``"RGB"`` or ``"L"``).

    Raises:
        DataError: The file is not a readable image, trips the decompression-bomb guard, or is
            degenerate (no pixels, or more than ``_MAX_ASPECT`` times longer than wide).
    """
    from PIL import Image

    try:
        with warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that; refuse those too.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(f) as im:
                img = im.convert(mode)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(
            f"Image '{f}' is too large to decode safely: {_reason(exc)}.",
            f"Downscale it or remove it from the folder (images are resized to {size} px).",
        ) from exc
    except Exception as exc:  # Pillow raises many types for a damaged image
        raise DataError(f"Cannot read image '{f}': {_reason(exc)}.", "Remove or fix it.") from exc
    w, h = img.size
    if min(w, h) < 1 or max(w, h) > _MAX_ASPECT * min(w, h):
        raise DataError(
            f"Image '{f}' is {w}x{h} pixels, which cannot be centre-cropped to a square.",
            "Remove or crop it.",
        )
    return img


def _resize_center_crop(img: Any, size: int) -> Any:
    from PIL import Image

    w, h = img.size
    scale = size / min(w, h)
    img = img.resize(
        (max(size, round(w * scale)), max(size, round(h * scale))), Image.Resampling.BILINEAR
    )
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    return img.crop((left, top, left + size, top + size))
