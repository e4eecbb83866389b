"""Model sources: the strings a user types, resolved into a loaded model and its :class:`InputSpec`.

Supported sources (see :func:`load_model`):

==========================  ================================================================
``torchvision:NAME``        a torchvision architecture (random weights offline)
``timm:NAME``               a timm architecture (needs ``timm``)
``hf:LOCAL_DIR``            a Hugging Face model directory on disk (needs ``transformers``)
``torchslim:NAME``          a bundled reference model (``fashion_cnn``, ``fashion_resnet``,
                            ``minilm``)
``pkg.module:factory``      a Python callable returning an ``nn.Module``
``file.pt`` / ``.pth``      weights-only checkpoint (with ``arch=``), TorchScript, or — only
                            with ``trust_pickle=True`` — a pickled module
``file.safetensors``        weights (with ``arch=``)
``file.pt2``                a ``torch.export`` exported program
``file.onnx``               an ONNX graph (run through ONNX Runtime)
==========================  ================================================================

Loading never executes pickled code unless the caller passes ``trust_pickle=True``.
"""

from __future__ import annotations

import importlib
import io
import os
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torchslim._safe_load import (
    eval_mode,
    is_exported_program_archive,
    load_exported_program,
    load_torchscript,
    pickle_stream_problem,
)
from torchslim.errors import SourceError, UntrustedPickleError
from torchslim.specs import InputSpec, TensorSpec, parse_input_spec

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "InputSpec",
    "LoadedModel",
    "TensorSpec",
    "load_model",
    "parse_input_spec",
]


@dataclass
class LoadedModel:
    """A model resolved from a source string.

    Attributes:
        source: The source string it came from.
        kind: How it was loaded (``"torchvision"``, ``"checkpoint"``, ``"torchscript"``,
            ``"exported"``, ``"onnx"``, ``"factory"``, ``"reference"``, ``"hf"``, ``"timm"``,
            ``"pickle"``).
        module: The ``nn.Module`` in eval mode, or ``None`` for ONNX graphs.
        input_spec: The inputs it expects, when known.
        path: The file it was loaded from, if any (used for on-disk size).
        onnx_path: Set for ONNX sources.
        task: ``"classification"``, ``"embedding"``, ``"causal-lm"``, ``"masked-lm"``,
            ``"token-classification"``, ``"question-answering"`` or ``"unknown"``.
        metadata: Free-form facts (class names, accuracy recorded at training, ...).
        deployed: For artifacts with a runtime: the runtime object that runs them (what ``bench``
            measures); ``module`` is then the trainable module, when the artifact keeps one.
    """

    source: str
    kind: str
    module: nn.Module | None
    input_spec: InputSpec | None = None
    path: Path | None = None
    onnx_path: Path | None = None
    task: str = "unknown"
    metadata: dict[str, Any] = field(default_factory=dict)
    deployed: Any = None

    @property
    def name(self) -> str:
        """A short display name."""
        return self.source if len(self.source) <= 40 else "…" + self.source[-39:]

    def require_module(self) -> nn.Module:
        """Return the ``nn.Module`` or raise if this source has none (ONNX)."""
        if self.module is None:
            raise SourceError(
                f"'{self.source}' is an ONNX graph, not a PyTorch module; this step needs a module.",
                "Pass the PyTorch model (checkpoint, exported program or factory) instead.",
            )
        return self.module


