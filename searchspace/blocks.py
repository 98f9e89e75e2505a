"""The blocks of an EfficientNetV2-style net (shared/REFERENCE.md section 2).

Blocks are plain ``nn.Module``s and know nothing of specs: the builder passes every width. Each
block decides once whether it has a residual (stride 1 and equal widths) and turns optional parts
(expansion, SE, stochastic depth) into ``nn.Identity``, so ``forward`` has no branches but the
residual. The conv-BN-act, squeeze-excitation and stochastic-depth pieces are torchvision's own
(``torchvision.ops``); their layout also makes torchvision's EfficientNetV2 weights map onto ours
tensor for tensor (see ``searchspace.weights``).
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn
from torchvision.ops import Conv2dNormActivation, SqueezeExcitation, StochasticDepth

__all__ = ["FusedMBConv", "MBConv", "conv_bn_act", "squeeze_channels"]


def squeeze_channels(in_channels: int, se_ratio: float) -> int:
    """SE bottleneck width: taken from the block's *input* width, as in the paper's code."""
    return max(1, int(in_channels * se_ratio))


def conv_bn_act(
    in_channels: int,
    out_channels: int,
    kernel: int,
    stride: int = 1,
    *,
    groups: int = 1,
    activation: bool = True,
    bn_eps: float = 1e-3,
    bn_momentum: float = 0.1,
) -> Conv2dNormActivation:
    """kxk conv (no bias, 'same' padding) -> BatchNorm -> SiLU (or no activation)."""
    return Conv2dNormActivation(
        in_channels,
        out_channels,
        kernel_size=kernel,
        stride=stride,
        groups=groups,
        norm_layer=partial(nn.BatchNorm2d, eps=bn_eps, momentum=bn_momentum),
        activation_layer=nn.SiLU if activation else None,
    )


def _squeeze_excite(channels: int, in_channels: int, se_ratio: float) -> nn.Module:
    """SE on the block's hidden width, squeezed to a width taken from its input; or nothing."""
    if se_ratio <= 0:
        return nn.Identity()
    return SqueezeExcitation(channels, squeeze_channels(in_channels, se_ratio), activation=nn.SiLU)


def _drop_path(rate: float, has_skip: bool) -> nn.Module:
    # Stochastic depth drops the residual branch per sample, so it only exists with a residual.
    return StochasticDepth(rate, mode="row") if has_skip and rate > 0 else nn.Identity()


class MBConv(nn.Module):
    """1x1 expand -> kxk depthwise (stride) -> SE -> 1x1 project, with an optional residual."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int,
        stride: int,
        expand_ratio: float,
        se_ratio: float,
        drop_path_rate: float,
        bn_eps: float = 1e-3,
        bn_momentum: float = 0.1,
    ) -> None:
        super().__init__()
        bn = {"bn_eps": bn_eps, "bn_momentum": bn_momentum}
        mid = int(in_channels * expand_ratio)
        self.has_skip = stride == 1 and in_channels == out_channels
        self.conv_pw = (
            conv_bn_act(in_channels, mid, 1, **bn) if mid != in_channels else nn.Identity()
        )
        self.conv_dw = conv_bn_act(mid, mid, kernel, stride, groups=mid, **bn)
        self.se = _squeeze_excite(mid, in_channels, se_ratio)
        self.conv_pwl = conv_bn_act(mid, out_channels, 1, activation=False, **bn)
        self.drop_path = _drop_path(drop_path_rate, self.has_skip)

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
    """kxk fused expand conv (stride) -> SE -> 1x1 project, with an optional residual.

    With ``expand_ratio == 1`` the block is a single kxk conv -> BN -> SiLU straight to the output
    width, and there is no project conv (as in the paper's code and torchvision).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int,
        stride: int,
        expand_ratio: float,
        se_ratio: float,
        drop_path_rate: float,
        bn_eps: float = 1e-3,
        bn_momentum: float = 0.1,
    ) -> None:
        super().__init__()
        bn = {"bn_eps": bn_eps, "bn_momentum": bn_momentum}
        self.has_skip = stride == 1 and in_channels == out_channels
        fused_only = expand_ratio == 1
        mid = out_channels if fused_only else int(in_channels * expand_ratio)
        self.conv_exp = conv_bn_act(in_channels, mid, kernel, stride, **bn)
        self.se = _squeeze_excite(mid, in_channels, se_ratio)
        self.conv_pwl = (
            nn.Identity()
            if fused_only
            else conv_bn_act(mid, out_channels, 1, activation=False, **bn)
        )
        self.drop_path = _drop_path(drop_path_rate, self.has_skip)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.conv_exp(x)
        x = self.se(x)
        x = self.conv_pwl(x)
        if self.has_skip:
            x = self.drop_path(x) + shortcut
        return x
