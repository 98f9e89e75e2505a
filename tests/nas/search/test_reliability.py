"""The search refuses what it can see is wrong before compute is spent, and says the truth after.

- A search in which no candidate finished exits with 1 and points at no file it did not write.
- A second driver on a run directory that another one is using is refused with one line.
(Bad configs and datasets, caught on the driver before any trial: tests/nas/cli/test_malformed.)
"""

from __future__ import annotations

import os
import sys

import pytest
from ray import cloudpickle as ray_cloudpickle

import nas.search.driver as driver
from nas.cli import main
from nas.search import SearchConfig, run_search
from nas.search.rundir import hold_run_dir
from nas.search.trial import TrialSettings
from searchspace import ArchSpec
from searchspace.space import SearchSpace
from tests.nas.search.helpers import SMALL_SPACE, small_config, write_config

ray_cloudpickle.register_pickle_by_value(sys.modules[__name__])


def always_failing(spec: ArchSpec, settings: TrialSettings, report) -> dict:
    raise RuntimeError("every candidate fails here")


@pytest.mark.slow
@pytest.mark.usefixtures("module_ray")  # one Ray for the module's searches
def test_a_search_where_no_trial_finished_fails_and_points_at_nothing(tmp_path):
    config = small_config(tmp_path, trials=2, concurrent=1)
    lines: list[str] = []
    outcome = run_search(config, evaluate=always_failing, log=lines.append)
    assert (outcome.finished, outcome.failed, outcome.best_path) == (0, 2, None)
    assert not (config.run_dir / "best.yaml").exists()
    text = "\n".join(lines)
    assert "no trial finished (2 failed)" in text and "best.yaml" not in text


@pytest.mark.slow
@pytest.mark.usefixtures("module_ray")  # one Ray for the module's searches
def test_the_command_exits_1_when_no_trial_finished(tmp_path, monkeypatch, capsys):
    path = write_config(
        tmp_path, dataset="synthetic", trials=2, concurrent=1, epochs=1, space=SMALL_SPACE,
        study="nothing",
    )  # fmt: skip
    monkeypatch.setattr(driver, "default_evaluate", always_failing)
    assert main(["search", str(path)]) == 1
    out = capsys.readouterr().out
    assert "best.yaml" not in out and "nas show" not in out


def test_a_second_driver_on_the_same_run_directory_is_refused(tmp_path, capsys):
    path = write_config(tmp_path, dataset="synthetic", space=SMALL_SPACE, study="busy")
    config = SearchConfig.load(path)
    with hold_run_dir(config.run_dir.resolve(), config.study):  # as the first driver holds it
        before = sorted(p.name for p in config.run_dir.iterdir())
        assert main(["search", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        assert f"study 'busy' in {config.run_dir.resolve()} is being searched by another" in err
        assert f"pid {os.getpid()}" in err
        assert sorted(p.name for p in config.run_dir.iterdir()) == before  # nothing written
    assert not (config.run_dir / "study.db").exists()


def test_a_refused_search_leaves_no_run_directory(tmp_path, capsys):
    path = write_config(tmp_path, dataset="synthetic", space=SMALL_SPACE, storage="nosuch://x/y")
    assert main(["search", str(path)]) == 2
    assert "nosuch://x/y" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def _in_memory_storage():
    # A module-level function: the searcher's state holds it as its storage opener.
    return _STORAGE


_STORAGE = None


def test_a_searcher_pickled_before_an_attribute_was_added_still_resumes():
    # ``--resume`` unpickles the searcher that the run saved, perhaps with an older effnas: a
    # state without ``startup_trials`` (added later) gets the value older searches had.
    import optuna
    from optuna.samplers import TPESampler

    from nas.search.searcher import StudySearcher

    global _STORAGE
    _STORAGE = optuna.storages.InMemoryStorage()
    optuna.create_study(study_name="old", storage=_STORAGE, directions=["maximize"])
    searcher = StudySearcher(
        SearchSpace.from_dict(SMALL_SPACE),
        "old",
        _in_memory_storage,
        mode="reward",
        sampler="tpe",
        seed=0,
    )
    state = searcher.__getstate__()
    del state["startup_trials"]
    restored = StudySearcher.__new__(StudySearcher)
    restored.__dict__.update(state)  # what unpickling does with a state lacking __setstate__
    assert restored.startup_trials is None
    sampler = restored.study.sampler
    assert isinstance(sampler, TPESampler)
    assert sampler._n_startup_trials == TPESampler()._n_startup_trials


def test_a_resumed_search_does_not_draw_its_first_nets_again():
    # A sampler seeded as the search began repeats its random start-up draws: after a resume
    # the search re-drew (and re-used) the nets it had, spending its trials on nothing new.
    import optuna

    from nas.search.searcher import StudySearcher

    global _STORAGE
    space = SearchSpace.from_dict(SMALL_SPACE)

    def specs(study: str, count: int, offset: int = 0) -> list[str]:
        searcher = StudySearcher(
            space, study, _in_memory_storage, mode="reward", sampler="tpe", seed=0
        )
        return [searcher.suggest(f"t{offset + i}")["spec"] for i in range(count)]

    _STORAGE = optuna.storages.InMemoryStorage()
    for name in ("first", "again"):
        optuna.create_study(study_name=name, storage=_STORAGE, directions=["maximize"])
    before = specs("first", 4)
    assert specs("again", 4) == before  # a new search: reproducible from its seed
    after = specs("first", 4, offset=4)  # the driver restarted on the same study
    assert after != before and not set(after) & set(before)