def load_model(
    source: str,
    *,
    arch: str | None = None,
    input_spec: InputSpec | str | None = None,
    trust_pickle: bool = False,
    trust_code: bool = False,
    verify: bool = True,
) -> LoadedModel:
    """Resolve a model source string into a :class:`LoadedModel` in eval mode.

    Input shapes come from ``input_spec`` when given, else from what the source states:

    * ``timm:NAME``: the model's ``pretrained_cfg["input_size"]`` (or ``default_cfg``), batch 1.
    * ``pkg.module:factory`` (and any module without a spec: pickles, TorchScript, ``arch=``
      checkpoints): the returned module may state its inputs with one of these attributes,
      looked up in this order:

      - ``example_inputs`` or ``example_input``: a tensor or a tuple/list of tensors, batch first
        (or a zero-argument method returning one); shapes and dtypes are taken from them;
      - ``input_spec``: an :class:`InputSpec` or its text form (``"1x3x224x224"``);
      - ``input_size``: one shape, batch first (``(1, 3, 224, 224)``), or a sequence of shapes for
        several float32 inputs;
      - ``pretrained_cfg`` / ``default_cfg`` (timm-style dicts): ``input_size`` ``(C, H, W)``.

    When none is known, commands infer the shapes from their ``--calib``/``--eval``/``--train``
    data; otherwise they ask for ``--input-shape``.

    Args:
        source: What the user typed (see the module docstring for the forms).
        arch: Architecture source for weights-only checkpoints (``torchvision:resnet18`` or
            ``pkg.module:factory``).
        input_spec: Input shapes; overrides what the source implies.
        trust_pickle: Allow unpickling a full module. Pickles can run arbitrary code: only use
            this for files you created yourself.
        verify: Check an artifact's file hashes before loading it (``False``: unsafe, loudly).
        trust_code: Allow an artifact to rebuild an architecture named inside it that is not a
            torchslim registry source (``pkg.module:factory`` imports and runs that code).

    Returns:
        The loaded model; the caller owns it (the source file is never modified).

    Raises:
        SourceError: Unknown prefix, missing or corrupt file, wrong format.
        UntrustedPickleError: The file needs unpickling and ``trust_pickle`` is false.
    """
    spec = parse_input_spec(input_spec) if isinstance(input_spec, str) else input_spec
    src = source.strip()
    if not src:
        raise SourceError("Empty model source.", "Give e.g. torchvision:resnet18 or model.pt.")
    prefix, _, rest = src.partition(":")
    looks_like_path = os.sep in src or src.startswith(".") or Path(src).suffix in _FILE_SUFFIXES
    if prefix == "torchvision" and rest:
        model = _load_torchvision(src, rest, spec)
    elif prefix == "timm" and rest:
        model = _load_timm(src, rest, spec)
    elif prefix == "hf" and rest:
        model = _hooked("hf", src, rest, spec)
    elif prefix == "torchslim" and rest:
        model = _hooked("torchslim", src, rest, spec)
    elif looks_like_path or Path(src).exists():
        model = _load_file(
            src,
            Path(src),
            arch=arch,
            spec=spec,
            trust_pickle=trust_pickle,
            trust_code=trust_code,
            verify=verify,
        )
    elif ":" in src and re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", src):
        model = LoadedModel(src, "factory", _call_factory(src), spec)
    else:
        raise SourceError(
            f"Unknown model source '{source}'.",
            "Use torchvision:NAME, timm:NAME, hf:DIR, torchslim:fashion_cnn, pkg.module:factory, "
            "or a .pt/.pth/.safetensors/.pt2/.onnx file.",
        )
    if spec is not None:
        model.input_spec = spec
    elif model.input_spec is None and model.module is not None:
        stated = declared_input_spec(model.module)
        if stated is not None:
            model.input_spec, model.metadata["input_spec_from"] = stated
    if model.module is not None:
        if model.kind in ("pickle", "factory", "torchscript"):  # the user's own module object
            model.metadata.setdefault("training_at_load", _training_flags(model.module))
        eval_mode(model.module)  # also exported programs' modules, which refuse .eval()
    return model


def _training_flags(module: nn.Module) -> list[str]:
    """Names of Dropout/BatchNorm modules that were in training mode as given."""
    from torch import nn

    kinds = (nn.Dropout, nn.modules.batchnorm._BatchNorm)
    return [n for n, m in module.named_modules() if isinstance(m, kinds) and m.training]


_FILE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors", ".pt2", ".onnx", ".ts", ".jit")


def _image_spec(channels: int = 3, size: int = 224) -> InputSpec:
    return InputSpec((TensorSpec("input", (1, channels, size, size)),))


RANDOM_WEIGHTS_SEED = 0
"""Seed of the random initialisation of ``torchvision:``/``timm:`` models (no weights are
downloaded): every process that loads the name gets the same network, so a candidate built in
a worker process is compared with the same model the judge loaded."""


def _seeded() -> Any:
    """A context in which initialisation draws from :data:`RANDOM_WEIGHTS_SEED`, leaving the
    caller's random state as it was."""
    import contextlib

    import torch

    @contextlib.contextmanager
    def ctx() -> Any:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_WEIGHTS_SEED)
            yield

    return ctx()


def _load_torchvision(src: str, name: str, spec: InputSpec | None) -> LoadedModel:
    import torchvision

    try:
        with _seeded():
            module = torchvision.models.get_model(name, weights=None)
    except ValueError as exc:
        raise SourceError(
            f"torchvision has no model named '{name}'.",
            "See torchvision.models.list_models() for the names.",
        ) from exc
    size = 299 if name.startswith("inception") else 224
    return LoadedModel(
        src, "torchvision", module, spec or _image_spec(3, size), task="classification"
    )


