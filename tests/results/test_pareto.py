"""Non-dominated sorting: checked against Optuna's own fronts and a brute-force definition."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from optuna.study._multi_objective import _fast_non_domination_rank

from results import (
    ResultsError,
    front_ranks,
    load_study_frame,
    non_dominated_rank,
    pareto_front,
    reward_best,
)


def brute_force_ranks(values: np.ndarray, maximize: list[bool]) -> np.ndarray:
    """Front ranks straight from the definition: peel the rows no remaining row dominates."""
    loss = np.where(maximize, -values, values)
    ranks = np.zeros(len(loss), dtype=int)
    remaining = set(range(len(loss)))
    rank = 1
    while remaining:
        front = {
            j
            for j in remaining
            if not any(np.all(loss[i] <= loss[j]) and np.any(loss[i] < loss[j]) for i in remaining)
        }
        for j in front:
            ranks[j] = rank
        remaining -= front
        rank += 1
    return ranks


@st.composite
def objective_arrays(draw):
    n_objectives = draw(st.integers(1, 5))
    n_rows = draw(st.integers(1, 60))
    # Few distinct values, so that ties and duplicate rows are common.
    values = draw(
        hnp.arrays(np.float64, (n_rows, n_objectives), elements=st.sampled_from([0.0, 0.5, 1, 2]))
    )
    maximize = draw(st.lists(st.booleans(), min_size=n_objectives, max_size=n_objectives))
    return values, maximize


@settings(max_examples=200, deadline=None)
@given(objective_arrays())
def test_ranks_match_brute_force_and_optuna(case):
    values, maximize = case
    ranks = non_dominated_rank(values, maximize)
    np.testing.assert_array_equal(ranks, brute_force_ranks(values, maximize))
    loss = np.where(maximize, -values, values)
    np.testing.assert_array_equal(ranks, _fast_non_domination_rank(loss) + 1)


@pytest.mark.parametrize("n_objectives", [2, 3, 4])
def test_ranks_match_optuna_on_continuous_values(n_objectives):
    rng = np.random.default_rng(n_objectives)
    values = rng.random((3000, n_objectives))
    maximize = [True] + [False] * (n_objectives - 1)
    loss = np.where(maximize, -values, values)
    expected = _fast_non_domination_rank(loss) + 1
    np.testing.assert_array_equal(non_dominated_rank(values, maximize), expected)
    np.testing.assert_array_equal(
        non_dominated_rank(values, maximize, max_rank=2), np.minimum(expected, 3)
    )


def test_non_dominated_rank_rejects_bad_values():
    with pytest.raises(ValueError, match="finite"):
        non_dominated_rank([[1.0, np.nan]], [True, False])
    with pytest.raises(ValueError, match="maximize"):
        non_dominated_rank([[1.0, 2.0]], [True])
    with pytest.raises(ValueError, match="max_rank"):
        non_dominated_rank([[1.0, 2.0]], [True, False], max_rank=0)
    assert non_dominated_rank(np.zeros((0, 2)), [True, False]).shape == (0,)


def test_front_equals_optuna_best_trials(pareto_run):
    study = optuna.load_study(study_name="pareto-quick", storage=f"sqlite:///{pareto_run}/study.db")
    frame = load_study_frame(pareto_run)
    front = pareto_front(frame, ["accuracy", "step_time_norm", "params"])
    expected = sorted(trial.number for trial in study.best_trials)
    assert sorted(front["number"]) == expected
    # The fixture evaluates its most accurate net twice: both copies are on the front.
    assert front["hash"].duplicated().any()


def test_two_objective_front_equals_optuna_on_a_study_of_those_objectives(pareto_run):
    frame = load_study_frame(pareto_run)
    study = optuna.create_study(directions=["maximize", "minimize"])
    numbers = {}
    for row in frame[frame["state"] == "COMPLETE"].itertuples():
        trial = optuna.trial.create_trial(values=[row.accuracy, row.step_time_ms])
        study.add_trial(trial)
        numbers[len(numbers)] = row.number
    expected = sorted(numbers[trial.number] for trial in study.best_trials)
    assert sorted(pareto_front(frame, "accuracy,step_time_ms")["number"]) == expected


def test_reward_best_equals_optuna_best_trial(reward_run):
    study = optuna.load_study(study_name="reward-quick", storage=f"sqlite:///{reward_run}/study.db")
    best = reward_best(load_study_frame(reward_run))
    assert best["number"] == study.best_trial.number
    assert best["reward"] == pytest.approx(study.best_value)


def test_front_ranks_leave_out_unfinished_trials(reward_run):
    frame = load_study_frame(reward_run)
    ranks = front_ranks(frame, ["accuracy", "params"])
    finished = (frame["state"] == "COMPLETE").to_numpy()
    assert ranks[finished].notna().all()
    assert ranks[~finished].isna().all()  # failed, pruned, running
    assert ranks.min() == 1
    front = pareto_front(frame, ["accuracy", "params"])
    assert set(front["number"]) == set(frame.loc[(ranks == 1).fillna(False), "number"])
    # Best first in the first objective.
    assert front["accuracy"].is_monotonic_decreasing


def test_unknown_objective_is_a_user_error(pareto_run):
    frame = load_study_frame(pareto_run)
    with pytest.raises(ResultsError, match="unknown objective 'latency'"):
        pareto_front(frame, "accuracy,latency")
    with pytest.raises(ResultsError, match="repeat"):
        pareto_front(frame, "accuracy,accuracy")
