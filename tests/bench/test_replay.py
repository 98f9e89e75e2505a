"""bench/replay.py: figures on a scale fixed before any search, paired statistics, the report."""

from __future__ import annotations

import copy
import gzip
import importlib.util
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml
from scipy import stats

from nas.search.table import Table, synthetic_table_data
from tests import REPO
from tests.nas.search.helpers import small_config
from tests.nas.search.test_replay import SPACE


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("replay_bench", REPO / "bench" / "replay.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    return small_config(tmp_path_factory.mktemp("c"), space=SPACE, epochs=3, image_size=16)


@pytest.fixture(scope="module")
def table(config) -> Table:
    return Table.from_dict(synthetic_table_data(config, seeds=2, seed=1))


def test_the_hypervolume_scale_comes_from_the_space_not_the_results(bench, config, table):
    scale = bench.fixed_normalization(table)
    accuracy, step, params = scale.scales
    assert (accuracy.best, accuracy.worst, accuracy.log) == (1.0, 0.1, False)
    assert (step.best, step.worst) == (
        min(n.step_time_ms for n in table.nets),
        max(n.step_time_ms for n in table.nets),
    )
    assert step.log and params.log and params.best == min(n.params for n in table.nets)
    # Other training results of the same nets: the same scale.
    data = synthetic_table_data(config, seeds=2, seed=1)
    for net in data["nets"]:
        for run in net["runs"].values():
            run["test_accuracy"] = 0.3
            run["accuracy"] = [0.2] * len(run["accuracy"])
    assert bench.fixed_normalization(Table.from_dict(data)) == scale


def _without_ranks(row: dict) -> dict:
    return {key: value for key, value in row.items() if not key.startswith("rank_")}


def test_adding_a_method_leaves_the_others_figures_as_they_were(bench, table):
    seeds, budgets = [0, 1, 2], [6, 12]
    truth = bench.Truth.of(table)
    small = ["random", "tpe"]
    large = ["random", "tpe", "asha", "mo-tpe"]
    runs = bench.run_jobs(
        table, bench.plan(large, budgets, seeds), workers=2, processes=1, log=lambda line: None
    )
    before = bench.analyse(runs, truth, small, budgets, seeds)
    after = bench.analyse(runs, truth, large, budgets, seeds)
    for budget in budgets:
        for method in small:
            assert _without_ranks(before["budgets"][budget]["methods"][method]) == (
                _without_ranks(after["budgets"][budget]["methods"][method])
            )
    # And the figures are what the table says: a regret is the true best less a net's reward.
    rows = after["budgets"][12]["methods"]
    assert all(0 <= value <= truth.best_reward for value in rows["tpe"]["per_seed_regret"])
    assert all(0 < value < 1 for value in rows["mo-tpe"]["per_seed_hypervolume"])


def test_the_regret_follows_the_reward_best_trial_the_search_saw(bench, table):
    truth = bench.Truth.of(table)
    nets = sorted(truth.reward, key=truth.reward.get)
    worst, middle, best = nets[0], nets[len(nets) // 2], nets[-1]
    trials = [  # the search saw the middle net best, then a stopped trial, then a reused one
        {"index": 0, "hash": worst, "end": 5.0, "state": "complete", "reward": 0.5},
        {"index": 1, "hash": middle, "end": 7.0, "state": "complete", "reward": 0.9},
        {"index": 2, "hash": best, "end": 8.0, "state": "stopped", "reward": None},
        {"index": 3, "hash": best, "end": 9.0, "state": "complete", "reward": 0.8},
    ]
    found = bench.curves(trials, truth)
    assert list(found.times) == [5.0, 7.0, 8.0, 9.0]
    assert found.regret[0] == pytest.approx(truth.best_reward - truth.reward[worst])
    assert found.regret[-1] == pytest.approx(truth.best_reward - truth.reward[middle])
    assert math.isnan(found.at(1.0)[0]) and found.at(1.0)[1] == 0.0
    assert found.hypervolume[-1] >= found.hypervolume[1] > 0
    assert found.hypervolume[2] == found.hypervolume[1]  # a stopped trial is on no front
    assert (found.stopped, found.reused, found.distinct, found.end) == (1, 0, 3, 9.0)


def test_paired_differences_bootstrap_and_wilcoxon(bench):
    rng = np.random.default_rng(0)
    baseline = rng.normal(0.0, 1.0, 30)
    values = baseline + 0.5 + rng.normal(0.0, 0.3, 30)
    result = bench.paired(values, baseline)
    assert result["mean"] == pytest.approx(np.mean(values - baseline))
    assert result["low"] < result["mean"] < result["high"]
    assert result["p"] == pytest.approx(stats.wilcoxon(values - baseline).pvalue)
    same = bench.paired(baseline, baseline)
    assert (same["mean"], same["low"], same["high"], same["p"]) == (0.0, 0.0, 0.0, 1.0)


def test_mean_ranks(bench):
    values = np.array([[1.0, 3.0], [2.0, 1.0], [np.nan, 2.0]])  # methods x seeds
    assert list(bench.mean_ranks(values, higher_is_better=False)) == [2.0, 1.5, 2.5]
    assert list(bench.mean_ranks(values, higher_is_better=True)) == [1.5, 2.0, 2.5]


def test_the_command_writes_the_tables_and_the_figure(config, tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(copy.deepcopy(config.to_dict())))
    out = tmp_path / "out"
    command = [sys.executable, "bench/replay.py", "--synthetic", str(path), "--methods",
               "random,tpe,asha,nsga2", "--budgets", "6,12", "--seeds", "3", "--processes", "2",
               "--out", str(out)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = (out / "replay.md").read_text()
    assert "### 6 trials" in text and "### 12 trials" in text and "| asha |" in text
    assert text in done.stdout
    # Each method against the search config's default sampler (TPE) on its objective.
    assert "Against the default sampler" in text and "| asha | tpe |" in text
    assert "| tpe | tpe | +0.00 [+0.00, +0.00] p 1 | +0.00 [+0.00, +0.00] p 1 |" in text
    assert (out / "replay.png").stat().st_size > 20_000
    first = json.loads(gzip.decompress((out / "replay.json.gz").read_bytes()))

    # A method added: the others' replays are reused, their figures unchanged; the new ones run
    # in the command's own process (no pool of 2 to start for 6 replays), and a replay's trials
    # do not depend on the process it ran in.
    command[command.index("random,tpe,asha,nsga2")] = "random,tpe,asha,nsga2,mo-tpe"
    command[command.index("--processes") + 1] = "1"
    again = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "6 replays in 1 processes (24 replays of" in again.stdout  # mo-tpe's 2 x 3 seeds
    second = json.loads(gzip.decompress((out / "replay.json.gz").read_bytes()))
    for budget in ("6", "12"):
        for method in ("random", "tpe", "asha", "nsga2"):
            rows = [run["result"]["budgets"][budget]["methods"][method] for run in (first, second)]
            before, after = (_without_ranks(row) for row in rows)
            # mo-tpe is the front's default sampler: nsga2 gains a comparison with it, and no
            # figure it had changes.
            assert {key: after[key] for key in before} == before


def test_a_grid_stopped_before_its_report_keeps_the_replays_it_finished(
    bench, config, tmp_path, monkeypatch
):
    """The replays done so far are saved while the grid runs (here after every one): a run that
    dies before its report leaves them in ``replay.json.gz``, and the rerun reuses them all."""
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(copy.deepcopy(config.to_dict())))
    out = tmp_path / "out"
    argv = ["--synthetic", str(path), "--methods", "random,tpe", "--budgets", "6", "--seeds",
            "2", "--processes", "1", "--out", str(out)]  # fmt: skip
    monkeypatch.setattr(bench, "SAVE_EVERY", 0.0)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # as Ctrl-C after the last replay, before the report

    monkeypatch.setattr(bench, "analyse", killed)
    with pytest.raises(KeyboardInterrupt):
        bench.main(argv)
    saved = json.loads(gzip.decompress((out / "replay.json.gz").read_bytes()))
    assert saved["result"] is None and len(saved["runs"]) == 4  # 2 methods x 2 seeds
    assert not (out / "replay.md").exists()

    monkeypatch.undo()
    done = subprocess.run(
        [sys.executable, "bench/replay.py", *argv], cwd=REPO, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "0 replays in 1 processes (4 replays of" in done.stdout
    assert (out / "replay.md").exists()
