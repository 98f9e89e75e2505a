"""Non-dominated sorting of trials over any subset of objectives.

:func:`non_dominated_rank` sorts raw loss rows into fronts, vectorized, with one algorithm per
number of objectives (two, three, four or more); ``max_rank`` bounds how many fronts are peeled.
On a study frame, :func:`front_ranks` and :func:`pareto_front` rank the completed, feasible
trials over any metrics they recorded, and :func:`reward_best` picks the reward-best one. The
fronts are Optuna's (the tests check ``study.best_trials``), which sorts only a study's own
objectives and only in private functions. The algorithms and their speed: docs/results.md and
docs/benchmarks.md.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import numpy as np
import pandas as pd

from results.schema import METRICS, parse_objectives

__all__ = [
    "feasible",
    "front_ranks",
    "non_dominated_rank",
    "pareto_front",
    "reward_best",
]


def non_dominated_rank(
    values: np.ndarray | Sequence[Sequence[float]],
    maximize: Sequence[bool],
    *,
    max_rank: int | None = None,
) -> np.ndarray:
    """Pareto front rank of every row: 1 for the non-dominated rows, 2 for the next front, ...

    Row ``a`` dominates row ``b`` when ``a`` is at least as good in every objective and better in
    one. Rows with identical values share a rank (neither dominates the other), as in Optuna.

    Args:
        values: ``(n_rows, n_objectives)`` finite numbers.
        maximize: per objective, True when higher is better.
        max_rank: sort only this many fronts; rows behind them get ``max_rank + 1``.

    Returns:
        ``(n_rows,)`` int64 ranks, 1-based.

    Raises:
        ValueError: values that are not a finite 2-D array matching ``maximize``, or a
            ``max_rank`` below 1.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"values must be a 2-D array, got shape {values.shape}")
    n_rows, n_objectives = values.shape
    if len(maximize) != n_objectives or n_objectives == 0:
        raise ValueError(
            f"maximize has {len(maximize)} entries for {n_objectives} objective columns"
        )
    if max_rank is not None and max_rank < 1:
        raise ValueError(f"max_rank must be at least 1, got {max_rank}")
    if not np.isfinite(values).all():
        raise ValueError("values must be finite (drop failed and running trials first)")
    if n_rows == 0:
        return np.zeros(0, dtype=np.int64)
    loss = np.where(np.asarray(maximize, dtype=bool), -values, values)
    unique, inverse = _unique_lexsorted_rows(loss)
    return _rank_unique(unique, max_rank)[inverse]


