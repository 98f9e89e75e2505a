"""Early stopping in a Pareto search: ParetoASHA wired into ``nas search``, end to end.

A stand-in evaluation reports three epochs of deterministic figures; with one trial at a time the
rung holds exactly the trials before, so replaying them through a fresh scheduler gives every
decision the search must have taken (the rule itself is tested in ``test_schedulers.py``).
"""

from __future__ import annotations

import sys
from types import SimpleNamespace

import optuna
import pytest
from ray import cloudpickle as ray_cloudpickle

from nas.search import run_search
from nas.search.constraints import Constraints
from nas.search.driver import early_stopping
from nas.search.schedulers import ParetoASHA
from nas.search.trial import TrialSettings
from results.schema import OBJECTIVES_BY_MODE
from searchspace import ArchSpec
from tests.nas.search.helpers import (
    collect_line,
    collected_lines,
    fake_record,
    small_config,
    study_trials,
)

# Ray workers unpickle the stand-in evaluation; this module is not importable there.
ray_cloudpickle.register_pickle_by_value(sys.modules[__name__])

PRUNED, COMPLETE = optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.COMPLETE
#: Breaks only the slowest stand-in (5x5 first stage, two repeats: 2.1).
SLOW = {"max_step_time_norm": 2.0}


def figures(spec: ArchSpec) -> tuple[float, float, int]:
    """Final accuracy, step time / reference and parameters of the stand-in: deeper first stages
    are more accurate, a 5x5 first stage is slower and no better, fused second stages are
    smaller."""
    first, second = spec.stages
    accuracy = 0.5 + 0.15 * first.repeats - 0.2 * (first.kernel == 5)
    step = 1.0 + 0.3 * first.repeats + 0.5 * (first.kernel == 5)
    params = 1000 + 500 * second.repeats - 300 * (second.block == "fused")
    return accuracy, step, params


def pareto_learner_evaluate(spec: ArchSpec, settings: TrialSettings, report) -> dict:
    """Three epochs; accuracy climbs to its final value, the costs are known from epoch 1."""
    accuracy, step, params = figures(spec)
    for epoch in (1, 2, 3):
        report(
            {"accuracy": accuracy * epoch / 3, "step_time_norm": step, "params": params,
             "epochs": epoch}  # what was spent so far, as nas.evaluate reports it
        )  # fmt: skip
    return {
        **fake_record(spec, accuracy),
        "step_time_norm": step,
        "params": params,
        "reward": accuracy,
    }


def expected_stops(trials: list) -> set[int]:
    """The trials ParetoASHA stops at its one rung (epoch 1 of 3, reduction factor 3, the
    search's constraints), replayed in the order they ran; a reused result is never judged."""
    scheduler = ParetoASHA(
        OBJECTIVES_BY_MODE["pareto"], constraints=Constraints(SLOW), max_t=3, grace_period=1
    )
    stopped = set()
    for trial in sorted(trials, key=lambda t: t.number):
        if "reused_from" in trial.user_attrs:
            continue
        accuracy, step, params = figures(ArchSpec.from_string(trial.user_attrs["spec"]))
        rung = {"training_iteration": 1, "accuracy": accuracy / 3, "step_time_norm": step}
        decision = scheduler.on_trial_result(
            None, SimpleNamespace(trial_id=str(trial.number)), {**rung, "params": params}
        )
        if decision == scheduler.STOP:
            stopped.add(trial.number)
    return stopped


@pytest.mark.slow
@pytest.mark.usefixtures("module_ray")  # one Ray for the module's searches
def test_pareto_early_stopping_stops_the_trials_outside_the_share_and_keeps_their_figures(tmp_path):
    config = small_config(
        tmp_path,
        objective="pareto",
        early_stopping=True,
        epochs=3,
        trials=10,
        concurrent=1,
        constraints=SLOW,
    )
    outcome = run_search(config, evaluate=pareto_learner_evaluate, log=collect_line)
    trials = study_trials(config)
    stopped = {t.number for t in trials if t.state == PRUNED}
    assert stopped and stopped == expected_stops(trials)
    # The bound was in play: some trial broke it, at the rung too (its step time is known there).
    steps = [figures(ArchSpec.from_string(t.user_attrs["spec"]))[1] for t in trials]
    assert any(step > SLOW["max_step_time_norm"] for step in steps)
    assert any(t.state == COMPLETE for t in trials)
    for trial in trials:
        attrs = trial.user_attrs
        accuracy, step, params = figures(ArchSpec.from_string(attrs["spec"]))
        assert (attrs["step_time_norm"], attrs["params"]) == (step, params)
        if trial.state == PRUNED:
            # The figures it reached at the rung: a third of the way up, its costs in full.
            assert attrs["status"] == "stopped"
            assert attrs["accuracy"] == pytest.approx(accuracy / 3) and attrs["epochs"] == 1
        else:
            assert trial.state == COMPLETE
            assert trial.values == pytest.approx([accuracy, step, params])
    assert outcome.finished == len(trials) - len(stopped) and not outcome.interrupted
    judged = sum("reused_from" not in t.user_attrs for t in trials)
    summary = (
        f"early stopping (Pareto ASHA on accuracy, step_time_norm, params): {len(stopped)} "
        f"trials stopped; epoch 1: {judged} judged"
    )
    assert summary in collected_lines()


@pytest.mark.slow
@pytest.mark.usefixtures("module_ray")  # one Ray for the module's searches
def test_a_resumed_search_keeps_the_rungs(tmp_path):
    config = small_config(
        tmp_path, objective="pareto", early_stopping=True, epochs=3, trials=4, concurrent=1
    )
    run_search(config, evaluate=pareto_learner_evaluate, log=collect_line)
    collected_lines()
    # Tune pickled the scheduler when the search started, with empty rungs; a resume gets the
    # rungs back from the experiment's last checkpoint (SchedulerState), and says so at its end.
    run_search(config, resume=True, evaluate=pareto_learner_evaluate, log=collect_line)
    summary = [line for line in collected_lines() if line.startswith("early stopping")]
    assert len(summary) == 1 and summary[0].endswith("epoch 1: 4 judged"), summary


def test_the_scheduler_follows_the_objective(tmp_path):
    def scheduler(**overrides):
        return early_stopping(small_config(tmp_path, **{"early_stopping": True, **overrides}))

    assert type(scheduler(objective="reward")).__name__ == "AsyncHyperBandScheduler"
    pareto = scheduler(objective="pareto", epochs=10)
    assert isinstance(pareto, ParetoASHA) and pareto.rungs == [1, 3, 9]
    assert pareto.objectives == ("accuracy", "step_time_norm", "params")
    assert pareto.constraints == Constraints() and pareto.reduction_factor == 3
    constrained = scheduler(objective="pareto", constraints=SLOW)
    assert constrained.constraints == Constraints(SLOW)
    assert scheduler(objective="pareto", early_stopping=False) is None