def _load_timm(src: str, name: str, spec: InputSpec | None) -> LoadedModel:
    try:
        import timm
    except ImportError as exc:
        raise SourceError("timm is not installed.", "pip install timm") from exc
    try:
        with _seeded():
            module = timm.create_model(name, pretrained=False)
    except RuntimeError as exc:
        raise SourceError(f"timm has no model named '{name}'.", "See timm.list_models().") from exc
    stated = _cfg_input_spec(module)
    if spec is None and stated is None:
        spec = _image_spec(3, 224)  # timm's usual size, when the model states none
    model = LoadedModel(src, "timm", module, spec, task="classification")
    if spec is None and stated is not None:
        model.input_spec, model.metadata["input_spec_from"] = stated
    return model


def _cfg_input_spec(module: Any) -> tuple[InputSpec, str] | None:
    """The input spec a timm-style ``pretrained_cfg``/``default_cfg`` states (``input_size``)."""
    for attr in ("pretrained_cfg", "default_cfg"):
        try:
            cfg = getattr(module, attr, None)
        except Exception:  # a property that fails is no statement
            cfg = None
        if not cfg:
            continue
        size = (
            cfg.get("input_size") if isinstance(cfg, Mapping) else getattr(cfg, "input_size", None)
        )
        if size is None:
            continue
        dims = _int_shape(size)
        if dims is None or len(dims) not in (2, 3):
            raise SourceError(
                f"The model's {attr}['input_size'] is {size!r}, not (C, H, W).",
                "Give --input-shape, e.g. 1x3x224x224.",
            )
        return InputSpec((TensorSpec("input", (1, *dims)),)), f"{attr}['input_size']"
    return None


