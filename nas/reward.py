"""The search reward: ``A * S^w * P^v`` (EfficientNetV2, section 3.3, after MnasNet).

``A`` is top-1 accuracy, ``S`` the training step time and ``P`` the parameter count, both divided
by the reference net's (so ``S = P = 1`` for a net exactly as fast and as big as the reference).
The paper's exponents are ``w = -0.07`` and ``v = -0.05``: a net twice as slow as another must be
``2^0.07``, about 5%, more accurate to score as well.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from searchspace.errors import EffnasError

__all__ = ["DEFAULT_PARAMS_WEIGHT", "DEFAULT_STEP_TIME_WEIGHT", "RewardWeights", "reward"]

#: The paper's exponents.
DEFAULT_STEP_TIME_WEIGHT = -0.07
DEFAULT_PARAMS_WEIGHT = -0.05


@dataclass(frozen=True)
class RewardWeights:
    """Exponents of the reward: ``w`` on normalized step time, ``v`` on normalized parameters.

    Both must be finite and at most 0 (a slower or bigger net never scores higher for that).
    """

    step_time: float = DEFAULT_STEP_TIME_WEIGHT
    params: float = DEFAULT_PARAMS_WEIGHT

    def __post_init__(self) -> None:
        for name, value in (("reward_w", self.step_time), ("reward_v", self.params)):
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or value > 0
            ):
                raise EffnasError(f"{name} must be a finite number <= 0, got {value!r}")


def reward(
    accuracy: float,
    step_time_norm: float,
    params_norm: float,
    weights: RewardWeights | None = None,
) -> float:
    """``accuracy * step_time_norm ** w * params_norm ** v``.

    Args:
        accuracy: top-1 accuracy in [0, 1].
        step_time_norm: step time divided by the reference's, > 0.
        params_norm: parameter count divided by the reference's, > 0.
        weights: the exponents; the paper's by default.

    Raises:
        ValueError: an accuracy outside [0, 1] or a non-positive normalized figure (a bug in the
            caller, not user input).
    """
    weights = RewardWeights() if weights is None else weights
    if not 0.0 <= accuracy <= 1.0:
        raise ValueError(f"accuracy must be in [0, 1], got {accuracy!r}")
    for name, value in (("step_time_norm", step_time_norm), ("params_norm", params_norm)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return accuracy * step_time_norm**weights.step_time * params_norm**weights.params
