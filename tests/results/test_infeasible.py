"""Trials that broke a search's constraints: on no front, counted apart, listed apart."""

from __future__ import annotations

import json

import numpy as np
import optuna
import pytest

from nas.cli import main
from results import format_front, pareto_front, reward_best, study_frame
from results.hypervolume import Normalization, hypervolume_progress
from results.report import write_report
from tests.results.synthetic_study import PARETO_OBJECTIVES, _result, fill_study

#: A net better than every synthetic one in every objective, but too slow for its search.
CHAMPION = _result("stem8,m1k3s1e1c8,head32,classes=10,res=32/32", 100, 1.0, 0.999)
#: Too big to be trained: refused from its spec alone.
GIANT = {"spec": "stem8,m9k5s1e6c512,head32,classes=10,res=32/32", "hash": "giant",
         "params": 90_000_000, "flops": 10**11, "status": "refused",
         "violations": "params 90.00M > max_params 5.00M"}  # fmt: skip


@pytest.fixture
def run(tmp_path):
    return constrained_run(tmp_path)


def constrained_run(tmp_path):
    """A pareto run with two infeasible trials that ran (one dominating every feasible trial)
    and three refused nets: 42 complete trials, 3 failed, the 2 and the 3."""
    run_dir = tmp_path / "constrained"
    run_dir.mkdir()
    study = fill_study(f"sqlite:///{run_dir / 'study.db'}", "constrained", "pareto", n_running=0)
    slow = {**CHAMPION, "violations": "step_time_norm 1.50 > max_step_time_norm 1.2"}
    ran = [
        optuna.trial.create_trial(
            values=[slow[name] for name in PARETO_OBJECTIVES],
            user_attrs=slow,
            constraints={"max_step_time_norm": 0.25},
        ),
        optuna.trial.create_trial(
            values=[0.5, 3.0, 10**6],
            user_attrs={**slow, "accuracy": 0.5, "step_time_norm": 3.0, "params": 10**6},
        ),
    ]
    refused = [
        optuna.trial.create_trial(
            state=optuna.trial.TrialState.PRUNED, user_attrs=GIANT, constraints={"max_params": 17.0}
        )
        for _ in range(3)
    ]
    study.add_trials(ran + refused)
    return run_dir


def load(run):
    return study_frame(
        optuna.load_study(study_name="constrained", storage=f"sqlite:///{run}/study.db")
    )


def test_the_front_and_the_reward_best_hold_feasible_trials_only(run):
    frame = load(run)
    champion = frame[frame["violations"] != ""]["number"].min()
    front = pareto_front(frame, PARETO_OBJECTIVES)
    assert champion not in set(front["number"]) and len(front)
    # Without the infeasible trials in the frame at all, the front is the same.
    assert list(front["number"]) == list(
        pareto_front(frame[frame["violations"] == ""], PARETO_OBJECTIVES)["number"]
    )
    assert reward_best(frame)["violations"] == ""
    text = format_front(frame)
    assert "(pareto mode, 45 trials: 42 complete, 3 failed; 3 nets refused before training)" in text
    assert (
        "Pareto front on accuracy (max), step_time_norm (min), params (min) (feasible trials)"
        in text
    )
    assert "infeasible (broke a constraint; on no front): 2 trials ran, 3 nets refused" in text
    assert f"#{champion}" in text and "step_time_norm 1.50 > max_step_time_norm 1.2" in text
    assert "refused   params 90.00M > max_params 5.00M" in text


def test_infeasible_trials_do_not_move_the_hypervolume_and_refused_ones_cost_nothing(run):
    frame = load(run)
    feasible = frame[frame["violations"] == ""]
    scale = Normalization.fit([feasible], PARETO_OBJECTIVES)
    assert Normalization.fit([frame], PARETO_OBJECTIVES) == scale
    progress = hypervolume_progress(frame, scale)
    assert len(progress) == 45  # the refused nets never ran: no point of the curve
    assert progress["hypervolume"].iloc[-1] == pytest.approx(
        hypervolume_progress(feasible, scale)["hypervolume"].iloc[-1]
    )
    assert np.all(np.diff(progress["hypervolume"]) >= 0)


def test_front_json_and_report_show_infeasible_trials_apart(run, capsys):
    assert main(["front", str(run), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert (payload["trials"], payload["refused"], len(payload["infeasible"])) == (45, 3, 5)
    assert all(trial["violations"] == "" for trial in payload["front"])
    frame = load(run)
    frame.attrs["study_name"] = "constrained"
    html = write_report([frame], run / "report.html", png=True).html.read_text()
    assert 'id="infeasible-constrained"' in html
    assert "2 trials ran and broke a constraint, 3 nets were refused before training" in html
    assert "infeasible (broke a constraint)" in html  # the crosses of the Pareto figures
