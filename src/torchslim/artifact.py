"""The one output format: an artifact directory, written atomically, loaded hash-verified.

Layout::

    DIR/
      manifest.json    format + version; sha256 and size of every file; torchslim / torch /
                       backend versions; machine fingerprint; input spec; source model string and
                       hash; data source strings and hashes; seed; metrics measured at creation
      recipe.yaml      the recipe that made it (``torchslim run DIR/recipe.yaml MODEL`` replays it)
      runtime/         the runtime's files + runtime.json (when the recipe has a runtime, or a
                       quantization step lowered the model to ONNX Runtime / OpenVINO)
      module/          the PyTorch module: model.safetensors + rebuild.json (architecture changes,
                       replayed on the original architecture) and model.pt2 (torch.export, dynamic
                       batch) — or model.ts / model.pt2 for a torch-quantized module
      report.json      the candidate's numbers, as the command printed them

The files a deployment needs (and so the artifact's ``size_mb``) are ``runtime/`` when there is a
runtime, else the module's loadable program (``model.pt2`` or ``model.ts``).

:func:`load_artifact` verifies every hash before it loads anything and never imports code named
inside the artifact: the runtime files load with their runtime's own API, a ``model.pt2`` with
weights-only unpickling, and an architecture is rebuilt only from torchslim's own registries
(``torchslim:``, ``torchvision:``, ``timm:``) unless the caller passes ``trust_code=True``.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torchslim._io import atomic_directory, file_table, sha256_file
from torchslim.errors import SourceError, TorchslimError
from torchslim.recipe import Recipe, Representation

if TYPE_CHECKING:
    from torch import nn

    from torchslim.candidate import Candidate
    from torchslim.specs import InputSpec

__all__ = [
    "Artifact",
    "ArtifactError",
    "Capabilities",
    "deployment_files",
    "is_artifact",
    "load_artifact",
    "save_artifact",
    "write_model_files",
]

ARTIFACT_FORMAT = "torchslim.artifact"
ARTIFACT_VERSION = 1
MANIFEST = "manifest.json"
RECIPE_FILE = "recipe.yaml"
TRUSTED_PREFIXES = ("torchslim:", "torchvision:", "timm:")
"""Architecture sources an artifact may name and torchslim will build without ``trust_code``."""


class ArtifactError(SourceError):
    """An artifact that is missing files, modified, or of an unknown format."""


# ------------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------------


def write_model_files(
    directory: Path, module: Any, deployed: Any, representation: str, examples: tuple[Any, ...]
) -> None:
    """Write ``module/`` and/or ``runtime/`` into ``directory`` (a fresh directory).

    Args:
        directory: Where to write.
        module: The final PyTorch module, or ``None`` when lowered to ONNX/OpenVINO.
        deployed: The runtime object, or ``None``.
        representation: What the last step produced.
        examples: Example inputs (batch ≥ 2, so the exported batch stays dynamic).
    """
    import torch

    if (
        deployed is not None
        and hasattr(deployed, "save")
        and representation != (Representation.QUANTIZED_MODULE)
    ):
        deployed.save(directory / "runtime")
    if module is None:
        return
    mdir = directory / "module"
    mdir.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    if representation == Representation.QUANTIZED_MODULE:
        _write_quantized_module(mdir, module, examples)
        return
    from safetensors.torch import save_file

    from torchslim.passes.rebuild import rebuild_log

    state = {k: v.detach().contiguous().clone() for k, v in module.state_dict().items()}
    save_file(state, str(mdir / "model.safetensors"))
    from torchslim.lowering import export_program

    try:
        ep = export_program(module, examples, dynamic=True)
        torch.export.save(ep, str(mdir / "model.pt2"))
    except TorchslimError as exc:
        notes.append(f"model.pt2 not written: {exc.message}"[:300])
    meta = {"rebuild": rebuild_log(module), "notes": notes}
    (mdir / "rebuild.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def _write_quantized_module(mdir: Path, module: Any, examples: tuple[Any, ...]) -> None:
    """Torch-quantized modules: TorchScript for eager dynamic INT8, torch.export otherwise.

    Some quantized programs (torchao tensor subclasses, ``*inputs`` wrappers) export only with a
    fixed batch; then the program is exported at the example batch and ``program.json`` records
    it (``Capabilities.dynamic_batch`` is false).
    """
    import torch

    from torchslim.lowering import export_program
    from torchslim.runtimes._common import quiet

    uses_dynamic = any("quantized.dynamic" in type(m).__module__ for m in module.modules())
    if uses_dynamic:
        with torch.no_grad(), quiet():
            ts = torch.jit.trace(module, examples, check_trace=False)
        torch.jit.save(ts, str(mdir / "model.ts"))
        return
    try:
        ep = export_program(module, examples, dynamic=True)
        static = None
    except TorchslimError:
        ep = export_program(module, examples, dynamic=False)
        static = [list(x.shape) for x in examples]
    torch.export.save(ep, str(mdir / "model.pt2"))
    if static is not None:
        (mdir / "program.json").write_text(
            json.dumps({"static_shapes": static}, indent=2) + "\n", encoding="utf-8"
        )


def deployment_files(directory: str | Path) -> list[Path]:
    """The files a deployment of the model files in ``directory`` needs."""
    root = Path(directory)
    runtime = root / "runtime"
    if runtime.is_dir():
        return sorted(p for p in runtime.rglob("*") if p.is_file())
    module = root / "module"
    for name in ("model.pt2", "model.ts"):
        if (module / name).is_file():
            return [module / name]
    return sorted(p for p in module.glob("*") if p.is_file())


def _versions() -> dict[str, str | None]:
    import importlib.metadata as md

    out: dict[str, str | None] = {}
    for pkg in ("torchslim", "torch", "onnx", "onnxruntime", "openvino", "nncf", "torchao"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def _source_record(source: str | None) -> dict[str, Any] | None:
    """A source string and, when it names a local file, that file's hash."""
    if source is None:
        return None
    rec: dict[str, Any] = {"source": source}
    base = source.split("?", 1)[0]
    p = Path(base)
    try:
        if p.is_file():
            rec["sha256"] = sha256_file(p)
        elif p.is_dir() and (p / MANIFEST).is_file():
            rec["sha256"] = sha256_file(p / MANIFEST)
    except OSError:
        pass
    return rec


