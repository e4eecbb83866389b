"""ONNX Runtime profiling: the session's own profiler (``SessionOptions.enable_profiling``),
mapped back to ONNX nodes and, through the exporter's names, to the original ``nn.Module``.

The session is opened on the same graph and with the same settings as the ``onnxruntime``
runtime (graph optimisation level, threads, providers), plus profiling. ONNX Runtime times every
node of the graph it runs — the *optimised* graph, where ``Conv + BatchNorm + ReLU`` became one
fused ``Conv`` and layout changes became ``ReorderInput``/``ReorderOutput`` nodes. Each timed node
is mapped back:

1. to the nodes of the exported graph: the same name, else the node producing the same output
   tensor, else the name ONNX Runtime derived it from (``relu_nchwc`` from ``relu``);
2. to the module: the weight the node reads (``layer1.0.conv1.weight`` → ``layer1.0.conv1``),
   else the exporter's ``pkg.torch.onnx.name_scopes`` metadata of the nodes found in step 1.

Precision per node comes from its input types in the profile (``int8``/``uint8`` → ``int8``).
Warm-up runs are left out: only the nodes inside the last ``iterations`` ``model_run`` events
count. ``--trace`` writes the events as a Chrome trace (``{"traceEvents": [...]}``), each node
event carrying its module in ``args.module``.
"""

from __future__ import annotations

import ast
import json
import re
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torchslim.profile._common import (
    median,
    module_totals,
    shapes_text,
    trimmed_mean,
    write_text_atomic,
)
from torchslim.profile.result import (
    LayerTime,
    OperatorTime,
    RuntimeProfile,
    op_kind,
    precision_name,
)

__all__ = ["GraphNames", "profile_ort"]

_PARAM_WORDS = ("weight", "bias", "running_", "in_proj")
_SUFFIXES = re.compile(
    r"(_nchwc|_token_\d+|_fused|_output|_quantized|_dequantized|_QuantizeLinear|"
    r"_DequantizeLinear|_kernel_time)+$"
)


class GraphNames:
    """Names of an exported ONNX graph: node → module scope, tensor → producing node.

    Args:
        path: The ``.onnx`` file the session was created from.
        module_paths: The ``nn.Module`` paths of the original model, when known (to check a
            path read from a weight name).
    """

    def __init__(self, path: str | Path, module_paths: set[str] | None = None) -> None:
        import onnx

        graph = onnx.load(str(path), load_external_data=False).graph
        self.module_paths = module_paths
        self.nodes: dict[str, Any] = {}
        self.producer: dict[str, Any] = {}
        self.scope: dict[str, str] = {}
        for node in graph.node:
            self.nodes[node.name] = node
            for out in node.output:
                self.producer[out] = node
            meta = {p.key: p.value for p in node.metadata_props}
            scopes = meta.get("pkg.torch.onnx.name_scopes")
            if scopes:
                try:
                    parts = ast.literal_eval(scopes)
                except (ValueError, SyntaxError):
                    parts = []
                if isinstance(parts, list) and len(parts) >= 2:
                    self.scope[node.name] = str(parts[-2])
                elif isinstance(parts, list) and parts:
                    self.scope[node.name] = ""

    def module_of_weight(self, name: str) -> str | None:
        """``layer1.0.conv1.weight_bias`` → ``layer1.0.conv1`` (``None`` if it is no weight)."""
        if "." not in name:
            return None
        path, _, last = name.rpartition(".")
        if not last.startswith(_PARAM_WORDS):
            return None
        if self.module_paths is not None and path not in self.module_paths:
            return None
        return path

    def original_nodes(self, name: str, outputs: Sequence[str] = ()) -> list[str]:
        """The exported graph's nodes a runtime node ``name`` (with ``outputs``) stands for."""
        if name in self.nodes:
            return [name]
        found: list[str] = []
        for out in outputs:
            node = self.producer.get(out)
            if node is not None and node.name not in found:
                found.append(node.name)
        if found:
            return found
        base = _SUFFIXES.sub("", name)
        for cand in (base, f"node_{base}"):
            if cand in self.nodes:
                return [cand]
        node = self.producer.get(base)
        return [node.name] if node is not None else []

    def module_of(self, name: str, inputs: Sequence[str], outputs: Sequence[str]) -> str | None:
        """The module a runtime node maps to (see the module docstring for the order)."""
        for i in inputs:
            path = self.module_of_weight(i)
            if path is not None:
                return path
        for node in self.original_nodes(name, outputs):
            if node in self.scope:
                return self.scope[node]
        return None


def _runtime_graph(session_path: Path | None) -> dict[str, tuple[list[str], list[str]]]:
    """``node name -> (inputs, outputs)`` of the optimised graph ONNX Runtime wrote."""
    if session_path is None or not session_path.is_file():
        return {}
    import onnx

    try:
        graph = onnx.load(str(session_path), load_external_data=False).graph
    except Exception:  # hardware-specific ops may not load everywhere; names are best effort
        return {}
    return {n.name: (list(n.input), list(n.output)) for n in graph.node}


def _precision(args: dict[str, Any]) -> str | None:
    kinds: list[str] = []
    for entry in args.get("input_type_shape", []) or []:
        if isinstance(entry, dict):
            kinds += list(entry)
    found = [precision_name(k) for k in kinds]
    for p in ("int8", "fp16", "bf16", "fp32"):
        if p in found:
            return p
    return None


