"""Every sampler a search config accepts, on the quick space: valid nets, no log noise."""

from __future__ import annotations

import logging

import optuna
import pytest

from nas.search import SAMPLERS, SearchConfig
from nas.search.searcher import make_sampler
from tests import REPO


@pytest.mark.parametrize("name", SAMPLERS)
def test_every_sampler_models_the_conditional_quick_space_quietly(name, caplog):
    """The quick space's SE ratio exists for one block type only: each sampler, past its
    start-up, draws nets of the space from it, and none logs a warning per trial (a search's
    log would repeat it for every trial)."""
    space = SearchConfig.load(REPO / "configs" / "quick.yaml").space
    sampler = make_sampler(name, seed=0, population_size=3, startup_trials=3)
    optuna.logging.enable_propagation()
    try:
        study = optuna.create_study(direction="maximize", sampler=sampler)
        with caplog.at_level(logging.WARNING, logger="optuna"):
            for _ in range(8):
                trial = study.ask()
                spec = space.suggest(trial)
                # A made-up objective with a signal to model: fewer, smaller layers score more.
                layers = sum(stage.repeats * stage.expand_ratio for stage in spec.stages)
                study.tell(trial, -float(layers))
                for stage, choices in zip(spec.stages, space.stages, strict=True):
                    se_options = (
                        choices.se_ratios if stage.block == "mbconv" else (choices.fused_se_ratios)
                    )
                    assert stage.block in choices.blocks and stage.kernel in choices.kernels
                    assert stage.expand_ratio in choices.expand_ratios
                    assert stage.se_ratio in se_options
                    assert choices.repeats[0] <= stage.repeats <= choices.repeats[1]
    finally:
        optuna.logging.disable_propagation()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


@pytest.mark.parametrize(
    ("changes", "line"),
    [
        ({}, "sampler tpe: 10 random start-up trials (Optuna's default), then 2 trials modelled"),
        ({"startup_trials": 3, "sampler": "gp"},
         "sampler gp: 3 random start-up trials, then 9 trials modelled"),
        ({"trials": 8}, "sampler tpe: 10 random start-up trials (Optuna's default), so all 8 "
                        "trials are drawn at random (a random search)"),
        ({"sampler": "nsga2"}, "sampler nsga2: generations of 50, so all 12 trials are drawn at "
                               "random (a random search)"),
        ({"sampler": "nsga2", "population_size": 4},
         "sampler nsga2: generations of 4, then 8 trials bred from earlier generations"),
        ({"sampler": "random"}, "sampler random"),
    ],
)  # fmt: skip
def test_the_search_says_how_its_sampler_spends_the_trials(changes, line):
    """The quick config (12 trials) and variants: what ``nas search`` prints before it starts."""
    config = SearchConfig.load(REPO / "configs" / "quick.yaml").replace(**changes)
    assert config.sampler_summary() == line
