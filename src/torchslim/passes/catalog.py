"""The built-in passes, registered once. Importing this module imports no backend.

Each technique family lives in its own module (``graph``, ``quantize``, ``prune``,
``compress``) and is registered here by config type, so ``list_passes()`` can answer what
exists cheaply. Config modules import torch but never ONNX Runtime, OpenVINO or NNCF.
"""

from __future__ import annotations

from torchslim.passes.base import register_pass
from torchslim.passes.compress import ClusterConfig, DepthwiseConfig, LowRankConfig
from torchslim.passes.graph import (
    ChannelsLastConfig,
    EvalModeConfig,
    FuseConfig,
    RemoveDropoutConfig,
)
from torchslim.passes.prune import PruneConfig
from torchslim.passes.quantize import QuantizeConfig
from torchslim.train import DistillConfig

# Graph work: lossless, parity-checked.
register_pass(
    "graph.fuse",
    FuseConfig,
    "torchslim.passes.graph:apply_fuse",
    needs=("example_inputs",),
    tags=("graph", "lossless"),
    description="Fold BatchNorm into the preceding Conv/Linear (Conv-BN(-ReLU), Linear-BN)",
)
register_pass(
    "graph.remove_dropout",
    RemoveDropoutConfig,
    "torchslim.passes.graph:apply_remove_dropout",
    tags=("graph", "lossless"),
    description="Remove dropout layers and no-op Identity layers",
)
register_pass(
    "graph.eval_mode",
    EvalModeConfig,
    "torchslim.passes.graph:apply_eval_mode",
    tags=("graph", "lossless"),
    description="Put every module in eval mode (Dropout off, BatchNorm uses running stats)",
)
register_pass(
    "graph.channels_last",
    ChannelsLastConfig,
    "torchslim.passes.graph:apply_channels_last",
    tags=("graph", "lossless", "layout"),
    description="Store 4-D conv weights in channels_last memory format (faster oneDNN kernels)",
)

# Quantization: one config, dispatched to the method/backend implementations listed in
# torchslim.passes.quantize.QUANT_METHODS (same registry mechanism).
register_pass(
    "quantize",
    QuantizeConfig,
    "torchslim.passes.quant_pass:apply_quantize",
    tags=("int8", "int4", "fp16", "bf16", "torch", "onnxruntime", "openvino"),
    description="INT8 dynamic/static/QAT, weight-only INT8/INT4, FP16/BF16; accuracy-aware "
    "layer fallback with max_drop",
)

# Pruning and recovery.
register_pass(
    "prune",
    PruneConfig,
    "torchslim.passes.prune:apply_prune",
    needs=("example_inputs",),
    requires=("torch_pruning",),
    tags=("structured", "unstructured", "nm"),
    description="Structured channel pruning (Torch-Pruning), unstructured/global magnitude, N:M.",
)
register_pass(
    "distill",
    DistillConfig,
    "torchslim.train:apply_distill",
    needs=("training_data",),
    tags=("kd", "finetune", "self"),
    description="Knowledge distillation / fine-tuning (logit + feature KD, EMA self-distillation).",
)

# Compression.
register_pass(
    "compress.lowrank",
    LowRankConfig,
    "torchslim.passes.compress:apply_lowrank",
    needs=("example_inputs",),
    tags=("lowrank", "svd"),
    description="Low-rank SVD factorisation of Linear/Conv layers where it reduces FLOPs.",
)
register_pass(
    "compress.cluster",
    ClusterConfig,
    "torchslim.passes.compress:apply_cluster",
    needs=("example_inputs",),
    tags=("weight_sharing", "kmeans"),
    description="Per-layer k-means weight sharing (codebook + indices), compressed size reported.",
)
register_pass(
    "compress.depthwise",
    DepthwiseConfig,
    "torchslim.passes.compress:apply_depthwise",
    needs=("example_inputs",),
    tags=("depthwise", "separable"),
    description="Swap KxK convolutions for depthwise + pointwise blocks, recovered by KD.",
)
