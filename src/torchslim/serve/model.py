"""One served model: an artifact, its inputs checked, run on NumPy batches, its images preprocessed.

:class:`ServedModel` is the only place the server touches the model. It loads the artifact with
:func:`~torchslim.artifact.load_artifact` (hash-verified; any runtime: eager, ONNX Runtime,
OpenVINO, ...), checks each request's arrays against the artifact's input spec (a clear
:class:`~torchslim.errors.ShapeError`, answered 422, for a wrong shape, dtype or a non-finite
value), runs stacked batches (padding to the artifact's fixed batch when it has one) and turns an
uploaded image into the tensor the model expects.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from torchslim.errors import ShapeError, TorchslimError

__all__ = ["OutputInfo", "ServedModel", "model_name_for"]

_FLOAT_KINDS = "f"
_INT_KINDS = "iub"
MAX_IMAGE_PIXELS = 40_000_000
"""Images larger than this many pixels are refused before they are decoded."""


@dataclass(frozen=True)
class OutputInfo:
    """Name, dtype and shape (batch axis ``-1``) of one model output."""

    name: str
    dtype: str
    shape: tuple[int, ...]


def model_name_for(path: Path) -> str:
    """A URL-safe model name from an artifact directory's name (``out/cnn-ort`` → ``cnn-ort``)."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", path.resolve().name).strip("-.")
    return name or "model"


