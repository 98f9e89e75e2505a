"""The source of the file ``nas export --format pytorch`` writes (see :mod:`nas.export.writer`).

This module is a template: :func:`nas.export.writer.pytorch_source` replaces this docstring and
the data between the two ``architecture`` marker lines with a net's own, and copies the rest word
for word. It is real, linted Python (importable, with a tiny net as its data) so that the code it
hands out is checked like any other; it imports torch and torchvision only, never effnas.

The modules mirror ``searchspace.builder`` and ``searchspace.blocks`` attribute for attribute (the
same torchvision building blocks under the same names), so a state dict moves between an effnas
model and the exported one with identical keys; ``tests/nas/export/test_export.py`` holds them to
that.
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn
from torchvision.ops import Conv2dNormActivation, SqueezeExcitation, StochasticDepth


class Stage(NamedTuple):
    """One row of ``STAGES``: ``repeats`` blocks of one kind; the first block has the stride."""

    block: str  # "mbconv" (1x1 expand, kxk depthwise) or "fused" (one kxk expand conv)
    repeats: int
    kernel: int
    stride: int
    expand_ratio: float  # hidden width = int(input width * expand_ratio)
    out_channels: int
    se_ratio: float  # squeeze-excitation width = input width * se_ratio; 0: no SE


# --- architecture: begin ---
NAME = "template"
SPEC = ""
STEM_CHANNELS = 8
HEAD_CHANNELS = 32
NUM_CLASSES = 10
DROPOUT = 0.2
DROP_PATH_RATE = 0.2
BN_EPS = 1e-3
BN_MOMENTUM = 0.1
IMAGE_SIZE = 32
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
WEIGHTS_FILE = "template.pth"
EVAL = False
STAGES = [
    Stage("fused", 1, 3, 1, 1.0, 8, 0.0),
    Stage("mbconv", 2, 3, 2, 4.0, 16, 0.25),
]
# --- architecture: end ---


def conv_bn_act(
    in_channels: int,
    out_channels: int,
    kernel: int,
    stride: int = 1,
    *,
    groups: int = 1,
    activation: bool = True,
) -> Conv2dNormActivation:
    """kxk conv (no bias, 'same' padding) -> BatchNorm -> SiLU (or no activation)."""
    return Conv2dNormActivation(
        in_channels,
        out_channels,
        kernel_size=kernel,
        stride=stride,
        groups=groups,
        norm_layer=partial(nn.BatchNorm2d, eps=BN_EPS, momentum=BN_MOMENTUM),
        activation_layer=nn.SiLU if activation else None,
    )


def squeeze_excite(channels: int, in_channels: int, se_ratio: float) -> nn.Module:
    """SE on the block's hidden width, squeezed to a width taken from its input; or nothing."""
    if se_ratio <= 0:
        return nn.Identity()
    return SqueezeExcitation(channels, max(1, int(in_channels * se_ratio)), activation=nn.SiLU)


def drop_path(rate: float, has_skip: bool) -> nn.Module:
    """Stochastic depth on the residual branch (train mode only); it needs a residual."""
    return StochasticDepth(rate, mode="row") if has_skip and rate > 0 else nn.Identity()


class MBConv(nn.Module):
    """1x1 expand -> kxk depthwise (stride) -> SE -> 1x1 project, with a residual if shapes match.

    Without expansion (hidden width = input width) there is no 1x1 expand conv.
    """

    def __init__(self, in_channels: int, stage: Stage, stride: int, drop_rate: float) -> None:
        super().__init__()
        mid = int(in_channels * stage.expand_ratio)
        self.has_skip = stride == 1 and in_channels == stage.out_channels
        self.conv_pw = conv_bn_act(in_channels, mid, 1) if mid != in_channels else nn.Identity()
        self.conv_dw = conv_bn_act(mid, mid, stage.kernel, stride, groups=mid)
        self.se = squeeze_excite(mid, in_channels, stage.se_ratio)
        self.conv_pwl = conv_bn_act(mid, stage.out_channels, 1, activation=False)
        self.drop_path = drop_path(drop_rate, self.has_skip)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.conv_pw(x)
        x = self.conv_dw(x)
        x = self.se(x)
        x = self.conv_pwl(x)
        if self.has_skip:
            x = self.drop_path(x) + shortcut
        return x


