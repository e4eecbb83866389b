"""Shared helpers of the predict tests: the small reference model and real Fashion-MNIST images
written to disk as JPEG files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

MODEL = "torchslim:fashion_cnn"
DATA = "torchslim:fashion_mnist"


def write_jpegs(root: Path, n: int, *, per_class_dirs: bool = True) -> list[str]:
    """Write the first ``n`` packaged Fashion-MNIST test images as grey JPEG files.

    Returns:
        Their paths relative to ``root``, in the sorted order predict reads them.
    """
    from PIL import Image

    import torchslim

    ds = torchslim.load_data(DATA)
    images = (ds.inputs[0][:n, 0].numpy() * 255).round().astype(np.uint8)
    labels = ds.labels[:n].tolist() if ds.labels is not None else [0] * n
    names = []
    for i, (img, y) in enumerate(zip(images, labels, strict=True)):
        rel = f"{y:02d}/img{i:04d}.jpg" if per_class_dirs else f"img{i:04d}.jpg"
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img, mode="L").save(path, quality=95)
        names.append(rel)
    return sorted(names)
