"""Early stopping in a Pareto search: ParetoASHA wired into ``nas search``, end to end.

A stand-in evaluation reports three epochs of deterministic figures; with one trial at a time the
rung holds exactly the trials before, so the test recomputes every decision MO-ASHA's rule must
take and checks the study against it.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import optuna
import pytest
from ray import cloudpickle as ray_cloudpickle

from nas.search import run_search
from nas.search.driver import early_stopping
from nas.search.schedulers import ParetoASHA
from results.pareto import non_dominated_rank
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


def figures(spec: ArchSpec) -> tuple[float, float, int]:
    """Final accuracy, step time / reference and parameters of the stand-in: deeper first stages
    are more accurate, a 5x5 first stage is slower and no better, fused second stages are
    smaller."""
    first, second = spec.stages
    accuracy = 0.5 + 0.15 * first.repeats - 0.2 * (first.kernel == 5)
    step = 1.0 + 0.3 * first.repeats + 0.5 * (first.kernel == 5)
    params = 1000 + 500 * second.repeats - 300 * (second.block == "fused")
    return accuracy, step, params


def pareto_learner_evaluate(spec: ArchSpec, settings: dict, report) -> dict:
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
    """The trials MO-ASHA stops at its one rung (epoch 1 of 3, reduction factor 3), trials in
    the order they ran; a reused result is never judged."""
    rung: list[tuple[float, float, int]] = []
    stopped = set()
    for trial in sorted(trials, key=lambda t: t.number):
        if "reused_from" in trial.user_attrs:
            continue
        accuracy, step, params = figures(ArchSpec.from_string(trial.user_attrs["spec"]))
        rung.append((accuracy / 3, step, params))
        ranks = non_dominated_rank(np.array(rung), [True, False, False])
        better = int((ranks < ranks[-1]).sum())
        if better >= math.ceil(len(rung) / 3):
            stopped.add(trial.number)
    return stopped


@pytest.mark.slow
def test_pareto_early_stopping_stops_dominated_trials_and_keeps_their_figures(tmp_path):
    config = small_config(
        tmp_path, objective="pareto", early_stopping=True, epochs=3, trials=10, concurrent=1
    )
    outcome = run_search(config, evaluate=pareto_learner_evaluate, log=collect_line)
    trials = study_trials(config)
    stopped = {t.number for t in trials if t.state == PRUNED}
    assert stopped and stopped == expected_stops(trials)
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
    assert scheduler(objective="pareto", early_stopping=False) is None