def _int_shape(value: Any) -> tuple[int, ...] | None:
    """``value`` as a tuple of positive ints, or ``None`` when it is not one."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        return None
    dims = tuple(value)
    if not dims or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims):
        return None
    return dims


def _input_name(i: int) -> str:
    """Input names as exported programs get them: ``input``, ``input1``, ``input2`` ..."""
    return f"input{i}" if i else "input"


def _tensor_spec(name: str, x: Any) -> TensorSpec:
    dtype = str(x.dtype).replace("torch.", "")
    shape = tuple(int(d) for d in x.shape) or (1,)
    if x.dtype.is_floating_point or dtype == "bool":
        return TensorSpec(name, shape, dtype)
    dyn = (0, 1) if x.dim() == 2 else (0,)
    high = float(x.max()) + 1 if x.numel() else 1.0
    return TensorSpec(name, shape, dtype, dyn, 0.0, max(high, 1.0))


def declared_input_spec(module: Any) -> tuple[InputSpec, str] | None:
    """The inputs a module states about itself, and which attribute stated them.

    See :func:`load_model` for the attributes (``example_inputs``/``example_input``,
    ``input_spec``, ``input_size``, timm-style ``pretrained_cfg``/``default_cfg``).

    Raises:
        SourceError: An attribute is present but malformed.
    """
    import torch

    def attr(name: str) -> Any:
        try:
            return getattr(module, name, None)
        except Exception:  # a failing property states nothing
            return None

    for name in ("example_inputs", "example_input"):
        value = attr(name)
        if value is None:
            continue
        if callable(value) and not isinstance(value, torch.Tensor):
            value = value()
        xs = (value,) if isinstance(value, torch.Tensor) else value
        if (
            not isinstance(xs, (tuple, list))
            or not xs
            or not all(isinstance(x, torch.Tensor) for x in xs)
        ):
            raise SourceError(
                f"The model's {name} attribute is {type(value).__name__}, not a tensor or a "
                "tuple of tensors.",
                "Set it to example inputs, batch first (e.g. torch.rand(1, 3, 224, 224)).",
            )
        specs = tuple(_tensor_spec(_input_name(i), x) for i, x in enumerate(xs))
        return InputSpec(specs), name
    stated = attr("input_spec")
    if isinstance(stated, InputSpec):
        return stated, "input_spec"
    if isinstance(stated, str) and stated.strip():
        return parse_input_spec(stated), "input_spec"
    size = attr("input_size")
    if size is not None:
        one = _int_shape(size)
        iterable = hasattr(size, "__iter__") and not isinstance(size, (str, bytes))
        many = tuple(size) if one is None and iterable else ()
        shapes = [one] if one is not None else [_int_shape(s) for s in many]
        if not shapes or any(s is None for s in shapes):
            raise SourceError(
                f"The model's input_size attribute is {size!r}, not a shape.",
                "Set it to the full input shape, batch first, e.g. (1, 3, 224, 224).",
            )
        specs = tuple(TensorSpec(_input_name(i), s) for i, s in enumerate(shapes) if s is not None)
        return InputSpec(specs), "input_size"
    return _cfg_input_spec(module)


def _hooked(key: str, src: str, rest: str, spec: InputSpec | None) -> LoadedModel:
    """Resolve ``key:rest`` through the resolver an upper floor registered for ``key``."""
    from torchslim._registry import MODEL_SOURCES, hook

    fn = hook(MODEL_SOURCES, key)
    if fn is None:  # pragma: no cover - wired in torchslim/__init__.py
        raise SourceError(f"No resolver is registered for '{key}:' sources.")
    model: LoadedModel = fn(src, rest, spec)
    return model


def _call_factory(src: str) -> nn.Module:
    from torch import nn

    mod_name, _, attr = src.partition(":")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as exc:
        raise SourceError(
            f"Cannot import module '{mod_name}' for factory '{src}': {exc}.",
            "Check the module is on PYTHONPATH (or installed) and spelled module.sub:function.",
        ) from exc
    fn = getattr(mod, attr, None)
    if fn is None or not callable(fn):
        raise SourceError(f"'{mod_name}' has no callable '{attr}'.", "Name a function or class.")
    obj = fn()
    if not isinstance(obj, nn.Module):
        raise SourceError(
            f"Factory '{src}' returned {type(obj).__name__}, not a torch.nn.Module.",
            "Make the factory return the model instance.",
        )
    return obj


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    return any(n.endswith("constants.pkl") for n in names) and any("/code/" in n for n in names)


def _load_file(
    src: str,
    path: Path,
    *,
    arch: str | None,
    spec: InputSpec | None,
    trust_pickle: bool,
    trust_code: bool = False,
    verify: bool = True,
) -> LoadedModel:
    if not path.exists():
        raise SourceError(f"Model file '{path}' does not exist.", "Check the path.")
    if path.is_dir():
        markers = ("manifest.json", "slim.json", "runtime.json", "quantization.json")
        if any((path / m).is_file() for m in markers):  # a torchslim artifact (or an old output)
            from torchslim._registry import MODEL_SOURCES, hook

            resolve = hook(MODEL_SOURCES, "manifest.json")
            loaded: LoadedModel = resolve(src, path, spec, trust_code=trust_code, verify=verify)
            return loaded
        if (path / "config.json").exists():
            return _hooked("hf", src, str(path), spec)
        raise SourceError(
            f"'{path}' is a directory, not a model file.",
            "Give a .pt/.safetensors/.pt2/.onnx file, or hf:DIR for a Hugging Face directory.",
        )
    if path.stat().st_size == 0:
        raise SourceError(f"Model file '{path}' is empty.", "Re-save the model.")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return _load_onnx(src, path, spec)
    if suffix == ".safetensors":
        return _load_safetensors(src, path, arch, spec)
    # Before any pickle path: a zip claiming to be an exported program (whatever its name) goes
    # through the safe loader; the check reads the zip directory only.
    if suffix == ".pt2" or is_exported_program_archive(path):
        return _load_exported(src, path, spec, trust_pickle)
    if _is_torchscript(path):
        module = load_torchscript(path)
        return LoadedModel(src, "torchscript", module, spec, path=path)
    return _load_pickle_checkpoint(src, path, arch, spec, trust_pickle)


def _load_onnx(src: str, path: Path, spec: InputSpec | None) -> LoadedModel:
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
        onnx.checker.check_model(proto)
    except Exception as exc:
        raise SourceError(
            f"'{path}' is not a valid ONNX model: {str(exc).splitlines()[0]}.",
            "Re-export it with torch.onnx.export or give the PyTorch model.",
        ) from exc
    if spec is None:
        spec = _onnx_input_spec(proto)
    return LoadedModel(src, "onnx", None, spec, path=path, onnx_path=path)


_ONNX_DTYPES = {
    1: "float32",
    10: "float16",
    16: "bfloat16",
    7: "int64",
    6: "int32",
    2: "uint8",
    9: "bool",
}


def _onnx_input_spec(proto: Any) -> InputSpec | None:
    initializers = {i.name for i in proto.graph.initializer}
    specs = []
    for inp in proto.graph.input:
        if inp.name in initializers:
            continue
        tt = inp.type.tensor_type
        dims, dyn = [], []
        for i, d in enumerate(tt.shape.dim):
            if d.HasField("dim_value") and d.dim_value > 0:
                dims.append(int(d.dim_value))
            else:
                dims.append(1 if i == 0 else 128)
                dyn.append(i)
        dtype = _ONNX_DTYPES.get(tt.elem_type, "float32")
        high = 2.0 if "mask" in inp.name else (1000.0 if dtype in ("int64", "int32") else 1.0)
        specs.append(
            TensorSpec(inp.name, tuple(dims) or (1,), dtype, tuple(dyn) or (0,), 0.0, high)
        )
    return InputSpec(tuple(specs)) if specs else None


def _load_exported(
    src: str, path: Path, spec: InputSpec | None, trust_pickle: bool = False
) -> LoadedModel:
    ep = load_exported_program(path, trust_pickle=trust_pickle)
    if spec is None:
        specs = []
        for i, arg in enumerate(ep.example_inputs[0] if ep.example_inputs else ()):
            if hasattr(arg, "shape"):
                dtype = str(arg.dtype).replace("torch.", "")
                specs.append(TensorSpec(f"input{i}" if i else "input", tuple(arg.shape), dtype))
        spec = InputSpec(tuple(specs)) if specs else None
    return LoadedModel(src, "exported", ep.module(), spec, path=path)


def _load_safetensors(
    src: str, path: Path, arch: str | None, spec: InputSpec | None
) -> LoadedModel:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise SourceError(
            f"'{path}' is not a valid safetensors file: {exc}.", "Re-save it."
        ) from exc
    return _apply_state_dict(src, path, state, arch, spec)


def _load_pickle_checkpoint(
    src: str, path: Path, arch: str | None, spec: InputSpec | None, trust_pickle: bool
) -> LoadedModel:
    import pickle

    import torch
    from torch import nn

    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        problem = pickle_stream_problem(path)  # parses opcodes only; runs nothing
        if problem is not None:
            raise SourceError(
                f"'{path}' is not a PyTorch checkpoint ({problem}).",
                "Give a file written by torch.save, safetensors, torch.jit.save, "
                "torch.export.save, or an ONNX model.",
            ) from exc
        if not trust_pickle:
            raise UntrustedPickleError(
                f"'{path}' contains pickled Python objects (not just tensors); unpickling can run "
                "arbitrary code, so torchslim refuses by default.",
                "If you created this file yourself, pass --trust-pickle; better, save a state_dict "
                "(torch.save(model.state_dict(), ...)) or safetensors and give --arch.",
            ) from exc
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=False)
        except Exception as exc2:
            raise SourceError(f"Cannot load '{path}': {exc2}.") from exc2
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise SourceError(
            # torch's first line goes on about miniz internals: keep its first sentence
            f"'{path}' is not a readable PyTorch checkpoint "
            f"({(str(exc).splitlines() or [type(exc).__name__])[0].split('. ')[0].rstrip('.')}).",
            "The file may be truncated or corrupt; re-save it.",
        ) from exc
    if isinstance(obj, nn.Module):
        return LoadedModel(src, "pickle", obj, spec, path=path)
    if isinstance(obj, Mapping):
        state = obj
        for key in ("state_dict", "model_state_dict", "model"):
            if key in obj and isinstance(obj[key], Mapping):
                state = obj[key]
                break
        if not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise SourceError(
                f"'{path}' holds a dictionary that is not a state_dict.",
                "Save the weights with torch.save(model.state_dict(), path).",
            )
        return _apply_state_dict(src, path, dict(state), arch, spec)
    raise SourceError(
        f"'{path}' holds a {type(obj).__name__}, not a model or state_dict.",
        "Save a state_dict and give --arch.",
    )


def _apply_state_dict(
    src: str, path: Path, state: dict[str, Any], arch: str | None, spec: InputSpec | None
) -> LoadedModel:
    if not arch:
        raise SourceError(
            f"'{path}' holds weights only; torchslim needs the architecture to build the model.",
            "Give --arch torchvision:resnet18 (or pkg.module:factory, or torchslim:fashion_cnn).",
        )
    base = load_model(arch, input_spec=spec)
    module = base.require_module()
    state = {k.removeprefix("module."): v for k, v in state.items()}
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()
        raise SourceError(
            f"Weights in '{path}' do not fit architecture '{arch}': "
            f"{' '.join(s.strip() for s in first[:2])[:300]}",
            "Check --arch matches the model the weights were trained with.",
        ) from exc
    return LoadedModel(
        src,
        "checkpoint",
        module,
        spec or base.input_spec,
        path=path,
        task=base.task,
        metadata=dict(base.metadata),
    )


def state_dict_bytes(module: nn.Module) -> int:
    """Size in bytes of the module's parameters and buffers serialised with ``torch.save``."""
    import torch

    buf = io.BytesIO()
    torch.save(module.state_dict(), buf)
    return buf.tell()
