"""MO-ASHA: exactly a rung's share goes on, infeasible trials last, the most accurate never stops.

The rule is checked against :func:`reference_order`, written here from the definitions alone
(pairwise dominance, a greedy farthest-point order, Python loops), on random arrivals.
"""

from __future__ import annotations

import math
import pickle
import random

import numpy as np
import pytest
from ray.tune.schedulers import TrialScheduler
from scipy.spatial.distance import cdist

from nas.errors import ConfigError
from nas.search.constraints import Constraints
from nas.search.schedulers import ParetoASHA, SchedulerState, epsilon_net, promotion_order
from results.pareto import non_dominated_rank

OBJECTIVES = ("accuracy", "step_time_norm", "params")
CONTINUE, STOP = TrialScheduler.CONTINUE, TrialScheduler.STOP
#: A measured bound the random trials break about a third of the time.
SLOW = Constraints({"max_step_time_norm": 1.5})


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


def reference_order(values: list[tuple], violations: list[float]) -> list[int]:
    """MO-ASHA's promotion order from the definitions: feasible trials front by front (each
    front found by testing every pair for dominance), a front ordered greedily from its most
    accurate trial by the largest distance to the nearest trial placed, on (-accuracy,
    log10 step time, log10 parameters) scaled from 0 to 1 over the front; then the infeasible
    trials by total violation. Ties go to the lower index."""
    losses = [
        (-accuracy, math.log10(step), math.log10(params)) for accuracy, step, params in values
    ]

    def dominates(i: int, j: int) -> bool:
        pairs = list(zip(losses[i], losses[j], strict=True))
        return all(a <= b for a, b in pairs) and any(a < b for a, b in pairs)

    remaining = [i for i in range(len(values)) if violations[i] <= 0]
    order: list[int] = []
    while remaining:
        front = [j for j in remaining if not any(dominates(i, j) for i in remaining)]
        lows = [min(losses[j][k] for j in front) for k in range(3)]
        spans = [max(losses[j][k] for j in front) - lows[k] or 1.0 for k in range(3)]
        scaled = {j: [(losses[j][k] - lows[k]) / spans[k] for k in range(3)] for j in front}
        placed = [min(front, key=lambda j: (scaled[j], j))]
        while len(placed) < len(front):
            rest = [j for j in front if j not in placed]
            nearest = {j: min(math.dist(scaled[j], scaled[i]) for i in placed) for j in rest}
            placed.append(max(rest, key=lambda j: (nearest[j], -j)))
        order += placed
        remaining = [j for j in remaining if j not in front]
    infeasible = [i for i in range(len(values)) if violations[i] > 0]
    return order + sorted(infeasible, key=lambda i: (violations[i], i))


def violation(constraints: Constraints, values: tuple) -> float:
    excess = constraints.of_result(result(1, *values)).values()
    return sum(max(0.0, value) for value in excess)


def test_rungs_grow_by_the_reduction_factor():
    assert ParetoASHA(OBJECTIVES, max_t=10, grace_period=1, reduction_factor=3).rungs == [1, 3, 9]
    assert ParetoASHA(OBJECTIVES, max_t=3, grace_period=1, reduction_factor=2).rungs == [1, 2]


def test_epsilon_net_places_the_farthest_point_next():
    # By hand, on a line: 0 first; 10 is farthest from it; then 3 (3 from 0) before 1 (1 from 0).
    assert epsilon_net(np.array([[0.0], [1.0], [3.0], [10.0]])).tolist() == [0, 3, 2, 1]
    # Duplicates are 0 away: placed last; count cuts the order.
    points = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0], [1.0, 0.0]])
    assert epsilon_net(points).tolist() == [0, 2, 3, 1]
    assert epsilon_net(points, count=2).tolist() == [0, 2]
    with pytest.raises(ValueError):
        epsilon_net(np.array([[0.0], [np.nan]]))


@pytest.mark.parametrize("seed", range(5))
def test_epsilon_net_matches_a_brute_force_farthest_point_order(seed):
    points = np.random.default_rng(seed).random((40, 3))
    distances = cdist(points, points)  # every pair, computed once by SciPy
    order = [0]
    while len(order) < len(points):
        rest = [j for j in range(len(points)) if j not in order]
        order.append(max(rest, key=lambda j: distances[j, order].min()))
    assert epsilon_net(points).tolist() == order


