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
===============================  ==============================================================
"""

from __future__ import annotations

import gzip
import importlib
import math
import re
import struct
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from torchslim.errors import DataError, UntrustedPickleError
from torchslim.specs import InputSpec, TensorSpec, parse_input_spec

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["DataSet", "load_data", "read_idx", "split_source"]

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


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
        """Raise :class:`DataError` if any floating-point input holds NaN or Inf."""
        import torch

        for name, x in zip(self.input_names, self.inputs, strict=True):
            if x.is_floating_point() and not bool(torch.isfinite(x).all()):
                bad = int((~torch.isfinite(x)).sum())
                raise DataError(
                    f"Data '{self.name}' input '{name}' holds {bad} NaN/Inf value(s).",
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
        split: ``"train"`` or ``"test"`` for sources that have both (overrides ``?split=``).
        limit: Keep at most this many samples (a seeded, stratified sample).
        seed: Seed for synthetic data and sub-sampling.

    Returns:
        The samples, with ``synthetic=True`` for generated data.

    Raises:
        DataError: Missing, corrupt or unsupported data.
    """
    base, opts = split_source(source.strip())
    if split:
        opts["split"] = split
    if limit is None and "limit" in opts:
        limit = _int_opt(opts, "limit")
    seed = int(opts.get("seed", seed))
    prefix, _, rest = base.partition(":")
    path = Path(base)
    if prefix == "synthetic":
        ds = _synthetic(rest, input_spec, opts, seed)
    elif prefix == "torchslim" and rest:
        from torchslim import reference

        ds = reference.load_reference_data(rest, opts)
    elif path.is_dir():
        ds = _image_folder(path, input_spec, opts)
    elif path.suffix == ".npz":
        ds = _npz(path)
    elif path.suffix in (".pt", ".pth"):
        ds = _pt(path)
    elif "idx3" in path.name or "idx1" in path.name:
        ds = _idx_pair(path)
    elif re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", base):
        ds = _factory(base, limit)
    elif not path.exists() and (path.suffix or "/" in base):
        raise DataError(f"Data source '{base}' does not exist.", "Check the path.")
    else:
        raise DataError(
            f"Unknown data source '{source}'.",
            "Use an image folder, .npz, .pt, IDX file, pkg.module:factory, synthetic, or "
            "torchslim:fashion_mnist.",
        )
    if limit is not None:
        if limit <= 0:
            raise DataError(f"limit must be positive, got {limit}.")
        ds = ds.take(limit, seed=seed)
    return ds


def _int_opt(opts: Mapping[str, str], key: str) -> int:
    try:
        return int(opts[key])
    except ValueError as exc:
        raise DataError(f"Option '{key}={opts[key]}' is not an integer.") from exc


def _synthetic(
    shape: str, input_spec: InputSpec | None, opts: Mapping[str, str], seed: int
) -> DataSet:
    spec = parse_input_spec(shape) if shape else input_spec
    if spec is None:
        raise DataError(
            "Synthetic data needs input shapes.",
            "Write synthetic:1x3x224x224 or give the model's --input-shape.",
        )
    n = _int_opt(opts, "n") if "n" in opts else 64
    inputs = spec.example_inputs(batch_size=n, seed=seed)
    return DataSet(f"synthetic:{spec}", tuple(inputs), None, True, input_names=spec.names)


def read_idx(path: Path) -> Any:
    """Read an IDX file (MNIST format, optionally gzipped) into a numpy array.

    Raises:
        DataError: The file is not a valid IDX file.
    """
    import numpy as np

    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"Cannot read IDX file '{path}': {exc}.", "Re-download the file.") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"'{path}' is not an unsigned-byte IDX file.", "Check the file.")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    offset = 4 + 4 * ndim
    if len(raw) - offset != math.prod(dims):
        raise DataError(f"IDX file '{path}' is truncated.", "Re-download the file.")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)


def _idx_pair(path: Path) -> DataSet:
    import torch

    if not path.exists():
        raise DataError(f"IDX file '{path}' does not exist.", "Check the path.")
    if "idx1" in path.name:
        raise DataError(f"'{path}' holds labels; give the images file (…-images-idx3-ubyte).")
    images = read_idx(path)
    label_path = path.with_name(path.name.replace("images-idx3", "labels-idx1"))
    x = torch.from_numpy(images.astype("float32") / 255.0).unsqueeze(1)
    y = None
    if label_path.exists():
        y = torch.from_numpy(read_idx(label_path).astype("int64"))
    return DataSet(str(path), (x,), y, num_classes=10 if y is not None else None)


