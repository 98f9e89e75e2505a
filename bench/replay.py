"""Search methods replayed against a recorded table, many seeds each, on a simulated clock.

Every method of ``--methods`` (default: all of :data:`nas.search.replay.METHODS`) searches the
table's space with budgets of ``--budgets`` trials (12, the quick config's, and 25, 50, 100) and
``--seeds`` seeds (30), ``--workers`` trials at a time (2, as the quick search), each search
replayed by
:func:`nas.search.replay.replay`: the project's own searcher, samplers and schedulers, each trial
reporting one recorded seed's figures and costing its recorded CPU seconds. Replay seed ``r``
seeds the sampler and reports the table's seed ``seeds[r % len(seeds)]`` and the step times of
its timing pass ``r % passes`` (a live search measures each net once, with that much noise), the
same for every method, so that methods are compared seed by seed. Start-up trials (random draws
before TPE or GP model, NSGA-II's first generation) are a fifth of the budget, at most Optuna's
default 10; ``tpe-startup10`` is TPE after Optuna's 10 whatever the budget, the rule's
comparison.

What a search found is judged on what no search decision saw, the table's mean over seeds:

- **regret**: the search hands its user its reward-best trial (the highest reward the search
  recorded, from the held-out accuracy it saw, as ``best.yaml`` is chosen); its net's reward
  from the test accuracy averaged over the table's seeds (step-time cost, the config's
  exponents), below the best such reward of any net of the table;
- **hypervolume** of the nets it trained to the end, on (mean test accuracy, step time at the
  final size, parameters), on a scale fixed before any search runs: accuracy from 1 (best) to
  chance ``1 / num_classes`` (worst), step time and parameters on log scales from the fastest
  and smallest to the slowest and largest net of the whole space; reference point 1.1 in every
  objective; the volume as a fraction of the reference box. A method added to a comparison
  leaves every other method's figures as they were.

Both against simulated time (the searches' wall time with their workers), and at the end of each
budget; per method and budget, the paired per-seed difference from random search with a 95%
bootstrap interval of the mean (``scipy.stats.bootstrap``) and a Wilcoxon signed-rank p
(``scipy.stats.wilcoxon``), also at equal time (the median time random search took for the
budget); and each method's mean rank among the methods over time.

Writes ``replay.md`` (the tables), ``replay.png`` (the figure) and ``replay.json.gz`` (every
trial of every replay) to ``--out``. Seeds run in ``--processes`` processes; a method without a
scheduler replays its largest budget once per start-up setting and the smaller budgets are its
first trials (:func:`nas.search.replay.prefix`: exact). A rerun into the same ``--out`` reuses
the replays ``replay.json.gz`` holds for the same table, workers, method, replay code (the
searcher, schedulers and replay modules) and Optuna and Ray versions (``--fresh``: none), so
that adding a method costs only its own replays, and a run killed midway (the replays done so
far are saved every minute) goes on where it stopped: the GP sampler on three objectives costs about
two CPU minutes per replay of 100 trials, most of the whole grid's time.

    python bench/replay.py                                    # bench/data/table.json.gz
    python bench/replay.py --table T.json.gz --seeds 10 --methods random,tpe,asha
    python bench/replay.py --synthetic configs/bench.yaml     # made-up table: timing, tests
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import functools
import gzip
import hashlib
import json
import math
import multiprocessing
import os
import sys
import time
import warnings
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from nas.evaluate.reward import reward
from nas.search.config import SearchConfig
from nas.search.replay import METHODS, replay
from nas.search.table import Table
from results.hypervolume import Normalization, ObjectiveScale, hypervolume_history
from searchspace.files import atomic_write

#: The hypervolume's objectives.
OBJECTIVES = ("test_accuracy", "step_time_ms", "params")
#: Points of the time grid the curves and ranks are taken on.
GRID = 200
CONFIDENCE = 0.95
RESAMPLES = 10_000
COLORS = {
    "random": "#7f7f7f",
    "tpe": "#1f77b4",
    "tpe-startup10": "#aec7e8",
    "tpe-univariate": "#17becf",
    "gp": "#ff7f0e",
    "flops-tpe": "#d62728",
    "asha": "#8c564b",
    "nsga2": "#2ca02c",
    "mo-tpe": "#9467bd",
    "mo-gp": "#e377c2",
    "pareto-asha": "#bcbd22",
    "mo-tpe-asha": "#dbdb8d",
}


# -- what the table says is true ----------------------------------------------------------------


@dataclass(frozen=True)
class Truth:
    """The table's own figures, fixed before any search: each net's true reward and objective
    values, the best reward, and the hypervolume's scale."""

    reward: dict[str, float]
    points: dict[str, tuple[float, float, float]]
    best_reward: float
    normalization: Normalization

    @classmethod
    def of(cls, table: Table) -> Truth:
        config = table.config
        ref = table.reference
        rewards, points = {}, {}
        for net in table.nets:
            accuracy = net.test_accuracy
            if accuracy is None:
                continue  # every run failed: no search can hand it out
            step_norm = net.step_time_ms / ref["step_time_ms"]
            params_norm = net.params / ref["params"]
            rewards[net.hash] = reward(
                accuracy, step_norm, params_norm, config.reward_w, config.reward_v
            )
            points[net.hash] = (accuracy, net.step_time_ms, float(net.params))
        return cls(rewards, points, max(rewards.values()), fixed_normalization(table))


