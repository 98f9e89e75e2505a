"""Early stopping for a Pareto search: multi-objective asynchronous successive halving.

:class:`ParetoASHA` is a Tune scheduler: ASHA's asynchronous successive halving with MO-ASHA's
promotion rule. When a trial reaches a rung (epoch ``grace_period * reduction_factor**k``), the
trials recorded there are put in one order (:func:`promotion_order`: feasible trials by
non-dominated rank, each front as an epsilon-net, then the infeasible ones by violation) and the
trial goes on if it is among the first ``ceil(n / reduction_factor)``; a stopped trial ends as
``TERMINATED`` and the search records it as ``PRUNED``. :class:`SchedulerState` is the callback
that carries the scheduler's state (ASHA's too) in Tune's experiment checkpoint, which saves no
scheduler, and puts it back on a resume. The rule, its sources and what it guarantees:
docs/searching.md, "Early stopping".
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from ray.tune import Callback
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from nas.errors import ConfigError
from nas.search.constraints import Constraints
from results.hypervolume import Normalization
from results.pareto import non_dominated_rank
from results.schema import METRICS
from searchspace.checks import check_int, check_number, is_finite_number
from searchspace.files import atomic_write

__all__ = ["ParetoASHA", "SchedulerState", "epsilon_net", "promotion_order"]


def epsilon_net(points: np.ndarray, count: int | None = None) -> np.ndarray:
    """An epsilon-net order of ``points`` (Clarkson 2006, "Nearest-neighbor searching and metric
    space dimensions"; the order MO-ASHA ranks a front in, Salinas et al. 2021).

    Row 0 comes first; each next row is the one whose Euclidean distance to the nearest row
    already placed is the largest (on a tie, the lowest index). Every prefix of the order covers
    the points: each lies within the distance at which the prefix's last row was placed.

    Args:
        points: ``(n, d)`` finite coordinates, ``n >= 1``.
        count: place only this many rows (default all).

    Returns:
        ``(min(count, n),)`` int64 row indices, in order.

    Raises:
        ValueError: ``points`` that are not a non-empty, finite 2-D array.
    """
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or not len(points) or not np.isfinite(points).all():
        raise ValueError(f"points must be a non-empty, finite 2-D array, got shape {points.shape}")
    count = len(points) if count is None else min(count, len(points))
    order = [0]
    nearest = np.linalg.norm(points - points[0], axis=1)  # to the nearest placed row
    nearest[0] = -np.inf
    while len(order) < count:
        farthest = int(np.argmax(nearest))
        order.append(farthest)
        np.minimum(nearest, np.linalg.norm(points - points[farthest], axis=1), out=nearest)
        nearest[order] = -np.inf
    return np.array(order, dtype=np.int64)


def promotion_order(
    values: np.ndarray | Sequence[Sequence[float]],
    objectives: Sequence[str],
    violations: np.ndarray | Sequence[float] | None = None,
    *,
    count: int | None = None,
) -> np.ndarray:
    """The trials of one rung in MO-ASHA's promotion order, best first (see the module).

    Trials without a violation come first, by non-dominated rank (:mod:`results.pareto`), each
    front in epsilon-net order (:func:`epsilon_net`) started at its best value of the first
    objective (accuracy in a Pareto search; on a tie, the trial better in the next ones), on
    the objectives normalized over that front (:class:`results.hypervolume.Normalization`: each
    from 0 at its best to 1 at its worst, positive costs on a log scale) so that no objective's
    units outweigh another's. Then the trials with a violation, least first (as Optuna's
    constrained NSGA-II compares infeasible trials); ties keep the rows' order.

    Why an epsilon-net and not NSGA-II's crowding distance: crowding distance puts every
    objective's extremes first (infinite distance), with three objectives up to six trials,
    more than a share of three at a rung of nine, and always among them the fastest and the
    smallest net whatever their accuracy; the epsilon-net puts exactly one trial first, the most
    accurate, and a cheap net goes on only as far as no trial ahead lies near it.

    Args:
        values: ``(n, len(objectives))`` finite objective values, one row per trial.
        objectives: the metrics of the columns (directions from :data:`results.schema.METRICS`).
        violations: ``(n,)`` each trial's total constraint violation (0: feasible); default all 0.
        count: order only the first ``count`` trials (fronts behind them are not sorted).

    Returns:
        ``(min(count, n),)`` int64 row indices, best first.

    Raises:
        ValueError: values that are not finite and ``(n, len(objectives))``, violations that do
            not match them.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] != len(objectives) or not np.isfinite(values).all():
        raise ValueError(
            f"values must be finite and (n, {len(objectives)}), got shape {values.shape}"
        )
    n_rows = len(values)
    violations = np.zeros(n_rows) if violations is None else np.asarray(violations, dtype=float)
    if violations.shape != (n_rows,):
        raise ValueError(f"violations must be ({n_rows},), got shape {violations.shape}")
    count = n_rows if count is None else min(count, n_rows)
    feasible = np.flatnonzero(violations <= 0)
    maximize = [METRICS[name].maximize for name in objectives]
    # Each front holds a trial at least, so the first ``count`` fronts are all that can be placed.
    ranks = (
        non_dominated_rank(values[feasible], maximize, max_rank=max(count, 1))
        if len(feasible)
        else np.zeros(0, dtype=np.int64)
    )
    order: list[int] = []
    for rank in np.unique(ranks):
        if len(order) >= count:
            break
        front = feasible[ranks == rank]
        order.extend(front[_epsilon_net_of_front(values[front], objectives, count - len(order))])
    infeasible = np.flatnonzero(violations > 0)
    order.extend(infeasible[np.argsort(violations[infeasible], kind="stable")].tolist())
    return np.array(order[:count], dtype=np.int64)