class FusedMBConv(nn.Module):
    """kxk expand conv (stride) -> SE -> 1x1 project, with a residual if shapes match.

    With ``expand_ratio == 1`` the block is one kxk conv -> BN -> SiLU straight to the output
    width, with no project conv.
    """

    def __init__(self, in_channels: int, stage: Stage, stride: int, drop_rate: float) -> None:
        super().__init__()
        self.has_skip = stride == 1 and in_channels == stage.out_channels
        fused_only = stage.expand_ratio == 1
        mid = stage.out_channels if fused_only else int(in_channels * stage.expand_ratio)
        self.conv_exp = conv_bn_act(in_channels, mid, stage.kernel, stride)
        self.se = squeeze_excite(mid, in_channels, stage.se_ratio)
        self.conv_pwl = (
            nn.Identity()
            if fused_only
            else conv_bn_act(mid, stage.out_channels, 1, activation=False)
        )
        self.drop_path = drop_path(drop_rate, self.has_skip)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.conv_exp(x)
        x = self.se(x)
        x = self.conv_pwl(x)
        if self.has_skip:
            x = self.drop_path(x) + shortcut
        return x


BLOCKS = {"mbconv": MBConv, "fused": FusedMBConv}


class EfficientNetV2(nn.Module):
    """Stem (3x3, stride 2) -> ``STAGES`` -> 1x1 head -> average pool -> dropout -> linear.

    Input: float32 ``N x 3 x H x W`` (``IMAGE_SIZE`` square is what the net was made for), RGB in
    [0, 1] normalized with ``MEAN`` and ``STD``. Output: ``N x num_classes`` logits.
    """

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.stem = conv_bn_act(3, STEM_CHANNELS, 3, 2)
        total_blocks = sum(stage.repeats for stage in STAGES)
        index = 0
        in_channels = STEM_CHANNELS
        stages = []
        for stage in STAGES:
            blocks = []
            for repeat in range(stage.repeats):
                # The stage's stride belongs to its first block; stochastic depth grows linearly
                # with the block's index in the whole net.
                stride = stage.stride if repeat == 0 else 1
                drop_rate = DROP_PATH_RATE * index / total_blocks
                blocks.append(BLOCKS[stage.block](in_channels, stage, stride, drop_rate))
                in_channels = stage.out_channels
                index += 1
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.head = conv_bn_act(in_channels, HEAD_CHANNELS, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(p=DROPOUT)
        self.classifier = nn.Linear(HEAD_CHANNELS, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # For training from scratch: He-normal (fan-out) convs, uniform(+-1/sqrt(classes))
        # classifier, BatchNorm at identity.
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

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.pool(self.forward_features(x)), 1)
        return self.classifier(self.dropout(x))


def build(num_classes: int = NUM_CLASSES) -> EfficientNetV2:
    """The network with fresh (randomly initialized) weights, in train mode."""
    return EfficientNetV2(num_classes)


def load(weights: str | Path | None = None, *, eval_mode: bool = EVAL) -> EfficientNetV2:
    """The network with the exported weights (``WEIGHTS_FILE`` beside this file by default).

    The state dict is read with ``torch.load(..., weights_only=True)`` and must fit exactly.
    ``eval_mode`` puts BatchNorm in inference mode and turns dropout and stochastic depth off;
    without it the model is in train mode, like any new ``nn.Module``.
    """
    path = Path(weights) if weights is not None else Path(__file__).with_name(WEIGHTS_FILE)
    model = EfficientNetV2()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval() if eval_mode else model


if __name__ == "__main__":
    net = load(eval_mode=True)
    with torch.no_grad():
        logits = net(torch.zeros(2, 3, IMAGE_SIZE, IMAGE_SIZE))
    print(f"{NAME}: input N x 3 x {IMAGE_SIZE} x {IMAGE_SIZE} -> logits {tuple(logits.shape)}")