def fixed_normalization(table: Table) -> Normalization:
    """The hypervolume's scale, from the space alone (see the module): accuracy linear from 1
    to chance, step time and parameters on log scales over every net of the table."""
    steps = [net.step_time_ms for net in table.nets]
    params = [net.params for net in table.nets]
    chance = 1.0 / table.config.space.num_classes
    return Normalization(
        (
            ObjectiveScale("test_accuracy", maximize=True, log=False, best=1.0, worst=chance),
            ObjectiveScale("step_time_ms", False, True, float(min(steps)), float(max(steps))),
            ObjectiveScale("params", False, True, float(min(params)), float(max(params))),
        )
    )


def default_sampler_methods() -> dict[str, str]:
    """Per objective, the method that runs a search config's default sampler
    (:class:`~nas.search.config.SearchConfig`'s ``sampler``) with no scheduler, the step-time
    reward and the start-up rule: what a method is weighed against before it may replace the
    default."""
    default = next(f.default for f in dataclasses.fields(SearchConfig) if f.name == "sampler")
    found: dict[str, str] = {}
    for method in METHODS.values():
        plain = not method.early_stopping and method.startup is None
        if method.sampler == default and plain and method.reward_cost == "step_time":
            found.setdefault(method.objective, method.name)
    return found


# -- running the replays --------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One replay: a method, the budget it runs, the smaller budgets read from its first trials,
    and a seed."""

    method: str
    budget: int
    budgets: tuple[int, ...]
    seed: int


def plan(
    methods: Sequence[str],
    budgets: Sequence[int],
    seeds: Sequence[int],
    done: Container[tuple[str, int, int]] = (),
) -> list[Job]:
    """The replays to run: a method without a scheduler once per start-up setting (its smaller
    budgets with the same setting are prefixes), a method with one once per budget; none whose
    every ``(method, budget, seed)`` is ``done``."""
    jobs = []
    for name in methods:
        groups: dict[Any, list[int]] = {}
        for budget in sorted(budgets):
            key = budget if METHODS[name].early_stopping else METHODS[name].startup_for(budget)
            groups.setdefault(key, []).append(budget)
        for group in groups.values():
            jobs.extend(
                Job(name, max(group), tuple(group), seed)
                for seed in seeds
                if not all((name, budget, seed) in done for budget in group)
            )
    return jobs


#: The code a replay's trials depend on: a change to any of these files makes every cached
#: replay stale.
CODE = ("nas/search/replay.py", "nas/search/searcher.py", "nas/search/schedulers.py",
        "nas/search/driver.py", "nas/search/study.py", "nas/search/table.py",
        "searchspace/space.py")  # fmt: skip


def run_key(digest: str, workers: int, method: str, budget: int) -> dict[str, Any]:
    """What a replay's trials depend on, beside its seed: a cached replay with the same key is
    the same replay."""
    import optuna
    import ray

    return {
        "table": digest,
        "workers": workers,
        "code": _code_digest(),
        "optuna": optuna.__version__,
        "ray": ray.__version__,
        "method": dataclasses.asdict(METHODS[method]),
        "startup": METHODS[method].startup_for(budget),
    }


@functools.cache
def _code_digest() -> str:
    root = Path(__file__).resolve().parents[1]
    return hashlib.sha256(b"".join((root / name).read_bytes() for name in CODE)).hexdigest()[:16]


def cached_runs(path: Path, digest: str, workers: int) -> dict[tuple[str, int, int], list]:
    """The replays an earlier run left in ``path`` (``replay.json.gz``) that hold for this
    table and workers and the methods as they are defined now."""
    try:
        payload = json.loads(gzip.decompress(path.read_bytes()))
    except (OSError, ValueError, EOFError):
        return {}
    runs = {}
    for run in payload.get("runs", []):
        method, budget, seed = run["method"], run["budget"], run["seed"]
        if method in METHODS and run.get("key") == run_key(digest, workers, method, budget):
            runs[(method, budget, seed)] = run["trials"]
    return runs


_TABLE: Table | None = None


def _start_worker(table: Table) -> None:
    import optuna
    import torch

    global _TABLE
    _TABLE = table
    torch.set_num_threads(1)  # the GP sampler's tensors: one process, one core
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore")


def _run(job: Job, workers: int) -> tuple[Job, list[dict[str, Any]], float]:
    started = time.process_time()
    trials = replay(_TABLE, METHODS[job.method], budget=job.budget, seed=job.seed, workers=workers)
    return job, [trial.to_dict() for trial in trials], time.process_time() - started


def _cost_order(job: Job) -> float:
    """Longest first: GP's cost grows with the trials (three objectives, more)."""
    method = METHODS[job.method]
    weight = {"gp": 50.0 if method.objective == "pareto" else 10.0}.get(method.sampler, 1.0)
    return -weight * job.budget**1.5


