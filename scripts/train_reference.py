"""Train the bundled Fashion-MNIST reference models and write torchslim's reference assets.

Reads the full Fashion-MNIST IDX files (Debian package ``dataset-fashion-mnist``, or the folder
in ``$TORCHSLIM_FASHION_MNIST_DIR``) and writes into ``src/torchslim/reference/assets/`` (or
``--out``):

* ``fashion_cnn.safetensors``, ``fashion_resnet.safetensors`` — fp32 weights; safetensors metadata
  holds the test accuracy, epochs, seed and device;
* ``fashion_mnist_test.npz`` — 2,000 test images, 200 per class (uint8 ``x`` (N,28,28),
  int64 ``y``);
* ``fashion_mnist_train.npz`` — 10,000 train images, 1,000 per class;
* ``reference.json`` — accuracy of each model on the full 10k test set and on the packaged 2k
  subset, parameter counts, training time, device, seed and date.

Everything is seeded (``--seed``). Usage::

    python scripts/train_reference.py                    # both models, CPU, 2 threads
    python scripts/train_reference.py --models cnn       # only the CNN (keeps the other entry)
    python scripts/train_reference.py --device cuda      # same recipe on a GPU

The shipped weights were made with ``--device cuda`` (about 40 s for both on one GPU; see
``reference.json``). The same recipe on 2 CPU threads takes far longer (roughly 15-30 min for the
CNN and a few hours for the ResNet on a busy 2-core machine), and kernels differ between devices,
so a CPU rerun gives close but not bit-identical weights. The data subsets are identical
everywhere (seeded numpy sampling).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from torchslim.reference.fashion import CLASS_NAMES, asset_dir, build_model, read_full_split

# name -> recipe. The CNN trains without augmentation (short schedule); the ResNet uses random
# crops (padding 2) and horizontal flips.
RECIPES: dict[str, dict[str, Any]] = {
    "fashion_cnn": {"epochs": 5, "batch": 128, "lr": 3e-3, "wd": 1e-4, "augment": False},
    "fashion_resnet": {"epochs": 8, "batch": 128, "lr": 4e-3, "wd": 5e-4, "augment": True},
}
_SHORT = {"cnn": "fashion_cnn", "resnet": "fashion_resnet"}


def stratified_indices(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """``per_class`` seeded random indices of each class, sorted."""
    rng = np.random.default_rng(seed)
    picks = [
        rng.choice(np.flatnonzero(labels == c), size=per_class, replace=False)
        for c in range(len(CLASS_NAMES))
    ]
    return np.sort(np.concatenate(picks))


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random 28x28 crop of the 2-pixel zero-padded batch, and random horizontal flip."""
    n = x.shape[0]
    padded = F.pad(x, (2, 2, 2, 2))
    oy = torch.randint(0, 5, (n,), generator=gen, device="cpu").to(x.device)
    ox = torch.randint(0, 5, (n,), generator=gen, device="cpu").to(x.device)
    ar = torch.arange(28, device=x.device)
    rows = (oy[:, None] + ar)[:, :, None]
    cols = (ox[:, None] + ar)[:, None, :]
    flip = torch.rand(n, generator=gen, device="cpu").to(x.device) < 0.5
    cols = torch.where(flip[:, None, None], cols.flip(-1), cols)
    b = torch.arange(n, device=x.device)[:, None, None]
    return padded[b, 0, rows, cols].unsqueeze(1)


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 1000) -> float:
    """Top-1 accuracy of ``model`` (eval mode) on uint8-derived float inputs."""
    model.eval()
    correct = 0
    for i in range(0, len(x), batch):
        correct += int((model(x[i : i + batch]).argmax(1) == y[i : i + batch]).sum())
    return correct / len(x)


