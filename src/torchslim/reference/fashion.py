"""Fashion-MNIST reference models (``torchslim:fashion_cnn``/``fashion_resnet``) and data.

Both models take float32 images of shape ``(N, 1, 28, 28)`` with pixel values in ``[0, 1]``
(``pixel / 255``, no other normalisation) and return logits of shape ``(N, 10)``. Their trained
weights ship as safetensors files in ``assets/``; ``scripts/train_reference.py`` reproduces them
(and the packaged data subsets) from the Debian package ``dataset-fashion-mnist``.

Data (``torchslim:fashion_mnist?split=test|train``):

* By default the **packaged subsets** are returned: 2,000 test images (200 per class) and 10,000
  train images (1,000 per class), stratified and seeded. They ship with torchslim, so every machine
  gets exactly the same numbers.
* With ``?full=1`` the **full** sets (10,000 test / 60,000 train) are read from the IDX files of the
  Debian package ``dataset-fashion-mnist``. They are looked up in ``$TORCHSLIM_FASHION_MNIST_DIR``
  first, then in a few known install locations; a :class:`~torchslim.errors.DataError` says how
  to get them when they are missing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from torchslim.errors import DataError, SourceError

if TYPE_CHECKING:
    import numpy as np

    from torchslim.data import DataSet
    from torchslim.models import InputSpec, LoadedModel

__all__ = [
    "CLASS_NAMES",
    "MODEL_NAMES",
    "BasicBlock",
    "FashionCNN",
    "FashionResNet",
    "asset_dir",
    "build_model",
    "find_full_dir",
    "load_data",
    "load_model",
    "read_full_split",
]

CLASS_NAMES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
"""The ten Fashion-MNIST class names, in label order."""

MODEL_NAMES: tuple[str, ...] = ("fashion_cnn", "fashion_resnet")

DEFAULT_CALIB = "torchslim:fashion_mnist?split=train&limit=512"
"""Calibration data commands use for the Fashion-MNIST models when given none (``--calib``)."""

DEFAULT_EVAL = "torchslim:fashion_mnist"
"""Evaluation data commands use for the Fashion-MNIST models when given none (``--eval``)."""

ENV_DIR = "TORCHSLIM_FASHION_MNIST_DIR"
"""Environment variable naming a folder that holds the Fashion-MNIST IDX files."""

_KNOWN_DIRS: tuple[str, ...] = (
    "/usr/share/datasets/fashion-mnist",
    "/usr/share/games/fashion-mnist",
    "/usr/share/fashion-mnist",
    "/usr/local/share/datasets/fashion-mnist",
    "/usr/share/datasets/fashion_mnist",
)
_SPLIT_PREFIX = {"train": "train", "test": "t10k"}
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")


def asset_dir() -> Path:
    """The folder holding the shipped weights, data subsets and ``reference.json``."""
    return Path(__file__).resolve().parent / "assets"


# --------------------------------------------------------------------------------------------
# Architectures
# --------------------------------------------------------------------------------------------


class FashionCNN(nn.Module):
    """Small 2-conv CNN (~421k parameters).

    conv 1→32 3x3 → ReLU → maxpool → conv 32→64 3x3 → ReLU → maxpool → Dropout →
    Linear 3136→128 → ReLU → Linear 128→10.
    """

    def __init__(self, num_classes: int = 10, dropout: float = 0.25) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.dropout = nn.Dropout(dropout)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(64 * 7 * 7, 128)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        x = self.flatten(self.dropout(x))
        return self.fc2(self.relu3(self.fc1(x)))  # type: ignore[no-any-return]


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv+BN, identity or 1x1 conv+BN projection shortcut.

    Every ReLU is its own module (quantisers and graph tools need one node per use).
    """

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )
        else:
            self.shortcut = nn.Identity()
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))  # type: ignore[no-any-return]