def _epsilon_net_of_front(values: np.ndarray, objectives: Sequence[str], count: int) -> np.ndarray:
    """The first ``count`` rows of one front's epsilon-net order, started at its most accurate
    row (see :func:`promotion_order`)."""
    # Each objective from 0 at its best on the front to 1 at its worst, positive costs on a log
    # scale, as results.hypervolume puts them; never None, the values being finite.
    losses = Normalization.of_values(values, objectives).normalize_values(values)
    start = int(np.lexsort(losses.T[::-1])[0])  # least loss in the first objective, then the next
    rows = np.array([start, *(i for i in range(len(values)) if i != start)])
    return rows[epsilon_net(losses[rows], count)]


class ParetoASHA(FIFOScheduler):
    """Multi-objective asynchronous successive halving, MO-ASHA (see the module).

    Args:
        objectives: the metrics ranked, by name (their directions come from
            :data:`results.schema.METRICS`); the first one starts a front's order (accuracy).
        constraints: the search's constraints; a trial whose result at a rung breaks one of the
            bounds measured by then (:meth:`Constraints.of_result`: step time, peak memory; not
            the accuracy floor, which binds only a finished trial) ranks below every trial that
            breaks none.
        time_attr: the result key that counts progress (Tune's ``training_iteration``: one per
            reported epoch).
        max_t: the most ``time_attr`` a trial runs; rungs lie below it.
        grace_period: the first rung.
        reduction_factor: ``ceil(1 / reduction_factor)`` of the trials at a rung go on.

    Raises:
        ConfigError: fewer than two objectives or an unknown one, or a bad rung setting.

    A result whose ``final`` key is true is a trial's last (the search's closing record, or a
    result reused from an earlier trial, which arrives as one final report): it is never judged
    nor recorded at a rung, where it would stand for a fully trained net among partly trained
    ones.
    """

    def __init__(
        self,
        objectives: Sequence[str],
        *,
        constraints: Constraints | None = None,
        time_attr: str = "training_iteration",
        max_t: int = 100,
        grace_period: int = 1,
        reduction_factor: float = 3,
    ) -> None:
        super().__init__()
        unknown = [name for name in objectives if name not in METRICS]
        if len(objectives) < 2 or unknown:
            raise ConfigError(f"objectives must be 2 or more known metrics, got {objectives!r}")
        check_int("max_t", max_t, 1, ConfigError)
        check_int("grace_period", grace_period, 1, ConfigError, maximum=max_t)
        check_number("reduction_factor", reduction_factor, 1.0, error=ConfigError, above=True)
        self.objectives = tuple(objectives)
        self.constraints = constraints or Constraints()
        self.time_attr = time_attr
        self.max_t = max_t
        self.reduction_factor = reduction_factor
        rungs = []
        milestone = float(grace_period)
        while milestone < max_t:
            rungs.append(milestone)
            milestone *= reduction_factor
        self.rungs = rungs
        # rung -> {trial id: objective values at that rung}
        self.recorded: dict[float, dict[str, tuple[float, ...]]] = {rung: {} for rung in rungs}
        # rung -> {trial id: its total constraint violation there; 0: feasible}
        self.violations: dict[float, dict[str, float]] = {rung: {} for rung in rungs}
        self.stopped = 0

    # -- Tune's scheduler interface --

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return True  # the objectives and their directions are this scheduler's own

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        decision = self.decide(trial.trial_id, result)
        if decision == TrialScheduler.STOP:
            self.stopped += 1
        return decision

    # As in ASHA, what a trial recorded at a rung stays there after it ends or is stopped: later
    # trials are judged against everything that reached the rung.

    def debug_string(self) -> str:
        sizes = ", ".join(f"{rung:g}: {len(rec)}" for rung, rec in self.recorded.items())
        return f"ParetoASHA: {self.stopped} stopped; trials per rung {{{sizes}}}"

    def summary(self) -> str:
        """One line for the end of a search: what was stopped, and the rungs."""
        rungs = ", ".join(
            f"epoch {rung:g}: {len(got)} judged" for rung, got in self.recorded.items()
        )
        return (
            f"early stopping (Pareto ASHA on {', '.join(self.objectives)}): {self.stopped} trials "
            f"stopped; {rungs or 'no rung below the last epoch'}"
        )

    def save(self, checkpoint_path: str) -> None:
        atomic_write(checkpoint_path, lambda file: pickle.dump(self.__dict__, file))

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as file:  # written by save() into Tune's experiment
            self.__dict__.update(pickle.load(file))

    # -- the rule --

    def decide(self, trial_id: str, result: dict) -> str:
        """``CONTINUE`` or ``STOP`` for a trial that reported ``result``."""
        progress = result.get(self.time_attr)
        values = [result.get(name) for name in self.objectives]
        if result.get("final") or progress is None or not all(is_finite_number(v) for v in values):
            return TrialScheduler.CONTINUE  # a last result, or nothing to rank (a failure)
        if progress >= self.max_t:
            return TrialScheduler.CONTINUE  # the trial's last epoch: let it finish
        for rung in reversed(self.rungs):  # the highest rung reached and not yet judged
            if progress >= rung:
                if trial_id in self.recorded[rung]:
                    return TrialScheduler.CONTINUE
                self.recorded[rung][trial_id] = tuple(float(v) for v in values)
                excess = self.constraints.of_result(result).values()
                self.violations[rung][trial_id] = sum(max(0.0, value) for value in excess)
                if trial_id in self.leaders(rung):
                    return TrialScheduler.CONTINUE
                return TrialScheduler.STOP
        return TrialScheduler.CONTINUE

    def leaders(self, rung: float) -> list[str]:
        """The trials recorded at ``rung`` that are within its share now, best first: the first
        ``ceil(n / reduction_factor)`` of its ``n`` in :func:`promotion_order`."""
        ids = list(self.recorded[rung])
        if not ids:
            return []
        keep = math.ceil(len(ids) / self.reduction_factor)
        values = np.array([self.recorded[rung][i] for i in ids])
        violations = [self.violations[rung][i] for i in ids]
        order = promotion_order(values, self.objectives, violations, count=keep)
        return [ids[i] for i in order]


