"""The search driver: Ray Tune + Optuna, faults, resume, bad input, loopback-only Ray."""

from __future__ import annotations

import contextlib
import math
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from ray import cloudpickle as ray_cloudpickle

from nas.cli import main
from nas.cluster import ray_session
from nas.search import SearchConfig, run_search
from nas.search.progress import format_line
from nas.search.trial import TrialSettings
from searchspace import ArchSpec
from tests import REPO
from tests.nas.search.helpers import (
    LOOPBACK,
    SMALL_SPACE,
    assert_nothing_lost_or_counted_twice,
    barrier_driver,
    fake_record,
    kill_session,
    small_config,
    study_trials,
    wait_for,
    write_config,
)

NAS = [sys.executable, "-m", "nas.cli"]

# Ray workers unpickle the fake evaluators below; this module is not importable there.
ray_cloudpickle.register_pickle_by_value(sys.modules[__name__])


def ray_listening_addresses() -> list[str]:
    """Local addresses of every listening TCP socket owned by a Ray process on this machine."""
    listening = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True)
    addresses = []
    for line in listening.stdout.splitlines():
        pids = re.findall(r"pid=(\d+)", line)
        commands = []
        for pid in pids:
            with contextlib.suppress(OSError):
                commands.append(Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"))
        if any("ray" in command for command in commands):
            addresses.append(line.split()[3])
    return addresses


PROGRESS = re.compile(r"^\[\d+/\d+\] .*$", re.MULTILINE)  # one line per finished trial


def test_local_ray_listens_on_loopback_only():
    with ray_session(None):
        addresses = ray_listening_addresses()
    assert addresses
    assert [a for a in addresses if not a.startswith(LOOPBACK)] == []


# ---------------------------------------------------------------------------------------------
# Bad input: one line, exit 2, nothing touched


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"trails": 3}, "unknown key trails"),
        ({"trials": 0}, "trials must be an integer of at least 1, got 0"),
        ({"space": {**SMALL_SPACE, "stages": []}}, "space.stages must hold at least one stage"),
        (
            {"storage": "postgresql://nobody@127.0.0.1:9/none"},
            "storage postgresql://nobody@127.0.0.1:9/none cannot be opened: Connection refused",
        ),
        ({"storage": "nosuchdb://x/y"}, "as an Optuna storage"),
    ],
)
def test_bad_search_input_is_one_line_and_exit_2(tmp_path, capsys, overrides, message):
    path = write_config(tmp_path, **overrides)
    assert main(["search", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert "Traceback" not in err


def test_trials_zero_on_the_command_line(tmp_path, capsys):
    path = write_config(tmp_path)
    assert main(["search", str(path), "--trials", "0"]) == 2
    assert "trials must be an integer of at least 1, got 0" in capsys.readouterr().err


def test_study_with_a_different_space_is_refused_and_untouched(tmp_path, capsys):
    path = write_config(tmp_path)
    config = SearchConfig.load(path)
    storage_url = config.storage_url
    Path(config.run_dir).mkdir(parents=True)
    study = optuna.create_study(study_name=config.study, storage=storage_url)
    study.set_user_attr("space_hash", "another")
    study.set_user_attr("mode", "reward")
    study.add_trial(optuna.trial.create_trial(value=1.0))
    before = (study.user_attrs, len(study.trials))
    for extra in ([], ["--resume"]):
        assert main(["search", str(path), *extra]) == 2
        assert "different search space" in capsys.readouterr().err
    again = optuna.load_study(study_name=config.study, storage=storage_url)
    assert (again.user_attrs, len(again.trials)) == before


def test_resume_of_a_missing_study_is_refused(tmp_path, capsys):
    path = write_config(tmp_path)
    assert main(["search", str(path), "--resume"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_missing_config_file(tmp_path, capsys):
    assert main(["search", str(tmp_path / "nope.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Real searches (the real evaluation on small data)


@pytest.mark.slow
def test_driver_killed_mid_search_resumes_without_loss_or_double_count(tmp_path):
    path = write_config(
        tmp_path, dataset="synthetic", trials=6, concurrent=2, epochs=1, space=SMALL_SPACE,
        study="crash", sampler="random",
    )  # fmt: skip
    config = SearchConfig.load(path)
    barrier = tmp_path / "barrier"
    first = subprocess.Popen(
        barrier_driver(path, barrier, 2), cwd=REPO, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        # Two candidates finish and are told; the next two wait on the barrier for ever.
        wait_for(lambda: len(list(barrier.glob("blocked-*"))) == 2, 300, "2 blocked", first)
        wait_for(
            lambda: sum(t.state.is_finished() for t in study_trials(config)) == 2,
            60, "2 finished trials", first,
        )  # fmt: skip
    finally:
        kill_session(first)
    finished_before = [t for t in study_trials(config) if t.state.is_finished()]
    assert len(finished_before) == 2

    resumed = subprocess.run(
        barrier_driver(path, barrier, 100, "--resume"), cwd=REPO, capture_output=True,
        text=True, timeout=600, start_new_session=True,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert_nothing_lost_or_counted_twice(study_trials(config), finished_before, 6, resumed.stdout)


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_stops_the_search_saved_and_resumable(tmp_path, stop):
    path = write_config(
        tmp_path, dataset="synthetic", trials=4, concurrent=2, epochs=1, space=SMALL_SPACE,
        study="stop", sampler="random",
    )  # fmt: skip
    config = SearchConfig.load(path)
    barrier = tmp_path / "barrier"
    process = subprocess.Popen(
        barrier_driver(path, barrier, 2), cwd=REPO, start_new_session=True, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        wait_for(lambda: len(list(barrier.glob("blocked-*"))) == 2, 300, "2 blocked", process)
        wait_for(
            lambda: sum(t.state.is_finished() for t in study_trials(config)) == 2,
            60, "2 finished trials", process,
        )  # fmt: skip
        stopped_at = time.monotonic()
        process.send_signal(stop)
        output, _ = process.communicate(timeout=120)
        seconds = time.monotonic() - stopped_at
    finally:
        kill_session(process)
    assert process.returncode == 130, output[-3000:]
    assert f"Continue with: nas search {path} --resume" in output
    assert "Traceback" not in output
    assert seconds < 60, f"took {seconds:.0f} s to stop"
    assert not ray_processes_of(process.pid)
    trials = study_trials(config)
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials) == 2
    if stop == signal.SIGTERM:
        # Both signals leave the same saved state, asserted above; resuming from it is the same
        # code either way (and after a kill: the test above), so it runs once, after Ctrl-C.
        return
    resumed = subprocess.run(
        barrier_driver(path, barrier, 100, "--resume"), cwd=REPO, capture_output=True,
        text=True, timeout=600, start_new_session=True,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    done = [t for t in study_trials(config) if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 4


def ray_processes_of(session: int) -> list[str]:
    """Ray processes left in a driver's process session (the Ray it started lives there)."""
    listing = subprocess.run(["ps", "-o", "pid=,sid=,args=", "-e"], capture_output=True, text=True)
    return [
        line for line in listing.stdout.splitlines()
        if line.split()[1] == str(session) and "ray" in line
    ]  # fmt: skip


@pytest.mark.slow
def test_quick_search_two_trials_at_once(tmp_path):
    """The README's quick start, on its real config and data: two of its trials, run at once."""
    runs = tmp_path / "runs"
    result = subprocess.run(
        [*NAS, "search", str(REPO / "configs" / "quick.yaml"), "--trials", "2",
         "--runs-dir", str(runs)],
        capture_output=True, text=True, timeout=900, start_new_session=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    trials = optuna.load_study(
        study_name="quick", storage=f"sqlite:///{runs}/quick/study.db"
    ).trials
    assert len(trials) == 2
    for trial in trials:
        assert trial.state == optuna.trial.TrialState.COMPLETE, trial.user_attrs
        attrs = trial.user_attrs
        ArchSpec.from_string(attrs["spec"])
        for key in ("accuracy", "step_time_ms", "step_time_norm", "params", "flops", "reward"):
            assert isinstance(attrs[key], (int, float)) and math.isfinite(attrs[key]), key
        assert attrs["accuracy"] > 0.2  # 10 classes: well above chance after brief training
    lines = PROGRESS.findall(result.stdout)
    assert len(lines) == 2 and lines[-1].startswith("[2/2]")
    # Two trials never leave TPE's random start-up, and the search says so before it starts.
    assert (
        "sampler tpe: 10 random start-up trials (Optuna's default), so all 2 trials are drawn "
        "at random (a random search)"
    ) in result.stdout
    show = subprocess.run(
        [*NAS, "show", str(runs / "quick" / "best.yaml"), "--json"], capture_output=True, text=True
    )
    assert show.returncode == 0, show.stderr
    assert '"params"' in show.stdout


def test_progress_format_handles_failures():
    line = format_line(3, 12, {"spec": "stem8", "status": "failed", "failure": "boom"})
    assert line == "[3/12] stem8  FAILED: boom"


def faulty_evaluate(spec: ArchSpec, settings: TrialSettings, report) -> dict:
    """Stage-1 kernel 5 raises; a fused stage 2 fails as a NaN loss does in ``nas.evaluate``
    (a failed record, with the loss's reason); anything else gets a deterministic record."""
    if spec.stages[0].kernel == 5:
        raise RuntimeError("candidate exploded on purpose")
    if spec.stages[1].block == "fused":
        return {
            "spec": spec.to_string(),
            "hash": spec.hash,
            "status": "failed",
            "failure": "loss became nan at epoch 1, step 3",
        }
    record = fake_record(spec, accuracy=0.5 + 0.01 * spec.stages[0].repeats)
    report({"accuracy": record["accuracy"], "reward": record["reward"]})
    return record


@pytest.mark.slow
@pytest.mark.usefixtures("module_ray")  # one Ray for the module's searches
def test_failing_candidates_are_recorded_and_the_search_finishes(tmp_path):
    config = small_config(tmp_path, trials=8)
    lines: list[str] = []
    outcome = run_search(config, evaluate=faulty_evaluate, log=lines.append)
    study = optuna.load_study(study_name="t", storage=config.storage_url)
    trials = study.get_trials()
    assert len(trials) == 8
    assert all(t.state.is_finished() for t in trials)
    for trial in trials:
        spec = ArchSpec.from_string(trial.user_attrs["spec"])
        if spec.stages[0].kernel == 5:
            assert trial.state == optuna.trial.TrialState.FAIL
            assert "exploded on purpose" in trial.user_attrs["failure"]
        elif spec.stages[1].block == "fused":
            assert trial.state == optuna.trial.TrialState.FAIL
            assert "loss became nan" in trial.user_attrs["failure"]
        elif trial.user_attrs.get("reused_from") is None:
            assert trial.state == optuna.trial.TrialState.COMPLETE
            assert trial.values[0] == pytest.approx(trial.user_attrs["reward"])
            assert trial.user_attrs["params"] > 0
    failures = " ".join(t.user_attrs.get("failure", "") for t in trials)
    assert "exploded on purpose" in failures and "loss became nan" in failures  # both kinds ran
    assert outcome.finished + outcome.failed == 8
    assert len(PROGRESS.findall("\n".join(lines))) == 8
    assert any("FAILED" in line for line in lines)


def slow_learner_evaluate(spec: ArchSpec, settings: TrialSettings, report) -> dict:
    """Three epochs; accuracy grows with the first stage's depth, so ASHA has losers to stop."""
    record = fake_record(spec, accuracy=0.3 + 0.2 * spec.stages[0].repeats)
    for epoch in (1, 2, 3):
        accuracy = record["accuracy"] * epoch / 3
        report({"accuracy": accuracy, "reward": accuracy, "epoch": epoch})
    return record


@pytest.mark.slow
@pytest.mark.usefixtures("module_ray")  # one Ray for the module's searches
def test_asha_stops_weak_candidates_and_keeps_their_figures(tmp_path):
    config = small_config(tmp_path, trials=8, concurrent=1, epochs=3, early_stopping=True)
    outcome = run_search(config, evaluate=slow_learner_evaluate, log=lambda line: None)
    trials = optuna.load_study(study_name="t", storage=config.storage_url).get_trials()
    states = {t.state for t in trials}
    assert optuna.trial.TrialState.PRUNED in states  # ASHA stopped someone
    assert optuna.trial.TrialState.COMPLETE in states
    for trial in trials:
        if trial.state == optuna.trial.TrialState.PRUNED:
            assert trial.user_attrs["status"] == "stopped"
            assert trial.user_attrs["accuracy"] > 0  # the figures it reached are kept
    assert outcome.best_spec is not None


def steady_evaluate(spec: ArchSpec, settings: TrialSettings, report) -> dict:
    record = fake_record(spec, accuracy=0.5 + 0.1 * spec.stages[0].repeats)
    report({"accuracy": record["accuracy"], "reward": record["reward"]})
    return record


@pytest.mark.slow
@pytest.mark.usefixtures("module_ray")  # one Ray for the module's searches
def test_a_spec_already_evaluated_is_not_trained_again(tmp_path):
    # A space of exactly two architectures: five trials must repeat some.
    space = {
        **SMALL_SPACE,
        "blocks": ["fused"],
        "expand_ratios": [1],
        "kernels": [3],
        "fused_se_ratios": [0.0],
        "stages": [
            {"out_channels": 8, "stride": 1, "repeats": [1, 2]},
            {"out_channels": 16, "stride": 2, "repeats": 1},
        ],
    }
    config = small_config(tmp_path, trials=5, concurrent=1, space=space)
    run_search(config, evaluate=steady_evaluate, log=lambda line: None)
    trials = optuna.load_study(study_name="t", storage=config.storage_url).get_trials()
    evaluated = [t for t in trials if "reused_from" not in t.user_attrs]
    reused = [t for t in trials if "reused_from" in t.user_attrs]
    assert len({t.user_attrs["hash"] for t in trials}) == len(evaluated) == 2
    assert len(reused) == 3
    by_number = {t.number: t for t in trials}
    for trial in reused:
        original = by_number[trial.user_attrs["reused_from"]]
        assert trial.user_attrs["hash"] == original.user_attrs["hash"]
        assert trial.values == original.values
