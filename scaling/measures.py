"""What a budget is counted in: parameters and FLOPs of a spec (step time comes from ``nas``).

Each function takes an :class:`~searchspace.spec.ArchSpec` and returns a number, the shape
:func:`~scaling.budget.scale_to_budget` expects of a measure.
"""

from __future__ import annotations

import dataclasses
import functools

import torch
from torch import nn

from searchspace.blocks import conv_bn_act
from searchspace.builder import BlockLayout, block_layout, build_model, make_block
from searchspace.profile import count_parameters, module_flops
from searchspace.spec import ArchSpec

__all__ = ["spec_flops", "spec_parameters"]


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

    Defaults to the eval size, where the literature quotes FLOPs (V2-S: 8.4B at 384 px). Equal
    to :func:`searchspace.profile.count_flops` of the built net (the tests check it), but
    counted layer by layer with fvcore and cached per distinct layer and input size: the blocks
    of a stage after its first are identical, and a budget search meets the same layers again
    and again, so this is ~100x faster than tracing each whole net, and never allocates an L.
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