def test_nine_mutually_non_dominated_trials_keep_three_led_by_the_most_accurate():
    # The probe: each net is more accurate, slower and larger than the one before, so no
    # trial dominates another. The old rule kept all nine (one front); a third go on now.
    nine = [(0.5 + 0.05 * i, 0.5 + 0.2 * i, 1000 * (i + 1)) for i in range(9)]
    assert (non_dominated_rank(np.array(nine), [True, False, False]) == 1).all()
    scheduler = ParetoASHA(OBJECTIVES, max_t=9, grace_period=1, reduction_factor=3)
    decisions = [
        scheduler.on_trial_result(None, Trial(str(i)), result(1, *values))
        for i, values in enumerate(nine)
    ]
    leaders = scheduler.leaders(1)
    assert len(leaders) == 3 and leaders[0] == "8"  # the most accurate first
    assert leaders == [str(i) for i in reference_order(nine, [0.0] * 9)[:3]]
    # Asynchronous, as ASHA: each trial was judged on arrival, against the trials there then;
    # here each arrival was the most accurate so far, so none was stopped.
    assert decisions == [CONTINUE] * 9
    # Arriving least accurate first instead, a trial goes on only within the share of its time.
    scheduler = ParetoASHA(OBJECTIVES, max_t=9, grace_period=1, reduction_factor=3)
    decisions = []
    for i, values in reversed(list(enumerate(nine))):
        decisions.append(scheduler.on_trial_result(None, Trial(str(i)), result(1, *values)))
        seen = nine[i:]
        kept = reference_order(seen, [0.0] * len(seen))[: math.ceil(len(seen) / 3)]
        assert (decisions[-1] == CONTINUE) == (0 in kept)
    assert decisions.count(STOP) > 0 and scheduler.leaders(1) == leaders


def test_the_fastest_net_stops_when_its_accuracy_is_poor():
    scheduler = ParetoASHA(OBJECTIVES, max_t=4, grace_period=1, reduction_factor=2)
    assert scheduler.on_trial_result(None, Trial("a"), result(1, 0.9, 2.0, 2000)) == CONTINUE
    # Smallest, on the front; the share of two is one, the most accurate: stop.
    assert scheduler.on_trial_result(None, Trial("b"), result(1, 0.5, 1.0, 1000)) == STOP
    assert scheduler.on_trial_result(None, Trial("d"), result(1, 0.4, 2.5, 2500)) == STOP
    # The fastest net, on the front (the old rule, and crowding distance, always kept it), near
    # b but nearer a: b comes before it, and the share of four is two.
    assert scheduler.on_trial_result(None, Trial("c"), result(1, 0.45, 0.95, 1500)) == STOP
    assert scheduler.leaders(1) == ["a", "b"] and scheduler.stopped == 3


def test_infeasible_trials_rank_below_every_feasible_one():
    scheduler = ParetoASHA(OBJECTIVES, constraints=SLOW, max_t=4, reduction_factor=2)
    # The most accurate and the fastest of all, but slower than the bound: last.
    assert scheduler.on_trial_result(None, Trial("slow"), result(1, 0.95, 1.8, 500)) == CONTINUE
    assert scheduler.on_trial_result(None, Trial("ok"), result(1, 0.2, 1.0, 900)) == CONTINUE
    assert scheduler.leaders(1) == ["ok"]
    assert scheduler.on_trial_result(None, Trial("slower"), result(1, 0.99, 3.0, 100)) == STOP
    assert scheduler.on_trial_result(None, Trial("ok2"), result(1, 0.1, 1.2, 950)) == CONTINUE
    # The least violation first among the infeasible: 1.8 / 1.5 - 1 before 3.0 / 1.5 - 1.
    order = promotion_order(
        list(scheduler.recorded[1].values()), OBJECTIVES, list(scheduler.violations[1].values())
    )
    assert [list(scheduler.recorded[1])[i] for i in order] == ["ok", "ok2", "slow", "slower"]
    assert scheduler.violations[1]["slow"] == pytest.approx(0.2)
    # The accuracy floor binds a finished trial only: at a rung it was still climbing.
    floor = ParetoASHA(OBJECTIVES, constraints=Constraints({"min_accuracy": 0.9}), max_t=4)
    floor.on_trial_result(None, Trial("a"), result(1, 0.1, 1.0, 100))
    assert floor.violations[1] == {"a": 0.0}


