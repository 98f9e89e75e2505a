"""Evaluating one candidate the training-aware way: time its real step, train it briefly, score.

- :mod:`nas.evaluate.config`: :class:`EvalConfig` (torch-free);
- :mod:`nas.evaluate.timing`: timing a training step; :mod:`nas.evaluate.reference`: the
  reference net's timing, cached; :mod:`nas.evaluate.reward`: the paper's ``A * S^w * P^v``;
- :mod:`nas.evaluate.record`: :class:`EvalResult`, generated from :mod:`results.schema`;
- :mod:`nas.evaluate.candidate`: :func:`evaluate_candidate`, what every trial and ``nas evaluate``
  run.

This package evaluates one candidate on the device it is given; it must not choose candidates,
store them, or run Ray (``nas.search`` does).
"""

from __future__ import annotations

from nas.evaluate.config import CLOCKS, DEFAULT_REFERENCE, EvalConfig
from nas.evaluate.reward import DEFAULT_REWARD_V, DEFAULT_REWARD_W, reward
from searchspace.lazy import lazy_exports

__getattr__ = lazy_exports(
    __name__,
    {
        "EvalResult": "nas.evaluate.record",
        "evaluate_candidate": "nas.evaluate.candidate",
        "StepSetup": "nas.evaluate.timing",
        "StepTiming": "nas.evaluate.timing",
        "time_train_step": "nas.evaluate.timing",
        "ReferenceTiming": "nas.evaluate.reference",
        "reference_timing": "nas.evaluate.reference",
        "clear_reference_cache": "nas.evaluate.reference",
    },
)

__all__ = [
    "CLOCKS",
    "DEFAULT_REFERENCE",
    "DEFAULT_REWARD_V",
    "DEFAULT_REWARD_W",
    "EvalConfig",
    "EvalResult",
    "ReferenceTiming",
    "StepSetup",
    "StepTiming",
    "clear_reference_cache",
    "evaluate_candidate",
    "reference_timing",
    "reward",
    "time_train_step",
]
