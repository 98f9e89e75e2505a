"""Parameter and FLOP counts of a built net.

FLOPs follow the literature's convention, one multiply-add counted as one FLOP, which is what
fvcore's counters report for convolutions and linear layers.
"""

from __future__ import annotations

import logging
import warnings

import torch
from torch import nn

__all__ = ["count_flops", "count_parameters"]


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_flops(model: nn.Module, resolution: int, batch_size: int = 1) -> int:
    """fvcore's FLOP count of one forward pass over ``batch_size`` images of ``resolution`` px.

    The model is traced in eval mode on the device it already lives on, then restored to
    the mode it was in.
    """
    with warnings.catch_warnings():
        # fvcore uses torch.jit, which newer torch flags as deprecated; not the user's concern.
        warnings.simplefilter("ignore", FutureWarning)
        from fvcore.nn import FlopCountAnalysis

    # fvcore logs one warning per op it does not count (SiLU, sigmoid, add): expected, not news.
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        inputs = torch.zeros(batch_size, 3, resolution, resolution, device=device)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", UserWarning)
            analysis = FlopCountAnalysis(model, inputs)
            analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            return int(analysis.total())
    finally:
        model.train(was_training)
