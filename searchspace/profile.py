"""Parameter and FLOP counts of a built net.

FLOPs follow the literature's convention, one multiply-add counted as one FLOP, which is what
fvcore's counters report for convolutions and linear layers.
"""

from __future__ import annotations

import logging
import warnings

import torch
from torch import nn

__all__ = ["count_flops", "count_parameters", "module_flops"]


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def module_flops(module: nn.Module, input_shape: tuple[int, ...]) -> int:
    """fvcore's FLOP count of one forward pass of ``module`` on a zero input of ``input_shape``.

    The module is traced in eval mode on the device it already lives on (the CPU for a module
    without parameters), then restored to the mode it was in.
    """
    with warnings.catch_warnings():
        # fvcore uses torch.jit, which newer torch flags as deprecated; not the user's concern.
        warnings.simplefilter("ignore", FutureWarning)
        from fvcore.nn import FlopCountAnalysis

    # fvcore logs one warning per op it does not count (SiLU, sigmoid, add): expected, not news.
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    parameter = next(module.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    was_training = module.training
    module.eval()
    try:
        inputs = torch.zeros(input_shape, device=device)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", UserWarning)
            analysis = FlopCountAnalysis(module, inputs)
            analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            return int(analysis.total())
    finally:
        module.train(was_training)


def count_flops(model: nn.Module, resolution: int, batch_size: int = 1) -> int:
    """fvcore's FLOP count of one forward pass over ``batch_size`` images of ``resolution`` px."""
    return module_flops(model, (batch_size, 3, resolution, resolution))
