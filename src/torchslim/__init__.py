"""torchslim: make trained PyTorch models smaller and faster for inference, measured honestly.

Public names are imported lazily, so ``import torchslim`` loads neither torch backends
(ONNX Runtime, OpenVINO) nor CUDA, and configures no logging.

Example::

    import torchslim
    model = torchslim.load_model("torchslim:fashion_cnn")
    data = torchslim.load_data("torchslim:fashion_mnist")
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from torchslim._version import __version__

if TYPE_CHECKING:
    from torchslim.artifact import Artifact, load_artifact, save_artifact
    from torchslim.candidate import Candidate, Constraints
    from torchslim.data import DataSet, load_data
    from torchslim.evaluate import Evaluator, Fidelity, fidelity
    from torchslim.models import InputSpec, LoadedModel, load_model, parse_input_spec
    from torchslim.passes import PassContext, apply_pass, list_passes
    from torchslim.passes.compress import ClusterConfig, DepthwiseConfig, LowRankConfig
    from torchslim.passes.prune import PruneConfig
    from torchslim.passes.quantize import QuantizeConfig
    from torchslim.pipeline import run_recipe
    from torchslim.predict import predict
    from torchslim.profile import profile
    from torchslim.quantization import quantize
    from torchslim.recipe import Recipe
    from torchslim.runtimes import build, list_runtimes
    from torchslim.search import optimize
    from torchslim.slim import cluster, depthwise, distill, lowrank, prune
    from torchslim.train import DistillConfig

# public name -> module that defines it
_LAZY: dict[str, str] = {
    "Recipe": "torchslim.recipe",
    "optimize": "torchslim.search",
    "Candidate": "torchslim.candidate",
    "Constraints": "torchslim.candidate",
    "run_recipe": "torchslim.pipeline",
    "predict": "torchslim.predict",
    "save_artifact": "torchslim.artifact",
    "load_artifact": "torchslim.artifact",
    "Artifact": "torchslim.artifact",
    "DataSet": "torchslim.data",
    "load_data": "torchslim.data",
    "Evaluator": "torchslim.evaluate",
    "Fidelity": "torchslim.evaluate",
    "fidelity": "torchslim.evaluate",
    "InputSpec": "torchslim.specs",
    "LoadedModel": "torchslim.models",
    "load_model": "torchslim.models",
    "parse_input_spec": "torchslim.specs",
    "PassContext": "torchslim.passes",
    "apply_pass": "torchslim.passes",
    "list_passes": "torchslim.passes",
    "prune": "torchslim.slim",
    "distill": "torchslim.slim",
    "lowrank": "torchslim.slim",
    "cluster": "torchslim.slim",
    "depthwise": "torchslim.slim",
    "PruneConfig": "torchslim.passes.prune",
    "DistillConfig": "torchslim.train",
    "LowRankConfig": "torchslim.passes.compress",
    "ClusterConfig": "torchslim.passes.compress",
    "DepthwiseConfig": "torchslim.passes.compress",
    "quantize": "torchslim.quantization",
    "QuantizeConfig": "torchslim.passes.quantize",
    "build": "torchslim.runtimes",
    "list_runtimes": "torchslim.runtimes",
    "profile": "torchslim.profile",
}

__all__ = ["__version__", *sorted(_LAZY)]


def _wire() -> None:
    """Register the upper floors' source resolvers with the sources floor (lazily imported)."""
    from torchslim._registry import DATA_SOURCES, MODEL_SOURCES, Entry

    for name, target, key in (
        ("artifact", "torchslim.artifact:resolve_source", "manifest.json"),
        ("reference", "torchslim.reference:load_reference_source", "torchslim"),
        ("hf", "torchslim.reference.text:load_hf_source", "hf"),
    ):
        if name not in MODEL_SOURCES:
            MODEL_SOURCES.register(Entry(name, target, key))
    if "reference" not in DATA_SOURCES:
        DATA_SOURCES.register(
            Entry("reference", "torchslim.reference:load_reference_data", "torchslim")
        )


_wire()


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'torchslim' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
