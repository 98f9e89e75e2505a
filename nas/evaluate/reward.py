"""The search reward: ``A * S^w * P^v`` (EfficientNetV2, section 3.3, after MnasNet).

``A`` is top-1 accuracy, ``S`` the training step time and ``P`` the parameter count, both divided
by the reference net's (so ``S = P = 1`` for a net exactly as fast and as big as the reference).
The paper's exponents are ``w = -0.07`` and ``v = -0.05``: a net twice as slow as another must be
``2^0.07``, about 5%, more accurate to score as well.
"""

from __future__ import annotations

import math

__all__ = ["DEFAULT_REWARD_V", "DEFAULT_REWARD_W", "reward"]

#: The paper's exponents of the normalized step time (w) and parameter count (v).
DEFAULT_REWARD_W = -0.07
DEFAULT_REWARD_V = -0.05


def reward(
    accuracy: float,
    step_time_norm: float,
    params_norm: float,
    w: float = DEFAULT_REWARD_W,
    v: float = DEFAULT_REWARD_V,
) -> float:
    """``accuracy * step_time_norm ** w * params_norm ** v``.

    Args:
        accuracy: top-1 accuracy in [0, 1].
        step_time_norm: step time divided by the reference's, > 0.
        params_norm: parameter count divided by the reference's, > 0.
        w, v: the exponents (user settings are checked where they are read, in
            :class:`~nas.evaluate.config.EvalConfig`).

    Raises:
        ValueError: an accuracy outside [0, 1] or a non-positive normalized figure (a bug in the
            caller, not user input).
    """
    if not 0.0 <= accuracy <= 1.0:
        raise ValueError(f"accuracy must be in [0, 1], got {accuracy!r}")
    for name, value in (("step_time_norm", step_time_norm), ("params_norm", params_norm)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return accuracy * step_time_norm**w * params_norm**v
