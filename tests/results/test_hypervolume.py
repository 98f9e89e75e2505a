"""The hypervolume: checked against Optuna's own computation (``compute_hypervolume``, which
``optuna.visualization.plot_hypervolume_history`` uses) and against that plot's history."""

from __future__ import annotations

import datetime as dt

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna._hypervolume import compute_hypervolume

from results import ResultsError, study_frame
from results.hypervolume import (
    Normalization,
    hypervolume,
    hypervolume_history,
    hypervolume_progress,
)


def random_points(rng: np.random.Generator, n_points: int, n_objectives: int, kind: str):
    """Losses in [0, 1): scattered, on a front (a sphere), or on a coarse grid (ties and
    duplicates everywhere), with some rows repeated."""
    if kind == "front":
        points = rng.random((n_points, n_objectives)) + 0.05
        points /= np.linalg.norm(points, axis=1, keepdims=True)
        points *= 0.95
    else:
        points = rng.random((n_points, n_objectives))
        if kind == "grid":
            points = np.round(points * 4) / 4 * 0.99
    repeats = points[rng.integers(0, n_points, size=n_points // 3)]
    return rng.permutation(np.vstack([points, repeats]))


@pytest.mark.parametrize("n_objectives", [1, 2, 3, 4])
@pytest.mark.parametrize("kind", ["scattered", "front", "grid"])
def test_hypervolume_equals_optunas(n_objectives, kind):
    rng = np.random.default_rng(100 * n_objectives + len(kind))
    for n_points in (1, 2, 3, 7, 40, 150 if n_objectives < 4 else 60):
        points = random_points(rng, n_points, n_objectives, kind)
        reference = 1.0 + rng.random(n_objectives) * 0.3
        expected = compute_hypervolume(points, reference)
        assert hypervolume(points, reference) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_points_beyond_the_reference_add_nothing():
    rng = np.random.default_rng(7)
    for n_objectives in (2, 3):
        inside = random_points(rng, 30, n_objectives, "front")
        outside = rng.random((10, n_objectives)) * 0.5
        outside[np.arange(10), rng.integers(0, n_objectives, 10)] = 1.5  # beyond in one objective
        reference = np.ones(n_objectives)
        expected = compute_hypervolume(inside, reference)
        assert hypervolume(np.vstack([inside, outside]), reference) == pytest.approx(expected)
        assert hypervolume(outside, reference) == 0.0


def test_hypervolume_of_known_shapes():
    # One point: a box. Two points in 2-D: two boxes minus their overlap.
    assert hypervolume([[0.25, 0.5, 0.0]], [1, 1, 1]) == pytest.approx(0.375)
    assert hypervolume([[0.0, 0.5], [0.5, 0.0], [0.5, 0.5]], [1, 1]) == pytest.approx(0.75)
    assert hypervolume(np.empty((0, 3)), [1, 1, 1]) == 0.0
    with pytest.raises(ValueError, match="finite"):
        hypervolume([[np.nan, 0.0]], [1, 1])
    with pytest.raises(ValueError, match="points must be"):
        hypervolume([[0.0, 0.0, 0.0]], [1, 1])


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
@pytest.mark.parametrize("directions", [["minimize", "minimize"], ["maximize", "minimize",
                                                                   "minimize"]])  # fmt: skip
def test_history_equals_optunas_hypervolume_history_plot(directions):
    """``plot_hypervolume_history`` (Optuna's public API) on a study with duplicates, dominated
    trials, a trial beyond the reference and a failed trial in between."""
    rng = np.random.default_rng(len(directions))
    study = optuna.create_study(directions=directions)
    signs = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    losses = np.vstack([random_points(rng, 40, len(directions), "grid"), [[2.0] * len(directions)]])
    losses = rng.permutation(losses)
    for index, loss in enumerate(losses):
        study.add_trial(optuna.trial.create_trial(values=list(signs * loss)))
        if index == 5:
            study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))
    reference = signs * np.full(len(directions), 1.1)  # in the study's own directions
    figure = optuna.visualization.plot_hypervolume_history(study, reference)
    expected = np.asarray(figure.data[0].y)
    history = hypervolume_history(losses, np.full(len(directions), 1.1))
    np.testing.assert_allclose(history, expected, rtol=1e-12, atol=1e-15)
    with_gap = np.insert(losses, 6, np.nan, axis=0)  # a failed trial: the history holds still
    np.testing.assert_allclose(hypervolume_history(with_gap, np.full(len(directions), 1.1))[5:7],
                               [expected[5], expected[5]])  # fmt: skip


