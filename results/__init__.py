"""Pareto fronts, tables, reports and dashboards read from a search's Optuna storage.

- :mod:`results.schema`: the record every trial stores, and which way each metric is better;
  :mod:`results.storage`: the one opener of a study's storage;
- :mod:`results.study`: a study as a pandas DataFrame; :mod:`results.pareto`,
  :mod:`results.hypervolume`, :mod:`results.importance`: fronts, hypervolumes, choices that matter;
- :mod:`results.tables`, :mod:`results.figures`, :mod:`results.progress`, :mod:`results.report`,
  :mod:`results.dashboard`: what users look at (``nas front``, ``nas report``, ``nas dashboard``).

This package reads studies (the dashboard adds notes and figures to one); it never runs a search,
trains or times anything, and imports no torch. Typical use: docs/results.md.
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
