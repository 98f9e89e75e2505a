"""bench/record_table.py end to end on a tiny space: every net and seed recorded through Ray Tune,
the step times timed in passes, resumed after a kill without training anything twice."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time

import pytest
import yaml

from nas.search import SearchConfig
from nas.search.table import Table, read_table_data
from tests import REPO
from tests.bench.test_table import check_reproduced, check_schema_and_coverage
from tests.nas.search.helpers import kill_session

#: 2 x 2 = 4 nets, 2 epochs on 400 generated images.
TINY = {
    "study": "tiny",
    "dataset": "synthetic:400",
    "image_size": 16,
    "batch_size": 32,
    "epochs": 2,
    "concurrent": 2,
    "resources": {"cpus": 1, "gpus": 0},
    "early_stopping": False,
    "evaluation": {"timing_clock": "cpu", "timing_steps": 2, "timing_warmup": 1},
    "space": {
        "stem_channels": 8,
        "head_channels": 32,
        "num_classes": 10,
        "train_resolution": 24,
        "eval_resolution": 24,
        "stages": [
            {"out_channels": 8, "stride": 1, "repeats": [1, 2], "blocks": ["mbconv"],
             "kernels": [3], "expand_ratios": [1], "se_ratios": [0.0]},
            {"out_channels": 16, "stride": 2, "repeats": 1, "blocks": ["fused", "mbconv"],
             "kernels": [3], "expand_ratios": [1], "se_ratios": [0.0]},
        ],
    },
}  # fmt: skip


def _command(path, out, seeds: int) -> list[str]:
    return [sys.executable, "bench/record_table.py", str(path), "--seeds", str(seeds),
            "--passes", "2", "--out", str(out), "--work", str(out.parent / "work")]  # fmt: skip


def _record_table():
    """bench/record_table.py as a module."""
    spec = importlib.util.spec_from_file_location(
        "record_table", REPO / "bench" / "record_table.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _runs(out) -> dict[tuple[str, str], dict]:
    if not out.exists():
        return {}
    data = read_table_data(out)
    return {(net["hash"], seed): run for net in data["nets"] for seed, run in net["runs"].items()}


@pytest.mark.slow
def test_every_net_and_seed_is_recorded_and_a_killed_recording_resumes(tmp_path, capsys):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "data" / "table.json.gz"
    env = {**os.environ, "EFFNAS_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(REPO)}
    run = {"cwd": REPO, "env": env, "capture_output": True, "text": True, "timeout": 600}

    # One seed, killed once a run of it is recorded.
    first = subprocess.Popen(
        _command(path, out, 1), cwd=REPO, env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while not _runs(out):
            assert first.poll() is None, "the recording ended before it was killed"
            assert time.monotonic() < deadline, "no run of seed 0 within 300 s"
            time.sleep(0.1)
    finally:
        kill_session(first)
    killed = _runs(out)  # the file is whole: written atomically
    assert killed and {seed for _, seed in killed} == {"0"}
    done_before = len(killed)

    # The same command with a second seed: only what is missing is trained, the seed added.
    second = subprocess.run(_command(path, out, 2), **run)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    if done_before < 4:
        assert f"seed 0: training {4 - done_before} nets" in second.stdout
    else:
        assert "seed 0: training" not in second.stdout
    assert "seed 1: training 4 nets" in second.stdout
    assert "seed 1: 4/4 recorded" in second.stdout  # a line of progress for each run
    final = _runs(out)
    for key, value in killed.items():
        assert final[key] == value  # nothing recorded is trained again

    table = Table.read(out)
    config = SearchConfig.load(path)
    assert table.missing() == [] and table.seeds == (0, 1)
    assert [net.spec for net in table.nets] == [s.to_string() for s in config.space.all_specs()]
    for net in table.nets:
        assert net.step_time_ms > 0 and net.step_time_proxy_ms > 0
        for run_ in net.runs.values():
            assert run_.ok and len(run_.accuracy) == len(run_.train_loss) == 2
            assert all(loss > 0 for loss in run_.train_loss)  # every epoch's training loss
            assert run_.test_accuracy is not None
            assert 0 < run_.cpu_at_epoch[0] < run_.cpu_at_epoch[1] <= run_.cpu_seconds
            assert all(0 < seconds < run_.cpu_seconds for seconds in run_.epoch_cpu_seconds)
    data = read_table_data(out)
    assert all(len(net["step_time_passes_ms"]["final"]) == 2 for net in data["nets"])
    assert table.reference["step_time_ms"] > 0 and table.timing["space"]["nets"] == 4
    sessions = table.provenance["sessions"]
    assert len(sessions) == 2 and sessions[0]["commit"] and sessions[0]["torch"]
    assert sessions[0]["boot_id"] and sessions[0]["boot_id"] == sessions[1]["boot_id"]
    # Each run names the session that trained it: the killed one's runs, the rest the second.
    for (hash_, seed), run_ in _runs(out).items():
        assert run_["session"] == (0 if (hash_, seed) in killed else 1)
    assert "bench/record_table.py" in sessions[0]["command"]
    assert table.provenance["cost"]["runs"] == 8
    # The checks the shipped table gets: a fresh evaluation as a search's (no held-out pass
    # before the last epoch) reproduces the recorded runs.
    check_schema_and_coverage(table, config)
    check_reproduced(table, count=2)

    # Another config's table is refused, whatever the seeds (the command's main, in this
    # process: it refuses before Ray or torch are needed).
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({**TINY, "epochs": 3}))
    before = out.read_bytes()
    assert _record_table().main(_command(other, out, 2)[2:]) == 2
    assert "records another config" in capsys.readouterr().err
    assert out.read_bytes() == before

    # The replay's faithfulness check on this table: a live random search (real training, seed
    # 0) and its replay ask for the same nets, the live runs reproduce the table's, and the two
    # hand out the same net.
    live = subprocess.run(
        [sys.executable, "bench/replay_live.py", "--table", str(out), "--method", "random",
         "--seed", "0", "--budget", "3", "--out", str(tmp_path / "live")], **run,
    )  # fmt: skip
    assert live.returncode == 0, live.stdout[-3000:] + live.stderr[-3000:]
    assert "the same net in the first 3 of 3 trials" in live.stdout
    check = json.loads((tmp_path / "live" / "live-random-b3-s0.json").read_text())
    assert check["live"] == check["replay"] and check["same_first"] == 3
    for net in check["trained"]:
        assert net["live_accuracy"] == pytest.approx(net["table_accuracy"], abs=1e-9)
    # Scored with the figures the replay saw, the live search's nets give the replay's choice
    # (the live search's own choice may differ: its step times are measured afresh).
    assert check["best_difference_on_replay_figures"] == 0
    assert check["table_missing_runs"] == 0 and len(check["live_trials"]) == 3

    # Judged again against the table (here unchanged): the same judgement, nothing trained.
    path = tmp_path / "live" / "live-random-b3-s0.json"
    rejudged = subprocess.run(
        [sys.executable, "bench/replay_live.py", "--table", str(out), "--rejudge", str(path)],
        **run,
    )  # fmt: skip
    assert rejudged.returncode == 0, rejudged.stdout[-3000:] + rejudged.stderr[-3000:]
    assert "live search live-random" not in rejudged.stdout and "rejudging" in rejudged.stdout
    assert json.loads(path.read_text()) == check


def test_a_table_recorded_before_a_setting_was_added_resumes(tmp_path):
    """A config key added since the recording began, at its default, reads as the same config;
    another value of a recorded key does not."""
    from nas.search.table import write_table_data

    module = _record_table()
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    config = SearchConfig.load(path)
    data = module.new_table(config)
    del data["config"]["startup_trials"]  # as a table recorded before the key existed
    out = write_table_data(tmp_path / "table.json.gz", data)
    assert module.open_table(config, out)["config"] == data["config"]
    data["config"]["epochs"] = 3
    write_table_data(out, data)
    with pytest.raises(module.EffnasError, match="records another config"):
        module.open_table(config, out)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--method", "bogus"], "--method 'bogus' is not a replay method"),
        (["--method", "tpe", "--seed", "7"], "--seed 7 is not a seed of"),
        (["--budget", "0"], "--budget must be at least 1, got 0"),
        (["--rejudge", "missing.json"], "--rejudge missing.json: not a live check's result"),
    ],
)
def test_replay_live_refuses_what_it_cannot_check_before_any_search(tmp_path, args, named):
    from nas.search.table import synthetic_table_data, write_table_data

    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    table = write_table_data(
        tmp_path / "t.json.gz", synthetic_table_data(SearchConfig.load(path), seeds=2)
    )
    result = subprocess.run(
        [sys.executable, "bench/replay_live.py", "--table", str(table), *args,
         "--out", str(tmp_path / "live")],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2 and named in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "live").exists()
