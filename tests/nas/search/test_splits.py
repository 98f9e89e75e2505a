"""The test split is reported, never read: change only the test split and every decision of a
search (the sampler's suggestions, the scheduler's stops, the reward-best) stays the same."""

from __future__ import annotations

import dataclasses

import optuna
import pytest
from torch.utils.data import Dataset

import nas.search.searcher as searcher_module
from nas.cluster import ray_session
from nas.search import run_search
from nas.search.trial import TrialSettings, default_evaluate
from searchspace import ArchSpec
from tests.nas.search.helpers import small_config


class _Relabelled(Dataset):
    """A split whose every label is moved to the next class: the same images, other answers."""

    def __init__(self, split: Dataset, num_classes: int) -> None:
        self.split = split
        self.num_classes = num_classes

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int):
        image, label = self.split[index]
        return image, (label + 1) % self.num_classes


def _pin_step_times() -> None:
    """Make step timing a function of the net alone, in this worker: real timings differ from
    run to run, and the reward (which the sampler and ASHA read) would differ with them."""
    import nas.evaluate.candidate as candidate
    import nas.evaluate.reference as reference
    from nas.evaluate.timing import StepTiming
    from searchspace import count_parameters

    def pinned(model, setup, **_):
        median = 1.0 + count_parameters(model) / 1e4
        return StepTiming(
            median_ms=median,
            spread_ms=0.0,
            samples_ms=(median,),
            batch_size=setup.batch_size,
            image_size=setup.image_size,
            precision="fp32",
            memory_format="contiguous",
            device="cpu",
            peak_memory_mb=None,
        )

    candidate.time_train_step = pinned
    reference.time_train_step = pinned


def _evaluate(spec: ArchSpec, settings: TrialSettings, report, *, relabel: bool) -> dict:
    _pin_step_times()
    data = settings.data
    if relabel:
        data = dataclasses.replace(data, test=_Relabelled(data.test, data.num_classes))
    return default_evaluate(spec, dataclasses.replace(settings, data=data), report)


def evaluate_as_is(spec: ArchSpec, settings: TrialSettings, report) -> dict:
    return _evaluate(spec, settings, report, relabel=False)


def evaluate_relabelled(spec: ArchSpec, settings: TrialSettings, report) -> dict:
    return _evaluate(spec, settings, report, relabel=True)


#: TPE's random start-up trials here (the config's ``startup_trials``; Optuna's default is 10):
#: past them it models, as it does after 10, from the rewards the trials reported.
STARTUP = 3
_make_sampler = searcher_module.make_sampler
_SAMPLERS_MADE: list[tuple[str, int | None]] = []


def _recording_sampler(name, seed, population_size=50, startup_trials=None):
    """``make_sampler``, noting what the search asked of it."""
    _SAMPLERS_MADE.append((name, startup_trials))
    return _make_sampler(name, seed, population_size, startup_trials)


@pytest.mark.slow
def test_changing_only_the_test_split_changes_no_search_decision(tmp_path, monkeypatch):
    monkeypatch.setenv("EFFNAS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(searcher_module, "make_sampler", _recording_sampler)
    _SAMPLERS_MADE.clear()
    # TPE past its 3 random start-up trials (4 of its own), and ASHA judging every trial after
    # epoch 1.
    settings = {
        "dataset": "synthetic:300",
        "image_size": 16,
        "trials": STARTUP + 4,
        "concurrent": 1,
        "epochs": 2,
        "sampler": "tpe",
        "startup_trials": STARTUP,
        "early_stopping": True,
        "evaluation": {"timing_steps": 1, "timing_warmup": 0, "test_fraction": 0.2},
    }
    runs = {}
    # One Ray for both searches, started once EFFNAS_CACHE is set (its workers inherit it).
    with ray_session(None):
        for name, evaluate in (("as-is", evaluate_as_is), ("relabelled", evaluate_relabelled)):
            config = small_config(tmp_path / name, study=name, **settings)
            outcome = run_search(config, evaluate=evaluate, log=lambda line: None)
            trials = optuna.load_study(study_name=name, storage=config.storage_url).get_trials()
            runs[name] = (outcome, sorted(trials, key=lambda trial: trial.number))
    assert set(_SAMPLERS_MADE) == {("tpe", STARTUP)}  # the config's start-up reached TPE
    (first, first_trials), (second, second_trials) = runs["as-is"], runs["relabelled"]
    assert len(first_trials) == len(second_trials) == STARTUP + 4

    def decisions(trial: optuna.trial.FrozenTrial) -> tuple:
        attrs = trial.user_attrs
        return (trial.params, trial.state, attrs["spec"], attrs["accuracy"], attrs["reward"])

    assert [decisions(t) for t in first_trials] == [decisions(t) for t in second_trials]
    assert first.best_spec == second.best_spec
    # ... while what the test split measured did change: it was read, and reported.
    completed = [
        (a.user_attrs["test_accuracy"], b.user_attrs["test_accuracy"])
        for a, b in zip(first_trials, second_trials, strict=True)
        if a.state == optuna.trial.TrialState.COMPLETE
    ]
    assert completed and all(a is not None and b is not None for a, b in completed)
    assert any(a != b for a, b in completed)


def test_a_search_times_its_steps_at_the_space_train_resolution(tmp_path):
    # The small space trains at 32 px; the search's brief training runs at 16.
    config = small_config(tmp_path, image_size=16)
    assert config.space.train_resolution == 32
    assert config.timing_size == config.eval_config().timing_image_size == 32
    assert config.eval_config().image_size == 16
    chosen = small_config(tmp_path, image_size=16, timing_image_size=24)
    assert chosen.timing_size == chosen.eval_config().timing_image_size == 24
