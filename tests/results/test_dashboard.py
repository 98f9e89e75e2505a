"""``nas dashboard``: optuna-dashboard on the study, our figures and note attached."""

from __future__ import annotations

import hashlib
import json
import socket

import optuna
import pytest
from optuna_dashboard import get_note

from nas.cli import main
from results import load_study_frame, pareto_front, reward_best
from results.dashboard import attach_to_study
from results.figures import front_trace_name
from results.hypervolume import Normalization, hypervolume_progress
from results.progress import hypervolume_trace_name
from tests.results.dashboard_helpers import dashboard, free_port, study_detail
from tests.results.synthetic_study import make_run

ALL_FIGURES = {
    f"effnas-{key}"
    for key in ("accuracy-vs-step-time", "accuracy-vs-params", "pareto-3d",
                "hypervolume-vs-trials", "hypervolume-vs-time", "importance-accuracy",
                "importance-step_time_norm", "importance-params", "importance-reward")
}  # fmt: skip


@pytest.mark.slow
def test_dashboard_serves_the_study_with_our_figures_and_note(tmp_path):
    run_dir = make_run(tmp_path, "live", "pareto", n_complete=30)
    with dashboard(run_dir, log=tmp_path / "dashboard.log") as base:
        detail = study_detail(base, "live")
    frame = load_study_frame(run_dir)
    assert len(detail["trials"]) == len(frame)
    assert detail["objective_names"] == ["accuracy", "step_time_norm", "params"]
    # The dashboard's own Pareto front (its best trials) is ours too.
    front_3d = pareto_front(frame, ["accuracy", "step_time_norm", "params"])
    assert sorted(trial["number"] for trial in detail["best_trials"]) == sorted(front_3d["number"])
    best = reward_best(frame)
    note = detail["note"]["body"]
    assert f"trial {best['number']}" in note and best["spec"] in note
    attached = detail["plotly_graph_objects"]
    figures = {item["id"]: json.loads(item["graph_object"]) for item in attached}
    assert set(figures) == ALL_FIGURES
    traces = figures["effnas-accuracy-vs-step-time"]["data"]
    front = next(trace for trace in traces if trace["name"] == front_trace_name("live"))
    expected = pareto_front(frame, ["accuracy", "step_time_ms"])
    assert len(front["x"]) == len(expected)
    # The hypervolume after each finished trial, as results.hypervolume computes it.
    objectives = ["accuracy", "step_time_norm", "params"]
    history = hypervolume_progress(frame, Normalization.fit([frame], objectives))
    for key in ("effnas-hypervolume-vs-trials", "effnas-hypervolume-vs-time"):
        (trace,) = figures[key]["data"]
        assert trace["name"] == hypervolume_trace_name("live")
        assert trace["y"] == pytest.approx(list(history["hypervolume"]))
    assert figures["effnas-hypervolume-vs-trials"]["data"][0]["x"] == list(history["finished"])
    # Which choices matter: a figure per objective and the reward, a bar per choice.
    choices = {name for params in frame["trial_params"] for name in params}
    for objective in ("accuracy", "step_time_norm", "params", "reward"):
        (bars,) = figures[f"effnas-importance-{objective}"]["data"]
        assert bars["type"] == "bar" and len(bars["y"]) == len(choices) >= 16
        assert "stage 1 block" in bars["y"] and "stage 4 SE (MBConv)" in bars["y"]
    assert f"**Hypervolume** {history['hypervolume'].iloc[-1]:.4f} after 33 finished" in note


def test_attach_sets_missing_metric_names_and_replaces_figures(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=storage, study_name="plain", direction="maximize")
    study.add_trial(optuna.trial.create_trial(value=0.5, user_attrs={"accuracy": 0.5,
                                                                     "step_time_ms": 3.0,
                                                                     "params": 1000}))  # fmt: skip
    attach_to_study(study)
    attach_to_study(study)  # again: same figure IDs, no duplicates
    assert study.metric_names == ["reward"]
    keys = study._storage.get_study_system_attrs(study._study_id)
    ids = {key.split(":")[2] for key in keys if key.startswith("dashboard:plot_data:")}
    # One trial cannot tell choices apart, and without step_time_norm it has no hypervolume on
    # the default objectives: only the Pareto figures, and the note says why.
    assert ids == {"effnas-accuracy-vs-step-time", "effnas-accuracy-vs-params", "effnas-pareto-3d"}
    note = get_note(study)
    assert "No completed trial has every objective yet: no hypervolume to draw." in note
    assert "**Importances not computed:** plain (accuracy, params, reward): 1 completed trial; " \
        "at least 10 are needed to tell the choices apart; plain (step_time_norm): 0 completed " \
        "trials; at least 10" in note  # fmt: skip


def test_port_in_use_is_one_line_and_writes_nothing(capsys, tmp_path):
    run_dir = make_run(tmp_path, "busy", "reward", n_complete=3)
    before = hashlib.sha256((run_dir / "study.db").read_bytes()).hexdigest()
    port = free_port()
    with socket.socket() as server:
        server.bind(("127.0.0.1", port))
        server.listen()
        code = main(["dashboard", str(run_dir), "--port", str(port)])
    err = capsys.readouterr().err
    assert code == 2
    assert err == f"nas dashboard: error: --port {port} is already in use on 127.0.0.1\n"
    assert hashlib.sha256((run_dir / "study.db").read_bytes()).hexdigest() == before


def test_note_gives_the_reward_best_held_out_and_test_accuracy(reward_run):
    from results.dashboard import study_note

    frame = load_study_frame(reward_run)
    best = reward_best(frame)
    note = study_note(frame, ["accuracy", "step_time_norm", "params"])
    gap = 100 * (best["accuracy"] - best["test_accuracy"])
    assert f"held-out accuracy {100 * best['accuracy']:.2f}% (test " in note
    assert f"{100 * best['test_accuracy']:.2f}%: held-out - test {gap:+.2f} points)" in note
    assert "| trial | held-out | test | step ms |" in note
