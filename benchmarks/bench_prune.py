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

Units: accuracies are fractions, accuracy drops are in **points** (``Candidate.drop_points``),
sizes are MB (10^6 bytes) of the weights (``torch.save`` of the state dict, as before); the
pruning rows also record ``Candidate.size_mb`` (MB of the deployment files) in the JSON.

Run: ``.venv/bin/python benchmarks/bench_prune.py [--budget 45] [--threads 2]``;
``--smoke`` runs one tiny configuration of every section end to end and writes nothing.
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

from torchslim.candidate import Candidate, drop_points
from torchslim.data import load_data
from torchslim.evaluate import Evaluator
from torchslim.measure import BenchTarget, TimingConfig, count_flops, measure_models
from torchslim.models import load_model, state_dict_bytes
from torchslim.passes.compress import ClusterConfig, LowRankConfig
from torchslim.passes.prune import PruneConfig
from torchslim.slim import cluster, lowrank, prune
from torchslim.train import DistillConfig, fit

try:  # run as a script from the repo root or from benchmarks/
    from _report import RESULTS, replace_section, save_json
except ImportError:  # pragma: no cover
    from benchmarks._report import RESULTS, replace_section, save_json

ROOT = Path(__file__).resolve().parents[1]
MB = 1_000_000  # bytes: torchslim's MB, as in Candidate.size_mb


# Interleaved latency: the timing the benchmark has always used (repeated, median of repeats).
LATENCY_TIMING = TimingConfig(min_samples=20, min_time_s=1.0, max_time_s=1.5, max_warmup_s=1.0)
# --smoke: just enough calls to exercise the code path.
SMOKE_TIMING = TimingConfig(
    warmup_window=1,
    min_warmup_calls=1,
    max_warmup_calls=2,
    max_warmup_s=0.3,
    min_samples=3,
    min_time_s=0.1,
    max_time_s=0.3,
)


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}%"


def _r(v: float | None, nd: int = 2) -> str:
    return "n/a" if v is None else f"{v:.{nd}f}"


def _weights_mb(module: Any) -> float:
    """MB (10^6 bytes) of the module's state dict as ``torch.save`` writes it."""
    return round(state_dict_bytes(module) / MB, 4)


