"""bench/search_quality.py's analysis: hypervolume per search, the net each hands its user."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pandas as pd
import pytest
import yaml

from nas.cluster import ray_session
from nas.evaluate.reward import reward
from results.hypervolume import Normalization, hypervolume
from tests import REPO
from tests.nas.search.helpers import small_config
from tests.nas.search.test_fidelity import TINY


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location(
        "search_quality", REPO / "bench" / "search_quality.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _trials(method: str, seed: int, accuracies: list[float], rewards: list[float]) -> list[dict]:
    rows = []
    for number, (accuracy, score) in enumerate(zip(accuracies, rewards, strict=True)):
        rows.append(
            {
                "method": method,
                "seed": seed,
                "number": number,
                "state": "FAIL" if accuracy is None else "COMPLETE",
                "spec": f"net-{method}-{seed}-{number}",
                "hash": f"{method}{seed}{number}",
                "accuracy": accuracy,
                # The test split a point below, where the trial completed.
                "test_accuracy": None if accuracy is None else accuracy - 0.01,
                "params": 1000 * (number + 1),
                "params_norm": (number + 1) / 10,
                "flops": 5000 * (number + 1),
                "reward": score,
                "step_time_ms": 99.0,  # what the search measured, replaced by the common clock
                "epochs": 2,
                "reused": False,
                "datetime_start": f"2026-01-0{seed + 1} 10:{number:02d}:00",
                "datetime_complete": f"2026-01-0{seed + 1} 10:{number:02d}:30",
            }
        )
    return rows


def test_analysis_scores_every_search_on_one_scale(bench, tmp_path):
    base = small_config(tmp_path)
    frame = pd.DataFrame(
        _trials("reward-tpe", 0, [0.90, 0.95, None, 0.97], [0.5, 0.9, None, 0.7])
        + _trials("random", 0, [0.80, 0.85, 0.99, 0.70], [0.4, 0.3, 0.2, 0.1])
    )
    times = {spec: 10.0 + 5 * i for i, spec in enumerate(frame["spec"])}
    times["reference"] = 20.0
    result = bench.analyse(frame, times, base)

    retimed = frame.assign(step_time_ms=frame["spec"].map(times))
    normalization = Normalization.fit([retimed], bench.OBJECTIVES)
    for study, rows in (("reward-tpe-s0", retimed[:4]), ("random-s0", retimed[4:])):
        found = result["studies"][study]
        complete = rows[rows["state"] == "COMPLETE"]
        volume = hypervolume(normalization.normalize(complete), normalization.reference)
        assert found["hypervolume"][-1] == pytest.approx(volume / 1.1**3)
        assert np.all(np.diff(found["hypervolume"]) >= 0) and len(found["hypervolume"]) == 4
    # The chosen net is the search's own reward-best, judged on the common clock.
    best = result["studies"]["reward-tpe-s0"]["best"]
    assert best["spec"] == "net-reward-tpe-0-1" and best["accuracy"] == 0.95
    assert best["test_accuracy"] == pytest.approx(0.94)
    assert result["methods"]["reward-tpe"]["heldout_minus_test"]["mean"] == pytest.approx(1.0)
    assert best["step_time_ms"] == times["net-reward-tpe-0-1"]
    assert best["reward"] == pytest.approx(reward(0.95, 15.0 / 20.0, 0.2, -0.07, -0.05))
    assert result["studies"]["reward-tpe-s0"]["failed"] == 1
    assert result["methods"]["random"]["hypervolume"]["mean"] == pytest.approx(
        result["studies"]["random-s0"]["hypervolume"][-1]
    )
    table = bench.table(result, 4, [0])
    assert table.count("\n") == 3 and "| reward-tpe |" in table and "95.00%" in table
    assert "| 94.00% | +1.00 |" in table
    assert bench.figure(result, tmp_path / "quality.png").stat().st_size > 10_000


def test_compute_counts_the_epochs_each_trial_trained(bench, tmp_path):
    # An early-stopping search: trial 1 stopped after epoch 1, trial 2 reused trial 0's result,
    # trial 3 failed; a search without early stopping trains every trial to the end.
    asha = pd.DataFrame(_trials("pareto-asha", 0, [0.90, 0.50, 0.90, None], [0.5, 0.2, 0.5, None]))
    asha.loc[1, ["state", "epochs"]] = ["PRUNED", 1]
    asha.loc[2, ["reused", "spec"]] = [True, asha.loc[0, "spec"]]
    spent = bench.compute_spent(asha, epochs=2)
    assert list(spent["epochs"]) == [2, 1, 0, 0] and list(spent["trial_seconds"]) == [30.0] * 4
    asha.loc[1, "epochs"] = None  # a stopped trial of an older effnas: never understated
    assert list(bench.compute_spent(asha, epochs=2)["epochs"]) == [2, 2, 0, 0]
    asha.loc[1, "epochs"] = 1
    full = pd.DataFrame(_trials("pareto-nsga2", 0, [0.90, 0.95, 0.97, 0.80], [0.5, 0.6, 0.7, 0.1]))
    frame = pd.concat([asha, full], ignore_index=True)
    times = {spec: 10.0 + i for i, spec in enumerate(dict.fromkeys(frame["spec"]))}
    result = bench.analyse(frame, {**times, "reference": 20.0}, small_config(tmp_path))
    studies = result["studies"]
    assert studies["pareto-asha-s0"]["epochs"] == [2, 3, 3, 3]
    assert studies["pareto-nsga2-s0"]["epochs"] == [2, 4, 6, 8]
    assert studies["pareto-asha-s0"]["stopped"] == 1
    # At the compute the cheaper search spent (3 epochs), the other had finished one trial.
    full_hv = studies["pareto-nsga2-s0"]["hypervolume"]
    assert result["budget_epochs"] == 3
    assert studies["pareto-nsga2-s0"]["hypervolume_at_budget"] == full_hv[0]
    asha_hv = studies["pareto-asha-s0"]["hypervolume"]
    assert studies["pareto-asha-s0"]["hypervolume_at_budget"] == asha_hv[-1]
    method = result["methods"]["pareto-nsga2"]
    assert (method["epochs"]["mean"], method["trial_seconds"]["mean"]) == (8, 120.0)
    assert bench.hypervolume_at(studies["pareto-nsga2-s0"], "epochs", 1.5) == 0.0
    table = bench.table(result, 4, [0])
    assert "hypervolume at 3 epochs" in table and "| pareto-asha |" in table
    assert bench.figure(result, tmp_path / "quality.png").stat().st_size > 10_000


def test_methods_change_only_what_they_name(bench, tmp_path):
    base = small_config(tmp_path, early_stopping=True, evaluation={"timing_steps": 3})
    flops = bench.method_config(base, "flops-tpe", 1, 7, tmp_path / "out")
    assert (flops.study, flops.seed, flops.trials, flops.sampler) == ("flops-tpe-s1", 1, 7, "tpe")
    assert flops.eval_config().reward_cost == "flops" and flops.eval_config().timing_steps == 3
    assert not flops.early_stopping  # an equal trial budget for every method
    pareto = bench.method_config(base, "pareto-nsga2", 0, 7, tmp_path / "out")
    assert (pareto.objective, pareto.sampler) == ("pareto", "nsga2")
    assert pareto.eval_config().reward_cost == "step_time"
    assert pareto.space == base.space and pareto.dataset == base.dataset
    asha = bench.method_config(base, "pareto-asha", 0, 7, tmp_path / "out")
    assert (asha.objective, asha.sampler, asha.early_stopping) == ("pareto", "nsga2", True)
    assert asha.population_size == pareto.population_size and asha.study == "pareto-asha-s0"


@pytest.mark.slow
def test_a_method_added_to_a_finished_out_reuses_the_others_and_retimes_all(
    bench, tmp_path, monkeypatch, capsys
):
    # The smallest real run: two trials of one epoch on synthetic images, one seed.
    monkeypatch.setenv("EFFNAS_CACHE", str(tmp_path / "cache"))
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "sq"
    flags = [str(config), "--trials", "2", "--seeds", "0", "--rounds", "1", "--out", str(out)]
    # One Ray for both commands (each uses a Ray this process runs), started once EFFNAS_CACHE
    # is set: its workers inherit it.
    with ray_session(None):
        assert bench.main([*flags, "--methods", "random"]) == 0
        first = json.loads((out / "search_quality.json").read_text())
        assert list(first["methods"]) == ["random"]
        capsys.readouterr()
        # The new method runs; the finished search is reused, not run again; every net is
        # re-timed.
        assert bench.main([*flags, "--methods", "random,pareto-asha", "--retime"]) == 0
    printed = capsys.readouterr().out
    assert "[random-s0] finished earlier (2 trials): skipped" in printed
    assert "[pareto-asha-s0] nas search" in printed and "re-timing " in printed
    result = json.loads((out / "search_quality.json").read_text())
    assert list(result["methods"]) == ["random", "pareto-asha"]
    assert result["studies"]["random-s0"]["hypervolume"] != []
    nets = {net["spec"] for net in result["nets"]}
    retimed = json.loads((out / "retimed.json").read_text())
    assert nets <= set(retimed) and {n["method"] for n in result["nets"]} <= set(result["methods"])
    assert result["studies"]["pareto-asha-s0"]["epochs"][-1] <= 2  # one epoch per trial at most
