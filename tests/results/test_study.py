"""Reading a study: the frame's contents, finding the study, and refusing bad input."""

from __future__ import annotations

import hashlib
import sqlite3

import optuna
import pytest

from results import FRAME_COLUMNS, ResultsError, load_study_frame, open_study
from tests.results.synthetic_study import make_run


def file_digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_frame_has_one_row_per_trial_with_the_recorded_metrics(pareto_run):
    frame = load_study_frame(pareto_run)
    study = optuna.load_study(study_name="pareto-quick", storage=f"sqlite:///{pareto_run}/study.db")
    trials = study.get_trials()
    assert list(frame.columns) == list(FRAME_COLUMNS)
    assert list(frame["number"]) == [trial.number for trial in trials]
    assert frame["state"].value_counts().to_dict() == {"COMPLETE": 40, "FAIL": 3, "RUNNING": 2}
    for trial, (_, row) in zip(trials, frame.iterrows(), strict=True):
        attrs = trial.user_attrs
        assert row["spec"] == attrs.get("spec", "")
        if trial.state == optuna.trial.TrialState.COMPLETE:
            assert row["accuracy"] == attrs["accuracy"]
            assert row["step_time_ms"] == attrs["step_time_ms"]
            assert row["params"] == attrs["params"]
            assert row["flops"] == attrs["flops"]
            assert row["reward"] == attrs["reward"]
            assert row["device"] == "cpu"
            assert row["failure"] == ""
    failed = frame[frame["state"] == "FAIL"]
    assert failed["failure"].str.startswith("CUDA out of memory").all()
    assert failed["accuracy"].isna().all() and failed["params"].isna().all()
    assert frame.attrs["mode"] == "pareto"
    assert frame.attrs["objectives"] == ["accuracy", "step_time_norm", "params"]


def test_objectives_missing_from_user_attrs_come_from_trial_values(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=storage, study_name="bare", directions=["maximize"] * 2)
    with pytest.warns(optuna.exceptions.ExperimentalWarning):
        study.set_metric_names(["accuracy", "reward"])
    study.add_trial(optuna.trial.create_trial(values=[0.9, 0.8]))
    frame = load_study_frame(tmp_path)
    assert frame.loc[0, "accuracy"] == 0.9 and frame.loc[0, "reward"] == 0.8
    assert frame.attrs["mode"] == "pareto"  # two objectives, no mode recorded


def test_study_found_by_directory_name_url_or_only_study(runs_root, pareto_run):
    assert open_study(pareto_run).study_name == "pareto-quick"
    url = f"sqlite:///{pareto_run}/study.db"
    source = open_study(url)
    assert source.study_name == "pareto-quick"  # the only study
    assert source.run_dir == pareto_run
    assert open_study(pareto_run / "study.db", "pareto-quick").study_name == "pareto-quick"


def test_several_studies_need_study_name(tmp_path):
    url = f"sqlite:///{tmp_path / 'two.db'}"
    optuna.create_study(storage=url, study_name="a")
    optuna.create_study(storage=url, study_name="b")
    with pytest.raises(ResultsError, match=r"several studies \(a, b\); pick one with --study"):
        open_study(url)
    assert open_study(url, "b").study_name == "b"
    with pytest.raises(ResultsError, match="--study 'c' is not in"):
        open_study(url, "c")


def test_bad_runs_are_one_line_errors(tmp_path):
    with pytest.raises(ResultsError, match=r"run directory .*missing does not exist"):
        load_study_frame(tmp_path / "missing")
    (tmp_path / "empty-dir").mkdir()
    with pytest.raises(ResultsError, match=r"has no study\.db"):
        load_study_frame(tmp_path / "empty-dir")
    missing_url = f"sqlite:///{tmp_path / 'nothing.db'}"
    with pytest.raises(ResultsError, match="does not exist"):
        load_study_frame(missing_url)
    assert not (tmp_path / "nothing.db").exists()  # not created by looking
    (tmp_path / "junk.db").write_text("not a database")
    with pytest.raises(ResultsError, match=r"cannot open .* as an Optuna storage"):
        load_study_frame(tmp_path / "junk.db")
    sqlite3.connect(tmp_path / "other.db").execute("create table t (x int)").connection.commit()
    with pytest.raises(ResultsError, match=r"cannot open .* as an Optuna storage"):
        load_study_frame(tmp_path / "other.db")


def test_empty_study_is_an_error(tmp_path):
    run_dir = make_run(tmp_path, "empty", "pareto", n_complete=0, n_failed=0, n_running=0)
    with pytest.raises(ResultsError, match=r"study 'empty' in .* has no trials yet"):
        load_study_frame(run_dir)


def test_reading_never_writes_the_database(tmp_path):
    run_dir = make_run(tmp_path, "quiet", "reward", n_complete=5)
    before = file_digest(run_dir / "study.db")
    load_study_frame(run_dir)
    open_study(run_dir).load().get_trials()
    assert file_digest(run_dir / "study.db") == before
    # The read-only connection refuses writes outright.
    study = open_study(run_dir).load()
    with pytest.raises(optuna.exceptions.StorageInternalError) as refused:
        study.set_user_attr("x", 1)
    assert "readonly database" in str(refused.value.__cause__)
