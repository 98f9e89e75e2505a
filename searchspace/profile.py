"""Parameter and FLOP counts of a built net.

FLOPs follow the literature's convention, one multiply-add counted as one FLOP, which is what
fvcore's counters report for convolutions and linear layers.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from searchspace.spec import ArchSpec

__all__ = [
    "MemoryEstimate",
    "count_flops",
    "count_parameters",
    "estimate_training_memory",
    "module_flops",
]


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


@dataclass(frozen=True)
class MemoryEstimate:
    """What one training step of a net holds in memory, in bytes (an estimate, see
    :func:`estimate_training_memory`)."""

    parameters: int
    gradients: int
    optimizer_state: int
    activations: int

    @property
    def total(self) -> int:
        return self.parameters + self.gradients + self.optimizer_state + self.activations


def estimate_training_memory(
    spec: ArchSpec,
    batch_size: int,
    image_size: int,
    *,
    activation_bytes: int = 4,
    optimizer_states: int = 2,
) -> MemoryEstimate:
    """Estimate the memory of one training step of ``spec``, without allocating it.

    The net is built on PyTorch's meta device (shapes, no storage) and run forward once on a
    meta batch; every leaf module's output is counted as kept for the backward pass, which is
    what autograd saves for convolutions, BatchNorm and activations (an upper bound, since some
    outputs are freed or shared). Parameters are fp32, with a gradient and ``optimizer_states``
    buffers each (RMSProp with momentum and AdamW keep two).

    Args:
        spec: the net.
        batch_size, image_size: the step's batch and square image size.
        activation_bytes: bytes per activation value (4 for fp32, 2 under bf16 autocast).
        optimizer_states: optimizer buffers per parameter.
    """
    from searchspace.builder import build_model

    with torch.device("meta"):
        model = build_model(spec)
    model.train()
    count = 0

    def keep(module: nn.Module, inputs: Any, output: Any) -> None:
        nonlocal count
        if isinstance(output, torch.Tensor):
            count += output.numel()

    hooks = [
        module.register_forward_hook(keep)
        for module in model.modules()
        if not list(module.children())
    ]
    try:
        model(torch.empty(batch_size, 3, image_size, image_size, device="meta"))
    finally:
        for hook in hooks:
            hook.remove()
    weights = 4 * count_parameters(model)
    return MemoryEstimate(
        parameters=weights,
        gradients=weights,
        optimizer_state=optimizer_states * weights,
        activations=activation_bytes * count,
    )