def _interleaved(
    base: Any, model: Any, x: Any, batches: tuple[int, ...], timing: TimingConfig
) -> dict[str, Any]:
    """One interleaved run (``measure_models``) of the original and the result at each batch."""

    def make(bs: int) -> tuple[Any, ...]:
        reps = -(-bs // len(x))
        return (torch.cat([x] * reps)[:bs],)

    targets = [
        BenchTarget.from_module(base, make, name="before"),
        BenchTarget.from_module(model, make, name="after"),
    ]
    mb, ma = measure_models(targets, batches, config=timing, memory=False)
    out: dict[str, Any] = {}
    for i, bs in enumerate(batches):
        lb, la = mb.batches[bs].latency.p50_ms, ma.batches[bs].latency.p50_ms
        suffix = "" if i == 0 else f"_b{bs}"
        out[f"latency_ms_before{suffix}"] = round(lb, 4)
        out[f"latency_ms_after{suffix}"] = round(la, 4)
        out[f"speedup{suffix}"] = round(lb / la, 4) if la else None
    return out


def _median_latency(
    base: Any,
    model: Any,
    x: Any,
    repeats: int = 3,
    batches: tuple[int, ...] = (1, 64),
    timing: TimingConfig = LATENCY_TIMING,
) -> dict[str, Any]:
    """Interleaved latency at each batch size, repeated; the median of the repeats."""
    from statistics import median

    runs = [_interleaved(base, model, x, batches, timing) for _ in range(repeats)]
    out: dict[str, Any] = {k: median(r[k] for r in runs) for k in runs[0]}
    for k in [k for k in runs[0] if k.startswith("speedup")]:
        out[f"{k}_runs"] = [r[k] for r in runs]
    return out


def _fidelity(fid: Any) -> dict[str, Any] | None:
    if fid is None:
        return None
    return {"agreement": fid.agreement, "cosine": fid.cosine, "max_abs_error": fid.max_abs_error}


def _from_candidate(cand: Candidate, base: Any) -> dict[str, Any]:
    """A one-step candidate as the before/after row this benchmark records (drop in points)."""
    ev = cand.evaluation
    fb, fa = cand.baseline_flops, cand.flops
    return {
        "pass": cand.reports[0].get("pass") if cand.reports else None,
        "seconds": round(cand.build_seconds, 3),
        "params_before": cand.baseline_params,
        "params_after": cand.params,
        "flops_before": fb,
        "flops_after": fa,
        "flops_reduction": (fb / fa) if fb and fa else None,
        "size_mb_before": _weights_mb(base),
        "size_mb_after": _weights_mb(cand.model),
        "deploy_size_mb_before": cand.baseline_size_mb,
        "deploy_size_mb_after": cand.size_mb,
        "accuracy_before": cand.baseline_accuracy,
        "accuracy_after": cand.accuracy,
        "drop_points": cand.drop_points,
        "eval_data": None if ev is None else ev.data,
        "eval_samples": None if ev is None else ev.samples,
        "fidelity_only": cand.fidelity_only,
        "fidelity": _fidelity(None if ev is None else ev.fidelity),
        "details": cand.reports[0] if cand.reports else {},
    }


def _compare(ev: Evaluator, base: Any, model: Any, x: Any) -> dict[str, Any]:
    """A trained model against the original on ``ev``'s data (``ev.set_baseline`` done)."""
    assert ev.baseline is not None
    one = (x[:1],)
    fb, fa = count_flops(base, one), count_flops(model, one)
    with torch.no_grad():
        new = ev.evaluate(model.eval())
    return {
        "params_before": sum(p.numel() for p in base.parameters()),
        "params_after": sum(p.numel() for p in model.parameters()),
        "flops_before": fb,
        "flops_after": fa,
        "flops_reduction": (fb / fa) if fb and fa else None,
        "size_mb_before": _weights_mb(base),
        "size_mb_after": _weights_mb(model),
        "accuracy_before": ev.baseline.value,
        "accuracy_after": new.value,
        "drop_points": drop_points(ev.baseline.value, new.value),
        "eval_data": new.data,
        "eval_samples": new.samples,
        "fidelity_only": new.fidelity_only,
        "fidelity": _fidelity(new.fidelity),
    }


def reference_pruning(
    budget: float,
    goals: list[float],
    log: Any,
    long_epochs: float = 0.0,
    *,
    repeats: int = 3,
    timing: TimingConfig = LATENCY_TIMING,
) -> list[dict[str, Any]]:
    """Prune the reference ResNet to each FLOPs goal, then recover with KD and with fine-tuning."""
    import copy

    base = load_model("torchslim:fashion_resnet").require_module()
    train = load_data("torchslim:fashion_mnist?split=train")
    test = load_data("torchslim:fashion_mnist")
    x = test.inputs[0][:2]
    ev = Evaluator(test)
    with torch.no_grad():
        ev.set_baseline(base.eval())
    rows = []
    for goal in goals:
        t0 = time.perf_counter()
        cand = prune(base, PruneConfig(ratio=goal, target="flops"), x, eval=test, measure=False)
        pruned = cand.model
        rep = _from_candidate(cand, base)
        row: dict[str, Any] = {
            "goal_flops_reduction": goal,
            "prune_seconds": round(time.perf_counter() - t0, 1),
            "channels": cand.reports[0]["channels"],
            "pruned_no_recovery": rep,
            "latency": _median_latency(base, pruned, x, repeats=repeats, timing=timing),
        }
        log(
            f"goal {goal}: flops x{rep['flops_reduction']:.2f}, acc "
            f"{rep['accuracy_after']:.4f}, speedup b1 {row['latency']['speedup']:.2f} "
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
            res = _compare(ev, base, student, x)
            res["train_steps"] = tr.steps
            res["train_seconds"] = round(tr.seconds, 1)
            row[name] = res
            log(
                f"goal {goal}: {name} acc {res['accuracy_after']:.4f} "
                f"(before {res['accuracy_before']:.4f}), steps {tr.steps} in {tr.seconds:.0f}s"
            )
        rows.append(row)
    return rows


def torchvision_speed(
    log: Any,
    names: tuple[str, ...] = ("resnet18", "mobilenet_v2"),
    *,
    repeats: int = 3,
    timing: TimingConfig = LATENCY_TIMING,
) -> list[dict[str, Any]]:
    """Latency of torchvision models after 50% channel pruning (random weights, speed only)."""
    rows = []
    for name in names:
        model = load_model(f"torchvision:{name}").require_module()
        x = torch.rand(2, 3, 224, 224)
        cand = prune(model, PruneConfig(ratio=0.5), x, measure=False)
        rep = _from_candidate(cand, model)
        rep.update(
            _median_latency(model, cand.model, x, repeats=repeats, batches=(1,), timing=timing)
        )
        for k in ("accuracy_before", "accuracy_after", "drop_points", "details"):
            rep.pop(k, None)
        rows.append({"model": name, **rep})
        log(
            f"{name}: flops {rep['flops_before']:.3g} -> {rep['flops_after']:.3g}, "
            f"speedup {rep['speedup']}"
        )
    return rows


def compression(
    log: Any,
    names: tuple[str, ...] = ("fashion_cnn", "fashion_resnet"),
    methods: tuple[str, ...] | None = None,
) -> list[dict[str, Any]]:
    """Low-rank and weight sharing of both reference models (no retraining)."""
    test = load_data("torchslim:fashion_mnist")
    x = test.inputs[0][:2]
    rows = []
    for name in names:
        model = load_model(f"torchslim:{name}").require_module()
        runs = [
            (
                "lowrank energy 0.9",
                lambda m=model: lowrank(m, LowRankConfig(energy=0.9), x, eval=test, measure=False),
            ),
            (
                "lowrank rank 25%",
                lambda m=model: lowrank(
                    m, LowRankConfig(rank_ratio=0.25), x, eval=test, measure=False
                ),
            ),
            (
                "k-means 16 (4-bit)",
                lambda m=model: cluster(m, ClusterConfig(clusters=16), x, eval=test, measure=False),
            ),
            (
                "k-means 4 (2-bit)",
                lambda m=model: cluster(m, ClusterConfig(clusters=4), x, eval=test, measure=False),
            ),
        ]
        for label, run in runs:
            if methods is not None and label not in methods:
                continue
            rep = _from_candidate(run(), model)
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
                            "drop_points",
                        )
                    },
                    "size_mb_compressed": compressed / MB if compressed else rep["size_mb_after"],
                    "layers_changed": d.get("factorized", len(d.get("layers", {}))),
                }
            )
            log(f"{name} {label}: acc {rep['accuracy_after']:.4f}")
    return rows


