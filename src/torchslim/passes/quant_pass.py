"""The registered handler of :class:`~torchslim.passes.quantize.QuantizeConfig`.

It chooses between one quantization (:func:`~torchslim.passes.quantize.quantize_once`) and the
accuracy-aware search (:func:`~torchslim.passes.quant_accuracy.quantize_within_budget`), and
compiles torch INT8 graphs when asked. It sits above both, so neither imports the other's caller.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torchslim.passes.quantize import QuantBackend, QuantizeConfig, QuantMethod, example_inputs

if TYPE_CHECKING:
    from torch import nn

    from torchslim.passes.base import PassContext, PassResult

__all__ = ["apply_quantize", "finalize"]


def finalize(result: PassResult, config: QuantizeConfig, ctx: PassContext) -> PassResult:
    """Compile torch static/QAT INT8 graphs with Inductor (the fast path) when asked to."""
    import time

    torch_int8 = config.backend is QuantBackend.TORCH and config.method in (
        QuantMethod.STATIC,
        QuantMethod.QAT,
    )
    if torch_int8 and config.compile and result.deployed is None:
        from torchslim.passes.quant_torch import compile_int8

        start = time.perf_counter()
        result.deployed = compile_int8(
            result.module, example_inputs(ctx, ctx.calib or ctx.train, batch=1)
        )
        result.report["compiled"] = "inductor (freezing)"
        result.report["compile_seconds"] = round(time.perf_counter() - start, 3)
    return result


def apply_quantize(
    module: nn.Module, config: QuantizeConfig, ctx: PassContext, evaluator: Any = None
) -> PassResult:
    """Pass handler for :class:`QuantizeConfig` (registered in ``passes.catalog``).

    With ``config.max_drop`` set and ``ctx.eval`` given, runs the accuracy-aware search (the
    search evaluates torch INT8 graphs uncompiled; only the chosen one is compiled).

    For the onnxruntime and openvino backends the quantized model is ``result.deployed`` (a
    runtime object that runs and saves it); ``result.module`` is then the unchanged float module.
    """
    if config.max_drop is not None and (ctx.eval is not None or evaluator is not None):
        from torchslim.passes.quant_accuracy import quantize_within_budget

        result = quantize_within_budget(module, config, ctx, evaluator)
    else:
        from torchslim.passes.quantize import quantize_once

        result = quantize_once(module, config, ctx)
    return finalize(result, config, ctx)