def _npz(path: Path) -> DataSet:
    import numpy as np
    import torch

    if not path.exists():
        raise DataError(f"Data file '{path}' does not exist.", "Check the path.")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except ValueError as exc:
        raise DataError(
            f"'{path}' holds pickled objects; torchslim loads plain numeric arrays only.",
            "Save numeric arrays with np.savez(path, x=..., y=...).",
        ) from exc
    except (OSError, EOFError) as exc:
        raise DataError(f"'{path}' is not a readable .npz file: {exc}.") from exc
    if "x" not in arrays:
        raise DataError(
            f"'{path}' has arrays {sorted(arrays)} but no 'x'.",
            "Save inputs as x (and labels as y): np.savez(path, x=..., y=...).",
        )
    x = torch.from_numpy(np.ascontiguousarray(arrays["x"]))
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    elif x.dtype == torch.float64:
        x = x.float()
    y = torch.from_numpy(arrays["y"].astype("int64")) if "y" in arrays else None
    return DataSet(str(path), (x,), y, num_classes=int(y.max()) + 1 if y is not None else None)


def _pt(path: Path) -> DataSet:
    import pickle

    import torch

    if not path.exists():
        raise DataError(f"Data file '{path}' does not exist.", "Check the path.")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UntrustedPickleError(
            f"'{path}' holds pickled Python objects; torchslim loads tensors only.",
            "Save plain tensors: torch.save({'x': x, 'y': y}, path).",
        ) from exc
    except (RuntimeError, EOFError, OSError) as exc:
        raise DataError(f"'{path}' is not a readable tensor file: {exc}.") from exc
    if isinstance(obj, torch.Tensor):
        x, y = obj, None
    elif isinstance(obj, Mapping) and "x" in obj:
        x, y = obj["x"], obj.get("y")
    elif isinstance(obj, (tuple, list)) and len(obj) == 2:
        x, y = obj
    else:
        raise DataError(
            f"'{path}' does not hold x/y tensors.", "Save torch.save({'x': x, 'y': y}, path)."
        )
    if isinstance(x, Mapping):
        names = tuple(x)
        inputs = tuple(x[n] for n in names)
    else:
        names, inputs = ("input",), (x,)
    y = y.long() if y is not None else None
    return DataSet(
        str(path),
        inputs,
        y,
        num_classes=int(y.max()) + 1 if y is not None else None,
        input_names=names,
    )


def _factory(source: str, limit: int | None) -> DataSet:
    import torch

    mod_name, _, attr = source.partition(":")
    try:
        fn = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as exc:
        raise DataError(f"Cannot import data factory '{source}': {exc}.") from exc
    obj = fn()
    if isinstance(obj, DataSet):
        return obj
    if isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[0], torch.Tensor):
        return DataSet(source, (obj[0],), obj[1].long())
    try:
        n = len(obj)
    except TypeError as exc:
        raise DataError(
            f"Data factory '{source}' returned {type(obj).__name__}, which has no length.",
            "Return a map-style dataset of (x, y) pairs, a DataSet, or an (x, y) tuple.",
        ) from exc
    n = min(n, limit) if limit else n
    xs, ys = [], []
    for i in range(n):
        item = obj[i]
        x, y = (item[0], item[1]) if isinstance(item, (tuple, list)) else (item, None)
        xs.append(torch.as_tensor(x))
        if y is not None:
            ys.append(int(y))
    labels = torch.tensor(ys) if len(ys) == n and ys else None
    return DataSet(
        source,
        (torch.stack(xs),),
        labels,
        num_classes=int(labels.max()) + 1 if labels is not None else None,
    )


def _image_folder(path: Path, input_spec: InputSpec | None, opts: Mapping[str, str]) -> DataSet:
    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError

    classes = sorted(p.name for p in path.iterdir() if p.is_dir())
    if not classes:
        raise DataError(
            f"Image folder '{path}' has no class sub-folders.",
            "Lay it out as DIR/<class>/<image>.jpg.",
        )
    channels, size = 3, 224
    if input_spec is not None and len(input_spec.inputs[0].shape) == 4:
        channels, size = input_spec.inputs[0].shape[1], input_spec.inputs[0].shape[-1]
    size = _int_opt(opts, "size") if "size" in opts else size
    normalize = opts.get("normalize", "imagenet" if channels == 3 else "none")
    xs, ys = [], []
    for ci, cls in enumerate(classes):
        for f in sorted((path / cls).iterdir()):
            if f.suffix.lower() not in _IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(f) as im:
                    img = im.convert("RGB" if channels == 3 else "L")
            except (UnidentifiedImageError, OSError) as exc:
                raise DataError(f"Cannot read image '{f}': {exc}.", "Remove or fix it.") from exc
            img = _resize_center_crop(img, size)
            arr = np.asarray(img, dtype=np.float32) / 255.0
            t = torch.from_numpy(arr).reshape(size, size, channels).permute(2, 0, 1)
            xs.append(t)
            ys.append(ci)
    if not xs:
        raise DataError(f"Image folder '{path}' holds no images.", "Add .jpg/.png files.")
    x = torch.stack(xs)
    if normalize == "imagenet" and channels == 3:
        mean = torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1)
        x = (x - mean) / std
    return DataSet(str(path), (x,), torch.tensor(ys), num_classes=len(classes), class_names=classes)


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
