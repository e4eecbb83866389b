"""The registered handler of :class:`~torchslim.passes.quantize.QuantizeConfig`.

It chooses between one quantization (:func:`~torchslim.passes.quantize.quantize_once`) and the
accuracy-aware search (:func:`~torchslim.passes.quant_accuracy.quantize_within_budget`). It sits
above both, so neither imports the other's caller.

What the pass returns is a model representation, never a runtime: a PyTorch module (torch
backend; a PT2E INT8 graph for static/QAT), an :class:`~torchslim.lowering.OnnxModel`
(onnxruntime backend) or an :class:`~torchslim.lowering.OpenVINOModel` (openvino backend). The
recipe's runtime builds from it (``torchslim.runtimes.build``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from torchslim.passes.base import PassContext, PassResult
    from torchslim.passes.quantize import QuantizeConfig

__all__ = ["apply_quantize"]


def apply_quantize(
    module: nn.Module, config: QuantizeConfig, ctx: PassContext, evaluator: Any = None
) -> PassResult:
    """Pass handler for :class:`QuantizeConfig` (registered in ``passes.catalog``).

    With ``config.max_drop`` set and ``ctx.eval`` given (or an ``evaluator``), runs the
    accuracy-aware search: one calibration, a sensitivity ranking from one float and one
    quantized run, and a bisection on how many of the most sensitive layers to keep in float,
    within ``config.time_budget_s``; each attempt is evaluated with the representation's
    reference runner (torch INT8 graphs run uncompiled there). Nothing is printed per attempt.

    Returns:
        ``result.module`` is the quantized model: a PyTorch module for the torch backend, an
        :class:`~torchslim.lowering.OnnxModel` for onnxruntime, an
        :class:`~torchslim.lowering.OpenVINOModel` for openvino. ``config.compile`` is not read
        here: compiling is the runtime's job (the pipeline runs torch static/QAT INT8 graphs on
        the Inductor runtime when the recipe names no runtime and ``compile`` is true).
    """
    if config.max_drop is not None and (ctx.eval is not None or evaluator is not None):
        from torchslim.passes.quant_accuracy import quantize_within_budget

        return quantize_within_budget(module, config, ctx, evaluator)
    from torchslim.passes.quantize import quantize_once

    return quantize_once(module, config, ctx)
