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
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Sequence
from typing import Any

import numpy as np
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from nas.errors import ConfigError
from results.pareto import non_dominated_rank
from results.schema import METRICS
from searchspace.checks import check_int, check_number

__all__ = ["ParetoASHA"]


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

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as file:
            pickle.dump(self.__dict__, file)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as file:  # written by save() into Tune's experiment
            self.__dict__.update(pickle.load(file))

    # -- the rule --

    def decide(self, trial_id: str, result: dict) -> str:
        """``CONTINUE`` or ``STOP`` for a trial that reported ``result``."""
        progress = result.get(self.time_attr)
        values = [result.get(name) for name in self.objectives]
        if progress is None or not all(_finite(value) for value in values):
            return TrialScheduler.CONTINUE  # nothing to rank yet (e.g. a failed record)
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


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
