"""Constraints and thresholds: cheap ones refuse nets before training, measured ones reach the
sampler, and the front holds feasible trials only."""

from __future__ import annotations

import functools
import itertools
import sys
from pathlib import Path

import optuna
import pytest
from ray import cloudpickle as ray_cloudpickle

from nas.errors import ConfigError
from nas.search import run_search
from nas.search.constraints import Constraints, _cheapest
from nas.search.trial import TrialSettings
from results import format_front, pareto_front, reward_best, study_frame
from results.pareto import feasible
from searchspace import ArchSpec
from searchspace.profile import spec_flops, spec_parameters
from searchspace.space import SearchSpace
from searchspace.spec import StageSpec
from tests.nas.search.helpers import (
    SMALL_SPACE,
    collect_line,
    collected_lines,
    small_config,
    study_trials,
)

# Ray workers unpickle the stand-in evaluation; this module is not importable there.
ray_cloudpickle.register_pickle_by_value(sys.modules[__name__])

PRUNED, COMPLETE = optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.COMPLETE
MAX_PARAMS = 10_000  # about half of SMALL_SPACE's nets have more
MAX_STEP = 1.3


def step_time_norm(spec: ArchSpec) -> float:
    """The stand-in's normalized step time: 5x5 first stages are slow."""
    return 1.0 + 0.2 * spec.stages[0].repeats + 0.3 * (spec.stages[0].kernel == 5)


def guarded_evaluate(spec: ArchSpec, settings: TrialSettings, report, *, max_params: int) -> dict:
    """A stand-in that refuses to be handed a net above ``max_params``: such a net reaching a
    worker fails its trial with the reason."""
    params = spec_parameters(spec)
    if params > max_params:
        raise RuntimeError(f"a net of {params} parameters reached a worker")
    accuracy = 0.4 + 0.1 * spec.stages[1].repeats
    figures = {"accuracy": accuracy, "step_time_norm": step_time_norm(spec), "params": params}
    report(figures)
    return {
        **figures,
        "spec": spec.to_string(),
        "hash": spec.hash,
        "step_time_ms": 10.0 * figures["step_time_norm"],
        "flops": spec_flops(spec, 32),
        "reward": accuracy,
        "status": "ok",
        "failure": "",
    }


@pytest.mark.slow
def test_constraints_refuse_nets_before_training_and_reach_the_sampler(tmp_path):
    config = small_config(
        tmp_path, objective="pareto", trials=8, concurrent=2, sampler="tpe",
        constraints={"max_params": MAX_PARAMS, "max_step_time_norm": MAX_STEP},
    )  # fmt: skip
    evaluate = functools.partial(guarded_evaluate, max_params=MAX_PARAMS)
    outcome = run_search(config, evaluate=evaluate, log=collect_line)
    trials = study_trials(config)
    refused = [t for t in trials if t.user_attrs.get("status") == "refused"]
    ran = [t for t in trials if t.user_attrs.get("status") != "refused"]
    # No net above the bound reached a worker (it would have failed its trial), and the ones
    # the sampler proposed are in the study, refused, with their figures and the reason.
    assert refused and all(t.state != optuna.trial.TrialState.FAIL for t in trials)
    assert len(ran) == 8 and outcome.finished == 8 and not outcome.interrupted
    for trial in refused:
        assert trial.state == PRUNED and trial.user_attrs["params"] > MAX_PARAMS
        assert trial.constraints["max_params"] == pytest.approx(
            trial.user_attrs["params"] / MAX_PARAMS - 1
        )
        assert "> max_params 10.00k" in trial.user_attrs["violations"]
    # Every trial that ran gives the sampler both bounds; the measured one was broken by some.
    for trial in ran:
        assert trial.state == COMPLETE and set(trial.constraints) == {
            "max_params",
            "max_step_time_norm",
        }
        assert trial.constraints["max_params"] <= 0
        step = trial.user_attrs["step_time_norm"]
        assert trial.constraints["max_step_time_norm"] == pytest.approx(step / MAX_STEP - 1)
        assert bool(trial.user_attrs["violations"]) == (step > MAX_STEP)
    assert any(t.user_attrs["violations"] for t in ran)
    # The front and the reward-best are taken over feasible trials only.
    frame = study_frame(optuna.load_study(study_name="t", storage=config.storage_url))
    front = pareto_front(frame, ["accuracy", "step_time_norm", "params"])
    assert len(front) and feasible(front).all()
    best = reward_best(frame)
    assert best["violations"] == "" and outcome.best_spec.to_string() == best["spec"]
    text = format_front(frame)
    assert f"8 trials: 8 complete; {len(refused)} nets refused before training" in text
    assert "infeasible (broke a constraint; on no front)" in text
    lines = collected_lines()
    assert "constraints: max_params 10.00k (before training), max_step_time_norm 1.3" in lines
    assert any("INFEASIBLE: step_time_norm" in line for line in lines)