def train(
    name: str,
    xtr: torch.Tensor,
    ytr: torch.Tensor,
    xte: torch.Tensor,
    yte: torch.Tensor,
    seed: int,
    device: torch.device,
    epochs: int | None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train one reference model with AdamW + one-cycle; returns it (on CPU) and its facts."""
    recipe = dict(RECIPES[name])
    if epochs:
        recipe["epochs"] = epochs
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = build_model(name).to(device)
    steps_per_epoch = (len(xtr) + recipe["batch"] - 1) // recipe["batch"]
    opt = torch.optim.AdamW(model.parameters(), lr=recipe["lr"], weight_decay=recipe["wd"])
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=recipe["lr"], total_steps=recipe["epochs"] * steps_per_epoch, pct_start=0.25
    )
    t0 = time.perf_counter()
    for epoch in range(recipe["epochs"]):
        model.train()
        perm = torch.randperm(len(xtr), generator=gen).to(device)
        total = 0.0
        for i in range(0, len(xtr), recipe["batch"]):
            idx = perm[i : i + recipe["batch"]]
            xb, yb = xtr[idx], ytr[idx]
            if recipe["augment"]:
                xb = augment(xb, gen)
            loss = F.cross_entropy(model(xb), yb, label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        acc = accuracy(model, xte, yte)
        print(
            f"{name} epoch {epoch + 1}/{recipe['epochs']}: loss {total / len(xtr):.4f} "
            f"test acc {acc:.4f} ({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
    seconds = time.perf_counter() - t0
    model.eval()
    return model.cpu(), {"epochs": recipe["epochs"], "recipe": recipe, "train_seconds": seconds}


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="cnn,resnet", help="comma list: cnn, resnet")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--epochs", type=int, default=None, help="override every recipe's epochs")
    parser.add_argument("--out", type=Path, default=asset_dir())
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    names = [_SHORT.get(m.strip(), m.strip()) for m in args.models.split(",") if m.strip()]
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    train_u8, train_y = read_full_split("train")
    test_u8, test_y = read_full_split("test")
    test_idx = stratified_indices(test_y, 200, args.seed)
    train_idx = stratified_indices(train_y, 1000, args.seed)
    np.savez_compressed(out / "fashion_mnist_test.npz", x=test_u8[test_idx], y=test_y[test_idx])
    np.savez_compressed(
        out / "fashion_mnist_train.npz", x=train_u8[train_idx], y=train_y[train_idx]
    )

    def to_tensor(images: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)

    xtr, ytr = to_tensor(train_u8).to(device), torch.from_numpy(train_y).to(device)
    xte, yte = to_tensor(test_u8), torch.from_numpy(test_y)
    xsub, ysub = xte[torch.from_numpy(test_idx)], yte[torch.from_numpy(test_idx)]

    report_path = out / "reference.json"
    report: dict[str, Any] = {}
    if report_path.exists():
        report = json.loads(report_path.read_text(encoding="utf-8"))
    models: dict[str, Any] = report.get("models", {})
    for name in names:
        model, facts = train(
            name, xtr, ytr, xte.to(device), yte.to(device), args.seed, device, args.epochs
        )
        full_acc = accuracy(model, xte, yte)
        sub_acc = accuracy(model, xsub, ysub)
        params = sum(p.numel() for p in model.parameters())
        state = {
            k: v.detach().float().contiguous()
            for k, v in model.state_dict().items()
            if v.is_floating_point()
        }
        state.update(
            {k: v.contiguous() for k, v in model.state_dict().items() if not v.is_floating_point()}
        )
        meta = {
            "test_accuracy": f"{full_acc:.4f}",
            "subset_accuracy": f"{sub_acc:.4f}",
            "epochs": str(facts["epochs"]),
            "seed": str(args.seed),
            "device": device.type,
            "architecture": type(model).__name__,
        }
        save_file(state, str(out / f"{name}.safetensors"), metadata=meta)
        models[name] = {
            "architecture": type(model).__name__,
            "params": params,
            "test_accuracy": round(full_acc, 4),
            "subset_accuracy": round(sub_acc, 4),
            "epochs": facts["epochs"],
            "recipe": facts["recipe"],
            "train_seconds": round(facts["train_seconds"], 1),
            "device": device.type,
            "threads": args.threads if device.type == "cpu" else None,
            "seed": args.seed,
            "torch": torch.__version__,
            "date": dt.date.today().isoformat(),
        }
        print(
            f"{name}: params {params}, full test {full_acc:.4f}, subset {sub_acc:.4f}", flush=True
        )
    report.update(
        {
            "dataset": "Fashion-MNIST (Debian package dataset-fashion-mnist)",
            "test_subset": {
                "file": "fashion_mnist_test.npz",
                "n": len(test_idx),
                "per_class": 200,
                "seed": args.seed,
            },
            "train_subset": {
                "file": "fashion_mnist_train.npz",
                "n": len(train_idx),
                "per_class": 1000,
                "seed": args.seed,
            },
            "class_names": list(CLASS_NAMES),
            "input": "float32 (N,1,28,28), pixel/255, no normalisation",
            "seed": args.seed,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "date": dt.date.today().isoformat(),
            "models": dict(sorted(models.items())),
        }
    )
    report_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote assets to {out}", flush=True)


if __name__ == "__main__":
    main()