def profile_ort(
    onnx_path: str | Path,
    config: Any,
    inputs: Sequence[Any],
    *,
    iterations: int = 20,
    warmup: int = 3,
    trace: str | Path | None = None,
    module_paths: set[str] | None = None,
    module_types: dict[str, str] | None = None,
) -> RuntimeProfile:
    """Profile an ONNX graph in ONNX Runtime with the ``onnxruntime`` runtime's settings.

    Args:
        onnx_path: The graph (the runtime's ``model.onnx``).
        config: The :class:`~torchslim.runtimes.configs.OrtConfig` it runs with.
        inputs: Torch tensors or NumPy arrays, one per graph input.
        iterations: Profiled runs (after ``warmup`` runs that are left out).
        warmup: Runs first, not counted.
        trace: Write a Chrome-trace JSON here.
        module_paths: ``nn.Module`` paths of the original model, to check weight names.
        module_types: ``path -> class name`` for the module table.

    Returns:
        The :class:`~torchslim.profile.result.RuntimeProfile` (times per run).
    """
    import onnxruntime as ort

    from torchslim.runtimes.ort import providers_for, session_options

    with tempfile.TemporaryDirectory(prefix="torchslim-profile-ort-") as tmp:
        opt_path = Path(tmp) / "model.optimized.onnx"
        so = session_options(config, opt_path)
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tmp) / "ort_profile")
        session = ort.InferenceSession(str(onnx_path), so, providers=providers_for(config))
        names = [i.name for i in session.get_inputs()]
        feed = {
            n: (x.detach().contiguous().cpu().numpy() if hasattr(x, "detach") else x)
            for n, x in zip(names, inputs, strict=True)
        }
        walls = []
        for i in range(warmup + iterations):
            start = time.perf_counter()
            session.run(None, feed)
            if i >= warmup:
                walls.append((time.perf_counter() - start) * 1000.0)
        events = json.loads(Path(session.end_profiling()).read_text(encoding="utf-8"))
        runtime_graph = _runtime_graph(opt_path)
    graph = GraphNames(onnx_path, module_paths)
    runs = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])
    runs = runs[-iterations:]
    windows = [(float(r["ts"]), float(r["ts"]) + float(r["dur"])) for r in runs]

    def run_of(e: dict[str, Any]) -> int | None:
        ts = float(e.get("ts", 0))
        for i, (a, b) in enumerate(windows):
            if a <= ts <= b:
                return i
        return None

    per_node: dict[str, dict[str, Any]] = {}
    per_op: dict[str, dict[str, Any]] = {}
    kept: list[dict[str, Any]] = []
    for e in events:
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time"):
            if e.get("cat") != "Node":
                kept.append(e)
            continue
        run = run_of(e)
        if run is None:
            continue
        args = e.get("args", {})
        node = str(e["name"])[: -len("_kernel_time")]
        op = str(args.get("op_name", "?"))
        rec = per_node.setdefault(
            node, {"op": op, "runs": {}, "calls": 0, "args": args, "provider": args.get("provider")}
        )
        rec["runs"][run] = rec["runs"].get(run, 0.0) + float(e.get("dur", 0))
        rec["calls"] += 1
        orec = per_op.setdefault(op, {"calls": 0, "shapes": Counter()})
        orec["calls"] += 1
        s = shapes_text([list(v) for d in args.get("input_type_shape", []) for v in d.values()])
        if s:
            orec["shapes"][s] += 1
        kept.append(e)
    n = max(1, len(runs))
    layers = []
    for node, rec in per_node.items():
        ins, outs = runtime_graph.get(node, ([], []))
        module = graph.module_of(node, ins, outs)
        for e in kept:
            if e.get("cat") == "Node" and str(e.get("name", "")).startswith(node + "_kernel"):
                e.setdefault("args", {})["module"] = module
        shapes = rec["args"].get("input_type_shape", [])
        ms = trimmed_mean([rec["runs"].get(i, 0.0) for i in range(n)]) / 1000.0
        layers.append(
            LayerTime(
                name=node,
                type=rec["op"],
                self_ms=ms,
                total_ms=ms,
                calls=max(1, round(rec["calls"] / n)),
                module=module,
                kind=op_kind(rec["op"]),
                precision=_precision(rec["args"]),
                exec_type=str(rec["provider"]) if rec["provider"] else None,
                nodes=tuple(graph.original_nodes(node, outs)),
                shapes=shapes_text([list(v) for d in shapes for v in d.values()]),
            )
        )
    # Per operator type: the sum of its nodes' per-node times, so the operator table and the
    # layer table add up to the same total.
    operators = []
    for op, r in per_op.items():
        ms = sum(x.self_ms for x in layers if x.type == op)
        operators.append(
            OperatorTime(
                name=op,
                self_ms=ms,
                total_ms=ms,
                calls=max(1, round(r["calls"] / n)),
                shapes=r["shapes"].most_common(1)[0][0] if r["shapes"] else None,
            )
        )
    written = None
    if trace is not None:
        path = Path(trace)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(
            path,
            json.dumps(
                {
                    "traceEvents": kept,
                    "displayTimeUnit": "ms",
                    "otherData": {"source": "onnxruntime", "version": ort.__version__},
                }
            ),
        )
        written = str(path)
    return RuntimeProfile(
        layers=layers,
        operators=operators,
        profiled_ms=median([float(r["dur"]) / 1000.0 for r in runs]) if runs else median(walls),
        iterations=len(runs),
        modules=module_totals(layers, module_types),
        trace=written,
    )
