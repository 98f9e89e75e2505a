"""Front computation time: effnas's non-dominated sorting against Optuna's, same data, same run.

What is timed, per data set and size (median of several runs, after one warm-up):

- ``optuna best_trials``: ``optuna.study._multi_objective._get_pareto_front_trials_by_trials``
  on ``FrozenTrial`` objects, the function behind ``study.best_trials`` (trials already in
  memory: no storage time);
- ``optuna raw``: Optuna's ``_is_pareto_front`` on the same raw objective array (its algorithm
  without the trial objects);
- ``effnas raw``: ``results.non_dominated_rank(values, maximize, max_rank=1)``;
- ``effnas frame``: ``results.pareto_front(frame, objectives)`` on a study frame (what the
  commands call: pandas selection and sorting included);
- full ranks (all fronts): Optuna's ``_fast_non_domination_rank`` against
  ``results.non_dominated_rank``, up to ``--ranks-up-to`` trials.

Every pair of results is checked to be the same front (or the same ranks) before it is timed.

    python bench/pareto_speed.py                      # 1,000 / 10,000 / 100,000 trials
    python bench/pareto_speed.py --sizes 1000 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import optuna
import pandas as pd
from optuna.study import StudyDirection
from optuna.study._multi_objective import (
    _fast_non_domination_rank,
    _get_pareto_front_trials_by_trials,
    _is_pareto_front,
)

from results import non_dominated_rank, pareto_front

OBJECTIVES = ("accuracy", "step_time_norm", "params")
MAXIMIZE = (True, False, False)
#: Seconds above which a timing is taken from one run (see :func:`timed`).
SLOW_S = 5.0


def search_like(n: int, rng: np.random.Generator) -> np.ndarray:
    """Accuracy, normalized step time and parameters with a search's trade-off and noise."""
    params = np.exp(rng.uniform(np.log(2e5), np.log(3e7), n)).round()
    step_time_norm = 0.02 * (params / 1e5) ** 0.8 * rng.lognormal(0.0, 0.3, n)
    accuracy = np.clip(0.99 - 0.5 * (2e5 / params) ** 0.4 + rng.normal(0, 0.02, n), 0, 1)
    return np.column_stack([accuracy, step_time_norm, params])


def large_front(n: int, rng: np.random.Generator) -> np.ndarray:
    """Points near a surface where every gain costs: fronts of thousands of trials."""
    cost = rng.dirichlet(np.ones(3), n)  # on the simplex: no point dominates another
    cost += rng.normal(0, 0.002, cost.shape)
    return np.column_stack([1 - cost[:, 0], cost[:, 1], cost[:, 2]])


def timed(function: Callable[[], object], repeats: int) -> tuple[float, object]:
    """Median seconds of ``repeats`` runs after a warm-up run, and the result.

    A first run longer than :data:`SLOW_S` is the measurement itself: repeating a run of
    minutes would only make the benchmark slower, not its ratio more honest.
    """
    start = time.perf_counter()
    result = function()
    first = time.perf_counter() - start
    if first > SLOW_S:
        return first, result
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def as_trials(values: np.ndarray) -> list[optuna.trial.FrozenTrial]:
    return [
        optuna.trial.create_trial(values=row.tolist(), distributions={}, params={})
        for row in values
    ]


def as_frame(values: np.ndarray) -> pd.DataFrame:
    frame = pd.DataFrame(values, columns=list(OBJECTIVES))
    frame.insert(0, "number", np.arange(len(values)))
    frame.insert(1, "state", "COMPLETE")
    return frame


def bench(name: str, values: np.ndarray, repeats: int, ranks_up_to: int) -> list[dict]:
    n = len(values)
    loss = np.where(MAXIMIZE, -values, values)
    directions = [
        StudyDirection.MAXIMIZE if maximize else StudyDirection.MINIMIZE for maximize in MAXIMIZE
    ]
    trials = as_trials(values)
    frame = as_frame(values)

    t_trials, optuna_front = timed(
        lambda: _get_pareto_front_trials_by_trials(trials, directions), repeats
    )
    t_optuna_raw, optuna_mask = timed(lambda: _is_pareto_front(loss, False), repeats)
    t_ours_raw, ranks = timed(lambda: non_dominated_rank(values, MAXIMIZE, max_rank=1), repeats)
    t_ours_frame, front = timed(lambda: pareto_front(frame, OBJECTIVES), repeats)

    index_of = {id(trial): index for index, trial in enumerate(trials)}
    expected = sorted(index_of[id(trial)] for trial in optuna_front)
    assert np.flatnonzero(optuna_mask).tolist() == expected
    assert np.flatnonzero(ranks == 1).tolist() == expected
    assert sorted(front["number"]) == expected
    rows = [
        {"data": name, "trials": n, "front": len(expected), "what": "front",
         "optuna best_trials s": t_trials, "optuna raw s": t_optuna_raw,
         "effnas raw s": t_ours_raw, "effnas frame s": t_ours_frame},
    ]  # fmt: skip
    if n <= ranks_up_to:
        quick = max(1, repeats // 3)
        t_optuna_ranks, optuna_ranks = timed(lambda: _fast_non_domination_rank(loss), quick)
        t_ours_ranks, our_ranks = timed(lambda: non_dominated_rank(values, MAXIMIZE), quick)
        assert np.array_equal(our_ranks, optuna_ranks + 1)
        rows.append(
            {"data": name, "trials": n, "front": int(our_ranks.max()), "what": "all ranks",
             "optuna raw s": t_optuna_ranks, "effnas raw s": t_ours_ranks}
        )  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000", help="trial counts")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per measurement")
    parser.add_argument(
        "--ranks-up-to", type=int, default=10_000, help="largest size for the all-ranks timing"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    rows = []
    for size in (int(text) for text in args.sizes.split(",")):
        for name, make in (("search-like", search_like), ("large-front", large_front)):
            values = make(size, np.random.default_rng(args.seed))
            rows.extend(bench(name, values, args.repeats, args.ranks_up_to))
            print(f"done: {name} {size}", flush=True)

    table = pd.DataFrame(rows)
    table["optuna raw / effnas raw"] = table["optuna raw s"] / table["effnas raw s"]
    table["best_trials / effnas frame"] = table["optuna best_trials s"] / table["effnas frame s"]
    milliseconds = [column for column in table.columns if column.endswith(" s")]
    for column in milliseconds:
        table[column] = table[column] * 1000
    table = table.rename(columns={column: column[:-2] + " ms" for column in milliseconds})
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.to_string(index=False, float_format=lambda value: f"{value:.3g}"))
    print(
        "front = trials on the first front (all ranks: number of fronts); times are medians of "
        f"{args.repeats} runs (one run when it took over {SLOW_S:g} s); ratios > 1 mean effnas "
        "is faster."
    )


if __name__ == "__main__":
    main()
