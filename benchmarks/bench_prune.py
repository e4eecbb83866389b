"""Pruning, recovery and compression benchmark → ``BENCHMARKS_prune.md`` (+ raw JSON).

What it measures (CPU, ``--threads`` threads, all numbers from this run):

1. The Fashion-MNIST ResNet reference (``torchslim:fashion_resnet``): structured pruning to
   30/50/70% fewer FLOPs; accuracy on the packaged 2,000-image test subset before recovery, after
   KD recovery and after label-only fine-tuning **with the same wall-clock budget**; params,
   size, p50 latency at batch 1 and 64 (interleaved with the unpruned model, quoted as ratios).
2. torchvision ResNet-18 / MobileNetV2 (random weights: speed only): latency after 50% channel
   pruning.
3. Low-rank factorisation and k-means weight sharing of both reference models: size and accuracy
   (no retraining).

Run: ``.venv/bin/python benchmarks/bench_prune.py [--budget 45] [--threads 2] [--quick]``.
The machine this ran on may be shared: batch-1 timings swing, so ratios are what to compare.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch

from torchslim.data import load_data
from torchslim.models import load_model
from torchslim.passes.compress import ClusterConfig, LowRankConfig
from torchslim.passes.prune import PruneConfig
from torchslim.slim import cluster, lowrank, measure_pair, prune
from torchslim.train import DistillConfig, fit

try:  # run as a script from the repo root or from benchmarks/
    from _report import RESULTS, replace_section, save_json
except ImportError:  # pragma: no cover
    from benchmarks._report import RESULTS, replace_section, save_json

ROOT = Path(__file__).resolve().parents[1]


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}%"


def _r(v: float | None, nd: int = 2) -> str:
    return "n/a" if v is None else f"{v:.{nd}f}"


def _median_latency(
    base: Any, model: Any, x: Any, repeats: int = 3, batches: tuple[int, ...] = (1, 64)
) -> dict[str, Any]:
    """Interleaved latency at each batch size, repeated; the median of the repeats."""
    from statistics import median

    from torchslim.slim import _latency

    runs = [_latency(base, model, (x,), batches, 1.5) for _ in range(repeats)]
    keys = [k for k in runs[0] if k.startswith(("latency_ms", "speedup"))]
    out: dict[str, Any] = {k: median(r[k] for r in runs) for k in keys}
    out["speedup_runs"] = [r["speedup"] for r in runs]
    return out


def reference_pruning(
    budget: float, goals: list[float], log: Any, long_epochs: float = 0.0
) -> list[dict[str, Any]]:
    """Prune the reference ResNet to each FLOPs goal, then recover with KD and with fine-tuning."""
    import copy

    base = load_model("torchslim:fashion_resnet").require_module()
    train = load_data("torchslim:fashion_mnist?split=train")
    test = load_data("torchslim:fashion_mnist")
    x = test.inputs[0][:2]
    rows = []
    for goal in goals:
        t0 = time.perf_counter()
        res = prune(base, PruneConfig(ratio=goal, target="flops"), x, eval=test, latency=False)
        pruned = res.model
        row: dict[str, Any] = {
            "goal_flops_reduction": goal,
            "prune_seconds": round(time.perf_counter() - t0, 1),
            "channels": res.report["details"]["channels"],
            "pruned_no_recovery": res.report,
            "latency": _median_latency(base, pruned, x),
        }
        log(
            f"goal {goal}: flops x{res.report['flops_reduction']:.2f}, acc "
            f"{res.report['accuracy_after']:.4f}, speedup b1 {row['latency']['speedup']:.2f} "
            f"b64 {row['latency']['speedup_b64']:.2f}"
        )
        runs = [("kd", budget, None), ("finetune", budget, None)]
        if long_epochs and abs(goal - 0.5) < 1e-9:
            runs.append(("kd_long", None, long_epochs))
        for name, secs, epochs in runs:
            method = "kd" if name.startswith("kd") else "finetune"
            student = copy.deepcopy(pruned)
            cfg = DistillConfig(
                method=method,
                epochs=epochs or 50,
                time_budget_s=secs,  # type: ignore[arg-type]
                lr=2e-3,
                batch_size=128,
                seed=0,
            )
            tr = fit(student, train, cfg, teacher=base if method == "kd" else None)
            rep = measure_pair(base, student, (x,), eval_data=test, latency=False)
            rep["train_steps"] = tr.steps
            rep["train_seconds"] = round(tr.seconds, 1)
            row[name] = rep
            log(
                f"goal {goal}: {name} acc {rep['accuracy_after']:.4f} "
                f"(before {rep['accuracy_before']:.4f}), steps {tr.steps} in {tr.seconds:.0f}s"
            )
        rows.append(row)
    return rows


def torchvision_speed(log: Any) -> list[dict[str, Any]]:
    """Latency of torchvision models after 50% channel pruning (random weights, speed only)."""
    rows = []
    for name in ("resnet18", "mobilenet_v2"):
        model = load_model(f"torchvision:{name}").require_module()
        x = torch.rand(2, 3, 224, 224)
        res = prune(model, PruneConfig(ratio=0.5), x, latency=False)
        rep = measure_pair(model, res.model, (x,), latency=False)
        rep.update(_median_latency(model, res.model, x, batches=(1,)))
        rep.pop("accuracy_before", None)
        rows.append({"model": name, **rep})
        log(
            f"{name}: flops {rep['flops_before']:.3g} -> {rep['flops_after']:.3g}, "
            f"speedup {rep['speedup']}"
        )
    return rows


def compression(log: Any) -> list[dict[str, Any]]:
    """Low-rank and weight sharing of both reference models (no retraining)."""
    test = load_data("torchslim:fashion_mnist")
    x = test.inputs[0][:2]
    rows = []
    for name in ("fashion_cnn", "fashion_resnet"):
        model = load_model(f"torchslim:{name}").require_module()
        runs = [
            (
                "lowrank energy 0.9",
                lambda m=model: lowrank(m, LowRankConfig(energy=0.9), x, eval=test, latency=False),
            ),
            (
                "lowrank rank 25%",
                lambda m=model: lowrank(
                    m, LowRankConfig(rank_ratio=0.25), x, eval=test, latency=False
                ),
            ),
            (
                "k-means 16 (4-bit)",
                lambda m=model: cluster(m, ClusterConfig(clusters=16), x, eval=test, latency=False),
            ),
            (
                "k-means 4 (2-bit)",
                lambda m=model: cluster(m, ClusterConfig(clusters=4), x, eval=test, latency=False),
            ),
        ]
        for label, run in runs:
            rep = run().report
            d = rep["details"]
            compressed = d.get("size_bytes_compressed")
            rows.append(
                {
                    "model": name,
                    "method": label,
                    **{
                        k: rep[k]
                        for k in (
                            "params_before",
                            "params_after",
                            "flops_before",
                            "flops_after",
                            "size_mb_before",
                            "size_mb_after",
                            "accuracy_before",
                            "accuracy_after",
                            "accuracy_drop",
                        )
                    },
                    "size_mb_compressed": compressed / 2**20
                    if compressed
                    else rep["size_mb_after"],
                    "layers_changed": d.get("factorized", len(d.get("layers", {}))),
                }
            )
            log(f"{name} {label}: acc {rep['accuracy_after']:.4f}")
    return rows


def write_markdown(res: dict[str, Any]) -> None:
    """Render the results into the ``prune`` section of BENCHMARKS.md."""
    L = ["## Pruning, distillation and compression", ""]
    L.append(
        f"Machine: {res['machine']}; torch {res['torch']}; {res['threads']} threads; "
        f"run took {res['total_seconds']:.0f} s. Latency is the p50 of interleaved runs "
        "(pruned and unpruned alternate); the machine is shared, so quote the ratios."
    )
    L += ["", "### Fashion-MNIST ResNet (`torchslim:fashion_resnet`), structured pruning", ""]
    L.append(
        f"Accuracy on the packaged 2,000-image test subset. Recovery: {res['budget']:.0f} s "
        "of wall-clock training each for KD (teacher = the unpruned model, T=4, alpha=0.7) "
        "and for label-only fine-tuning (AdamW, lr 2e-3, cosine over the budget, batch "
        "128, 10,000 training images). Default settings: L2 importance, first layer "
        "(stem + first residual stage width) and classifier protected, channels rounded "
        "to multiples of 8, FLOPs target met by searching the channel ratio."
    )
    L += [
        "",
        "| FLOPs goal | FLOPs (M/img) | reduction | params | size MB | acc pruned | "
        "acc KD | acc fine-tune | KD steps | FT steps | speedup b1 | speedup b64 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    base = None
    for row in res["reference"]:
        p, kd, ft = row["pruned_no_recovery"], row["kd"], row["finetune"]
        base = p
        L.append(
            f"| -{int(100 * row['goal_flops_reduction'])}% | {p['flops_after'] / 1e6:.1f} | "
            f"{_r(p['flops_reduction'])}x | {p['params_after']:,} | {_r(p['size_mb_after'], 3)} | "
            f"{_pct(p['accuracy_after'])} | {_pct(kd['accuracy_after'])} | "
            f"{_pct(ft['accuracy_after'])} | {kd['train_steps']} | {ft['train_steps']} | "
            f"{_r(row['latency']['speedup'])}x | {_r(row['latency']['speedup_b64'])}x |"
        )
    if base is not None:
        L.append("")
        L.append(
            f"Unpruned: {base['flops_before'] / 1e6:.1f} MFLOPs/img, "
            f"{base['params_before']:,} params, {base['size_mb_before']:.3f} MB, accuracy "
            f"{_pct(base['accuracy_before'])}. Latency unpruned (ms, p50): batch 1 "
            f"{_r(res['reference'][0]['latency']['latency_ms_before'], 3)}, batch 64 "
            f"{_r(res['reference'][0]['latency']['latency_ms_before_b64'], 3)}. Speedups "
            "are the median of 3 interleaved measurements."
        )
    long_rows = [r for r in res["reference"] if "kd_long" in r]
    for r in long_rows:
        lk = r["kd_long"]
        L.append("")
        L.append(
            f"Longer recovery, -{int(100 * r['goal_flops_reduction'])}% FLOPs: KD for "
            f"{lk['train_steps']} steps ({lk['train_seconds']:.0f} s here): accuracy "
            f"{_pct(lk['accuracy_after'])} (drop {100 * lk['accuracy_drop']:.2f} pts)."
        )
    L += ["", "Which recovery wins (same wall-clock budget):", ""]
    for row in res["reference"]:
        kd, ft = row["kd"]["accuracy_after"], row["finetune"]["accuracy_after"]
        winner = "KD" if kd > ft else ("fine-tuning" if ft > kd else "tie")
        L.append(
            f"- -{int(100 * row['goal_flops_reduction'])}% FLOPs: {winner} "
            f"(KD {_pct(kd)} vs fine-tune {_pct(ft)}; drop vs unpruned: KD "
            f"{100 * row['kd']['accuracy_drop']:.2f} pts, fine-tune "
            f"{100 * row['finetune']['accuracy_drop']:.2f} pts)"
        )
    L += [
        "",
        "Target check (≥ 2x fewer FLOPs with ≤ 1 point accuracy loss after recovery, "
        "latency gain within 30% of the FLOPs reduction):",
        "",
    ]
    for row in res["reference"]:
        red = row["pruned_no_recovery"]["flops_reduction"] or 0
        best = max(row[k]["accuracy_after"] for k in ("kd", "finetune", "kd_long") if k in row)
        drop = row["kd"]["accuracy_before"] - best
        sp1, sp64 = row["latency"]["speedup"] or 0, row["latency"]["speedup_b64"] or 0
        ok_acc = red >= 2 and drop <= 0.01
        L.append(
            f"- -{int(100 * row['goal_flops_reduction'])}%: {red:.2f}x FLOPs, best drop "
            f"{100 * drop:.2f} pts → {'met' if ok_acc else 'not met' if red >= 2 else 'n/a (< 2x)'}"
            f"; speedup {sp1:.2f}x (b1) / {sp64:.2f}x (b64) = {sp1 / red:.0%} / "
            f"{sp64 / red:.0%} of the FLOPs cut "
            f"({'within' if max(sp1, sp64) >= 0.7 * red else 'outside'} 30%)"
        )
    L += [
        "",
        "### torchvision models, 50% channel pruning (random weights: speed only)",
        "",
        "| model | FLOPs before (G) | FLOPs after (G) | params before | params after | "
        "latency b1 before (ms) | after (ms) | speedup |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in res["torchvision"]:
        L.append(
            f"| {row['model']} | {row['flops_before'] / 1e9:.2f} | "
            f"{row['flops_after'] / 1e9:.2f} | {row['params_before']:,} | "
            f"{row['params_after']:,} | {_r(row['latency_ms_before'])} | "
            f"{_r(row['latency_ms_after'])} | {_r(row['speedup'])}x |"
        )
    L += [
        "",
        "### Low-rank factorisation and k-means weight sharing (no retraining)",
        "",
        "| model | method | layers | params after | FLOPs after (M) | size MB before | "
        "size MB after (stored) | accuracy before | after | drop (pts) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in res["compression"]:
        L.append(
            f"| {row['model']} | {row['method']} | {row['layers_changed']} | "
            f"{row['params_after']:,} | {row['flops_after'] / 1e6:.1f} | "
            f"{row['size_mb_before']:.3f} | {row['size_mb_compressed']:.3f} | "
            f"{_pct(row['accuracy_before'])} | {_pct(row['accuracy_after'])} | "
            f"{100 * row['accuracy_drop']:.2f} |"
        )
    L += [
        "",
        "k-means sizes are codebook + bit-packed indices (the in-memory model stays dense "
        "float32, so it is not faster). Low-rank sizes are the factorised dense weights.",
        "",
    ]
    replace_section("prune", "\n".join(L))


def main() -> None:
    """Run the benchmark and write the report."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--budget", type=float, default=45.0, help="Recovery seconds per run.")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--goals", default="0.3,0.5,0.7")
    ap.add_argument(
        "--long-epochs",
        type=float,
        default=0.0,
        help="Also run KD for this many epochs on the 50%% model (0: skip).",
    )
    ap.add_argument("--skip-compression", action="store_true")
    ap.add_argument("--skip-torchvision", action="store_true")
    ap.add_argument(
        "--redo-torchvision",
        action="store_true",
        help="Re-measure only the torchvision rows of an existing JSON result.",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.redo_torchvision:
        res = json.loads((RESULTS / "prune.json").read_text(encoding="utf-8"))
        res["torchvision"] = torchvision_speed(print)
        save_json("prune", res)
        write_markdown(res)
        return
    torch.manual_seed(0)
    start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - start:6.0f}s] {msg}", flush=True)

    res: dict[str, Any] = {
        "budget": args.budget,
        "threads": args.threads,
        "torch": torch.__version__,
    }
    try:
        from torchslim.machine import machine_info

        res["machine"] = machine_info(include_gpu=False).summary()
    except Exception:
        res["machine"] = platform.processor() or platform.machine()
    res["compression"] = [] if args.skip_compression else compression(log)
    res["torchvision"] = [] if args.skip_torchvision else torchvision_speed(log)
    res["reference"] = reference_pruning(
        args.budget, [float(g) for g in args.goals.split(",")], log, args.long_epochs
    )
    res["total_seconds"] = time.perf_counter() - start
    save_json("prune", res)
    write_markdown(res)
    log("wrote the prune section of BENCHMARKS.md and benchmarks/results/prune.json")


if __name__ == "__main__":
    main()