def frame_of(rows: list[dict], objectives=("accuracy", "step_time_norm", "params")) -> pd.DataFrame:
    """A study frame of trials with the given states, metrics and end times."""
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, directions=["maximize", "minimize", "minimize"])
    start = dt.datetime(2026, 1, 1, 9, 0)
    trials = []
    for row in rows:
        state = getattr(optuna.trial.TrialState, row.get("state", "COMPLETE"))
        attrs = {name: row[name] for name in objectives if name in row}
        trial = optuna.trial.create_trial(
            state=state,
            values=[row[name] for name in objectives] if state.name == "COMPLETE" else None,
            user_attrs=attrs,
        )
        trial.datetime_start = start
        trial.datetime_complete = start + dt.timedelta(seconds=row["end_s"])
        trials.append(trial)
    study.add_trials(trials)
    return study_frame(study)


def test_normalization_scales_each_objective_from_best_to_worst():
    frames = [
        frame_of([{"accuracy": 0.9, "step_time_norm": 1.0, "params": 1e6, "end_s": 10}]),
        frame_of([{"accuracy": 0.8, "step_time_norm": 0.1, "params": 1e4, "end_s": 10},
                  {"accuracy": 0.7, "step_time_norm": 0.5, "params": 1e5, "end_s": 20},
                  {"state": "FAIL", "end_s": 30}]),
    ]  # fmt: skip
    normalization = Normalization.fit(frames, ["accuracy", "step_time_norm", "params"])
    scales = {scale.name: scale for scale in normalization.scales}
    assert (scales["accuracy"].best, scales["accuracy"].worst) == (0.9, 0.7)
    assert not scales["accuracy"].log and scales["params"].log and scales["step_time_norm"].log
    # Accuracy negated and linear; costs on a log10 scale; 0 at the best, 1 at the worst.
    np.testing.assert_allclose(normalization.normalize(frames[0]), [[0.0, 1.0, 1.0]])
    np.testing.assert_allclose(
        normalization.normalize(frames[1])[:2], [[0.5, 0.0, 0.0], [1.0, np.log10(5), 0.5]]
    )
    assert np.isnan(normalization.normalize(frames[1])[2]).all()  # the failed trial
    np.testing.assert_allclose(normalization.reference, [1.1, 1.1, 1.1])
    text = normalization.describe()
    assert "accuracy: 0 at 90.00%, 1 at 70.00%" in text and "params (log scale)" in text
    assert "reference point is 1.1" in text
    # The same scale from bare values (a NaN row left out), without a study frame.
    values = [[0.9, 1.0, 1e6], [0.8, 0.1, 1e4], [0.7, 0.5, 1e5], [np.nan, np.nan, np.nan]]
    assert Normalization.of_values(values, normalization.objectives) == normalization
    np.testing.assert_allclose(
        normalization.normalize_values(np.array(values[:1])), [[0.0, 1.0, 1.0]]
    )


def test_normalization_without_a_complete_trial_or_with_a_constant_objective():
    failed = frame_of([{"state": "FAIL", "end_s": 1}])
    assert Normalization.fit([failed], ["accuracy", "params"]) is None
    constant = frame_of([{"accuracy": 0.5, "step_time_norm": 1.0, "params": 10, "end_s": 1}] * 2)
    normalization = Normalization.fit([constant], ["accuracy", "params"])
    np.testing.assert_array_equal(normalization.normalize(constant), np.zeros((2, 2)))
    with pytest.raises(ResultsError, match="unknown objective"):
        Normalization.fit([constant], ["accuracy", "speed"])


def test_progress_follows_completion_order_and_counts_every_finished_trial():
    # Trials numbered in the order they were asked for, finishing in another order.
    frame = frame_of([
        {"accuracy": 0.9, "step_time_norm": 0.5, "params": 1e5, "end_s": 50},
        {"accuracy": 0.5, "step_time_norm": 1.0, "params": 1e6, "end_s": 10},
        {"state": "FAIL", "end_s": 20},
        {"accuracy": 0.7, "step_time_norm": 0.2, "params": 1e5, "end_s": 30},
    ])  # fmt: skip
    normalization = Normalization.fit([frame], ["accuracy", "step_time_norm", "params"])
    result = hypervolume_progress(frame, normalization)
    assert list(result["number"]) == [1, 2, 3, 0]
    assert list(result["finished"]) == [1, 2, 3, 4]
    assert list(result["elapsed_s"]) == [10.0, 20.0, 30.0, 50.0]
    losses = normalization.normalize(frame)
    box = 1.1**3
    expected = [hypervolume(losses[[1]], normalization.reference) / box] * 2
    expected.append(hypervolume(losses[[1, 3]], normalization.reference) / box)
    expected.append(hypervolume(losses[[0, 1, 3]], normalization.reference) / box)
    np.testing.assert_allclose(result["hypervolume"], expected)
    assert 0 < result["hypervolume"].iloc[-1] < 1
