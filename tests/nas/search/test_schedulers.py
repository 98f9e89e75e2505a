"""Pareto-aware successive halving: dominated candidates stop, the current front never does."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest
from ray.tune.schedulers import TrialScheduler

from nas.errors import ConfigError
from nas.search.schedulers import ParetoASHA
from results.pareto import non_dominated_rank

OBJECTIVES = ("accuracy", "step_time_norm", "params")
CONTINUE, STOP = TrialScheduler.CONTINUE, TrialScheduler.STOP


class Trial:
    def __init__(self, trial_id: str) -> None:
        self.trial_id = trial_id


def result(epoch: int, accuracy: float, step: float, params: int) -> dict:
    return {
        "training_iteration": epoch,
        "accuracy": accuracy,
        "step_time_norm": step,
        "params": params,
    }


def test_rungs_grow_by_the_reduction_factor():
    assert ParetoASHA(OBJECTIVES, max_t=10, grace_period=1, reduction_factor=3).rungs == [1, 3, 9]
    assert ParetoASHA(OBJECTIVES, max_t=3, grace_period=1, reduction_factor=2).rungs == [1, 2]


def test_a_dominated_trial_stops_once_enough_trials_dominate_it():
    scheduler = ParetoASHA(OBJECTIVES, max_t=4, grace_period=1, reduction_factor=2)
    # Three trials, each better in some objective: all on the first front, all go on.
    for name, values in (("a", (0.9, 2.0, 300)), ("b", (0.8, 1.0, 300)), ("c", (0.7, 1.5, 100))):
        assert scheduler.on_trial_result(None, Trial(name), result(1, *values)) == CONTINUE
    # Behind the first front's 3 trials, quota ceil(4 / 2) = 2: stop.
    assert scheduler.on_trial_result(None, Trial("d"), result(1, 0.6, 2.5, 400)) == STOP
    # On the first front (the most accurate so far), however full the quota: go on.
    assert scheduler.on_trial_result(None, Trial("e"), result(1, 0.95, 3.0, 500)) == CONTINUE
    # Dominated by b alone, but the first front (now 4) fills the quota ceil(6 / 2) = 3: stop.
    assert scheduler.on_trial_result(None, Trial("f"), result(1, 0.75, 1.1, 350)) == STOP
    # Once enough trials sit in the rung, a second-front trial fits: quota ceil(10 / 2) = 5.
    for name in "ghi":
        scheduler.on_trial_result(None, Trial(name), result(1, 0.1, 9.0, 900))
    assert scheduler.on_trial_result(None, Trial("j"), result(1, 0.76, 1.1, 340)) == CONTINUE
    assert scheduler.stopped == 5


def test_each_trial_is_judged_once_per_rung_and_the_last_epoch_always_runs():
    scheduler = ParetoASHA(OBJECTIVES, max_t=4, grace_period=1, reduction_factor=2)
    for name in "abc":
        scheduler.on_trial_result(None, Trial(name), result(1, 0.9, 1.0, 100))
    worst = result(1, 0.1, 9.0, 900)
    assert scheduler.on_trial_result(None, Trial("d"), worst) == STOP
    assert scheduler.on_trial_result(None, Trial("d"), worst) == CONTINUE  # judged already
    assert scheduler.on_trial_result(None, Trial("z"), result(4, 0.0, 9.0, 900)) == CONTINUE


def test_results_without_every_objective_are_not_judged():
    scheduler = ParetoASHA(OBJECTIVES, max_t=4)
    assert scheduler.on_trial_result(None, Trial("a"), {"training_iteration": 1}) == CONTINUE
    failed = {"training_iteration": 1, "accuracy": float("nan"), "step_time_norm": 1.0}
    assert scheduler.on_trial_result(None, Trial("b"), failed) == CONTINUE
    assert scheduler.recorded[1] == {}


def test_a_final_result_is_never_judged_nor_recorded():
    # A reused result arrives as one final report at iteration 1: a fully trained net must not
    # sit in the rung among nets trained for one epoch, nor be stopped.
    scheduler = ParetoASHA(OBJECTIVES, max_t=4, grace_period=1, reduction_factor=2)
    for name in "abc":
        scheduler.on_trial_result(None, Trial(name), result(1, 0.9, 1.0, 100))
    final = {**result(1, 0.1, 9.0, 900), "final": True}
    assert scheduler.on_trial_result(None, Trial("d"), final) == CONTINUE
    assert "d" not in scheduler.recorded[1] and scheduler.stopped == 0


@pytest.mark.parametrize("seed", range(20))
def test_a_trial_on_the_rung_front_is_never_stopped(seed):
    # Property, on random arrivals: every STOP goes to a trial dominated at its rung, and the
    # number continuing stays at least the quota of the rung's first front.
    rng = random.Random(seed)
    scheduler = ParetoASHA(OBJECTIVES, max_t=9, grace_period=1, reduction_factor=3)
    seen: list[tuple[float, float, int]] = []
    for number in itertools.count():
        if number == 40:
            break
        values = (rng.random(), rng.uniform(0.5, 2.0), rng.randrange(10, 1000))
        seen.append(values)
        decision = scheduler.on_trial_result(None, Trial(str(number)), result(1, *values))
        ranks = non_dominated_rank(np.array(seen), [True, False, False])
        if ranks[-1] == 1:
            assert decision == CONTINUE, (seed, number, values)
        if decision == STOP:
            assert ranks[-1] > 1


@pytest.mark.parametrize("seed", range(10))
def test_over_several_rungs_only_dominated_trials_stop(seed):
    # Property, with trials at different epochs interleaved (as concurrent trials report):
    # at every rung, a trial on that rung's front goes on, and a trial stops only when the
    # fronts better than its own hold at least a third of the rung.
    rng = random.Random(seed)
    scheduler = ParetoASHA(OBJECTIVES, max_t=9, grace_period=1, reduction_factor=3)
    at_rung: dict[int, list[tuple]] = {1: [], 3: []}
    running = {}  # trial -> (its epoch so far, its costs, its accuracy per epoch)
    for number in range(60):
        step, params = rng.uniform(0.5, 2.0), rng.randrange(10, 1000)
        running[str(number)] = [0, (step, params), rng.uniform(0.02, 0.1)]
        while running and (len(running) > 4 or number == 59):
            name = rng.choice(sorted(running))
            state = running[name]
            state[0] += 1
            accuracy = min(1.0, state[2] * state[0])
            values = (accuracy, *state[1])
            decision = scheduler.on_trial_result(None, Trial(name), result(state[0], *values))
            if state[0] in at_rung:
                rung = at_rung[state[0]]
                rung.append(values)
                ranks = non_dominated_rank(np.array(rung), [True, False, False])
                better = int((ranks < ranks[-1]).sum())
                assert decision == (STOP if better >= math.ceil(len(rung) / 3) else CONTINUE)
                if ranks[-1] == 1:
                    assert decision == CONTINUE
            else:
                assert decision == CONTINUE  # between rungs, or its last epoch
            if decision == STOP or state[0] == 9:
                del running[name]
    assert scheduler.stopped > 0 and all(len(rung) > 3 for rung in at_rung.values())


def test_save_and_restore_keep_the_rungs(tmp_path):
    scheduler = ParetoASHA(OBJECTIVES, max_t=4, grace_period=1, reduction_factor=2)
    scheduler.on_trial_result(None, Trial("a"), result(1, 0.9, 1.0, 100))
    scheduler.save(str(tmp_path / "state"))
    restored = ParetoASHA(OBJECTIVES, max_t=4)
    restored.restore(str(tmp_path / "state"))
    assert restored.recorded == scheduler.recorded and restored.rungs == scheduler.rungs


@pytest.mark.parametrize(
    "kwargs",
    [
        {"objectives": ("accuracy",)},
        {"objectives": ("accuracy", "speed")},
        {"objectives": OBJECTIVES, "reduction_factor": 1},
        {"objectives": OBJECTIVES, "grace_period": 0},
    ],
)
def test_bad_settings_are_refused(kwargs):
    objectives = kwargs.pop("objectives")
    with pytest.raises(ConfigError):
        ParetoASHA(objectives, **kwargs)
