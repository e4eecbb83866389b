"""``torchslim predict`` throughput vs a naive loop and vs the model's own batched throughput.

Data: the Fashion-MNIST test set (in memory; the packaged 2,000 images, or all 10,000 with
``--full`` when the Debian package is installed), and the same images written to a folder as JPEG files, so
decoding is part of the work. Models: eager ``torchslim:fashion_resnet`` and its OpenVINO export
(``torchslim export --runtime openvino``, the fastest artifact of that model here).

Per (model, data), interleaved over ``--rounds`` rounds (A B C D A B C D …):

* naive: a Python loop, batch 1, no workers (decode the file or index the tensor, call the model,
  softmax + top-5, collect rows; the same JSONL file written at the end), on the first
  ``--naive-items`` samples (its per-item rate is flat; running it on all would take minutes);
  the model is loaded before the loop starts;
* ``predict`` with defaults; ``predict --batch-size auto``;
* ``torchslim bench MODEL --batch B --json`` at the batch size ``predict`` used by default, in
  the same round: the model's own batched throughput on synthetic inputs (no data, no output),
  the ceiling.

    .venv/bin/python benchmarks/bench_predict.py                 # writes the predict section
    .venv/bin/python benchmarks/bench_predict.py --rounds 1 --no-write

Results: ``benchmarks/results/predict.json`` and the ``predict`` section of ``BENCHMARKS.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import ROOT, replace_section, save_json

import torchslim
from torchslim.machine import machine_info
from torchslim.predict._sources import FileSource, image_prep

MODEL = "torchslim:fashion_resnet"


def _cli(*args: str) -> str:
    cmd = [sys.executable, "-m", "torchslim.cli.main", *args]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(args[:3])} failed:\n{res.stdout}\n{res.stderr}")
    return res.stdout


def _write_jpegs(root: Path, images: np.ndarray) -> None:
    from PIL import Image

    for i, img in enumerate(images):
        Image.fromarray(img, mode="L").save(root / f"{i:05d}.jpg", quality=95)


def _naive(model_src: str, data: str, n: int, out: Path) -> dict[str, Any]:
    """Batch 1, no workers, one sample at a time."""
    loaded = torchslim.load_model(model_src)
    run = loaded.deployed if loaded.deployed is not None else loaded.module
    names = np.asarray(torchslim.load_model(MODEL).metadata["class_names"])
    path = Path(data)
    if path.is_dir():
        files = FileSource(path, image_prep(loaded.input_spec, None))
        get = lambda i: files.get([i]).inputs[0]  # noqa: E731 - decode one file
    else:
        x = torchslim.load_data(data).inputs[0]
        get = lambda i: x[i : i + 1]  # noqa: E731
    rows = []
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(n):
            out_t = run(get(i))
            out_t = out_t[0] if isinstance(out_t, (tuple, list)) else out_t
            scores, ids = torch.topk(torch.softmax(out_t, 1), 5, 1)
            rows.append(
                {
                    "index": i,
                    "id": str(i),
                    "labels": names[ids[0].numpy()].tolist(),
                    "label_ids": ids[0].tolist(),
                    "scores": scores[0].tolist(),
                }
            )
        with open(out, "w") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in rows)
    return {"items": n, "items_per_s": n / (time.perf_counter() - t0)}


def _predict(model_src: str, data: str, out: Path, **kw: Any) -> dict[str, Any]:
    threads = torch.get_num_threads()
    t0 = time.perf_counter()
    s = torchslim.predict(model_src, data, out=out, force=True, **kw)
    wall = time.perf_counter() - t0
    torch.set_num_threads(threads)
    return {
        "items": s.items + len(s.skipped),
        "items_per_s": s.items_per_s,
        "items_per_s_wall": (s.items + len(s.skipped)) / wall,
        "run_s": s.run_s,
        "write_s": s.write_s,
        "batch_size": s.batch_size,
        "workers": s.loader["workers"],
        "threads": s.loader["threads"],
        "decode_ms_per_item": s.loader["decode_ms_per_item"],
        "probe": s.batch_probe,
    }


def _bench(model_src: str, batch: int) -> float:
    report = json.loads(
        _cli(
            "bench",
            model_src,
            "--batch",
            str(batch),
            "--json",
            "--no-peak",
            "--min-time",
            "2",
            "--max-time",
            "4",
        )
    )
    entry = next(iter(report["models"].values()))
    return float(entry["batches"][str(batch)]["throughput_per_s"])


def _median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--naive-items", type=int, default=500)
    ap.add_argument("--full", action="store_true", help="All 10,000 test images (Debian package).")
    ap.add_argument("--no-write", action="store_true", help="Do not touch BENCHMARKS.md.")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-predict-"))
    data = "torchslim:fashion_mnist?full=1" if args.full else "torchslim:fashion_mnist"
    ds = torchslim.load_data(data)
    jpegs = work / "jpegs"
    jpegs.mkdir()
    _write_jpegs(jpegs, (ds.inputs[0][:, 0].numpy() * 255).round().astype(np.uint8))
    n = len(ds)
    artifact = work / "resnet-ov"
    t0 = time.perf_counter()
    _cli("export", MODEL, "--runtime", "openvino", "--out", str(artifact), "--json")
    export_s = time.perf_counter() - t0
    models = {"eager": MODEL, "openvino artifact": str(artifact)}
    datasets = {
        f"Fashion-MNIST test ({n:,}, in memory)": data,
        f"JPEG folder ({n:,} files)": str(jpegs),
    }
    load_before = os.getloadavg()
    results: dict[str, dict[str, dict[str, list[dict[str, Any]]]]] = {}
    ceilings: dict[str, dict[int, list[float]]] = {}
    for r in range(args.rounds):
        for mname, msrc in models.items():
            sizes = set()
            for dname, dsrc in datasets.items():
                cell = results.setdefault(mname, {}).setdefault(dname, {})
                out = work / "p.jsonl"
                print(f"round {r + 1}: {mname} · {dname}", flush=True)
                cell.setdefault("naive", []).append(_naive(msrc, dsrc, args.naive_items, out))
                cell.setdefault("defaults", []).append(_predict(msrc, dsrc, out))
                cell.setdefault("auto", []).append(_predict(msrc, dsrc, out, batch_size="auto"))
                sizes.add(cell["defaults"][-1]["batch_size"])
            # the model's own batched throughput, in the same round (interleaved with predict)
            for b in sorted(sizes):
                ceilings.setdefault(mname, {}).setdefault(b, []).append(_bench(msrc, b))
        save_json(
            "predict_partial",
            {"rounds_done": r + 1, "results": results, "bench_ceilings": ceilings},
        )
    # The worker/thread split on the JPEG folder, eager (measured, not predicted).
    split: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for w, t in ((0, 2), (1, 1), (1, 2), (2, 1)):
            res = _predict(MODEL, str(jpegs), work / "s.jsonl", workers=w, threads=t)
            split.setdefault(f"{w} workers + {t} threads", []).append(res["items_per_s"])
        res = _predict(MODEL, str(jpegs), work / "s.jsonl")
        split.setdefault(f"auto ({res['workers']} workers + {res['threads']} threads)", []).append(
            res["items_per_s"]
        )
    load_after = os.getloadavg()
    info = machine_info(include_gpu=False)
    raw = {
        "machine": info.to_dict(),
        "load_avg": [load_before, load_after],
        "rounds": args.rounds,
        "naive_items": args.naive_items,
        "export_s": export_s,
        "results": results,
        "split": split,
        "bench_ceilings": ceilings,
        "data": data,
    }
    save_json("predict", raw)
    (ROOT / "benchmarks" / "results" / "predict_partial.json").unlink(missing_ok=True)
    md = _markdown(raw, info.summary())
    print(md)
    if not args.no_write:
        replace_section("predict", md)


def _markdown(raw: dict[str, Any], machine: str) -> str:
    lines = [
        "## predict",
        "",
        f"`benchmarks/bench_predict.py` on {machine}; 1-minute load average "
        f"{raw['load_avg'][0][0]:.1f} at the start and {raw['load_avg'][1][0]:.1f} at the end "
        "(about 2 is this script's own work on 2 cores; more means other jobs ran, and then the "
        f"ratios hold up better than the rates). {raw['rounds']} interleaved rounds; each cell "
        "is the median items/s (min–max in "
        "brackets). Model `torchslim:fashion_resnet` (696k params), eager and its OpenVINO FP32 "
        "export (`torchslim export --runtime openvino`). Naive: Python loop, batch 1, no workers, "
        f"on the first {raw['naive_items']} samples. predict: the whole data set, rows written to "
        "JSONL, time from the first batch to the renamed file (checkpoints and the merge "
        "included; model loading and the auto probe excluded). Ceiling: `torchslim bench MODEL "
        "--batch B` (synthetic inputs, no data, no output) at the batch size predict used.",
        "",
        "| model | data | naive b=1 | predict defaults | × naive | predict auto | × naive | "
        "ceiling at B (bench) | defaults / ceiling |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def cell(recs: list[dict[str, Any]]) -> tuple[float, str]:
        v = [r["items_per_s"] for r in recs]
        return _median(v), f"{_median(v):,.0f} [{min(v):,.0f}–{max(v):,.0f}]"

    notes = []
    for mname, per_data in raw["results"].items():
        for dname, c in per_data.items():
            naive, naive_s = cell(c["naive"])
            dflt, dflt_s = cell(c["defaults"])
            auto, auto_s = cell(c["auto"])
            b = c["defaults"][0]["batch_size"]
            ab = sorted({r["batch_size"] for r in c["auto"]})
            ceiling = _median(raw["bench_ceilings"][mname][b])
            lines.append(
                f"| {mname} | {dname} | {naive_s} | {dflt_s} (B={b}) | {dflt / naive:.1f}× | "
                f"{auto_s} (B={'/'.join(map(str, ab))}) | {auto / naive:.1f}× | "
                f"{ceiling:,.0f} | {dflt / ceiling:.0%} |"
            )
            rec = c["defaults"][0]
            per_item_ms = 1e3 / dflt
            model_ms = 1e3 / ceiling
            notes.append(
                f"- {mname} · {dname}: {per_item_ms:.3f} ms per item in predict vs "
                f"{model_ms:.3f} ms in the model alone; producing a sample costs "
                f"{rec['decode_ms_per_item']:.3f} ms (measured, one process; "
                f"{rec['workers']} worker(s) + {rec['threads']} thread(s) chosen), writing the "
                f"file {rec['write_s']:.2f} s of {rec['run_s']:.2f} s."
            )
    lines += ["", "Where the time goes (defaults, first round):", "", *notes, ""]
    lines += ["Worker/thread split on the JPEG folder (eager, items/s, median [min–max]):", ""]
    lines += ["| split | items/s |", "|---|---:|"]
    for name, v in raw["split"].items():
        lines.append(f"| {name} | {_median(v):,.0f} [{min(v):,.0f}–{max(v):,.0f}] |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
