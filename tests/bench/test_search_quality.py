"""bench/search_quality.py's analysis: hypervolume per search, the net each hands its user."""

from __future__ import annotations

import importlib.util

import numpy as np
import pandas as pd
import pytest

from nas.evaluate.reward import reward
from results.hypervolume import Normalization, hypervolume
from tests import REPO
from tests.nas.search.helpers import small_config


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
                "params": 1000 * (number + 1),
                "params_norm": (number + 1) / 10,
                "flops": 5000 * (number + 1),
                "reward": score,
                "step_time_ms": 99.0,  # what the search measured, replaced by the common clock
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
    assert best["step_time_ms"] == times["net-reward-tpe-0-1"]
    assert best["reward"] == pytest.approx(reward(0.95, 15.0 / 20.0, 0.2, -0.07, -0.05))
    assert result["studies"]["reward-tpe-s0"]["failed"] == 1
    assert result["methods"]["random"]["hypervolume"]["mean"] == pytest.approx(
        result["studies"]["random-s0"]["hypervolume"][-1]
    )
    table = bench.table(result, 4, [0])
    assert table.count("\n") == 3 and "| reward-tpe |" in table and "95.00%" in table
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