def _upgrade_legacy(res: dict[str, Any]) -> None:
    """Results written before drops were points and sizes MB: convert them in place."""

    def fix(rep: dict[str, Any]) -> None:
        if "accuracy_drop" in rep and "drop_points" not in rep:
            drop = rep.pop("accuracy_drop")
            rep["drop_points"] = None if drop is None else 100 * drop
            for k in ("size_mb_before", "size_mb_after", "size_mb_compressed"):
                if rep.get(k) is not None:
                    rep[k] = rep[k] * 2**20 / MB  # MiB -> MB

    for row in res.get("reference", []):
        for key in ("pruned_no_recovery", "kd", "finetune", "kd_long"):
            if key in row:
                fix(row[key])
    for row in res.get("compression", []):
        fix(row)


def render_markdown(res: dict[str, Any]) -> str:
    """The ``prune`` section of BENCHMARKS.md for these results."""
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
            f"are the median of {res.get('latency_repeats', 3)} interleaved measurements."
        )
    long_rows = [r for r in res["reference"] if "kd_long" in r]
    for r in long_rows:
        lk = r["kd_long"]
        L.append("")
        L.append(
            f"Longer recovery, -{int(100 * r['goal_flops_reduction'])}% FLOPs: KD for "
            f"{lk['train_steps']} steps ({lk['train_seconds']:.0f} s here): accuracy "
            f"{_pct(lk['accuracy_after'])} (drop {lk['drop_points']:.2f} pts)."
        )
    L += ["", "Which recovery wins (same wall-clock budget):", ""]
    for row in res["reference"]:
        kd, ft = row["kd"]["accuracy_after"], row["finetune"]["accuracy_after"]
        winner = "KD" if kd > ft else ("fine-tuning" if ft > kd else "tie")
        L.append(
            f"- -{int(100 * row['goal_flops_reduction'])}% FLOPs: {winner} "
            f"(KD {_pct(kd)} vs fine-tune {_pct(ft)}; drop vs unpruned: KD "
            f"{row['kd']['drop_points']:.2f} pts, fine-tune "
            f"{row['finetune']['drop_points']:.2f} pts)"
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
        drop = 100 * (row["kd"]["accuracy_before"] - best)  # points
        sp1, sp64 = row["latency"]["speedup"] or 0, row["latency"]["speedup_b64"] or 0
        ok_acc = red >= 2 and drop <= 1.0
        L.append(
            f"- -{int(100 * row['goal_flops_reduction'])}%: {red:.2f}x FLOPs, best drop "
            f"{drop:.2f} pts → {'met' if ok_acc else 'not met' if red >= 2 else 'n/a (< 2x)'}"
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
            f"{_r(row['drop_points'])} |"
        )
    L += [
        "",
        "k-means sizes are codebook + bit-packed indices (the in-memory model stays dense "
        "float32, so it is not faster). Low-rank sizes are the factorised dense weights. "
        "Sizes are MB (10^6 bytes) of the weights; drops are in points.",
        "",
    ]
    return "\n".join(L)


def write_markdown(res: dict[str, Any]) -> None:
    """Render the results into the ``prune`` section of BENCHMARKS.md."""
    replace_section("prune", render_markdown(res))


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
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="One tiny configuration of every section (50%% goal, 2 s recovery, one timing "
        "run, fashion_cnn and resnet18 only); prints the section, writes nothing.",
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
        _upgrade_legacy(res)
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
        "latency_repeats": 3,
    }
    try:
        from torchslim.machine import machine_info

        res["machine"] = machine_info(include_gpu=False).summary()
    except Exception:
        res["machine"] = platform.processor() or platform.machine()
    if args.smoke:
        res["budget"], res["latency_repeats"] = 2.0, 1
        res["compression"] = compression(
            log, ("fashion_cnn",), ("lowrank energy 0.9", "k-means 16 (4-bit)")
        )
        res["torchvision"] = torchvision_speed(log, ("resnet18",), repeats=1, timing=SMOKE_TIMING)
        res["reference"] = reference_pruning(2.0, [0.5], log, repeats=1, timing=SMOKE_TIMING)
        res["total_seconds"] = time.perf_counter() - start
        print(render_markdown(res))
        log("smoke run done; nothing written")
        return
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
