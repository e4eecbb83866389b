"""Where ``predict`` reads its samples from, one batch at a time, skipping bad samples.

Every source answers ``len(source)``, ``source.ids`` (one id or path per sample, in input order)
and ``source.get(indices)`` → a :class:`Batch` holding the good samples stacked per model input
and the bad ones as :class:`Skipped` records (index, id, reason). A bad sample never raises.
Sources are plain picklable objects, so DataLoader workers and Ray actors can rebuild batches.

* :class:`TensorSource`: samples already in memory (every source :func:`torchslim.data.load_data`
  reads: ``torchslim:fashion_mnist``, ``.npz``, ``.pt``, IDX, factories, synthetic).
* :class:`FileSource`: a folder of image files (JPEG/PNG/...) and/or ``.npy`` arrays, flat or one
  sub-folder per class, decoded lazily (in loader workers) and preprocessed as the model's
  manifest says.
* :class:`TextSource`: a ``.txt`` file (one sentence per line) or ``.jsonl`` (``{"text": ...}``
  per line, optional ``"id"``), tokenised per batch with the model's tokenizer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torchslim.errors import DataError

if TYPE_CHECKING:
    from torch import Tensor

    from torchslim.specs import InputSpec

__all__ = [
    "Batch",
    "FileSource",
    "Skipped",
    "TensorSource",
    "TextSource",
    "open_source",
]

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
_FILE_SUFFIXES = _IMAGE_SUFFIXES | {".npy"}
_TEXT_SUFFIXES = {".txt", ".jsonl"}


@dataclass(frozen=True)
class Skipped:
    """A sample that was not predicted.

    Attributes:
        index: Its position in the input.
        id: Its id or path.
        reason: Why, in one line.
    """

    index: int
    id: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict."""
        return {"index": self.index, "id": self.id, "reason": self.reason}


@dataclass
class Batch:
    """Good samples of one batch, stacked per model input, and the skipped ones.

    Attributes:
        index: Input positions of the good samples, in order (int64 array).
        ids: Their ids/paths.
        inputs: One tensor per model input, batch first (empty tuple when all were skipped).
        skipped: The bad samples of this batch.
    """

    index: Any
    ids: list[str]
    inputs: tuple[Tensor, ...]
    skipped: list[Skipped] = field(default_factory=list)
    span: tuple[int, int] = (0, 0)

    def __len__(self) -> int:
        return len(self.ids)

    def pin_memory(self) -> Batch:
        """Page-locked copies of the inputs (called by the DataLoader's pin-memory thread)."""
        self.inputs = tuple(x.pin_memory() for x in self.inputs)
        return self


def _expected_shapes(spec: InputSpec | None) -> list[tuple[int | None, ...]] | None:
    """Per-sample shapes the model takes (``None`` for a free axis), from its input spec."""
    if spec is None:
        return None
    shapes = []
    for t in spec.inputs:
        dyn = set(t.dynamic_axes)
        shapes.append(tuple(None if i in dyn else d for i, d in enumerate(t.shape) if i > 0))
    return shapes


def _shape_problem(shape: Sequence[int], expected: tuple[int | None, ...] | None) -> str | None:
    if expected is None:
        return None
    if len(shape) != len(expected) or any(
        e is not None and e != s for s, e in zip(shape, expected, strict=False)
    ):
        want = "x".join("*" if e is None else str(e) for e in expected)
        have = "x".join(str(s) for s in shape)
        return f"wrong shape {have}, the model takes {want}"
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    msg = text[0] if text else "(no message)"
    return f"{type(exc).__name__}: {msg}"[:300]