class FashionResNet(nn.Module):
    """Small ResNet (~0.7M parameters) with BatchNorm and residual connections.

    Stem conv 1→32 + BN + ReLU (28x28), then three stages of two basic blocks at 32/64/128
    channels (28x28 → 14x14 → 7x7; stride-2 downsampling with 1x1 projection shortcuts),
    global average pooling and Linear 128→10.
    """

    def __init__(
        self, num_classes: int = 10, widths: tuple[int, ...] = (32, 64, 128), blocks: int = 2
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, widths[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(),
        )
        stages = []
        cin = widths[0]
        for i, w in enumerate(widths):
            layers = [BasicBlock(cin, w, stride=1 if i == 0 else 2)]
            layers += [BasicBlock(w, w) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*layers))
            cin = w
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.flatten(self.pool(x)))  # type: ignore[no-any-return]


def build_model(name: str) -> nn.Module:
    """A fresh, randomly initialised reference architecture (``fashion_cnn``/``fashion_resnet``).

    Raises:
        SourceError: Unknown name.
    """
    if name not in MODEL_NAMES:
        raise SourceError(
            f"No Fashion-MNIST reference model '{name}'.",
            f"Available: {', '.join(MODEL_NAMES)}.",
        )
    return FashionCNN() if name == "fashion_cnn" else FashionResNet()


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


def _reference_info() -> dict[str, Any]:
    path = asset_dir() / "reference.json"
    if not path.exists():
        return {}
    try:
        info: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return info


def load_model(name: str, spec: InputSpec | None = None) -> LoadedModel:
    """Load a trained Fashion-MNIST reference model in eval mode.

    Args:
        name: ``"fashion_cnn"`` or ``"fashion_resnet"``.
        spec: Input shapes to record instead of the default ``input:1x1x28x28:float32``.

    Returns:
        A :class:`~torchslim.models.LoadedModel` with ``kind="reference"``,
        ``task="classification"``, ``path`` set to the safetensors asset and metadata holding
        the class names, the accuracy recorded at training time and the bundled data commands
        default to (``default_calib``: :data:`DEFAULT_CALIB`, ``default_eval``:
        :data:`DEFAULT_EVAL`).

    Raises:
        SourceError: Unknown name, or the weights file is missing or unreadable.
    """
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    from torchslim.models import InputSpec, LoadedModel, TensorSpec

    module = build_model(name)
    path = asset_dir() / f"{name}.safetensors"
    if not path.exists():
        raise SourceError(
            f"Weights for reference model '{name}' are missing ({path}).",
            "Reinstall torchslim, or regenerate them with: python scripts/train_reference.py",
        )
    try:
        state = load_file(str(path))
        with safe_open(str(path), framework="pt") as fh:
            file_meta = dict(fh.metadata() or {})
        module.load_state_dict(state, strict=True)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise SourceError(
            f"Weights for reference model '{name}' cannot be loaded: {exc}.",
            "Reinstall torchslim, or regenerate them with: python scripts/train_reference.py",
        ) from exc
    module.eval()
    recorded = _reference_info().get("models", {}).get(name, {})
    metadata: dict[str, Any] = {
        "class_names": list(CLASS_NAMES),
        "num_classes": len(CLASS_NAMES),
        "dataset": "fashion_mnist",
        "input_range": [0.0, 1.0],
        "params": sum(p.numel() for p in module.parameters()),
        "default_calib": DEFAULT_CALIB,
        "default_eval": DEFAULT_EVAL,
    }
    for key in ("test_accuracy", "subset_accuracy", "epochs", "seed"):
        if key in recorded:
            metadata[key] = recorded[key]
        elif key in file_meta:
            metadata[key] = _number(file_meta[key])
    spec = spec or InputSpec((TensorSpec("input", (1, 1, 28, 28), "float32"),))
    return LoadedModel(
        f"torchslim:{name}",
        "reference",
        module,
        spec,
        path=path,
        task="classification",
        metadata=metadata,
    )