def _all_specs(space: SearchSpace):
    """Every net of ``space``, enumerated choice by choice."""
    per_stage = []
    for choices in space.stages:
        options = []
        for block in choices.blocks:
            ses = choices.se_ratios if block == "mbconv" else choices.fused_se_ratios
            low, high = choices.repeats
            for se, kernel, expand, repeats in itertools.product(
                ses, choices.kernels, choices.expand_ratios, range(low, high + 1)
            ):
                options.append(
                    StageSpec(
                        block, repeats, kernel, choices.stride, expand, choices.out_channels, se
                    )
                )
        per_stage.append(options)
    return [space.spec_with(stages) for stages in itertools.product(*per_stage)]


def test_the_cheapest_net_found_stage_by_stage_is_the_cheapest_of_all():
    # Every choice kind, both block types, SE on and off; few enough nets to count them all.
    stages = [SMALL_SPACE["stages"][0], {**SMALL_SPACE["stages"][1], "repeats": [1, 1]}]
    space = SearchSpace.from_dict(
        {**SMALL_SPACE, "se_ratios": [0.0, 0.25], "expand_ratios": [1, 6], "stages": stages}
    )
    specs = _all_specs(space)
    assert len(specs) == space.size
    for measure in (spec_parameters, functools.partial(spec_flops, resolution=32)):
        least = min(measure(spec) for spec in specs)
        assert measure(_cheapest(space, measure)) == least


def test_a_space_whose_every_net_breaks_a_cheap_bound_is_refused():
    space = SearchSpace.from_dict(SMALL_SPACE)
    smallest = min(spec_parameters(spec) for spec in _all_specs(space))
    Constraints.from_dict({"max_params": smallest}).check_space(space, 32)  # one net fits
    with pytest.raises(ConfigError, match=r"constraints.max_params is .* smallest net has"):
        Constraints.from_dict({"max_params": smallest - 1}).check_space(space, 32)


def test_violations_are_relative_and_explained():
    constraints = Constraints.from_dict(
        {"max_params": "5M", "max_step_time_ms": 100, "min_accuracy": 0.5}
    )
    assert constraints.bounds["max_params"] == 5e6
    figures = {"params": 6e6, "step_time_ms": 50.0, "accuracy": 0.4, "final": True}
    values = constraints.of_result(figures)
    assert values == pytest.approx({"max_params": 0.2, "max_step_time_ms": -0.5,
                                    "min_accuracy": 0.2})  # fmt: skip
    assert constraints.explain(figures, values) == (
        "params 6.00M > max_params 5.00M; accuracy 40.00% < min_accuracy 50.00%"
    )
    # A trial stopped early is not held to the accuracy floor; a missing figure is not judged.
    assert "min_accuracy" not in constraints.of_result({**figures, "final": False})
    assert constraints.violations({"params": None, "step_time_ms": 120.0}) == pytest.approx(
        {"max_step_time_ms": 0.2}
    )


@pytest.mark.parametrize(
    ("constraints", "message"),
    [
        ({"max_parms": 5}, "unknown key constraints.max_parms"),
        ({"max_params": "lots"}, "constraints.max_params must be a number"),
        ({"max_flops": -1}, "constraints.max_flops must be greater than 0, got -1"),
        ({"min_accuracy": 1.5}, "constraints.min_accuracy must be in (0, 1], got 1.5"),
        ({"max_peak_memory_mb": 100}, "needs GPU trials"),
        ([1, 2], "constraints must be a mapping"),
    ],
)
def test_bad_constraints_are_one_line(tmp_path, constraints, message):
    with pytest.raises(ConfigError) as error:
        small_config(Path(tmp_path), constraints=constraints)
    assert message in str(error.value) and "\n" not in str(error.value)