def save_artifact(
    candidate: Candidate,
    out: str | Path,
    *,
    force: bool = False,
    source: str | None = None,
    extra_files: Mapping[str, str] | None = None,
) -> Path:
    """Write ``candidate`` (built by :func:`torchslim.pipeline.run_recipe`) as an artifact.

    Args:
        candidate: A successful candidate (``candidate.built`` set).
        out: The directory; refused if it exists and is not empty, unless ``force``.
        force: Replace an existing directory (atomically).
        source: The original model's source string (default: the one the run loaded).
        extra_files: More text files to include (``{"report.html": html}``).

    Returns:
        The artifact directory.

    Raises:
        TorchslimError: The candidate failed, or ``out`` cannot be written.
    """
    from torchslim.machine import machine_info

    built = getattr(candidate, "built", None)
    if not candidate.ok or built is None:
        raise TorchslimError(
            f"Nothing to save: the candidate {candidate.status} ({candidate.reason}).",
            "Fix the error above and run again.",
        )
    src = source or built.source
    with atomic_directory(out, force=force) as tmp:
        for item in built.files.iterdir():
            dest = tmp / item.name
            if item.is_dir():
                shutil.copytree(item, dest)
            else:
                shutil.copy2(item, dest)
        candidate.recipe.save(tmp / RECIPE_FILE)
        from torchslim._json import to_jsonable

        (tmp / "report.json").write_text(
            json.dumps(to_jsonable(candidate.to_dict()), indent=2, default=str) + "\n",
            encoding="utf-8",
        )
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")
        deploy = [p.relative_to(tmp).as_posix() for p in deployment_files(tmp)]
        spec = built.input_spec
        loaded = built.source_loaded
        refs = candidate.recipe.data
        manifest = {
            "format": ARTIFACT_FORMAT,
            "format_version": ARTIFACT_VERSION,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "versions": _versions(),
            "machine": machine_info(include_gpu=False).to_dict(),
            "source": _source_record(src),
            "task": getattr(loaded, "task", "unknown") if loaded is not None else "unknown",
            "preprocessing": (loaded.metadata.get("preprocessing") if loaded is not None else None),
            "input_spec": _spec_record(spec),
            "data": {
                k: _source_record(getattr(refs, k)) for k in ("calib", "eval", "train", "teacher")
            },
            "seed": candidate.recipe.seed,
            "representation": built.representation,
            "runtime": candidate.runtime,
            "deployment_files": deploy,
            "metrics": to_jsonable(candidate.metrics()),
            "files": file_table(tmp),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return Path(out)


def _spec_record(spec: InputSpec | None) -> list[dict[str, Any]] | None:
    if spec is None:
        return None
    return [
        {
            "name": t.name,
            "shape": list(t.shape),
            "dtype": t.dtype,
            "dynamic_axes": list(t.dynamic_axes),
            "low": t.low,
            "high": t.high,
        }
        for t in spec.inputs
    ]


def _spec_from_record(rec: Any) -> InputSpec | None:
    from torchslim.specs import InputSpec, TensorSpec

    if not rec:
        return None
    return InputSpec(
        tuple(
            TensorSpec(
                r["name"],
                tuple(r["shape"]),
                r["dtype"],
                tuple(r.get("dynamic_axes", (0,))),
                float(r.get("low", 0.0)),
                float(r.get("high", 1.0)),
            )
            for r in rec
        )
    )


# ------------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------------


def is_artifact(path: str | Path) -> bool:
    """True when ``path`` is a directory holding an artifact manifest."""
    p = Path(path)
    if not (p / MANIFEST).is_file():
        return False
    try:
        return json.loads((p / MANIFEST).read_text(encoding="utf-8")).get("format") == (
            ARTIFACT_FORMAT
        )
    except (OSError, ValueError):
        return True  # looks like one; load_artifact gives the precise error


@dataclass(frozen=True)
class Capabilities:
    """What an artifact can do, from its manifest.

    Attributes:
        input_spec: Its inputs.
        batch_sizes: The batch sizes it was built and checked for.
        dynamic_batch: Whether other batch sizes work too.
        device: ``"cpu"`` or ``"cuda"``.
        precision: Compute precision of the runtime (``fp32``, ``int8``, ``bf16`` ...).
        runtime: The runtime name.
    """

    input_spec: InputSpec | None
    batch_sizes: tuple[int, ...]
    dynamic_batch: bool
    device: str
    precision: str
    runtime: str


def _verify(root: Path, manifest: Mapping[str, Any]) -> None:
    files = manifest.get("files")
    if not isinstance(files, Mapping):
        raise ArtifactError(f"'{root}/{MANIFEST}' has no file table.", _REGEN)
    present = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    present.discard(MANIFEST)
    for rel, rec in files.items():
        path = root / rel
        if rel not in present:
            raise ArtifactError(f"Artifact file '{path}' is missing.", _REGEN)
        if path.stat().st_size != rec.get("bytes") or sha256_file(path) != rec.get("sha256"):
            raise ArtifactError(
                f"Artifact file '{path}' was modified: its hash does not match the manifest.",
                "Regenerate the artifact, or pass --no-verify to load it anyway (unsafe).",
            )
    unexpected = sorted(present - set(files))
    model_like = [u for u in unexpected if u.startswith(("runtime/", "module/"))]
    if model_like:
        raise ArtifactError(
            f"Artifact '{root}' holds an unexpected file '{model_like[0]}' not in its manifest.",
            "Remove it, or regenerate the artifact.",
        )


_REGEN = "Regenerate it with the torchslim command that wrote it (see its recipe.yaml)."


class Artifact:
    """A loaded artifact: callable like the original model, with its recipe and manifest.

    Attributes:
        path: The directory.
        manifest: ``manifest.json`` as a dict.
        recipe: The :class:`~torchslim.recipe.Recipe` that made it.
        capabilities: Input spec, batch sizes, device, precision, runtime.
    """

    def __init__(
        self, path: Path, manifest: dict[str, Any], recipe: Recipe, *, trust_code: bool = False
    ) -> None:
        self.path = path
        self.manifest = manifest
        self.recipe = recipe
        self._trust_code = trust_code
        self._runner: Any = None
        self._module: Any = None
        spec = _spec_from_record(manifest.get("input_spec"))
        info: dict[str, Any] = {}
        rt = path / "runtime" / "runtime.json"
        if rt.is_file():
            info = json.loads(rt.read_text(encoding="utf-8")).get("info", {})
        program = path / "module" / "program.json"
        if not rt.is_file() and program.is_file():
            info["static_shapes"] = json.loads(program.read_text(encoding="utf-8"))["static_shapes"]
        quantized = _precision_of(recipe)
        precision = quantized if quantized != "fp32" else str(info.get("precision") or "fp32")
        self.capabilities = Capabilities(
            spec,
            tuple(recipe.batch_sizes),
            not bool(info.get("static_shapes")),
            str(info.get("device", "cpu")),
            precision,
            str(manifest.get("runtime", "eager")),
        )

    @property
    def input_spec(self) -> InputSpec | None:
        """The inputs the model expects."""
        return self.capabilities.input_spec

    @property
    def representation(self) -> str:
        """What its last step produced (module, quantized module, ONNX graph, OpenVINO model)."""
        return str(self.manifest.get("representation", Representation.MODULE))

    @property
    def source(self) -> str | None:
        """The source string of the original model."""
        rec = self.manifest.get("source") or {}
        return rec.get("source") if isinstance(rec, Mapping) else None

    @property
    def size_mb(self) -> float:
        """MB of the files a deployment needs (recomputed from the files)."""
        from torchslim.measure import deployment_size_mb

        return deployment_size_mb(*(self.path / f for f in self.manifest["deployment_files"]))

    def runner(self) -> Any:
        """The callable that runs the model (the runtime, else the saved program)."""
        if self._runner is None:
            self._runner = self._load_runner()
        return self._runner

    def __call__(self, *inputs: Any) -> Any:
        """Run on torch tensors, like the original model."""
        import torch

        with torch.inference_mode():
            return self.runner()(*inputs)

    def _load_runner(self) -> Any:
        if (self.path / "runtime").is_dir():
            from torchslim.runtimes import load_deployed

            return load_deployed(self.path / "runtime")
        mdir = self.path / "module"
        if (mdir / "model.pt2").is_file():
            from torchslim._safe_load import load_exported_program

            return load_exported_program(mdir / "model.pt2").module()
        if (mdir / "model.ts").is_file():
            from torchslim._safe_load import load_torchscript

            return load_torchscript(mdir / "model.ts")
        return self.module()

    def module(self) -> nn.Module:
        """The trainable PyTorch module, for more passes (pruned → quantized, ...).

        Rebuilt from the original architecture, the recorded changes and the saved weights.

        Raises:
            ArtifactError: The artifact holds no module (lowered to ONNX/OpenVINO), or its
                architecture source is not a torchslim registry source and ``trust_code`` is off.
        """
        if self._module is not None:
            return self._module
        mdir = self.path / "module"
        if (
            self.representation != Representation.MODULE
            or not (mdir / "model.safetensors").is_file()
        ):
            raise ArtifactError(
                f"Artifact '{self.path}' holds a {self.representation}, not a trainable module.",
                "Apply passes to the artifact they came from (before quantization), or to the "
                "original model.",
            )
        source = self.source
        if source is None:
            raise ArtifactError(f"Artifact '{self.path}' does not name its architecture.", _REGEN)
        if not source.startswith(TRUSTED_PREFIXES) and not self._trust_code:
            raise ArtifactError(
                f"Artifact '{self.path}' names architecture '{source}', which would run code "
                "from outside torchslim's registries.",
                "Pass --trust-code only if you trust where the artifact came from.",
            )
        from safetensors.torch import load_file

        from torchslim.models import load_model
        from torchslim.passes.rebuild import assign_state, replay

        model = load_model(source, trust_pickle=False).require_module()
        meta = json.loads((mdir / "rebuild.json").read_text(encoding="utf-8"))
        replay(model, meta.get("rebuild", []))
        assign_state(model, load_file(str(mdir / "model.safetensors")))
        self._module = model.eval()
        return self._module

    def state(self) -> tuple[Any, Any, str]:
        """``(module, deployed, representation)`` to continue a recipe from this artifact."""
        rep = self.representation
        if rep in (Representation.ONNX, Representation.OPENVINO):
            return None, self.runner(), rep
        if rep == Representation.QUANTIZED_MODULE:
            return self.runner(), None, rep
        return self.module(), None, rep

    def __repr__(self) -> str:
        return f"Artifact({str(self.path)!r}, runtime={self.capabilities.runtime!r})"


def _precision_of(recipe: Recipe) -> str:
    for step in recipe.steps:
        if type(step).__name__ == "QuantizeConfig":
            method = getattr(step.method, "value", step.method)
            return {"fp16": "fp16", "bf16": "bf16"}.get(method, "int8")
    return "fp32"


def load_artifact(path: str | Path, *, verify: bool = True, trust_code: bool = False) -> Artifact:
    """Open an artifact directory, verifying every file's hash first.

    Args:
        path: The artifact directory.
        verify: Check every file against the manifest (``False`` skips it: unsafe, for debugging).
        trust_code: Allow rebuilding an architecture named by the artifact that lies outside
            torchslim's registries (``pkg.module:factory`` runs that code).

    Returns:
        The :class:`Artifact` (its model files are loaded on first call).

    Raises:
        ArtifactError: Not an artifact, unknown format/version, or a missing, modified or
            unexpected model file.
    """
    import warnings

    root = Path(path)
    mpath = root / MANIFEST
    if not mpath.is_file():
        if (
            (root / "slim.json").is_file()
            or (root / "quantization.json").is_file()
            or (root / "runtime.json").is_file()
        ):
            raise ArtifactError(
                f"'{root}' was written by an older torchslim (before artifacts).",
                "Regenerate it with the same command and this torchslim (prune/quantize/export "
                "--out DIR).",
            )
        raise ArtifactError(f"'{root}' is not a torchslim artifact (no {MANIFEST}).", _REGEN)
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"'{mpath}' is not valid JSON: {exc}.", _REGEN) from None
    if not isinstance(manifest, dict) or manifest.get("format") != ARTIFACT_FORMAT:
        raise ArtifactError(f"'{mpath}' is not a torchslim artifact manifest.", _REGEN)
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > ARTIFACT_VERSION:
        raise ArtifactError(
            f"'{root}' has artifact format {version!r}; this torchslim reads up to "
            f"{ARTIFACT_VERSION}.",
            "Upgrade torchslim.",
        )
    if verify:
        _verify(root, manifest)
    else:
        warnings.warn(
            f"Loading artifact '{root}' WITHOUT verifying its files (--no-verify).", stacklevel=2
        )
    recipe = Recipe.load(root / RECIPE_FILE)
    return Artifact(root, manifest, recipe, trust_code=trust_code)


