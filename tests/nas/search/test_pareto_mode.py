"""A search in ``pareto`` mode runs to the end (Tune once refused its first result: the searcher
named the three objectives as one metric no result held)."""

from __future__ import annotations

import sys

import optuna
import pytest
from ray import cloudpickle as ray_cloudpickle

from nas.search import run_search
from searchspace import ArchSpec
from tests.nas.search.helpers import fake_record, small_config

# Ray workers unpickle the fake evaluator below; this module is not importable there.
ray_cloudpickle.register_pickle_by_value(sys.modules[__name__])


def quick_evaluate(spec: ArchSpec, settings: dict, report) -> dict:
    record = fake_record(spec, accuracy=0.5 + 0.01 * spec.stages[0].repeats)
    report({"accuracy": record["accuracy"], "reward": record["reward"]})
    return record


@pytest.mark.slow
def test_a_pareto_search_finishes_with_three_objectives_per_trial(tmp_path):
    config = small_config(tmp_path, trials=3, objective="pareto", sampler="nsga2")
    outcome = run_search(config, evaluate=quick_evaluate, log=lambda line: None)
    assert (outcome.finished, outcome.failed) == (3, 0)
    study = optuna.load_study(study_name="t", storage=config.storage_url)
    for trial in study.get_trials():
        assert trial.state == optuna.trial.TrialState.COMPLETE
        record = trial.user_attrs
        assert trial.values == [record["accuracy"], record["step_time_norm"], record["params"]]
