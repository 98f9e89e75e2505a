"""A search in ``pareto`` mode runs to the end (Tune once refused its first result: the searcher
named the three objectives as one metric no result held)."""

from __future__ import annotations

import optuna
import pytest

from nas.search import run_search
from nas.search.searcher import make_sampler
from tests.nas.search.helpers import small_config

# Importing it registers that module for pickling by value, so that Ray workers can run it.
from tests.nas.search.test_search import steady_evaluate


@pytest.mark.slow
def test_a_pareto_search_finishes_with_three_objectives_per_trial(tmp_path):
    # One trial at a time and generations of 2: the third trial is bred from the first two.
    config = small_config(
        tmp_path, trials=3, concurrent=1, objective="pareto", sampler="nsga2", population_size=2
    )
    outcome = run_search(config, evaluate=steady_evaluate, log=lambda line: None)
    assert (outcome.finished, outcome.failed) == (3, 0)
    study = optuna.load_study(study_name="t", storage=config.storage_url)
    sampler = make_sampler("nsga2", config.seed, population_size=2)
    generations = [sampler.get_trial_generation(study, trial) for trial in study.get_trials()]
    assert generations == [0, 0, 1]
    for trial in study.get_trials():
        assert trial.state == optuna.trial.TrialState.COMPLETE
        record = trial.user_attrs
        assert trial.values == [record["accuracy"], record["step_time_norm"], record["params"]]
