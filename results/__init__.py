"""Pareto fronts, tables, reports and dashboards read from a search's Optuna storage.

Typical use (also what ``nas front``, ``nas report`` and ``nas dashboard`` do)::

    from results import load_study_frame, pareto_front, format_front
    frame = load_study_frame("runs/quick")          # one row per trial
    front = pareto_front(frame, ["accuracy", "step_time_ms"])
    print(format_front(frame))                      # the front over the study's objectives
"""

from __future__ import annotations

from results.errors import ResultsError
from results.metrics import DEFAULT_OBJECTIVES, METRICS, Metric, parse_objectives
from results.pareto import front_ranks, non_dominated_rank, pareto_front, reward_best
from results.study import (
    FRAME_COLUMNS,
    SQLITE_TIMEOUT_S,
    StudySource,
    load_study_frame,
    open_run,
    study_frame,
)
from results.tables import default_objectives, format_front, front_records, front_table

__all__ = [
    "DEFAULT_OBJECTIVES",
    "FRAME_COLUMNS",
    "METRICS",
    "SQLITE_TIMEOUT_S",
    "Metric",
    "ResultsError",
    "StudySource",
    "default_objectives",
    "format_front",
    "front_ranks",
    "front_records",
    "front_table",
    "load_study_frame",
    "non_dominated_rank",
    "open_run",
    "pareto_front",
    "parse_objectives",
    "reward_best",
    "study_frame",
]
