"""Pareto fronts, tables, reports and dashboards read from a search's Optuna storage.

- :mod:`results.schema`: the result record every trial stores, and which way each metric is
  better; :mod:`results.storage`: the one opener of a study's storage;
- :mod:`results.study`: a study as a pandas DataFrame; :mod:`results.pareto`: non-dominated
  sorting; :mod:`results.hypervolume`: the front's hypervolume and its history;
  :mod:`results.importance`: which choices matter for each objective (Optuna's PED-ANOVA);
- :mod:`results.tables`, :mod:`results.figures` (Pareto plots), :mod:`results.progress`
  (hypervolume and importance plots), :mod:`results.report`, :mod:`results.dashboard`: what users
  look at.

This package reads studies (the dashboard adds notes and figures to one); it must never run a
search, train or time anything, and it imports no torch.

Typical use (also what ``nas front``, ``nas report`` and ``nas dashboard`` do)::

    from results import load_study_frame, pareto_front, format_front
    frame = load_study_frame("runs/quick")          # one row per trial
    front = pareto_front(frame, ["accuracy", "step_time_ms"])
    print(format_front(frame))                      # the front over the study's objectives
"""

from __future__ import annotations

from results.errors import ResultsError
from results.pareto import front_ranks, non_dominated_rank, pareto_front, reward_best
from results.schema import (
    DEFAULT_OBJECTIVES,
    METRICS,
    OBJECTIVES_BY_MODE,
    RECORD,
    RECORD_KEYS,
    Field,
    describe_objectives,
    parse_objectives,
)
from results.storage import SQLITE_TIMEOUT_S, open_storage
from results.study import FRAME_COLUMNS, StudySource, load_study_frame, open_study, study_frame
from results.tables import (
    default_objectives,
    format_front,
    front_records,
    front_table,
    winners_curse,
)

__all__ = [
    "DEFAULT_OBJECTIVES",
    "FRAME_COLUMNS",
    "METRICS",
    "OBJECTIVES_BY_MODE",
    "RECORD",
    "RECORD_KEYS",
    "SQLITE_TIMEOUT_S",
    "Field",
    "ResultsError",
    "StudySource",
    "default_objectives",
    "describe_objectives",
    "format_front",
    "front_ranks",
    "front_records",
    "front_table",
    "load_study_frame",
    "non_dominated_rank",
    "open_storage",
    "open_study",
    "pareto_front",
    "parse_objectives",
    "reward_best",
    "study_frame",
    "winners_curse",
]
