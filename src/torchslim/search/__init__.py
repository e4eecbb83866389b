"""Search over recipes: a space of choices, an Optuna sampler, isolated builds, and acceptance
against the original measured in the runtime each candidate ships in (see :func:`optimize`)."""

from __future__ import annotations

from torchslim.search.engine import OptimizeResult, SearchRecord, optimize
from torchslim.search.space import PRESETS, SearchSpace, load_space

__all__ = ["PRESETS", "OptimizeResult", "SearchRecord", "SearchSpace", "load_space", "optimize"]