class ServedModel:
    """An artifact ready to serve: inputs validated, batches run, images preprocessed.

    Args:
        path: The artifact directory.
        name: The model's name in URLs (default: the directory's name).
        verify: Check the artifact's file hashes before loading (default on).
        trust_code: Passed to :func:`~torchslim.artifact.load_artifact`.

    Raises:
        ArtifactError: Not an artifact, or a modified one.
        TorchslimError: The artifact records no input spec.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        name: str | None = None,
        verify: bool = True,
        trust_code: bool = False,
    ) -> None:
        from torchslim.artifact import MANIFEST, load_artifact

        self.path = Path(path)
        self.artifact = load_artifact(self.path, verify=verify, trust_code=trust_code)
        spec = self.artifact.input_spec
        if spec is None:
            raise TorchslimError(
                f"Artifact '{self.path}' records no input spec, so requests cannot be checked.",
                "Regenerate it with --input-shape (e.g. torchslim export MODEL --input-shape "
                "1x3x224x224 ...).",
            )
        self.spec = spec
        self.name = name or model_name_for(self.path)
        self.version = "1"
        self.model_hash = hashlib.sha256((self.path / MANIFEST).read_bytes()).hexdigest()
        caps = self.artifact.capabilities
        self.runtime = caps.runtime
        self.static_batch: int | None = None
        if not caps.dynamic_batch:
            self.static_batch = int(caps.batch_sizes[0]) if caps.batch_sizes else 1
            static = self._static_shapes()
            if static:
                self.static_batch = int(static[0][0])
        self.preferred_batch_sizes = tuple(sorted({int(b) for b in caps.batch_sizes if b > 1}))
        self.outputs: list[OutputInfo] = []
        self.task = str(self.artifact.manifest.get("task", "unknown"))
        self.preprocessing: Mapping[str, Any] | None = self.artifact.manifest.get("preprocessing")
        self._runner: Any = None

    def _static_shapes(self) -> list[list[int]] | None:
        import json

        for rel in ("runtime/runtime.json", "module/program.json"):
            p = self.path / rel
            if p.is_file():
                data = json.loads(p.read_text(encoding="utf-8"))
                shapes = data.get("static_shapes") or data.get("info", {}).get("static_shapes")
                if shapes:
                    return [list(s) for s in shapes]
        return None

    # --------------------------------------------------------------------------------------------
    # Inputs
    # --------------------------------------------------------------------------------------------

    @property
    def input_names(self) -> tuple[str, ...]:
        """The model's input names, in call order."""
        return self.spec.names

    def input_metadata(self) -> list[dict[str, Any]]:
        """Inputs as the protocol's model metadata lists them (batch axis ``-1``)."""
        from torchslim.serve.protocol import torch_dtype_to_v2

        out = []
        for t in self.spec.inputs:
            shape = [-1 if i in t.dynamic_axes else int(d) for i, d in enumerate(t.shape)]
            out.append({"name": t.name, "datatype": torch_dtype_to_v2(t.dtype), "shape": shape})
        return out

    def output_metadata(self) -> list[dict[str, Any]]:
        """Outputs as the protocol's model metadata lists them (known after warm-up)."""
        from torchslim.serve.protocol import numpy_to_v2

        return [
            {"name": o.name, "datatype": numpy_to_v2(o.dtype), "shape": list(o.shape)}
            for o in self.outputs
        ]

    def check_inputs(
        self,
        arrays: Mapping[str, np.ndarray] | Sequence[np.ndarray],
        *,
        exact_dtype: bool = False,
        add_batch: bool = False,
    ) -> tuple[np.ndarray, ...]:
        """Check arrays against the input spec; return them in call order, dtype as the model's.

        Args:
            arrays: By input name, or in call order.
            exact_dtype: Refuse any dtype other than the spec's (the v2 protocol); otherwise a
                value of the same kind (float64 for float32, int32 for int64) is converted.
            add_batch: Accept one example without its batch axis and add it.

        Raises:
            ShapeError: Missing/unknown inputs, wrong rank or dimensions, a dtype of another kind,
                different batch sizes across inputs, or NaN/Inf in a float input.
        """
        specs = self.spec.inputs
        if isinstance(arrays, Mapping):
            unknown = sorted(set(arrays) - set(self.input_names))
            missing = [n for n in self.input_names if n not in arrays]
            if len(specs) == 1 and len(arrays) == 1 and unknown:
                ordered = list(arrays.values())  # one input: its name is not worth a 422
            elif unknown or missing:
                raise ShapeError(
                    f"Inputs {unknown or missing} "
                    f"{'are not inputs of' if unknown else 'are missing for'} model "
                    f"'{self.name}'.",
                    f"Send exactly these inputs: {', '.join(self.input_names)}.",
                )
            else:
                ordered = [arrays[n] for n in self.input_names]
        else:
            ordered = list(arrays)
            if len(ordered) != len(specs):
                raise ShapeError(
                    f"Model '{self.name}' takes {len(specs)} input(s), got {len(ordered)}.",
                    f"Send: {', '.join(self.input_names)}.",
                )
        out = []
        rows = None
        for spec, arr in zip(specs, ordered, strict=True):
            a = np.asarray(arr)
            want = np.dtype(spec.dtype) if spec.dtype != "bfloat16" else np.dtype("float32")
            example = tuple(int(d) for d in spec.shape)
            if add_batch and a.ndim == len(example) - 1:
                a = a[None]
            if a.ndim != len(example):
                raise ShapeError(
                    f"Input '{spec.name}' has shape {list(a.shape)}; model '{self.name}' expects "
                    f"{len(example)} dimensions like {_shape_text(example, spec.dynamic_axes)}.",
                    "Send a batch (first axis) of examples of the expected shape.",
                )
            for axis, (have, need) in enumerate(zip(a.shape, example, strict=True)):
                if axis in spec.dynamic_axes or axis == 0:
                    continue
                if have != need:
                    raise ShapeError(
                        f"Input '{spec.name}' has shape {list(a.shape)}; model '{self.name}' "
                        f"expects {_shape_text(example, spec.dynamic_axes)} (axis {axis} must "
                        f"be {need}).",
                        "Resize or reshape the input to the expected shape.",
                    )
            if a.shape[0] < 1:
                raise ShapeError(
                    f"Input '{spec.name}' has an empty batch.", "Send at least one row."
                )
            if a.dtype != want:
                same_kind = (a.dtype.kind in _FLOAT_KINDS) == (want.kind in _FLOAT_KINDS) and (
                    a.dtype.kind in _FLOAT_KINDS + _INT_KINDS
                )
                if exact_dtype or not same_kind:
                    raise ShapeError(
                        f"Input '{spec.name}' has dtype {a.dtype.name}; model '{self.name}' "
                        f"expects {want.name}.",
                        f"Send {want.name} values"
                        + (
                            f" in [{spec.low:g}, {spec.high:g}] (or upload the image file)"
                            if want.kind in _FLOAT_KINDS
                            else ""
                        )
                        + ".",
                    )
                a = a.astype(want)
            if want.kind in _FLOAT_KINDS and not np.isfinite(a).all():
                raise ShapeError(
                    f"Input '{spec.name}' holds NaN or infinite values.",
                    "Send finite numbers only (the model's output would be meaningless).",
                )
            if rows is not None and a.shape[0] != rows:
                raise ShapeError(
                    f"Inputs have different batch sizes ({rows} and {a.shape[0]}).",
                    "Give every input the same first dimension.",
                )
            rows = int(a.shape[0])
            out.append(np.ascontiguousarray(a))
        return tuple(out)

    # --------------------------------------------------------------------------------------------
    # Images
    # --------------------------------------------------------------------------------------------

    def image_input(self, data: bytes) -> np.ndarray:
        """Decode an uploaded image and preprocess it into one batch row for the model.

        With ``preprocessing`` in the artifact's manifest (``resize``: ``[h, w]`` or an int,
        ``center_crop``, ``mode`` ``"L"``/``"RGB"``, ``scale`` (default 1/255), ``mean``,
        ``std``), those steps run in that order. Without it, the image is converted to the
        input's channel count (1: greyscale, 3: RGB), resized to its height and width, and its
        0–255 pixels are mapped linearly onto the input spec's value range (``pixel / 255`` for
        the Fashion-MNIST models, whose range is [0, 1]).

        Raises:
            ShapeError: The model does not take one image tensor (N, C, H, W) with C 1 or 3, or
                the upload is not an image PIL can read.
        """
        from PIL import Image, UnidentifiedImageError

        if len(self.spec.inputs) != 1 or len(self.spec.inputs[0].shape) != 4:
            raise ShapeError(
                f"Model '{self.name}' does not take one image tensor (N, C, H, W).",
                "Send JSON or .npy arrays instead.",
            )
        spec = self.spec.inputs[0]
        _, c, h, w = (int(d) for d in spec.shape)
        if c not in (1, 3):
            raise ShapeError(
                f"Model '{self.name}' takes {c} channels; images have 1 or 3.",
                "Send JSON or .npy arrays instead.",
            )
        pre = dict(self.preprocessing or {})
        try:
            opened = Image.open(io.BytesIO(data))  # reads the header only
            if opened.width * opened.height > MAX_IMAGE_PIXELS:
                raise ShapeError(
                    f"The image is {opened.width}x{opened.height} pixels, more than this server "
                    f"decodes ({MAX_IMAGE_PIXELS:,}).",
                    "Resize it before uploading.",
                )
            opened.load()
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError, ValueError) as exc:
            raise ShapeError(
                f"The upload is not an image this server can read ({type(exc).__name__}).",
                "Upload a PNG or JPEG file.",
            ) from None
        img: Any = opened.convert(str(pre.get("mode") or ("L" if c == 1 else "RGB")))
        resize = pre.get("resize")
        crop = pre.get("center_crop")
        if resize is not None:
            img = _resize(img, resize)
            if crop is not None:
                img = _center_crop(img, crop)
        if img.size != (w, h):
            img = img.resize((w, h), Image.Resampling.BILINEAR)
        arr = np.asarray(img, dtype=np.float32)
        arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
        if pre:
            arr = arr * float(pre.get("scale", 1.0 / 255.0))
            if pre.get("mean") is not None:
                arr = arr - np.asarray(pre["mean"], dtype=np.float32).reshape(-1, 1, 1)
            if pre.get("std") is not None:
                arr = arr / np.asarray(pre["std"], dtype=np.float32).reshape(-1, 1, 1)
        else:
            arr = spec.low + arr / 255.0 * (spec.high - spec.low)
        return np.ascontiguousarray(arr[None], dtype=np.dtype(spec.dtype))

    def preprocessing_description(self) -> str:
        """How an uploaded image becomes the input tensor, in words (for metadata and docs)."""
        if self.preprocessing:
            return f"manifest preprocessing {dict(self.preprocessing)}"
        if len(self.spec.inputs) == 1 and len(self.spec.inputs[0].shape) == 4:
            t = self.spec.inputs[0]
            _, c, h, w = t.shape
            mode = "greyscale" if c == 1 else "RGB"
            return f"{mode}, resized to {h}x{w}, pixel/255 mapped onto [{t.low:g}, {t.high:g}]"
        return "none (this model does not take images)"

    # --------------------------------------------------------------------------------------------
    # Running
    # --------------------------------------------------------------------------------------------

    def load(self) -> None:
        """Load the runtime's files (done once, before warm-up)."""
        if self._runner is None:
            self._runner = self.artifact.runner()

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Run one stacked batch; returns each output as an array with the same batch.

        Pads to the artifact's fixed batch when it has one (and runs in chunks of it).
        """
        import torch

        from torchslim.compare import flatten_outputs

        self.load()
        rows = int(inputs[0].shape[0])
        if self.static_batch is not None and rows != self.static_batch:
            return self._run_static(inputs, rows)
        tensors = [
            torch.from_numpy(a if a.flags.writeable and a.flags.c_contiguous else np.array(a))
            for a in inputs
        ]
        with torch.inference_mode():
            out = self._runner(*tensors)
        arrays = [t.detach().cpu().contiguous().numpy() for t in flatten_outputs(out)]
        if not self.outputs:
            self.outputs = [
                OutputInfo(
                    "output" if len(arrays) == 1 else f"output_{i}",
                    a.dtype.name,
                    (-1, *a.shape[1:]),
                )
                for i, a in enumerate(arrays)
            ]
        return arrays

    def _run_static(self, inputs: Sequence[np.ndarray], rows: int) -> list[np.ndarray]:
        size = int(self.static_batch or 1)
        chunks: list[list[np.ndarray]] = []
        for start in range(0, rows, size):
            part = [a[start : start + size] for a in inputs]
            n = int(part[0].shape[0])
            if n < size:
                part = [
                    np.concatenate([p, np.zeros((size - n, *p.shape[1:]), p.dtype)]) for p in part
                ]
            static, self.static_batch = self.static_batch, None
            try:
                outs = self.run(part)
            finally:
                self.static_batch = static
            chunks.append([o[:n] for o in outs])
        return [np.concatenate([c[i] for c in chunks]) for i in range(len(chunks[0]))]

    def example_batch(self, rows: int, seed: int = 0) -> tuple[np.ndarray, ...]:
        """Deterministic synthetic inputs of ``rows`` rows (warm-up and batch-size search)."""
        return tuple(t.numpy() for t in self.spec.example_inputs(rows, seed=seed))


def _shape_text(shape: Sequence[int], dynamic: Sequence[int]) -> str:
    return (
        "["
        + ", ".join(
            "N" if i == 0 else ("*" if i in dynamic else str(d)) for i, d in enumerate(shape)
        )
        + "]"
    )


def _resize(img: Any, size: Any) -> Any:
    from PIL import Image

    if isinstance(size, int):  # shorter side to `size`, as torchvision's Resize(int)
        w, h = img.size
        scale = size / min(w, h)
        return img.resize(
            (max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR
        )
    h, w = (int(v) for v in size)
    return img.resize((w, h), Image.Resampling.BILINEAR)


def _center_crop(img: Any, size: Any) -> Any:
    h, w = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
    iw, ih = img.size
    left, top = max(0, (iw - w) // 2), max(0, (ih - h) // 2)
    return img.crop((left, top, left + w, top + h))
