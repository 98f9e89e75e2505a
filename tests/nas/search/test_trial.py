"""A leaner trial: the dataset comes from the driver (through Ray's object store), and held-out
accuracy is measured after every epoch only when a scheduler judges it."""

from __future__ import annotations

import dataclasses
import pickle
import sys

import pytest
from ray import cloudpickle as ray_cloudpickle

import nas.evaluate.candidate as candidate
from nas.errors import ConfigError
from nas.search import run_search
from nas.search import trial as trial_module
from nas.search.trial import TrialSettings, default_evaluate
from searchspace import ArchSpec
from tests.nas.evaluate.test_evaluate import quick_config
from tests.nas.search.helpers import fake_record, small_config, study_trials

# Ray workers unpickle the stand-in evaluation; this module is not importable there.
ray_cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.mark.parametrize("per_epoch", [True, False])
def test_held_out_accuracy_every_epoch_only_when_asked(tiny_spec, per_epoch, monkeypatch):
    config = quick_config(epochs=2)
    data = config.load_data(tiny_spec)
    evaluated = []
    original = candidate.evaluate_candidate

    def spy(spec, config, *, data, on_epoch_end):
        evaluated.append((data, on_epoch_end))
        return original(spec, config, data=data, on_epoch_end=on_epoch_end)

    # default_evaluate imports it when called: patched where it is looked up.
    monkeypatch.setattr(candidate, "evaluate_candidate", spy)
    trial_module._DATA_CACHE.clear()
    reports = []
    settings = TrialSettings(eval_config=config, threads=1, data=data, per_epoch=per_epoch)
    record = default_evaluate(tiny_spec, settings, reports.append)
    assert record["status"] == "ok" and 0 <= record["accuracy"] <= 1
    # The driver's dataset is used as it is; the worker loads nothing of its own.
    assert evaluated[0][0] is data and not trial_module._DATA_CACHE
    if per_epoch:
        assert [report["epochs"] for report in reports] == [1, 2]
    else:
        assert evaluated[0][1] is None and reports == []


def test_the_settings_are_fields_not_keys(tiny_spec):
    config = quick_config()
    settings = TrialSettings(
        eval_config=config,
        threads=2,
        metric_names=["accuracy", "reward"],
        evaluate=data_reporting_evaluate,
        per_epoch=False,
    )
    # Tune sends them to the workers pickled (tune.with_parameters, through the object store).
    again = pickle.loads(ray_cloudpickle.dumps(settings))
    # The evaluation travels by value (this module is not importable on a worker): compared by
    # what it returns.
    assert dataclasses.replace(again, evaluate=None) == dataclasses.replace(settings, evaluate=None)
    assert again.metric_names == ("accuracy", "reward")
    assert again.evaluate(tiny_spec, dataclasses.replace(again, data=_Named()), None)["name"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.per_epoch = True  # type: ignore[misc]
    # A misspelt setting is an error, not a silent default.
    with pytest.raises(TypeError, match="per_epcoh"):
        TrialSettings(eval_config=config, threads=1, per_epcoh=False)  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match="threads"):
        TrialSettings(eval_config=config, threads=0)


class _Named:
    name, train, image_size = "named", (), 16


def test_a_dataset_at_another_size_is_loaded_by_the_worker(tiny_spec):
    config = quick_config()
    other = quick_config(image_size=24).load_data(tiny_spec)
    trial_module._DATA_CACHE.clear()
    loaded = trial_module._load_data_once(config, tiny_spec, other)
    assert loaded is not other and loaded.image_size == 16
    assert trial_module._load_data_once(config, tiny_spec, None) is loaded  # once per worker
    trial_module._DATA_CACHE.clear()


def data_reporting_evaluate(spec: ArchSpec, settings: TrialSettings, report) -> dict:
    """A stand-in that records what the trial was handed: the dataset and whether to report
    every epoch."""
    data = settings.data
    record = fake_record(spec, 0.5)
    record["name"] = f"{data.name}:{len(data.train)}:{data.image_size}:{settings.per_epoch}"
    return record


@pytest.mark.slow
def test_the_search_hands_every_trial_the_drivers_dataset(tmp_path):
    config = small_config(tmp_path, trials=2, concurrent=1, dataset="synthetic:300")
    run_search(config, evaluate=data_reporting_evaluate, log=lambda line: None)
    trials = study_trials(config)
    expected = len(config.eval_config().load_data().train)
    assert [t.user_attrs["name"] for t in trials] == [f"synthetic:300:{expected}:32:False"] * 2
