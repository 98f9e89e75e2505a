"""Fixtures for the ``results`` tests: run directories holding synthetic search studies."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from synthetic_study import fill_study

optuna.logging.set_verbosity(optuna.logging.WARNING)


def make_run(root: Path, name: str, mode: str, **kwargs) -> Path:
    """``root/name/study.db`` holding study ``name`` in ``mode``, as ``nas search`` leaves it."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    fill_study(f"sqlite:///{run_dir / 'study.db'}", name, mode, **kwargs)
    return run_dir


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