class TensorSource:
    """Samples held in memory, one tensor per model input.

    Args:
        name: Where they came from.
        inputs: One tensor per model input, batch first.
        spec: The model's inputs (for the per-sample shape check), or ``None``.
        ids: One id per sample; default: the position as a string.
    """

    decodes = False

    def __init__(
        self,
        name: str,
        inputs: tuple[Tensor, ...],
        spec: InputSpec | None = None,
        ids: list[str] | None = None,
    ) -> None:
        self.name = name
        self.inputs = inputs
        self.ids = ids if ids is not None else [str(i) for i in range(len(inputs[0]))]
        expected = _expected_shapes(spec)
        self._problem: str | None = None
        if expected is not None and len(expected) == len(inputs):
            for x, e in zip(inputs, expected, strict=True):
                self._problem = self._problem or _shape_problem(tuple(x.shape[1:]), e)

    def __len__(self) -> int:
        return len(self.ids)

    def get(self, indices: Sequence[int]) -> Batch:
        """The samples at ``indices`` (non-finite or wrong-shaped ones skipped).

        A contiguous ``range`` is sliced (a view, no copy); the finiteness check runs in numpy,
        one pass, without waking torch's thread pool for a small element-wise op.
        """
        import numpy as np
        import torch

        if isinstance(indices, range) and indices.step == 1:
            idx = np.arange(indices.start, indices.stop, dtype=np.int64)
            xs = tuple(x[indices.start : indices.stop] for x in self.inputs)
        else:
            idx = np.asarray(list(indices), dtype=np.int64)
            t = torch.from_numpy(idx)
            xs = tuple(x[t] for x in self.inputs)
        if self._problem is not None:
            return Batch(
                idx[:0], [], (), [Skipped(int(i), self.ids[int(i)], self._problem) for i in idx]
            )
        good = np.ones(len(idx), dtype=bool)
        for x in xs:
            if x.is_floating_point() and len(x):
                arr = x.reshape(len(x), -1)
                arr = arr.float() if arr.dtype in (torch.float16, torch.bfloat16) else arr
                good &= np.isfinite(arr.numpy()).all(axis=1)
        skipped = [
            Skipped(int(idx[j]), self.ids[int(idx[j])], "holds NaN/Inf values")
            for j in np.flatnonzero(~good)
        ]
        if skipped:
            mask = torch.from_numpy(good)
            xs = tuple(x[mask] for x in xs)
            idx = idx[good]
        ids = [self.ids[i] for i in idx.tolist()]
        return Batch(idx, ids, xs if len(ids) else (), skipped)


@dataclass(frozen=True)
class ImagePrep:
    """How image files become model inputs (the same resize and crop as image-folder data).

    Attributes:
        size: Square side in pixels after resize + centre crop.
        channels: 1 (grey) or 3 (RGB).
        normalize: ``"imagenet"`` (mean/std) or ``"none"`` (pixels / 255 only).
    """

    size: int = 224
    channels: int = 3
    normalize: str = "imagenet"


def image_prep(spec: InputSpec | None, preprocess: Mapping[str, Any] | None) -> ImagePrep:
    """Image preprocessing from the model's input spec and a preprocessing record.

    Args:
        spec: The model's inputs (an image model's first input is ``N x C x H x W``).
        preprocess: ``{"size": 224, "normalize": "imagenet"|"none", "channels": 1|3}`` from the
            artifact's manifest or ``--preprocess``; missing keys follow the input spec.

    Raises:
        DataError: A value that cannot work.
    """
    channels, size = 3, 224
    if spec is not None and len(spec.inputs[0].shape) == 4:
        channels, size = int(spec.inputs[0].shape[1]), int(spec.inputs[0].shape[-1])
    pre = dict(preprocess or {})
    channels = int(pre.get("channels", channels))
    size = int(pre.get("size", size))
    normalize = str(pre.get("normalize", "imagenet" if channels == 3 else "none")).lower()
    if channels not in (1, 3) or not 1 <= size <= 4096 or normalize not in ("imagenet", "none"):
        raise DataError(
            f"Cannot preprocess images as channels={channels}, size={size}, normalize={normalize}.",
            "Use --preprocess 'size=224,normalize=imagenet' (channels 1 or 3).",
        )
    return ImagePrep(size, channels, normalize)