def test_a_measured_bound_not_in_the_result_is_not_judged():
    # Peak memory is reported only where it is measured (a GPU): without it nothing is broken.
    scheduler = ParetoASHA(OBJECTIVES, constraints=Constraints({"max_peak_memory_mb": 100}))
    scheduler.on_trial_result(None, Trial("cpu"), result(1, 0.5, 1.0, 100))
    scheduler.on_trial_result(
        None, Trial("gpu"), {**result(1, 0.5, 1.0, 100), "peak_memory_mb": 150}
    )
    assert scheduler.violations[1] == {"cpu": 0.0, "gpu": pytest.approx(0.5)}


def test_each_trial_is_judged_once_per_rung_and_the_last_epoch_always_runs():
    scheduler = ParetoASHA(OBJECTIVES, max_t=4, grace_period=1, reduction_factor=2)
    for name, accuracy in zip("abc", (0.9, 0.8, 0.7), strict=True):
        scheduler.on_trial_result(None, Trial(name), result(1, accuracy, 1.0, 100))
    worst = result(1, 0.1, 9.0, 900)
    assert scheduler.on_trial_result(None, Trial("d"), worst) == STOP
    assert scheduler.on_trial_result(None, Trial("d"), worst) == CONTINUE  # judged already
    assert scheduler.on_trial_result(None, Trial("z"), result(4, 0.0, 9.0, 900)) == CONTINUE


def test_results_without_every_objective_are_not_judged():
    scheduler = ParetoASHA(OBJECTIVES, max_t=4)
    assert scheduler.on_trial_result(None, Trial("a"), {"training_iteration": 1}) == CONTINUE
    failed = {"training_iteration": 1, "accuracy": float("nan"), "step_time_norm": 1.0}
    assert scheduler.on_trial_result(None, Trial("b"), failed) == CONTINUE
    assert scheduler.recorded[1] == {} and scheduler.leaders(1) == []


def test_a_final_result_is_never_judged_nor_recorded():
    # A reused result arrives as one final report at iteration 1: a fully trained net must not
    # sit in the rung among nets trained for one epoch, nor be stopped.
    scheduler = ParetoASHA(OBJECTIVES, max_t=4, grace_period=1, reduction_factor=2)
    for name, accuracy in zip("abc", (0.7, 0.8, 0.9), strict=True):
        scheduler.on_trial_result(None, Trial(name), result(1, accuracy, 1.0, 100))
    final = {**result(1, 0.1, 9.0, 900), "final": True}
    assert scheduler.on_trial_result(None, Trial("d"), final) == CONTINUE
    assert "d" not in scheduler.recorded[1] and scheduler.stopped == 0


def random_values(rng: random.Random) -> tuple[float, float, int]:
    return rng.random(), rng.uniform(0.5, 2.0), rng.randrange(10, 1000)


@pytest.mark.parametrize("seed", range(20))
def test_exactly_the_share_goes_on_as_the_reference_orders_it(seed):
    # Property, on random arrivals at one rung, with a bound about a third break: a trial goes
    # on exactly when the reference puts it within the first ceil(n / 3) of the n there; so the
    # most accurate feasible trial always goes on, a trial on the feasible first front stops
    # only behind a full share of that front, and an infeasible one only behind the feasible.
    rng = random.Random(seed)
    scheduler = ParetoASHA(OBJECTIVES, constraints=SLOW, max_t=9, reduction_factor=3)
    seen: list[tuple[float, float, int]] = []
    for number in range(40):
        values = random_values(rng)
        seen.append(values)
        decision = scheduler.on_trial_result(None, Trial(str(number)), result(1, *values))
        violations = [violation(SLOW, v) for v in seen]
        keep = math.ceil(len(seen) / 3)
        order = reference_order(seen, violations)
        assert scheduler.leaders(1) == [str(i) for i in order[:keep]]
        assert decision == (CONTINUE if number in order[:keep] else STOP), (seed, number)
        feasible = [i for i in range(len(seen)) if violations[i] <= 0]
        if feasible and number == max(feasible, key=lambda i: seen[i][0]):
            assert decision == CONTINUE
        if decision == STOP and violations[number] <= 0:
            ranks = non_dominated_rank(np.array([seen[i] for i in feasible]), [True, False, False])
            ahead = order[: order.index(number)]
            if ranks[feasible.index(number)] == 1:
                assert sum(ranks[feasible.index(i)] == 1 for i in ahead) >= keep
    assert 0 < scheduler.stopped < 40


