"""The one place that turns an :class:`ArchSpec` into an ``nn.Module`` and threads channels."""

from __future__ import annotations

import math

import torch
from torch import nn

from searchspace.blocks import FusedMBConv, MBConv, conv_bn_act
from searchspace.spec import ArchSpec

__all__ = ["EfficientNetV2", "build_model"]

_BLOCKS = {"mbconv": MBConv, "fused": FusedMBConv}


class EfficientNetV2(nn.Module):
    """Stem -> stages -> head -> pool -> dropout -> linear, built by :func:`build_model`.

    The spec it was built from is kept on ``self.spec`` (plain data; the module never changes it).
    """

    def __init__(self, spec: ArchSpec) -> None:
        super().__init__()
        self.spec = spec
        bn = {"bn_eps": spec.bn_eps, "bn_momentum": spec.bn_momentum}
        self.stem = conv_bn_act(3, spec.stem_channels, 3, 2, **bn)

        total_blocks = spec.total_blocks
        block_index = 0
        in_channels = spec.stem_channels
        stages = []
        for stage in spec.stages:
            blocks = []
            for repeat in range(stage.repeats):
                block = _BLOCKS[stage.block](
                    in_channels,
                    stage.out_channels,
                    kernel=stage.kernel,
                    # The stride belongs to the stage's first block only.
                    stride=stage.stride if repeat == 0 else 1,
                    expand_ratio=stage.expand_ratio,
                    se_ratio=stage.se_ratio,
                    # Stochastic depth grows linearly with the global block index (paper, sec. 2).
                    drop_path_rate=spec.drop_path_rate * block_index / total_blocks,
                    **bn,
                )
                blocks.append(block)
                in_channels = stage.out_channels
                block_index += 1
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)

        self.head = conv_bn_act(in_channels, spec.head_channels, 1, **bn)
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