class FileSource:
    """A folder of image files and/or ``.npy`` arrays, one sample per file, decoded lazily.

    Files are taken recursively in sorted order of their path relative to the folder (which is
    their id), so a flat folder and a ``DIR/<class>/<file>`` layout both work.

    Args:
        root: The folder.
        prep: Image preprocessing.
        spec: The model's inputs (shape check of ``.npy`` samples).
    """

    decodes = True

    def __init__(self, root: Path, prep: ImagePrep, spec: InputSpec | None = None) -> None:
        self.root = root
        self.prep = prep
        self.name = str(root)
        files = sorted(
            p.relative_to(root).as_posix()
            for p in root.rglob("*")
            if p.is_file() and p.suffix.lower() in _FILE_SUFFIXES
        )
        if not files:
            raise DataError(
                f"Folder '{root}' holds no image (.jpg/.png/...) or .npy files.",
                "Give a folder of images, or a data source such as torchslim:fashion_mnist.",
            )
        self.ids = files
        expected = _expected_shapes(spec)
        self._expected = expected[0] if expected else None

    def __len__(self) -> int:
        return len(self.ids)

    def _load(self, rel: str) -> Tensor:
        import numpy as np
        import torch

        from torchslim.data import _open_image, _resize_center_crop

        path = self.root / rel
        if path.suffix.lower() == ".npy":
            arr = np.load(path, allow_pickle=False)
            if arr.dtype == np.uint8:
                x = torch.from_numpy(arr.astype(np.float32) / 255.0)
            elif arr.dtype.kind in "fiu":
                x = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
            else:
                raise DataError(f"array of dtype {arr.dtype}, not numbers")
            return x
        p = self.prep
        try:
            img = _open_image(path, "RGB" if p.channels == 3 else "L", p.size)
        except DataError as exc:
            raise DataError(exc.message.replace(f"'{path}'", "").replace("  ", " ")) from None
        img = _resize_center_crop(img, p.size)
        arr = np.asarray(img, dtype=np.float32) / 255.0
        x = torch.from_numpy(arr.copy()).reshape(p.size, p.size, p.channels).permute(2, 0, 1)
        if p.normalize == "imagenet" and p.channels == 3:
            from torchslim.data import _IMAGENET_MEAN, _IMAGENET_STD

            mean = torch.tensor(_IMAGENET_MEAN).view(3, 1, 1)
            std = torch.tensor(_IMAGENET_STD).view(3, 1, 1)
            x = (x - mean) / std
        return x.contiguous()

    def get(self, indices: Sequence[int]) -> Batch:
        """Decode the files at ``indices``; unreadable, wrong-shaped or non-finite ones skipped."""
        import numpy as np
        import torch

        good_idx: list[int] = []
        xs: list[Tensor] = []
        skipped: list[Skipped] = []
        for i in indices:
            rel = self.ids[i]
            try:
                x = self._load(rel)
            except DataError as exc:
                skipped.append(Skipped(int(i), rel, f"unreadable: {exc.message}"[:300]))
                continue
            except Exception as exc:  # numpy/Pillow raise many types for a damaged file
                skipped.append(Skipped(int(i), rel, f"unreadable: {_first_line(exc)}"))
                continue
            problem = _shape_problem(tuple(x.shape), self._expected)
            if problem is None and xs and tuple(x.shape) != tuple(xs[0].shape):
                problem = (
                    f"wrong shape {tuple(x.shape)}, others in the batch are {tuple(xs[0].shape)}"
                )
            if problem is None and not bool(np.isfinite(x.numpy()).all()):
                problem = "holds NaN/Inf values"
            if problem is not None:
                skipped.append(Skipped(int(i), rel, problem))
                continue
            good_idx.append(int(i))
            xs.append(x)
        inputs = (torch.stack(xs),) if xs else ()
        return Batch(
            np.asarray(good_idx, dtype=np.int64), [self.ids[i] for i in good_idx], inputs, skipped
        )