def _unique_lexsorted_rows(loss: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows in lexicographic order and, per input row, its index among them.

    Same result as ``np.unique(loss, axis=0, return_inverse=True)``, several times faster:
    ``np.unique`` on rows compares them as opaque byte strings.
    """
    order = np.lexsort(loss.T[::-1])  # lexsort's last key is the primary one
    ordered = loss[order]
    is_new = np.ones(len(loss), dtype=bool)
    is_new[1:] = np.any(ordered[1:] != ordered[:-1], axis=1)
    inverse = np.empty(len(loss), dtype=np.int64)
    inverse[order] = np.cumsum(is_new) - 1
    return ordered[is_new], inverse


def _rank_unique(unique: np.ndarray, max_rank: int | None) -> np.ndarray:
    n_rows, n_objectives = unique.shape
    if n_objectives == 1:
        ranks = np.arange(1, n_rows + 1, dtype=np.int64)
    elif n_objectives == 2:
        ranks = _ranks_2d(unique)
    else:
        ranks = np.zeros(n_rows, dtype=np.int64)
        remaining = np.arange(n_rows)
        rank = 1
        while remaining.size:
            if max_rank is not None and rank > max_rank:
                break
            # A subset of lexsorted unique rows is still lexsorted and unique.
            on_front = _front_mask(unique[remaining])
            ranks[remaining[on_front]] = rank
            remaining = remaining[~on_front]
            rank += 1
        ranks[remaining] = rank
    if max_rank is not None:
        np.minimum(ranks, max_rank + 1, out=ranks)
    return ranks


def _ranks_2d(unique: np.ndarray) -> np.ndarray:
    # Rows are sorted by the first loss, so row j is dominated exactly by the earlier rows whose
    # second loss is <= its own, and its rank is one more than the longest such chain ending
    # before it: patience sorting with bisect_right. A Python loop, because each row's rank
    # depends on the ranks before it; at O(n log n) it beats k vectorized O(n) peels once the
    # number of fronts k passes a few dozen (hundreds of fronts at 100,000 random trials).
    front_minima: list[float] = []  # smallest second loss seen on each front so far
    ranks = np.empty(len(unique), dtype=np.int64)
    for row, second in enumerate(unique[:, 1].tolist()):
        front = bisect.bisect_right(front_minima, second)
        if front == len(front_minima):
            front_minima.append(second)
        else:
            front_minima[front] = second
        ranks[row] = front + 1
    return ranks


def _front_mask(unique: np.ndarray) -> np.ndarray:
    """Non-dominated rows of unique, lexsorted loss rows."""
    n_rows, n_objectives = unique.shape
    if n_objectives == 2:
        running_min = np.minimum.accumulate(unique[:, 1])
        on_front = np.ones(n_rows, dtype=bool)
        on_front[1:] = running_min[1:] < running_min[:-1]
        return on_front
    if n_objectives == 3:
        return _front_mask_3d(unique)
    return _front_mask_pivot(unique)


def _front_mask_3d(unique: np.ndarray) -> np.ndarray:
    # Row j (lexsorted, so every earlier row has a first loss <= its own) is dominated iff some
    # earlier row i has second[i] <= second[j] and third[i] <= third[j]. Divide and conquer on
    # the row index: at level L the rows fall into blocks of 2**(L+1); the left half of each
    # block is tested against its right half, so every pair i < j is tested exactly once over
    # all levels. Within a level, all blocks are done together: sort rows by (block, second),
    # and a running minimum of third over left-half rows, reset per block, answers "the least
    # third among earlier rows with second <= mine" for each right-half row.
    n_rows = len(unique)
    rows = np.arange(n_rows, dtype=np.int64)
    # Position in the order by second loss; ties keep lexsorted order, so an earlier row
    # (a left half) sorts before the rows it may dominate.
    by_second = np.argsort(unique[:, 1], kind="stable")
    second_position = np.empty(n_rows, dtype=np.int64)
    second_position[by_second] = rows
    # Dense integer ranks of the third loss: equal values get equal ranks, all below n_rows.
    third_rank = np.unique(unique[:, 2], return_inverse=True)[1].reshape(-1).astype(np.int64)
    dominated = np.zeros(n_rows, dtype=bool)
    level = 0
    while (1 << level) < n_rows:
        block_shift = level + 1
        # Sorting one packed int64 key is much faster than a stable argsort on two keys.
        packed = np.sort((rows >> block_shift) * n_rows + second_position)
        order = by_second[packed % n_rows]
        block = order >> block_shift
        is_left = ((order >> level) & 1) == 0
        # Segmented running minimum in one pass: each block's values are lifted by an offset
        # that falls with the block number, so an earlier block never lowers a later block's
        # minimum; right-half rows carry the sentinel n_rows ("no left row yet").
        offset = ((n_rows >> block_shift) + 1 - block) * (n_rows + 1)
        value = offset + np.where(is_left, third_rank[order], n_rows)
        least_third = np.minimum.accumulate(value) - offset
        right = ~is_left
        right_rows = order[right]
        dominated[right_rows] |= least_third[right] <= third_rank[right_rows]
        level += 1
    return ~dominated


def _front_mask_pivot(unique: np.ndarray) -> np.ndarray:
    # The first remaining row is non-dominated (any dominator sorts earlier and would have
    # removed it); it removes every later row that is no better in any remaining objective.
    rest = unique[:, 1:]
    on_front = np.zeros(len(unique), dtype=bool)
    remaining = np.arange(len(unique))
    while remaining.size:
        pivot = remaining[0]
        on_front[pivot] = True
        remaining = remaining[np.any(rest[remaining] < rest[pivot], axis=1)]
    return on_front


def feasible(frame: pd.DataFrame) -> np.ndarray:
    """Per trial, whether it broke none of its search's constraints (``violations`` empty;
    trials of a search without constraints, or of an older effnas, are all feasible)."""
    violations = frame["violations"] if "violations" in frame else pd.Series("", frame.index)
    return (violations.fillna("") == "").to_numpy(dtype=bool)


def _rankable(frame: pd.DataFrame, objectives: Sequence[str]) -> np.ndarray:
    """Rows that take part in sorting: completed, feasible trials with every objective."""
    mask = (frame["state"] == "COMPLETE").to_numpy(dtype=bool, copy=True) & feasible(frame)
    for name in objectives:
        mask &= np.isfinite(_float_column(frame, name))
    return mask


def _float_column(frame: pd.DataFrame, name: str) -> np.ndarray:
    """A metric column as float64, NaN where missing (``Int64`` columns hold ``<NA>``)."""
    return pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def front_ranks(
    frame: pd.DataFrame, objectives: Sequence[str] | str, *, max_rank: int | None = None
) -> pd.Series:
    """Front rank (1 = Pareto front) of every completed, feasible trial in a study frame.

    Args:
        frame: a frame from :func:`results.load_study_frame` (needs ``state`` and the objective
            columns).
        objectives: metric names; each one's direction comes from :data:`results.METRICS`.
        max_rank: sort only this many fronts; trials behind them get ``max_rank + 1``.

    Returns:
        An ``Int64`` series on ``frame.index``; ``<NA>`` for trials that are not complete, lack
        one of the objectives (failed, running, pruned) or broke a constraint.

    Raises:
        ResultsError: an unknown objective name.
    """
    names = parse_objectives(objectives)
    ranks = pd.Series(pd.NA, index=frame.index, dtype="Int64", name="front")
    rankable = _rankable(frame, names)
    if rankable.any():
        values = np.column_stack([_float_column(frame, name)[rankable] for name in names])
        maximize = [METRICS[name].maximize for name in names]
        ranks[rankable] = non_dominated_rank(values, maximize, max_rank=max_rank)
    return ranks


def pareto_front(frame: pd.DataFrame, objectives: Sequence[str] | str) -> pd.DataFrame:
    """The non-dominated trials over ``objectives``, best first in the first objective.

    Only completed, feasible trials (:func:`feasible`) with every objective recorded take part.
    Trials with identical objective values are all on the front, as in Optuna's
    ``study.best_trials`` (which also leaves out trials that broke a constraint).

    Raises:
        ResultsError: an unknown objective name.
    """
    names = parse_objectives(objectives)
    ranks = front_ranks(frame, names, max_rank=1)
    front = frame[(ranks == 1).fillna(False).to_numpy(dtype=bool)]
    first = names[0]
    return front.sort_values(
        [first, "number"], ascending=[not METRICS[first].maximize, True], kind="stable"
    )


def reward_best(frame: pd.DataFrame) -> pd.Series | None:
    """The completed, feasible trial with the highest reward (the first on a tie), or None."""
    reward = pd.to_numeric(frame["reward"], errors="coerce")
    candidates = reward[(frame["state"] == "COMPLETE") & feasible(frame) & reward.notna()]
    if candidates.empty:
        return None
    return frame.loc[candidates.idxmax()]