@pytest.mark.parametrize("seed", range(10))
def test_over_several_rungs_each_rung_keeps_its_own_share(seed):
    # Property, with trials at different epochs interleaved (as concurrent trials report): at
    # every rung, a trial goes on exactly when it is within that rung's share as it stands.
    rng = random.Random(seed)
    scheduler = ParetoASHA(OBJECTIVES, constraints=SLOW, max_t=9, reduction_factor=3)
    at_rung: dict[int, list[tuple]] = {1: [], 3: []}
    running = {}  # trial -> (its epoch so far, its costs, its accuracy per epoch)
    for number in range(60):
        step, params = rng.uniform(0.5, 2.0), rng.randrange(10, 1000)
        running[str(number)] = [0, (step, params), rng.uniform(0.02, 0.1)]
        while running and (len(running) > 4 or number == 59):
            name = rng.choice(sorted(running))
            state = running[name]
            state[0] += 1
            values = (min(1.0, state[2] * state[0]), *state[1])
            decision = scheduler.on_trial_result(None, Trial(name), result(state[0], *values))
            if state[0] in at_rung:
                rung = at_rung[state[0]]
                rung.append(values)
                order = reference_order(rung, [violation(SLOW, v) for v in rung])
                kept = order[: math.ceil(len(rung) / 3)]
                assert decision == (CONTINUE if len(rung) - 1 in kept else STOP)
            else:
                assert decision == CONTINUE  # between rungs, or its last epoch
            if decision == STOP or state[0] == 9:
                del running[name]
    assert scheduler.stopped > 0 and all(len(rung) > 3 for rung in at_rung.values())


def test_save_and_restore_keep_the_rungs(tmp_path):
    rng = random.Random(0)
    scheduler = ParetoASHA(OBJECTIVES, constraints=SLOW, max_t=4, reduction_factor=2)
    for number in range(6):
        scheduler.on_trial_result(None, Trial(str(number)), result(1, *random_values(rng)))
    scheduler.save(str(tmp_path / "state"))
    restored = ParetoASHA(OBJECTIVES, max_t=4)
    restored.restore(str(tmp_path / "state"))
    assert restored.recorded == scheduler.recorded and restored.rungs == scheduler.rungs
    assert restored.violations == scheduler.violations and restored.constraints == SLOW
    # Through Tune's experiment checkpoint (the callback's state, pickled with the experiment),
    # into the scheduler as Tune pickled it at the start: the same decisions follow.
    fresh = ParetoASHA(OBJECTIVES, constraints=SLOW, max_t=4, reduction_factor=2)
    state = pickle.loads(pickle.dumps(SchedulerState(scheduler, print).get_state()))
    SchedulerState(fresh, print).set_state(state)
    for number in range(6, 12):
        values = result(1, *random_values(rng))
        expected = scheduler.on_trial_result(None, Trial(str(number)), values)
        assert fresh.on_trial_result(None, Trial(str(number)), values) == expected
    assert fresh.leaders(1) == scheduler.leaders(1) and fresh.stopped == scheduler.stopped


def test_promotion_order_refuses_bad_input():
    with pytest.raises(ValueError, match="finite"):
        promotion_order([[0.5, 1.0]], OBJECTIVES)
    with pytest.raises(ValueError, match="violations"):
        promotion_order([[0.5, 1.0, 10]], OBJECTIVES, [0.0, 0.0])


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
