"""Which choices of the search space matter for each objective, by Optuna's PED-ANOVA.

:func:`param_importances` scores, per objective, how differently each choice a search recorded
as an Optuna trial parameter (``s1_block``, ``s1_kernel``, ...; see
:meth:`searchspace.space.SearchSpace.suggest`) is spread among the best trials than among all of
them, with :class:`~optuna.importance.PedAnovaImportanceEvaluator`, the evaluator that handles
conditional parameters such as the SE choice. The trials come from a study frame, rebuilt as an
in-memory study, so a report computes them from the same snapshot it draws. What the figures
mean: docs/results.md, "Which choices matter".
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import optuna
import pandas as pd

from results.schema import METRICS, parse_objectives

__all__ = ["MIN_TRIALS", "Importances", "choice_label", "param_importances", "sorted_choices"]

#: Fewer completed trials than this cannot tell choices apart; the report says so instead.
MIN_TRIALS = 10
#: PED-ANOVA compares the top ``TARGET_QUANTILE`` of the trials with all of them; Optuna's note
#: asks for at least ``TOP_TRIALS`` trials in that top, so small studies use a larger quantile.
TARGET_QUANTILE = 0.1
TOP_TRIALS = 5

_CHOICE = re.compile(r"s(\d+)_(block|repeats|kernel|expand|mbconv_se|fused_se)")
_CHOICE_WORDS = {
    "block": "block",
    "repeats": "repeats",
    "kernel": "kernel",
    "expand": "expansion",
    "mbconv_se": "SE (MBConv)",
    "fused_se": "SE (Fused)",
}


@dataclass(frozen=True)
class Importances:
    """The importance of each choice for one objective of one study.

    Attributes:
        objective: the metric.
        trials: completed trials with that metric recorded.
        top: how many of them PED-ANOVA took as the best.
        values: parameter name to importance (summing to 1), most important first; empty when
            they could not be computed.
        reason: why they could not be computed; empty when they were.
    """

    objective: str
    trials: int
    top: int = 0
    values: dict[str, float] = field(default_factory=dict)
    reason: str = ""


def choice_label(name: str) -> str:
    """``"stage 1 SE (MBConv)"`` for ``s1_mbconv_se``; other parameter names as they are."""
    match = _CHOICE.fullmatch(name)
    return f"stage {match[1]} {_CHOICE_WORDS[match[2]]}" if match else name


def _choice_order(name: str) -> tuple:
    match = _CHOICE.fullmatch(name)
    if match is None:
        return (math.inf, 0, name)
    return (int(match[1]), list(_CHOICE_WORDS).index(match[2]), name)


def sorted_choices(names: Sequence[str]) -> list[str]:
    """Parameter names in the space's order: stage by stage, block type first."""
    return sorted(set(names), key=_choice_order)


def param_importances(frame: pd.DataFrame, objectives: Sequence[str] | str) -> list[Importances]:
    """PED-ANOVA importances of the study's parameters for each of ``objectives``.

    Only completed trials with the objective recorded count. A study with fewer than
    :data:`MIN_TRIALS` of them, without parameters, or whose objective never varies gets an
    :class:`Importances` with a ``reason`` instead of values.

    Raises:
        ResultsError: an unknown objective name.
    """
    names = parse_objectives(objectives)
    distributions = frame.attrs.get("param_distributions") or {}
    complete = frame[frame["state"] == "COMPLETE"]
    results = []
    for name in names:
        values = pd.to_numeric(complete[name], errors="coerce").to_numpy(
            dtype=np.float64, na_value=np.nan
        )
        rows = complete[np.isfinite(values)]
        values = values[np.isfinite(values)]
        if len(rows) < MIN_TRIALS:
            trials = f"{len(rows)} completed trial{'' if len(rows) == 1 else 's'}"
            reason = f"{trials}; at least {MIN_TRIALS} are needed to tell the choices apart"
        elif not distributions or not any(rows["trial_params"].map(bool)):
            reason = "the trials record no choices (Optuna parameters)"
        elif np.ptp(values) == 0:
            reason = f"every trial has the same {name}"
        else:
            results.append(_ped_anova(name, rows["trial_params"], values, distributions))
            continue
        results.append(Importances(name, len(rows), reason=reason))
    return results


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """Hide one logger's INFO messages for the duration (``nas report`` output stays clean)."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


def _ped_anova(
    name: str, params: pd.Series, values: np.ndarray, distributions: dict
) -> Importances:
    """Importances for one objective; ``values`` are the trials' raw values."""
    losses = -values if METRICS[name].maximize else values  # PED-ANOVA: lower is better
    storage = optuna.storages.InMemoryStorage()
    with _quiet("optuna.storages._in_memory"):  # it logs every study it creates at INFO
        storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], study_name=name)
    study = optuna.Study(name, storage)
    study.add_trials(
        [
            optuna.trial.create_trial(
                value=float(loss),
                params={key: value for key, value in chosen.items() if key in distributions},
                distributions={key: distributions[key] for key in chosen if key in distributions},
            )
            for chosen, loss in zip(params, losses, strict=True)
        ]
    )
    quantile = max(TARGET_QUANTILE, TOP_TRIALS / len(losses))
    evaluator = optuna.importance.PedAnovaImportanceEvaluator(target_quantile=quantile)
    with warnings.catch_warnings():
        # Optuna warns about regimes with a single trial and (experimental) normalize=False.
        warnings.simplefilter("ignore")
        raw = optuna.importance.get_param_importances(study, evaluator=evaluator, normalize=False)
    total = sum(raw.values())
    top = math.ceil(quantile * len(losses))
    if total <= 0:
        return Importances(
            name, len(losses), top, reason="no choice is more common among the best trials"
        )
    ordered = sorted(raw.items(), key=lambda item: (-item[1], _choice_order(item[0])))
    return Importances(name, len(losses), top, {key: value / total for key, value in ordered})
