"""Early stopping for a Pareto search: asynchronous successive halving by non-dominated rank.

Tune's ASHA (and Optuna's pruners) rank candidates by one number, so they cannot stop candidates
of a multi-objective search (Optuna issues #3450, #2792). :class:`ParetoASHA` is ASHA's
asynchronous successive halving (Li et al. 2020) with MO-ASHA's promotion rule (Schmucker et al.
2021, "Multi-objective Asynchronous Successive Halving"): when a trial reaches a rung (epoch
``grace_period * reduction_factor**k``), its objectives there (accuracy so far, and the costs,
known from the start) are ranked by non-dominated sorting among every trial recorded at that rung;
it goes on if the fronts better than its own hold fewer than ``1 / reduction_factor`` of them,
else it is stopped. A trial on the rung's first front is therefore never stopped, however many
share it; a dominated trial is stopped once enough trials dominate it.

It is a Tune scheduler (``ray.tune.schedulers.FIFOScheduler``), so Tune runs it as it runs ASHA:
a stopped trial ends as ``TERMINATED`` with its last result, which the search records as
``PRUNED`` with the figures it reached.

Tune (2.x) saves a searcher and the callbacks with its experiment, but not the scheduler: a
resumed experiment gets the scheduler as it was pickled when the search started, with empty
rungs. :class:`SchedulerState` is the callback that carries the scheduler's state (ASHA's too)
in Tune's experiment checkpoint and puts it back on a resume, and says at the end what it
stopped.
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
from results.pareto import non_dominated_rank
from results.schema import METRICS
from searchspace.checks import check_int, check_number, is_finite_number
from searchspace.files import atomic_write

__all__ = ["ParetoASHA", "SchedulerState"]


class ParetoASHA(FIFOScheduler):
    """Asynchronous successive halving that promotes by non-dominated rank (see the module).

    Args:
        objectives: the metrics ranked, by name (their directions come from
            :data:`results.schema.METRICS`).
        time_attr: the result key that counts progress (Tune's ``training_iteration``: one per
            reported epoch).
        max_t: the most ``time_attr`` a trial runs; rungs lie below it.
        grace_period: the first rung.
        reduction_factor: keep about ``1 / reduction_factor`` of the trials at each rung.

    A result whose ``final`` key is true is a trial's last (the search's closing record, or a
    result reused from an earlier trial, which arrives as one final report): it is never judged
    nor recorded at a rung, where it would stand for a fully trained net among partly trained
    ones.
    """

    def __init__(
        self,
        objectives: Sequence[str],
        *,
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
        self.maximize = [METRICS[name].maximize for name in self.objectives]
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
                return self._judge(rung, trial_id, tuple(float(v) for v in values))
        return TrialScheduler.CONTINUE

    def _judge(self, rung: float, trial_id: str, values: tuple[float, ...]) -> str:
        recorded = self.recorded[rung]
        recorded[trial_id] = values
        ids = list(recorded)
        ranks = non_dominated_rank(np.array([recorded[i] for i in ids]), self.maximize)
        mine = ranks[ids.index(trial_id)]
        keep = math.ceil(len(ids) / self.reduction_factor)
        better = int((ranks < mine).sum())
        return TrialScheduler.CONTINUE if better < keep else TrialScheduler.STOP


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