#: Seconds between the saves of the replays done so far, during a run (a killed grid resumes).
SAVE_EVERY = 60.0


def run_jobs(
    table: Table,
    jobs: list[Job],
    workers: int,
    processes: int,
    log=print,
    save: Callable[[dict[tuple[str, int, int], list[dict[str, Any]]]], None] | None = None,
) -> dict[tuple[str, int, int], list[dict[str, Any]]]:
    """Every job's trials, keyed ``(method, budget, seed)`` for every budget it stands for;
    ``save`` is given the replays done so far every :data:`SAVE_EVERY` seconds."""
    runs: dict[tuple[str, int, int], list[dict[str, Any]]] = {}
    seconds: dict[str, float] = {}
    started = saved_at = time.monotonic()
    ordered = sorted(jobs, key=_cost_order)
    if processes <= 1:
        _start_worker(table)
        results = (_run(job, workers) for job in ordered)
        pool = None
    else:
        pool = concurrent.futures.ProcessPoolExecutor(
            processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
            initargs=(table,),
        )
        futures = [pool.submit(_run, job, workers) for job in ordered]
        results = (future.result() for future in concurrent.futures.as_completed(futures))
    try:
        for done, (job, trials, cpu) in enumerate(results, start=1):
            seconds[job.method] = seconds.get(job.method, 0.0) + cpu
            for budget in job.budgets:
                runs[(job.method, budget, job.seed)] = [t for t in trials if t["index"] < budget]
            if done % 50 == 0 or done == len(jobs):
                log(f"  {done}/{len(jobs)} replays, {(time.monotonic() - started) / 60:.1f} min")
            if save is not None and time.monotonic() - saved_at >= SAVE_EVERY:
                save(runs)
                saved_at = time.monotonic()
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    log("replay CPU seconds per method: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))
    return runs


# -- one replay's figures -------------------------------------------------------------------------


@dataclass(frozen=True)
class Curves:
    """One replay's regret and hypervolume after each trial that ended, in simulated seconds."""

    times: np.ndarray
    regret: np.ndarray  # NaN before the first finished net
    hypervolume: np.ndarray
    end: float
    stopped: int
    reused: int
    distinct: int

    def at(self, when: float) -> tuple[float, float]:
        """Regret and hypervolume at simulated time ``when`` (after the trials ended by then)."""
        index = int(np.searchsorted(self.times, when, side="right")) - 1
        if index < 0:
            return math.nan, 0.0
        return float(self.regret[index]), float(self.hypervolume[index])

    @property
    def final(self) -> tuple[float, float]:
        return self.at(self.end)


def curves(trials: Sequence[dict[str, Any]], truth: Truth) -> Curves:
    """A replay's regret and hypervolume as its trials ended (ties: in the order asked)."""
    ended = sorted(trials, key=lambda t: (t["end"], t["index"]))
    best_reward, regret, times, points = -math.inf, math.nan, [], []
    regrets = []
    for trial in ended:
        # The reward-best so far, as results.reward_best picks it (the first on a tie).
        if trial["reward"] is not None and trial["reward"] > best_reward:
            best_reward = trial["reward"]
            regret = truth.best_reward - truth.reward[trial["hash"]]
        times.append(trial["end"])
        regrets.append(regret)
        finished_here = trial["state"] == "complete" and trial["hash"] in truth.points
        points.append(truth.points[trial["hash"]] if finished_here else (math.nan,) * 3)
    losses = truth.normalization.normalize_values(np.array(points, dtype=float).reshape(-1, 3))
    reference = truth.normalization.reference
    volume = hypervolume_history(losses, reference) / math.prod(reference)
    return Curves(
        times=np.array(times),
        regret=np.array(regrets),
        hypervolume=volume,
        end=max(times) if times else 0.0,
        stopped=sum(t["state"] == "stopped" for t in trials),
        reused=sum(t["state"] == "reused" for t in trials),
        distinct=len({t["hash"] for t in trials if t["state"] == "complete"}),
    )


# -- statistics -----------------------------------------------------------------------------------


def paired(values: np.ndarray, baseline: np.ndarray, *, seed: int = 0) -> dict[str, float]:
    """The mean per-seed difference ``values - baseline``, its 95% bootstrap interval
    (``scipy.stats.bootstrap``, BCa; percentile where BCa cannot be computed) and the Wilcoxon
    signed-rank p (two-sided; 1 when every difference is 0)."""
    from scipy import stats

    differences = np.asarray(values, dtype=float) - np.asarray(baseline, dtype=float)
    differences = differences[np.isfinite(differences)]
    if len(differences) < 2:
        return {"mean": math.nan, "low": math.nan, "high": math.nan, "p": math.nan}
    mean = float(differences.mean())
    if np.all(differences == differences[0]):
        return {"mean": mean, "low": mean, "high": mean, "p": 1.0 if mean == 0 else math.nan}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        interval = None
        for method in ("BCa", "percentile"):
            result = stats.bootstrap(
                (differences,),
                np.mean,
                confidence_level=CONFIDENCE,
                n_resamples=RESAMPLES,
                method=method,
                rng=np.random.default_rng(seed),
            )
            interval = result.confidence_interval
            if np.isfinite(interval.low) and np.isfinite(interval.high):
                break
        try:
            p = float(stats.wilcoxon(differences).pvalue)
        except ValueError:
            p = 1.0  # every difference is 0
    return {"mean": mean, "low": float(interval.low), "high": float(interval.high), "p": p}


def mean_ranks(values: np.ndarray, higher_is_better: bool) -> np.ndarray:
    """``values`` (methods x seeds): each method's mean rank over seeds (1: best; ties share,
    a missing value ranks last)."""
    from scipy.stats import rankdata

    filled = np.where(np.isfinite(values), values, -np.inf if higher_is_better else np.inf)
    signed = -filled if higher_is_better else filled
    return rankdata(signed, axis=0).mean(axis=1)


def analyse(
    runs: dict[tuple[str, int, int], list[dict[str, Any]]],
    truth: Truth,
    methods: Sequence[str],
    budgets: Sequence[int],
    seeds: Sequence[int],
) -> dict[str, Any]:
    """Per budget: every method's figures at its end and at random search's time, the paired
    differences from random, the curves and mean ranks over time."""
    result: dict[str, Any] = {"best_reward": truth.best_reward, "budgets": {}}
    baseline = "random" if "random" in methods else methods[0]
    defaults = {k: m for k, m in default_sampler_methods().items() if m in methods}
    for budget in budgets:
        per = {m: [curves(runs[(m, budget, s)], truth) for s in seeds] for m in methods}
        equal_time = float(np.median([c.end for c in per[baseline]]))
        end = max(c.end for cs in per.values() for c in cs)
        grid = np.linspace(0.0, end, GRID + 1)[1:]
        regret = {m: np.array([[c.at(t)[0] for t in grid] for c in cs]) for m, cs in per.items()}
        volume = {m: np.array([[c.at(t)[1] for t in grid] for c in cs]) for m, cs in per.items()}
        stacked_regret = np.stack([regret[m] for m in methods])  # methods x seeds x grid
        stacked_volume = np.stack([volume[m] for m in methods])
        rank_regret = np.stack([mean_ranks(stacked_regret[:, :, i], False) for i in range(GRID)])
        rank_volume = np.stack([mean_ranks(stacked_volume[:, :, i], True) for i in range(GRID)])
        finals = {m: np.array([c.final for c in cs]) for m, cs in per.items()}
        at_time = {m: np.array([c.at(equal_time) for c in cs]) for m, cs in per.items()}
        final_ranks_regret = mean_ranks(np.stack([finals[m][:, 0] for m in methods]), False)
        final_ranks_volume = mean_ranks(np.stack([finals[m][:, 1] for m in methods]), True)
        rows = {}
        for index, m in enumerate(methods):
            rows[m] = {
                "end_hours": _mean_se([c.end / 3600 for c in per[m]]),
                "stopped": float(np.mean([c.stopped for c in per[m]])),
                "reused": float(np.mean([c.reused for c in per[m]])),
                "distinct": float(np.mean([c.distinct for c in per[m]])),
                "regret": _mean_se(finals[m][:, 0]),
                "hypervolume": _mean_se(finals[m][:, 1]),
                "regret_vs_baseline": paired(finals[m][:, 0], finals[baseline][:, 0]),
                "hypervolume_vs_baseline": paired(finals[m][:, 1], finals[baseline][:, 1]),
                **_against_default(m, defaults, finals),
                "regret_at_time": _mean_se(at_time[m][:, 0]),
                "hypervolume_at_time": _mean_se(at_time[m][:, 1]),
                "regret_at_time_vs_baseline": paired(at_time[m][:, 0], at_time[baseline][:, 0]),
                "hypervolume_at_time_vs_baseline": paired(
                    at_time[m][:, 1], at_time[baseline][:, 1]
                ),
                "rank_regret_final": float(final_ranks_regret[index]),
                "rank_hypervolume_final": float(final_ranks_volume[index]),
                "rank_regret_over_time": float(rank_regret[:, index].mean()),
                "rank_hypervolume_over_time": float(rank_volume[:, index].mean()),
                "per_seed_regret": finals[m][:, 0].tolist(),
                "per_seed_hypervolume": finals[m][:, 1].tolist(),
            }
        result["budgets"][budget] = {
            "equal_time_hours": equal_time / 3600,
            "grid_hours": (grid / 3600).tolist(),
            "mean_regret": {m: np.nanmean(regret[m], axis=0).tolist() for m in methods},
            "mean_hypervolume": {m: volume[m].mean(axis=0).tolist() for m in methods},
            "rank_regret": {m: rank_regret[:, i].tolist() for i, m in enumerate(methods)},
            "rank_hypervolume": {m: rank_volume[:, i].tolist() for i, m in enumerate(methods)},
            "methods": rows,
        }
    result["baseline"] = baseline
    result["defaults"] = defaults
    return result


def _against_default(
    method: str, defaults: dict[str, str], finals: dict[str, np.ndarray]
) -> dict[str, Any]:
    """A method's paired differences from its objective's default-sampler method, if any."""
    default = defaults.get(METHODS[method].objective)
    if default is None:
        return {}
    return {
        "default": default,
        "regret_vs_default": paired(finals[method][:, 0], finals[default][:, 0]),
        "hypervolume_vs_default": paired(finals[method][:, 1], finals[default][:, 1]),
    }


def _mean_se(values: Sequence[float]) -> dict[str, float]:
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if not len(values):
        return {"mean": math.nan, "se": math.nan}
    se = float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else math.nan
    return {"mean": float(values.mean()), "se": se}


# -- the report -----------------------------------------------------------------------------------


def _pm(stat: dict[str, float], scale: float = 1.0, digits: int = 2) -> str:
    if math.isnan(stat["mean"]):
        return "-"
    if math.isnan(stat["se"]):
        return f"{stat['mean'] * scale:.{digits}f}"
    return f"{stat['mean'] * scale:.{digits}f} ± {stat['se'] * scale:.{digits}f}"


def _diff(stat: dict[str, float], scale: float = 1.0, digits: int = 2) -> str:
    if math.isnan(stat["mean"]):
        return "-"
    p = "-" if math.isnan(stat["p"]) else f"{stat['p']:.2g}"
    return (
        f"{stat['mean'] * scale:+.{digits}f} [{stat['low'] * scale:+.{digits}f}, "
        f"{stat['high'] * scale:+.{digits}f}] p {p}"
    )


def markdown(result: dict[str, Any], header: str) -> str:
    """The tables: per budget, at its end and at random search's time."""
    lines = [header, ""]
    base = result["baseline"]
    for budget, figures in result["budgets"].items():
        lines += [
            f"### {budget} trials",
            "",
            f"Regret in reward points x 100 (lower is better), hypervolume x 100 (higher is "
            f"better); mean ± standard error over seeds; Δ: the mean paired difference from "
            f"{base} with its 95% bootstrap interval and the Wilcoxon signed-rank p. Ranks: "
            f"mean over seeds (1 is best), at the end and averaged over time.",
            "",
            "| method | hours | stopped | reused | nets | regret | Δ regret | hypervolume "
            "| Δ hypervolume | rank (regret) end / over time | rank (hv) end / over time |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for method, row in figures["methods"].items():
            lines.append(
                f"| {method} | {_pm(row['end_hours'])} | {row['stopped']:.1f} | "
                f"{row['reused']:.1f} | {row['distinct']:.1f} | {_pm(row['regret'], 100)} | "
                f"{_diff(row['regret_vs_baseline'], 100)} | {_pm(row['hypervolume'], 100)} | "
                f"{_diff(row['hypervolume_vs_baseline'], 100)} | "
                f"{row['rank_regret_final']:.2f} / {row['rank_regret_over_time']:.2f} | "
                f"{row['rank_hypervolume_final']:.2f} / {row['rank_hypervolume_over_time']:.2f} |"
            )
        hours = figures["equal_time_hours"]
        lines += [
            "",
            f"At equal time: {hours:.2f} simulated hours (the median time {base} took for "
            f"{budget} trials).",
            "",
            "| method | regret | Δ regret | hypervolume | Δ hypervolume |",
            "|---|---|---|---|---|",
        ]
        for method, row in figures["methods"].items():
            lines.append(
                f"| {method} | {_pm(row['regret_at_time'], 100)} | "
                f"{_diff(row['regret_at_time_vs_baseline'], 100)} | "
                f"{_pm(row['hypervolume_at_time'], 100)} | "
                f"{_diff(row['hypervolume_at_time_vs_baseline'], 100)} |"
            )
        rows = {m: row for m, row in figures["methods"].items() if "default" in row}
        if rows:
            named = " and ".join(f"{d} ({o})" for o, d in result["defaults"].items())
            lines += [
                "",
                f"Against the default sampler: each method's paired difference from {named}, "
                "the search config's default sampler without a scheduler, at the end of the "
                "budget.",
                "",
                "| method | against | Δ regret | Δ hypervolume |",
                "|---|---|---|---|",
            ]
            for method, row in rows.items():
                lines.append(
                    f"| {method} | {row['default']} | {_diff(row['regret_vs_default'], 100)} | "
                    f"{_diff(row['hypervolume_vs_default'], 100)} |"
                )
        lines.append("")
    return "\n".join(lines)


def figure(result: dict[str, Any], path: Path, workers: int) -> Path:
    """Regret and hypervolume against simulated time and the mean ranks, at the largest budget;
    the paired differences from random at every budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import ScalarFormatter, SymmetricalLogLocator

    budgets = list(result["budgets"])
    largest = result["budgets"][budgets[-1]]
    methods = list(largest["methods"])
    fig, axes = plt.subplots(2, 3, figsize=(21, 11))
    hours = np.array(largest["grid_hours"])
    panels = [
        (axes[0, 0], "mean_regret", "regret of the reward-best net (reward x 100)", 100),
        (axes[0, 1], "mean_hypervolume", "hypervolume x 100 (fixed scale)", 100),
        (axes[1, 0], "rank_regret", "mean rank by regret (1: best)", 1),
        (axes[1, 1], "rank_hypervolume", "mean rank by hypervolume (1: best)", 1),
    ]
    for ax, key, label, scale in panels:
        for m in methods:
            style = "--" if METHODS[m].objective == "pareto" else "-"
            ax.plot(hours, np.array(largest[key][m]) * scale, style, color=COLORS.get(m),
                    label=m, linewidth=1.8)  # fmt: skip
        ax.set_xlabel(f"simulated hours ({workers} workers)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0, 0].set_yscale("symlog", linthresh=0.1)  # a regret of 0: the best net found
    axes[0, 0].yaxis.set_major_locator(
        SymmetricalLogLocator(base=10, linthresh=0.1, subs=(1.0, 2.0, 5.0))
    )
    axes[0, 0].yaxis.set_major_formatter(ScalarFormatter())
    axes[0, 0].set_title(f"{budgets[-1]} trials: mean over seeds")
    axes[0, 1].set_title(f"{budgets[-1]} trials: mean over seeds")
    axes[0, 0].legend(fontsize=8)
    for ax, key, label in (
        (axes[0, 2], "regret_vs_baseline", "Δ regret vs random (x 100; < 0: better)"),
        (axes[1, 2], "hypervolume_vs_baseline", "Δ hypervolume vs random (x 100; > 0: better)"),
    ):
        for offset, budget in enumerate(budgets):
            rows = result["budgets"][budget]["methods"]
            y = np.arange(len(methods)) + (offset - (len(budgets) - 1) / 2) * 0.8 / len(budgets)
            stats = [rows[m][key] for m in methods]
            mean = np.array([s["mean"] for s in stats]) * 100
            low = mean - np.array([s["low"] for s in stats]) * 100
            high = np.array([s["high"] for s in stats]) * 100 - mean
            ax.errorbar(mean, y, xerr=[low, high], fmt="o", capsize=3, label=f"{budget} trials")
        ax.axvline(0.0, color="black", linewidth=0.8)
        ax.set_yticks(np.arange(len(methods)), methods)
        ax.invert_yaxis()
        ax.set_xlabel(label)
        ax.set_title("paired per seed, 95% bootstrap interval, at the end of the budget")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# -- the command ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=Path, default=Path("bench/data/table.json.gz"))
    parser.add_argument(
        "--synthetic", metavar="CONFIG", help="replay a made-up table of this config's space"
    )
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated")
    parser.add_argument(
        "--budgets", default="12,25,50,100", help="trials per search (12: the quick config's)"
    )
    parser.add_argument("--seeds", type=int, default=30, help="replay seeds (default 30)")
    parser.add_argument("--workers", type=int, default=2, help="trials at once (default 2)")
    parser.add_argument(
        "--processes",
        type=int,
        default=os.cpu_count() or 1,
        help="replay processes (default: one per CPU core)",
    )
    parser.add_argument("--out", type=Path, default=Path("runs/bench/replay"))
    parser.add_argument("--fresh", action="store_true", help="reuse no earlier replay")
    args = parser.parse_args(argv)
    args.methods = [name.strip() for name in args.methods.split(",")]
    unknown = [name for name in args.methods if name not in METHODS]
    if unknown:
        parser.error(f"unknown method {unknown[0]!r} (known: {', '.join(METHODS)})")
    try:
        args.budgets = sorted({int(b) for b in args.budgets.split(",")})
    except ValueError:
        parser.error(f"--budgets must be comma-separated integers, got {args.budgets!r}")
    if min(args.budgets) < 1 or args.seeds < 2 or args.workers < 1 or args.processes < 1:
        parser.error("budgets and --workers must be at least 1, --seeds at least 2")
    return args


def _clock_line(table: Table) -> str:
    """How the replay's clock brings runs recorded on several machines to one speed."""
    scales = sorted({round(f, 3) for f in table.clock_scales.values() if f != 1.0})
    if not scales:
        return "Every run's CPU seconds as recorded."
    return (
        "CPU seconds of runs recorded on other machines scaled to the speed of the one that "
        f"trained the most (by {', '.join(f'{f:.2f}' for f in scales)})."
    )


def load_table(args: argparse.Namespace) -> tuple[Table, str]:
    """The table and a digest of its content."""
    from nas.search import SearchConfig
    from nas.search.table import read_table_data, synthetic_table_data

    if args.synthetic:
        data = synthetic_table_data(SearchConfig.load(args.synthetic))
    else:
        data = read_table_data(args.table)
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
    table = Table.from_dict(data, source=str(args.synthetic or args.table))
    missing = table.missing()
    if missing:
        raise SystemExit(
            f"replay: {args.table} lacks {len(missing)} runs (net {missing[0][0]}, seed "
            f"{missing[0][1]}, ...): finish the recording (bench/record_table.py) first"
        )
    return table, digest


def main(argv: list[str] | None = None) -> int:
    from searchspace.errors import EffnasError

    args = parse_args(argv)
    started = time.perf_counter()
    try:
        table, digest = load_table(args)
    except EffnasError as error:
        print(f"replay: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    command = " ".join(["python", "bench/replay.py", *(sys.argv[1:] if argv is None else argv)])
    print(f"command: {command}", flush=True)
    seeds = list(range(args.seeds))
    saved = args.out / "replay.json.gz"
    runs = {} if args.fresh else cached_runs(saved, digest, args.workers)
    jobs = plan(args.methods, args.budgets, seeds, done=runs)
    print(
        f"{len(table.nets)} nets, {len(table.seeds)} recorded seeds; {len(args.methods)} "
        f"methods x {args.seeds} seeds x budgets {args.budgets}: {len(jobs)} replays in "
        f"{args.processes} processes ({len(runs)} replays of {saved} reused)",
        flush=True,
    )
    source = "a synthetic table" if args.synthetic else str(args.table)

    def save(result: dict[str, Any] | None, done: dict) -> None:
        payload = {
            "command": command,
            "table": source,
            "result": result,  # None while the replays run: a kill leaves those done so far
            "runs": [
                {
                    "method": m,
                    "budget": b,
                    "seed": s,
                    "key": run_key(digest, args.workers, m, b),
                    "trials": trials,
                }
                for (m, b, s), trials in sorted(done.items())
            ],
        }
        atomic_write(saved, gzip.compress(json.dumps(payload).encode(), mtime=0))

    runs.update(run_jobs(table, jobs, args.workers, args.processes,
                         log=lambda line: print(line, flush=True),
                         save=lambda new: save(None, {**runs, **new})))  # fmt: skip
    truth = Truth.of(table)
    result = analyse(runs, truth, args.methods, args.budgets, seeds)
    header = (
        f"Replayed against {source} ({len(table.nets)} nets, seeds {list(table.seeds)}, "
        f"{table.timing_passes} timing passes), {args.seeds} seeds per method (replay seed r: "
        f"the table's seed r % {len(table.seeds)}, timing pass r % {table.timing_passes}), "
        f"{args.workers} workers. {_clock_line(table)} Command: `{command}`."
    )
    args.out.mkdir(parents=True, exist_ok=True)
    text = markdown(result, header)
    (args.out / "replay.md").write_text(text + "\n")
    png = figure(result, args.out / "replay.png", args.workers)
    save(result, runs)
    print(f"\n{text}\nwrote {args.out / 'replay.md'}, {png}, {saved}")
    print(f"took {(time.perf_counter() - started) / 60:.1f} min", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