class TextSource:
    """Sentences from a ``.txt`` (one per line) or ``.jsonl`` file, tokenised per batch.

    Args:
        path: The file.
        tokenizer: A Hugging Face tokenizer (the model's own).
        seq_len: Tokens per sentence (pad and truncate).
    """

    decodes = True

    def __init__(self, path: Path, tokenizer: Any, seq_len: int = 128) -> None:
        self.name = str(path)
        self.tokenizer = tokenizer
        self.seq_len = seq_len
        self.texts: list[str | None] = []
        self.problems: dict[int, str] = {}
        self.ids: list[str] = []
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(
                f"Cannot read text file '{path}': {exc}.", "Give a UTF-8 file."
            ) from exc
        jsonl = path.suffix.lower() == ".jsonl"
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            i = len(self.texts)
            if not jsonl:
                self.texts.append(line.strip())
                self.ids.append(f"{path.name}:{n}")
                continue
            try:
                obj = json.loads(line)
                text = obj.get("text", obj.get("sentence")) if isinstance(obj, dict) else obj
                sid = str(obj.get("id", f"{path.name}:{n}")) if isinstance(obj, dict) else None
            except ValueError as exc:
                text, sid = None, None
                self.problems[i] = f"not valid JSON: {exc}"[:300]
            if i not in self.problems and (not isinstance(text, str) or not text.strip()):
                self.problems[i] = 'no non-empty "text" field'
            self.texts.append(text if isinstance(text, str) else None)
            self.ids.append(sid or f"{path.name}:{n}")
        if not self.texts:
            raise DataError(f"Text file '{path}' holds no sentences.", "One sentence per line.")

    def __len__(self) -> int:
        return len(self.ids)

    def get(self, indices: Sequence[int]) -> Batch:
        """Tokenise the sentences at ``indices`` (empty or malformed lines skipped)."""
        import numpy as np

        from torchslim.reference.text import tokenize

        skipped = [
            Skipped(int(i), self.ids[i], self.problems[i]) for i in indices if i in self.problems
        ]
        good = [int(i) for i in indices if i not in self.problems]
        inputs: tuple[Tensor, ...] = ()
        if good:
            inputs = tokenize([str(self.texts[i]) for i in good], self.seq_len, self.tokenizer)
        return Batch(np.asarray(good, dtype=np.int64), [self.ids[i] for i in good], inputs, skipped)


def _tokenizer_of(loaded: Any) -> Any:
    tok = getattr(loaded.module, "tokenizer", None) if loaded is not None else None
    if tok is None:
        from torchslim.reference.text import load_minilm_tokenizer

        tok = load_minilm_tokenizer()
    return tok


def open_source(
    data: str,
    *,
    spec: InputSpec | None,
    loaded: Any = None,
    preprocess: Mapping[str, Any] | None = None,
    limit: int | None = None,
) -> TensorSource | FileSource | TextSource:
    """The sample source for a data string.

    Args:
        data: A folder of images/``.npy`` files, a ``.txt``/``.jsonl`` file of sentences, or any
            source :func:`torchslim.data.load_data` reads.
        spec: The model's inputs.
        loaded: The loaded model (its tokenizer tokenises text files).
        preprocess: Image preprocessing (see :func:`image_prep`).
        limit: Keep only the first ``limit`` samples (in input order).

    Raises:
        DataError: The data cannot be read at all (a single bad sample is skipped instead).
    """
    from torchslim.data import split_source

    base, opts = split_source(data)
    path = Path(base)
    source: TensorSource | FileSource | TextSource
    if path.is_dir():
        source = FileSource(path, image_prep(spec, preprocess), spec)
    elif path.suffix.lower() in _TEXT_SUFFIXES:
        if not path.is_file():
            raise DataError(f"Text file '{path}' does not exist.", "Check the path.")
        seq_len = int(opts.get("seq_len", 0) or 0) or _seq_len(spec)
        source = TextSource(path, _tokenizer_of(loaded), seq_len)
    elif path.suffix.lower() in (".npz", ".pt") and path.is_file():
        source = _array_file(path, spec)
    else:
        from torchslim.data import load_data

        ds = load_data(data, input_spec=spec)
        source = TensorSource(ds.name, ds.inputs, spec)
    if limit is not None and limit < len(source):
        source.ids = source.ids[:limit]
        if isinstance(source, TensorSource):
            source.inputs = tuple(x[:limit] for x in source.inputs)
    return source


def _seq_len(spec: InputSpec | None) -> int:
    if spec is not None and len(spec.inputs[0].shape) == 2:
        return int(spec.inputs[0].shape[1])
    return 128


def _array_file(path: Path, spec: InputSpec | None) -> TensorSource:
    """``.npz``/``.pt`` read with data.py's checked readers, but without refusing NaN samples:
    predict skips those one by one instead."""
    from torchslim.data import _npz, _pt

    ds = _npz(path) if path.suffix.lower() == ".npz" else _pt(path)
    return TensorSource(ds.name, ds.inputs, spec)
