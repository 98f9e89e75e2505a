"""The one place that turns an :class:`ArchSpec` into an ``nn.Module`` and threads channels.

:func:`block_layout` decodes a spec into its blocks, each with its input and output width, stride
and stochastic-depth rate; :func:`make_block` builds one of them, and :class:`EfficientNetV2`
builds them all. Anything else that needs per-block facts (the FLOP counter of ``scaling``,
``nas show``) reads the same layout instead of re-deriving it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from searchspace.blocks import FusedMBConv, MBConv, conv_bn_act
from searchspace.spec import ArchSpec

__all__ = ["BlockLayout", "EfficientNetV2", "block_layout", "build_model", "make_block"]

_BLOCKS = {"mbconv": MBConv, "fused": FusedMBConv}


@dataclass(frozen=True)
class BlockLayout:
    """One block of a net, every width threaded from the spec.

    Attributes:
        stage: the stage it belongs to (0-based).
        index: its position among all the net's blocks (0-based).
        block: ``mbconv`` or ``fused``.
        in_channels: its input width (the previous block's output, or the stem's).
        out_channels: its output width (the stage's).
        kernel: kernel size of its depthwise or fused conv.
        stride: 2 only on the first block of a stride-2 stage, else 1.
        expand_ratio: width of its hidden layer over its input.
        se_ratio: squeeze-excitation ratio (0: none).
        drop_path_rate: its stochastic-depth rate.
    """

    stage: int
    index: int
    block: str
    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    expand_ratio: float
    se_ratio: float
    drop_path_rate: float


def block_layout(spec: ArchSpec) -> list[BlockLayout]:
    """Every block of the net ``spec`` describes, in order."""
    layout = []
    in_channels = spec.stem_channels
    total_blocks = spec.total_blocks
    for stage_index, stage in enumerate(spec.stages):
        for repeat in range(stage.repeats):
            index = len(layout)
            layout.append(
                BlockLayout(
                    stage=stage_index,
                    index=index,
                    block=stage.block,
                    in_channels=in_channels,
                    out_channels=stage.out_channels,
                    kernel=stage.kernel,
                    # The stride belongs to the stage's first block only.
                    stride=stage.stride if repeat == 0 else 1,
                    expand_ratio=stage.expand_ratio,
                    se_ratio=stage.se_ratio,
                    # Stochastic depth grows linearly with the global block index (paper, sec. 2).
                    drop_path_rate=spec.drop_path_rate * index / total_blocks,
                )
            )
            in_channels = stage.out_channels
    return layout


def make_block(
    layout: BlockLayout, *, bn_eps: float = 1e-3, bn_momentum: float = 0.1
) -> MBConv | FusedMBConv:
    """The module for one block of :func:`block_layout`."""
    return _BLOCKS[layout.block](
        layout.in_channels,
        layout.out_channels,
        kernel=layout.kernel,
        stride=layout.stride,
        expand_ratio=layout.expand_ratio,
        se_ratio=layout.se_ratio,
        drop_path_rate=layout.drop_path_rate,
        bn_eps=bn_eps,
        bn_momentum=bn_momentum,
    )


class EfficientNetV2(nn.Module):
    """Stem -> stages -> head -> pool -> dropout -> linear, built by :func:`build_model`.

    The spec it was built from is kept on ``self.spec`` (plain data; the module never changes it).
    """

    def __init__(self, spec: ArchSpec) -> None:
        super().__init__()
        self.spec = spec
        bn = {"bn_eps": spec.bn_eps, "bn_momentum": spec.bn_momentum}
        self.stem = conv_bn_act(3, spec.stem_channels, 3, 2, **bn)

        layout = block_layout(spec)
        self.stages = nn.Sequential(
            *(
                nn.Sequential(*(make_block(b, **bn) for b in layout if b.stage == stage))
                for stage in range(len(spec.stages))
            )
        )
        self.head = conv_bn_act(spec.stages[-1].out_channels, spec.head_channels, 1, **bn)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(p=spec.dropout)
        self.classifier = nn.Linear(spec.head_channels, spec.num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # The reference code's initializers (as torchvision uses them): He-normal fan-out for convs,
        # uniform(+-1/sqrt(classes)) for the classifier, BN at identity.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                bound = 1.0 / math.sqrt(module.out_features)
                nn.init.uniform_(module.weight, -bound, bound)
                nn.init.zeros_(module.bias)

    def set_dropout(self, rate: float) -> None:
        """Change the classifier dropout in place (progressive learning raises it per stage)."""
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {rate!r}")
        self.dropout.p = rate

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier with a fresh one of ``num_classes`` outputs (for fine-tuning)."""
        self.classifier = nn.Linear(self.spec.head_channels, num_classes)
        bound = 1.0 / math.sqrt(num_classes)
        nn.init.uniform_(self.classifier.weight, -bound, bound)
        nn.init.zeros_(self.classifier.bias)
        self.spec = self.spec.replace(num_classes=num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # (N, stem, H/2, W/2)
        x = self.stages(x)  # (N, last stage width, H/stride, W/stride)
        return self.head(x)  # (N, head, H/stride, W/stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)
        x = torch.flatten(self.pool(x), 1)  # (N, head)
        return self.classifier(self.dropout(x))  # (N, classes)


def build_model(spec: ArchSpec, num_classes: int | None = None) -> EfficientNetV2:
    """Build the network a spec describes (a fresh, randomly initialized module).

    Args:
        spec: the architecture.
        num_classes: if given, overrides ``spec.num_classes``.
    """
    if num_classes is not None and num_classes != spec.num_classes:
        spec = spec.replace(num_classes=num_classes)
    return EfficientNetV2(spec)
