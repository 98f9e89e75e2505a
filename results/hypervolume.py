"""The hypervolume of a search's Pareto front, and how it grew as trials finished.

:func:`hypervolume` is the volume the points dominate (all objectives minimized) inside the box
bounded by a reference point; :func:`hypervolume_history` follows it as trials finish, and
:func:`hypervolume_progress` does so for a study frame on a :class:`Normalization`, a common scale
taken from all the studies drawn together (see its docstring), so that several searches' curves
share one axis. It works on any metrics a trial recorded, where Optuna's computation is private
and takes a study's own objectives only; the tests check it against Optuna's on random fronts of
1 to 4 objectives. The scale and the algorithms: docs/results.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from results.pareto import feasible, non_dominated_rank
from results.schema import METRICS, REFUSED, parse_objectives
from results.tables import format_cell

__all__ = [
    "Normalization",
    "ObjectiveScale",
    "hypervolume",
    "hypervolume_history",
    "hypervolume_progress",
]

#: The reference point sits this far beyond the worst observed value (in normalized units), so a
#: front point that is the worst in one objective still adds volume (Ishibuchi et al., 2018:
#: "How to specify a reference point in hypervolume calculation", r = 1 + 1/H for H ~ 10).
REFERENCE_MARGIN = 0.1
#: Most matrix cells a 3-D hypervolume holds at once (64 MiB of float64).
_BLOCK_CELLS = 1 << 23


def hypervolume(
    points: np.ndarray | Sequence[Sequence[float]], reference: Sequence[float]
) -> float:
    """Volume dominated by ``points`` (all objectives minimized) and bounded by ``reference``.

    Points beyond the reference in any objective add nothing (they dominate no part of the box),
    dominated and repeated points add nothing either.

    Args:
        points: ``(n, d)`` finite losses.
        reference: ``(d,)`` finite reference point.

    Raises:
        ValueError: shapes that do not match, or values that are not finite.
    """
    points = np.asarray(points, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if reference.ndim != 1 or reference.size == 0:
        raise ValueError(f"reference must be a non-empty 1-D array, got shape {reference.shape}")
    if points.ndim != 2 or points.shape[1] != reference.size:
        raise ValueError(f"points must be (n, {reference.size}), got shape {points.shape}")
    if not (np.isfinite(points).all() and np.isfinite(reference).all()):
        raise ValueError("points and reference must be finite")
    inside = points[np.all(points <= reference, axis=1)]
    if inside.size == 0:
        return 0.0
    return _volume(_front(inside), reference)


def hypervolume_history(
    points: np.ndarray | Sequence[Sequence[float]], reference: Sequence[float]
) -> np.ndarray:
    """The hypervolume of ``points[:i + 1]`` for every ``i``: a search's progress.

    Rows holding a NaN (a failed or unfinished trial) leave the hypervolume as it was. The front
    is recomputed only when a point joins it; a point already dominated costs one comparison.

    Args:
        points: ``(n, d)`` losses in the order the trials finished; NaN rows allowed.
        reference: ``(d,)`` finite reference point.

    Returns:
        ``(n,)`` float64, non-decreasing.
    """
    points = np.asarray(points, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if points.ndim != 2 or reference.ndim != 1 or points.shape[1] != reference.size:
        raise ValueError(
            f"points must be (n, {reference.size}) for a reference of shape {reference.shape}, "
            f"got shape {points.shape}"
        )
    history = np.zeros(len(points))
    front = np.empty((0, reference.size))
    current = 0.0
    for index, point in enumerate(points):
        inside = np.isfinite(point).all() and np.all(point <= reference)
        # Only a point no front point weakly dominates moves the front.
        if inside and not np.all(front <= point, axis=1).any():
            front = np.vstack([front[~np.all(point <= front, axis=1)], point])
            current = _volume(front, reference)
        history[index] = current
    return history


def _front(points: np.ndarray) -> np.ndarray:
    """The distinct non-dominated rows of ``points`` (losses)."""
    on_front = non_dominated_rank(points, [False] * points.shape[1], max_rank=1) == 1
    return np.unique(points[on_front], axis=0)


def _volume(front: np.ndarray, reference: np.ndarray) -> float:
    """Hypervolume of distinct, mutually non-dominated points inside the reference box."""
    n_objectives = front.shape[1]
    if n_objectives == 1:
        return float(reference[0] - front[:, 0].min())
    if n_objectives == 2:
        return _volume_2d(front, reference)
    if n_objectives == 3:
        return _volume_3d(front, reference)
    # Slices between consecutive values of the last objective: below each slice's top, exactly
    # the points with a smaller or equal last loss dominate, in the other objectives.
    order = np.argsort(front[:, -1], kind="stable")
    ordered = front[order]
    tops = np.append(ordered[1:, -1], reference[-1])
    total = 0.0
    for count in range(1, len(ordered) + 1):
        height = tops[count - 1] - ordered[count - 1, -1]
        if height > 0:
            total += height * _volume(_front(ordered[:count, :-1]), reference[:-1])
    return total


def _volume_2d(points: np.ndarray, reference: np.ndarray) -> float:
    # Sorted by the first loss, each point owns the strip up to the next point's first loss, as
    # high as the best second loss so far; dominated and repeated points own nothing.
    order = np.lexsort((points[:, 1], points[:, 0]))
    first, second = points[order, 0], points[order, 1]
    widths = np.diff(np.append(first, reference[0]))
    heights = reference[1] - np.minimum.accumulate(second)
    return float(widths @ heights)


def _volume_3d(points: np.ndarray, reference: np.ndarray) -> float:
    # Sweep the third loss upwards: between the k-th and the (k+1)-th smallest third losses the
    # dominated cross-section is the 2-D area of the k points below. All those areas at once:
    # row k of a matrix over the points in first-loss order holds the second loss of the points
    # among the k lowest in third loss and the reference elsewhere; a running minimum along each
    # row then gives every strip's height, as in _volume_2d.
    n_points = len(points)
    by_first = np.lexsort((points[:, 1], points[:, 0]))
    first, second = points[by_first, 0], points[by_first, 1]
    widths = np.diff(np.append(first, reference[0]))
    # Position of each point (in first-loss order) in the order of the third loss.
    third_rank = np.empty(n_points, dtype=np.int64)
    third_rank[np.argsort(points[by_first, 2], kind="stable")] = np.arange(n_points)
    thirds = np.sort(points[:, 2])
    thicknesses = np.diff(np.append(thirds, reference[2]))
    areas = np.empty(n_points)
    rows_per_block = max(1, _BLOCK_CELLS // n_points)
    for start in range(0, n_points, rows_per_block):
        counts = np.arange(start + 1, min(start + rows_per_block, n_points) + 1)
        included = third_rank[np.newaxis, :] < counts[:, np.newaxis]
        heights = reference[1] - np.minimum.accumulate(
            np.where(included, second, reference[1]), axis=1
        )
        areas[start : start + len(counts)] = heights @ widths
    return float(areas @ thicknesses)


@dataclass(frozen=True)
class ObjectiveScale:
    """How one objective is put on the common scale: 0 at the best observed value, 1 at the worst.

    Attributes:
        name: the metric.
        maximize: whether higher is better (its loss is then the negated value).
        log: whether the value is compared on a log10 scale (positive costs: equal ratios of
            step time or parameters count equally, as in the reward ``A * S^w * P^v``).
        best, worst: the best and worst observed values (in the metric's own units).
    """

    name: str
    maximize: bool
    log: bool
    best: float
    worst: float

    def _loss(self, values: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            scaled = np.log10(values) if self.log else values
        return -scaled if self.maximize else scaled

    def normalize(self, values: np.ndarray) -> np.ndarray:
        """``values`` in normalized loss units; NaN where a value is missing or not valid."""
        values = np.asarray(values, dtype=np.float64)
        low, high = self._loss(np.array([self.best, self.worst]))
        span = high - low
        loss = (self._loss(values) - low) / (span if span > 0 else 1.0)
        return np.where(np.isfinite(loss), loss, np.nan)

    def describe(self) -> str:
        """``"params (log scale): 0 at 210.00k, 1 at 29.00M"``."""
        scale = " (log scale)" if self.log else ""
        best, worst = format_cell(self.name, self.best), format_cell(self.name, self.worst)
        return f"{self.name}{scale}: 0 at {best}, 1 at {worst}"


@dataclass(frozen=True)
class Normalization:
    """A common scale for the hypervolume of several studies.

    Every objective becomes a loss (accuracy and other maximized metrics negated, positive costs
    on a log10 scale), then is mapped linearly so that the best value observed in any of the
    studies is 0 and the worst is 1. The reference point is ``1 + margin`` in every objective,
    and the hypervolume is divided by the reference box's volume ``(1 + margin) ** d``: 1 would
    be one trial that is the best at everything, 0 no completed trial.

    Attributes:
        scales: one per objective, in order.
        margin: how far beyond the worst value the reference point sits.
    """

    scales: tuple[ObjectiveScale, ...]
    margin: float = REFERENCE_MARGIN

    @property
    def objectives(self) -> tuple[str, ...]:
        return tuple(scale.name for scale in self.scales)

    @property
    def reference(self) -> np.ndarray:
        return np.full(len(self.scales), 1.0 + self.margin)

    @classmethod
    def fit(
        cls, frames: Sequence[pd.DataFrame], objectives: Sequence[str] | str
    ) -> Normalization | None:
        """The scale set by the completed trials of ``frames``; None if none has every objective.

        A minimized objective is on a log scale when all its values are positive.

        Raises:
            ResultsError: an unknown objective name.
        """
        names = parse_objectives(objectives)
        values = np.vstack([_objective_values(frame, names) for frame in frames])
        return cls.of_values(values, names)

    @classmethod
    def of_values(
        cls, values: np.ndarray | Sequence[Sequence[float]], objectives: Sequence[str] | str
    ) -> Normalization | None:
        """The scale set by the rows of ``values`` (as :meth:`fit`, without a study frame).

        Args:
            values: ``(n, len(objectives))`` in the metrics' own units; rows holding a NaN are
                left out.
            objectives: the metrics of the columns.

        Returns:
            The normalization, or None when no row is complete.

        Raises:
            ResultsError: an unknown objective name.
        """
        names = parse_objectives(objectives)
        values = np.asarray(values, dtype=np.float64).reshape(-1, len(names))
        values = values[np.isfinite(values).all(axis=1)]
        if not len(values):
            return None
        scales = []
        for column, name in enumerate(names):
            maximize = bool(METRICS[name].maximize)
            log = not maximize and bool(np.all(values[:, column] > 0))
            low, high = values[:, column].min(), values[:, column].max()
            best, worst = (high, low) if maximize else (low, high)
            scales.append(ObjectiveScale(name, maximize, log, float(best), float(worst)))
        return cls(tuple(scales))

    def normalize(self, frame: pd.DataFrame) -> np.ndarray:
        """``(len(frame), d)`` normalized losses; NaN rows for trials that are not complete or
        lack an objective (or hold a value the log scale cannot take)."""
        return self.normalize_values(_objective_values(frame, self.objectives))

    def normalize_values(self, values: np.ndarray) -> np.ndarray:
        """``(n, d)`` values in the objectives' own units as normalized losses; NaN rows where a
        value is missing (or one the log scale cannot take)."""
        values = np.asarray(values, dtype=np.float64)
        columns = [scale.normalize(values[:, i]) for i, scale in enumerate(self.scales)]
        losses = np.column_stack(columns) if columns else np.empty((len(values), 0))
        losses[~np.isfinite(losses).all(axis=1)] = np.nan
        return losses

    def describe(self) -> str:
        """For a figure: each objective's scale and the reference point, in one sentence."""
        scales = "; ".join(scale.describe() for scale in self.scales)
        return (
            "Each objective is scaled to 0 at the best and 1 at the worst value observed across "
            f"the studies shown ({scales}); the reference point is {1 + self.margin:g} in every "
            "objective."
        )


def _objective_values(frame: pd.DataFrame, names: Sequence[str]) -> np.ndarray:
    """``(len(frame), len(names))`` float values, NaN for trials that are not complete or broke
    a constraint (they are on no front)."""
    complete = (frame["state"] == "COMPLETE").to_numpy(dtype=bool) & feasible(frame)
    columns = [
        pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        for name in names
    ]
    values = np.column_stack(columns) if columns else np.empty((len(frame), 0))
    values[~complete] = np.nan
    return values


def hypervolume_progress(frame: pd.DataFrame, normalization: Normalization) -> pd.DataFrame:
    """The normalized hypervolume after each finished trial of one study, in completion order.

    Finished trials are completed, failed and pruned ones: all spent the search's budget, and
    only completed, feasible ones can move the front. Trials refused before training (they
    broke a constraint and never ran) spent nothing and are left out.

    Returns:
        One row per finished trial, ordered by completion time: ``number``, ``finished`` (1, 2,
        ...), ``elapsed_s`` (from the study's first trial start to this trial's end) and
        ``hypervolume`` (a fraction of the reference box, see :class:`Normalization`).
    """
    ended = pd.to_datetime(frame["datetime_complete"])
    ran = frame["status"] != REFUSED
    finished = frame[frame["state"].isin(["COMPLETE", "FAIL", "PRUNED"]) & ended.notna() & ran]
    finished = finished.assign(_ended=ended[finished.index])
    finished = finished.sort_values(["_ended", "number"], kind="stable")
    started = pd.to_datetime(frame["datetime_start"]).min()
    losses = normalization.normalize(finished)
    volume = math.prod(normalization.reference)
    history = hypervolume_history(losses, normalization.reference) / volume
    elapsed = (finished["_ended"] - started).dt.total_seconds().to_numpy(dtype=np.float64)
    return pd.DataFrame(
        {
            "number": finished["number"].to_numpy(dtype=np.int64),
            "finished": np.arange(1, len(finished) + 1),
            "elapsed_s": elapsed,
            "hypervolume": history,
        }
    )