def _number(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def _check_split(split: str) -> str:
    if split not in _SPLIT_PREFIX:
        raise DataError(
            f"Fashion-MNIST has no split '{split}'.",
            "Use torchslim:fashion_mnist?split=test (default) or ?split=train.",
        )
    return split


def _truthy(value: str | None) -> bool:
    if value is None:
        return False
    text = value.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise DataError(
        f"Option 'full={value}' is not a yes/no value.",
        "Use ?full=1 for the full Fashion-MNIST sets, or leave it out for the packaged subsets.",
    )


def _has_files(folder: Path) -> bool:
    return all(
        any((folder / f"{p}-{kind}-ubyte{ext}").exists() for ext in (".gz", ""))
        for p in _SPLIT_PREFIX.values()
        for kind in ("images-idx3", "labels-idx1")
    )


def find_full_dir() -> Path | None:
    """The folder holding the full Fashion-MNIST IDX files, or ``None`` when absent.

    Looks in ``$TORCHSLIM_FASHION_MNIST_DIR`` first, then in the install locations of the Debian
    package ``dataset-fashion-mnist`` and a few other known places.
    """
    candidates = []
    env = os.environ.get(ENV_DIR)
    if env:
        candidates.append(Path(env).expanduser())
    candidates += [Path(d) for d in _KNOWN_DIRS]
    for folder in candidates:
        if folder.is_dir() and _has_files(folder):
            return folder
    return None


def _idx_file(folder: Path, prefix: str, kind: str) -> Path:
    gz = folder / f"{prefix}-{kind}-ubyte.gz"
    return gz if gz.exists() else folder / f"{prefix}-{kind}-ubyte"


def read_full_split(split: str, folder: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read a full split from the IDX files: uint8 images ``(N, 28, 28)`` and int64 labels.

    Args:
        split: ``"train"`` (60,000) or ``"test"`` (10,000).
        folder: Where the IDX files are; found with :func:`find_full_dir` when omitted.

    Raises:
        DataError: Bad split, or the files are missing or corrupt.
    """
    from torchslim.data import read_idx

    prefix = _SPLIT_PREFIX[_check_split(split)]
    folder = folder or find_full_dir()
    if folder is None:
        raise DataError(
            "The full Fashion-MNIST files were not found.",
            f"Install the Debian package dataset-fashion-mnist, or set {ENV_DIR} to a folder "
            "holding {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]; without ?full=1 the "
            "packaged subsets are used.",
        )
    images = read_idx(_idx_file(folder, prefix, "images-idx3"))
    labels = read_idx(_idx_file(folder, prefix, "labels-idx1")).astype("int64")
    if images.ndim != 3 or images.shape[1:] != (28, 28) or len(images) != len(labels):
        raise DataError(
            f"Fashion-MNIST files in '{folder}' have unexpected shapes {images.shape} / "
            f"{labels.shape}.",
            "Reinstall the dataset-fashion-mnist package.",
        )
    return images, labels


def _read_packaged(split: str) -> tuple[np.ndarray, np.ndarray]:
    import numpy as np

    path = asset_dir() / f"fashion_mnist_{split}.npz"
    if not path.exists():
        raise DataError(
            f"The packaged Fashion-MNIST {split} subset is missing ({path}).",
            "Reinstall torchslim, or regenerate it with: python scripts/train_reference.py",
        )
    with np.load(path, allow_pickle=False) as z:
        return z["x"], z["y"].astype("int64")


def load_data(split: str = "test", full: str | None = None) -> DataSet:
    """Load Fashion-MNIST as a :class:`~torchslim.data.DataSet`.

    By default this returns the packaged, stratified subsets (2,000 test / 10,000 train images)
    so that results are identical on every machine. With ``full`` truthy (``"1"``/``"true"``)
    it returns the full sets (10,000 test / 60,000 train) read from the Debian package
    ``dataset-fashion-mnist`` (or ``$TORCHSLIM_FASHION_MNIST_DIR``).

    Args:
        split: ``"test"`` or ``"train"``.
        full: ``"1"``/``"true"`` for the full sets; ``None``/``"0"``/``"false"`` for the subsets.

    Returns:
        Inputs float32 ``(N, 1, 28, 28)`` in ``[0, 1]``, labels int64, 10 named classes.

    Raises:
        DataError: Bad split or ``full`` value, or the requested files are missing.
    """
    from torchslim.data import DataSet

    _check_split(split)
    use_full = _truthy(full)
    images, labels = read_full_split(split) if use_full else _read_packaged(split)
    x = torch.from_numpy(images.astype("float32") / 255.0).unsqueeze(1)
    y = torch.from_numpy(labels)
    name = f"torchslim:fashion_mnist?split={split}" + ("&full=1" if use_full else "")
    return DataSet(
        name,
        (x,),
        y,
        num_classes=len(CLASS_NAMES),
        class_names=list(CLASS_NAMES),
        extra={"subset": not use_full},
    )
