"""Parameter and FLOP counts: the one place that counts them, of a spec or of a built net.

:func:`spec_parameters` and :func:`spec_flops` count the net a spec describes without allocating
it (what constraints, budgets and tables ask); :func:`count_parameters` and :func:`count_flops`
count a net already built (what an evaluation has in hand). The two agree exactly, and the FLOPs
are fvcore's (the tests check both). FLOPs follow the literature's convention, one multiply-add
counted as one FLOP, which is what fvcore's counters report for convolutions and linear layers.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from searchspace.blocks import conv_bn_act
from searchspace.builder import BlockLayout, block_layout, build_model, make_block
from searchspace.spec import ArchSpec

__all__ = [
    "MemoryEstimate",
    "count_flops",
    "count_parameters",
    "estimate_training_memory",
    "module_flops",
    "spec_flops",
    "spec_parameters",
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


def spec_parameters(spec: ArchSpec) -> int:
    """Trainable parameters of the net ``spec`` describes.

    Built on PyTorch's meta device: shapes without storage, so an L-sized net counts in a
    fraction of a second instead of allocating and initializing 100M+ weights.
    """
    with torch.device("meta"):
        model = build_model(spec)
    return count_parameters(model)


@functools.lru_cache(maxsize=8192)
def _block_flops(layout: BlockLayout, size: int) -> int:
    return module_flops(make_block(layout), (1, layout.in_channels, size, size))


@functools.lru_cache(maxsize=1024)
def _stem_flops(out_channels: int, size: int) -> int:
    return module_flops(conv_bn_act(3, out_channels, 3, 2), (1, 3, size, size))


@functools.lru_cache(maxsize=1024)
def _tail_flops(in_channels: int, head_channels: int, num_classes: int, size: int) -> int:
    # Head conv -> pool -> linear, as EfficientNetV2.forward runs them (dropout counts nothing).
    tail = nn.Sequential(
        conv_bn_act(in_channels, head_channels, 1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(1),
        nn.Linear(head_channels, num_classes),
    )
    return module_flops(tail, (1, in_channels, size, size))


def _conv_out(size: int, kernel: int, stride: int) -> int:
    # Conv2dNormActivation pads (k - 1) // 2 on each side.
    padding = (kernel - 1) // 2
    return (size + 2 * padding - kernel) // stride + 1


def spec_flops(spec: ArchSpec, resolution: int | None = None) -> int:
    """fvcore FLOPs (one multiply-add = one FLOP) of one image at ``resolution``.

    Defaults to the eval size, where the literature quotes FLOPs (V2-S: 8.4B at 384 px). Equal to
    :func:`count_flops` of the built net (the tests check it), but counted layer by layer with
    fvcore and cached per distinct layer and input size: the blocks of a stage after its first
    are identical, and a budget search meets the same layers again and again, so this is ~100x
    faster than tracing each whole net, and never allocates an L.
    """
    size = spec.eval_resolution if resolution is None else resolution
    total = _stem_flops(spec.stem_channels, size)
    size = _conv_out(size, 3, 2)
    for layout in block_layout(spec):
        # Only the shape decides the count: key the cache on it, not on the block's position.
        shape = dataclasses.replace(layout, stage=0, index=0, drop_path_rate=0.0)
        total += _block_flops(shape, size)
        size = _conv_out(size, layout.kernel, layout.stride)
    last = spec.stages[-1].out_channels
    return total + _tail_flops(last, spec.head_channels, spec.num_classes, size)


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