class SchedulerState(Callback):
    """A Tune callback that keeps a scheduler's state in the experiment (see the module).

    Tune pickles the scheduler and the callbacks together when a search starts, so after
    ``Tuner.restore`` this callback still holds the scheduler Tune runs, and
    :meth:`set_state` (which Tune calls with the last saved state) puts its rungs back.

    Args:
        scheduler: a scheduler with Tune's ``save(path)`` and ``restore(path)`` (ASHA,
            :class:`ParetoASHA`).
        log: where the line said at the end of the experiment goes.
    """

    def __init__(self, scheduler: TrialScheduler, log: Callable[[str], None]) -> None:
        self.scheduler = scheduler
        self.log = log

    def get_state(self) -> dict | None:
        # Tune calls this at every save of the experiment (every controller step). What the
        # schedulers' own save(path) writes is the pickle of their __dict__ (Tune's ASHA and
        # ParetoASHA alike), so take those bytes directly instead of through a temporary file.
        return {"scheduler": pickle.dumps(self.scheduler.__dict__)}

    def set_state(self, state: dict) -> None:
        self.scheduler.__dict__.update(pickle.loads(state["scheduler"]))

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        summary = getattr(self.scheduler, "summary", None)
        if summary is None:  # Tune's ASHA: the first line of its several
            first = self.scheduler.debug_string().splitlines()[0]
            self.log(f"early stopping (ASHA on the reward): {first}")
        else:
            self.log(summary())
