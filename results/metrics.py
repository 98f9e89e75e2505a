"""The metrics a trial records and which way each one is better.

The names are the team's result-record schema (the search stores them as Optuna trial user
attributes): accuracy is better high, every cost is better low. Non-dominated sorting, reports
and the CLI all take their directions from :data:`METRICS`, so a user names an objective and
never its direction.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from results.errors import ResultsError

__all__ = [
    "DEFAULT_OBJECTIVES",
    "METRICS",
    "Metric",
    "parse_objectives",
]


@dataclass(frozen=True)
class Metric:
    """A numeric trial metric: its column name, whether higher is better, and how to show it."""

    name: str
    maximize: bool
    label: str
    integer: bool = False

    @property
    def direction(self) -> str:
        """``"maximize"`` or ``"minimize"``, as Optuna spells study directions."""
        return "maximize" if self.maximize else "minimize"


#: Every metric that may be an objective, by column name.
METRICS: dict[str, Metric] = {
    metric.name: metric
    for metric in (
        Metric("accuracy", True, "top-1 accuracy"),
        Metric("reward", True, "reward A·S^w·P^v"),
        Metric("images_per_second", True, "training images/s"),
        Metric("step_time_ms", False, "train step time (ms)"),
        Metric("step_time_norm", False, "step time / reference"),
        Metric("step_time_spread_ms", False, "step time IQR (ms)"),
        Metric("params", False, "parameters", integer=True),
        Metric("params_norm", False, "parameters / reference"),
        Metric("flops", False, "FLOPs", integer=True),
        Metric("peak_memory_mb", False, "peak memory (MB)"),
        Metric("train_seconds", False, "training time (s)"),
        Metric("duration_s", False, "trial duration (s)"),
    )
}

#: The paper's trade-off, and the objectives of a search in ``pareto`` mode.
DEFAULT_OBJECTIVES: tuple[str, ...] = ("accuracy", "step_time_norm", "params")


def parse_objectives(objectives: str | Iterable[str]) -> tuple[str, ...]:
    """Validate objective names given as ``"accuracy,step_time_ms"`` or a sequence of names.

    Raises:
        ResultsError: an empty list, a repeated name or a name not in :data:`METRICS`.
    """
    names = objectives.split(",") if isinstance(objectives, str) else list(objectives)
    names = [name.strip() for name in names]
    if not names or any(not name for name in names):
        raise ResultsError(f"objectives must be comma-separated metric names, got {objectives!r}")
    for name in names:
        if name not in METRICS:
            raise ResultsError(f"unknown objective {name!r} (known: {', '.join(sorted(METRICS))})")
    if len(set(names)) != len(names):
        raise ResultsError(f"objectives must not repeat a name, got {','.join(names)}")
    return tuple(names)
