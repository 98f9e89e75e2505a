"""Fixtures for the ``results`` tests: run directories holding synthetic search studies."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from tests.results.synthetic_study import make_run

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="session")
def runs_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="session")
def pareto_run(runs_root) -> Path:
    """A pareto-mode run: 40 completed (two identical), 3 failed, 2 running trials."""
    return make_run(runs_root, "pareto-quick", "pareto", seed=0)


@pytest.fixture(scope="session")
def reward_run(runs_root) -> Path:
    """A reward-mode run: 40 completed, 3 failed, 1 pruned, 2 running trials."""
    return make_run(runs_root, "reward-quick", "reward", seed=1)
