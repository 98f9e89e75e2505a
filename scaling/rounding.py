"""EfficientNet's rounding rules for scaled widths, depths and image sizes.

Channels and repeats follow shared/REFERENCE.md section 4, which is what both the reference code
(google/automl ``efficientnetv2/effnetv2_model.py``: ``round_filters``, ``round_repeats``) and timm
(``make_divisible`` / ``round_channels``) do, so that B0 scaled by B1..B3's coefficients gives the
published networks exactly.
"""

from __future__ import annotations

import math

from scaling.errors import ScalingError
from searchspace.checks import check_int, check_number

__all__ = ["round_filters", "round_repeats", "round_resolution"]


def round_filters(channels: int, width: float, divisor: int = 8, round_limit: float = 0.0) -> int:
    """A channel count scaled by ``width`` and rounded to a multiple of ``divisor``.

    ``max(divisor, int(c * width + divisor / 2) // divisor * divisor)``: round half up to the
    nearest multiple, never below one divisor. With ``round_limit`` > 0 (EfficientNet V1 used 0.9)
    a result below ``round_limit * c * width`` gets one more divisor; EfficientNetV2's base nets
    use 0, i.e. no such rule. Width 1.0 still rounds (as the reference code does), so a width
    that is not a multiple of ``divisor`` moves to one.

    Raises:
        ScalingError: ``width`` is not positive, ``divisor`` < 1 or ``round_limit`` not in [0, 1).
    """
    width = check_number("width", width, 0.0, error=ScalingError, above=True)
    check_int("channel divisor", divisor, 1, ScalingError)
    check_number("channel round limit", round_limit, 0.0, 1.0, ScalingError, below=True)
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if round_limit and rounded < round_limit * scaled:
        rounded += divisor
    return rounded


def round_repeats(repeats: int, depth: float) -> int:
    """A stage's block count scaled by ``depth`` and rounded up: ``ceil(repeats * depth)``.

    The product is taken in floating point exactly as the reference code does, so its rare
    float artefacts (``25 * 2.2`` is just above 55) give the same counts as the published nets.

    Raises:
        ScalingError: ``depth`` is not positive.
    """
    depth = check_number("depth", depth, 0.0, error=ScalingError, above=True)
    return max(1, math.ceil(repeats * depth))


def round_resolution(size: int, factor: float, divisor: int = 4) -> int:
    """An image size scaled by ``factor``, rounded half up to a multiple of ``divisor``.

    Not a paper rule: the published sizes (192, 208, 224, 240, 260, 300, 384, 480) are all
    multiples of 4, so 4 keeps every published size reachable.

    Raises:
        ScalingError: ``factor`` is not positive or ``divisor`` < 1.
    """
    factor = check_number("resolution", factor, 0.0, error=ScalingError, above=True)
    check_int("resolution divisor", divisor, 1, ScalingError)
    return max(divisor, int(size * factor / divisor + 0.5) * divisor)