def resolve_source(
    src: str, path: Path, spec: Any, *, trust_code: bool = False, verify: bool = True
) -> Any:
    """Model-source hook: an artifact directory as a :class:`~torchslim.models.LoadedModel`.

    The loaded model's ``module`` is the trainable module when the artifact holds one, else the
    runner (a torch module for saved programs) — or ``None`` with ``deployed`` set for ONNX
    Runtime / OpenVINO artifacts. ``metadata["artifact"]`` is the :class:`Artifact`.
    """
    from torch import nn

    from torchslim.models import LoadedModel

    art = load_artifact(path, verify=verify, trust_code=trust_code)
    deployed = art.runner() if (path / "runtime").is_dir() else None
    module: Any = None
    if art.representation == Representation.MODULE and (path / "module").is_dir():
        try:
            module = art.module()
        except ArtifactError:
            module = None
    if module is None and deployed is None:
        runner = art.runner()
        if isinstance(runner, nn.Module):
            module = runner
        else:
            deployed = runner
    loaded = LoadedModel(
        src,
        "artifact",
        module,
        spec or art.input_spec,
        path=path,
        task=str(art.manifest.get("task", "unknown")),
        metadata={
            "artifact": art,
            "deployment_files": [str(path / f) for f in art.manifest["deployment_files"]],
        },
    )
    loaded.deployed = deployed
    return loaded
